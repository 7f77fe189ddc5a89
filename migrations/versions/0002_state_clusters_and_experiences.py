"""state clusters and experiences

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 01:50:45.234732
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('situation_embedding',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('embedding_model', sa.String(length=128), nullable=False),
    sa.Column('embedding', Vector(384), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_situation_embedding_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'key_hash', 'embedding_model', name=op.f('pk_situation_embedding'))
    )
    op.create_table('state_cluster',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=False),
    sa.Column('centroid', Vector(384), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('representative', sa.Text(), nullable=False),
    sa.Column('embedding_model', sa.String(length=128), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_state_cluster_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_state_cluster'))
    )
    op.create_index('ix_state_cluster_centroid_hnsw', 'state_cluster', ['centroid'], unique=False, postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'centroid': 'vector_cosine_ops'})
    op.create_index('ix_state_cluster_tenant_id_domain', 'state_cluster', ['tenant_id', 'domain'], unique=False)
    op.create_table('experience',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=False),
    sa.Column('cluster_id', sa.Uuid(), nullable=True),
    sa.Column('polarity', sa.Enum('do', 'avoid', name='polarity'), nullable=False),
    sa.Column('status', sa.Enum('active', 'retired', name='experience_status'), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('text_source', sa.String(length=16), nullable=False),
    sa.Column('llm_model', sa.String(length=128), nullable=True),
    sa.Column('action_template', sa.Text(), nullable=False),
    sa.Column('action_example', sa.Text(), nullable=False),
    sa.Column('slots', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('situation', sa.Text(), nullable=False),
    sa.Column('task', sa.Text(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('dedup_key', sa.String(length=64), nullable=False),
    sa.Column('successes', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('distinct_agents', sa.Integer(), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('beta', sa.Float(), nullable=False),
    sa.Column('embedding', Vector(384), nullable=False),
    sa.Column('embedding_model', sa.String(length=128), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['state_cluster.id'], name=op.f('fk_experience_cluster_id_state_cluster'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_experience_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experience'))
    )
    op.create_index('ix_experience_cluster_id', 'experience', ['cluster_id'], unique=False)
    op.create_index('ix_experience_embedding_hnsw', 'experience', ['embedding'], unique=False, postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'embedding': 'vector_cosine_ops'})
    op.create_index('ix_experience_tenant_id_domain_status', 'experience', ['tenant_id', 'domain', 'status'], unique=False)
    op.create_index('ix_experience_text_fts', 'experience', [sa.literal_column("to_tsvector('english', text)")], unique=False, postgresql_using='gin')
    op.create_index('uq_experience_tenant_id_dedup_key', 'experience', ['tenant_id', 'dedup_key'], unique=True)
    op.create_table('experience_evidence',
    sa.Column('experience_id', sa.Uuid(), nullable=False),
    sa.Column('step_id', sa.Uuid(), nullable=False),
    sa.Column('trajectory_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('agent_id', sa.String(length=256), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['experience_id'], ['experience.id'], name=op.f('fk_experience_evidence_experience_id_experience'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['step_id'], ['trajectory_step.id'], name=op.f('fk_experience_evidence_step_id_trajectory_step'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_experience_evidence_tenant_id_tenant'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trajectory_id'], ['trajectory.id'], name=op.f('fk_experience_evidence_trajectory_id_trajectory'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('experience_id', 'step_id', name=op.f('pk_experience_evidence'))
    )
    op.create_index('ix_experience_evidence_trajectory_id', 'experience_evidence', ['trajectory_id'], unique=False)
    op.add_column('trajectory_step', sa.Column('situation_key', sa.Text(), nullable=True))
    op.add_column('trajectory_step', sa.Column('cluster_id', sa.Uuid(), nullable=True))
    op.create_index('ix_trajectory_step_cluster_id', 'trajectory_step', ['cluster_id'], unique=False)
    op.create_foreign_key(op.f('fk_trajectory_step_cluster_id_state_cluster'), 'trajectory_step', 'state_cluster', ['cluster_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    op.drop_constraint(op.f('fk_trajectory_step_cluster_id_state_cluster'), 'trajectory_step', type_='foreignkey')
    op.drop_index('ix_trajectory_step_cluster_id', table_name='trajectory_step')
    op.drop_column('trajectory_step', 'cluster_id')
    op.drop_column('trajectory_step', 'situation_key')
    op.drop_index('ix_experience_evidence_trajectory_id', table_name='experience_evidence')
    op.drop_table('experience_evidence')
    op.drop_index('uq_experience_tenant_id_dedup_key', table_name='experience')
    op.drop_index('ix_experience_text_fts', table_name='experience', postgresql_using='gin')
    op.drop_index('ix_experience_tenant_id_domain_status', table_name='experience')
    op.drop_index('ix_experience_embedding_hnsw', table_name='experience', postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'embedding': 'vector_cosine_ops'})
    op.drop_index('ix_experience_cluster_id', table_name='experience')
    op.drop_table('experience')
    op.drop_index('ix_state_cluster_tenant_id_domain', table_name='state_cluster')
    op.drop_index('ix_state_cluster_centroid_hnsw', table_name='state_cluster', postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'centroid': 'vector_cosine_ops'})
    op.drop_table('state_cluster')
    op.drop_table('situation_embedding')
    sa.Enum(name='experience_status').drop(op.get_bind(), checkfirst=True)
    sa.Enum(name='polarity').drop(op.get_bind(), checkfirst=True)
