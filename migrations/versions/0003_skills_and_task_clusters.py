"""skills and task clusters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 14:06:17.306615
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('task_cluster',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=False),
    sa.Column('centroid', Vector(384), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('representative', sa.Text(), nullable=False),
    sa.Column('embedding_model', sa.String(length=128), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_task_cluster_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_cluster'))
    )
    op.create_index('ix_task_cluster_centroid_hnsw', 'task_cluster', ['centroid'], unique=False, postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'centroid': 'vector_cosine_ops'})
    op.create_index('ix_task_cluster_tenant_id_domain', 'task_cluster', ['tenant_id', 'domain'], unique=False)
    op.create_table('skill',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('level', sa.Enum('strategy', 'functional', 'atomic', name='skill_level'), nullable=False),
    sa.Column('status', sa.Enum('active', 'retired', name='skill_status'), nullable=False),
    sa.Column('trust_tier', sa.String(length=32), nullable=False),
    sa.Column('source_key', sa.String(length=128), nullable=False),
    sa.Column('task_cluster_id', sa.Uuid(), nullable=True),
    sa.Column('head_version', sa.Integer(), nullable=False),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('embedding', Vector(384), nullable=False),
    sa.Column('embedding_model', sa.String(length=128), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('beta', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['task_cluster_id'], ['task_cluster.id'], name=op.f('fk_skill_task_cluster_id_task_cluster'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_skill_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skill'))
    )
    op.create_index('ix_skill_embedding_hnsw', 'skill', ['embedding'], unique=False, postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'embedding': 'vector_cosine_ops'})
    op.create_index('ix_skill_task_cluster_id', 'skill', ['task_cluster_id'], unique=False)
    op.create_index('ix_skill_tenant_id_level_status', 'skill', ['tenant_id', 'level', 'status'], unique=False)
    op.create_index('uq_skill_tenant_id_name', 'skill', ['tenant_id', 'name'], unique=True)
    op.create_index('uq_skill_tenant_id_source_key', 'skill', ['tenant_id', 'source_key'], unique=True)
    op.create_table('skill_event',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('skill_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Enum('created', 'improved', 'description_optimised', 'rewritten', 'rolled_back', 'retired', 'rejected', name='skill_event_kind'), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('from_version', sa.Integer(), nullable=True),
    sa.Column('to_version', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['skill_id'], ['skill.id'], name=op.f('fk_skill_event_skill_id_skill'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_skill_event_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skill_event'))
    )
    op.create_index('ix_skill_event_skill_id_created_at', 'skill_event', ['skill_id', 'created_at'], unique=False)
    op.create_table('skill_link',
    sa.Column('parent_id', sa.Uuid(), nullable=False),
    sa.Column('child_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['skill.id'], name=op.f('fk_skill_link_child_id_skill'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['skill.id'], name=op.f('fk_skill_link_parent_id_skill'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('parent_id', 'child_id', name=op.f('pk_skill_link'))
    )
    op.create_index('ix_skill_link_child_id', 'skill_link', ['child_id'], unique=False)
    op.create_table('skill_version',
    sa.Column('skill_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('parent_version', sa.Integer(), nullable=True),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('files', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('diff', sa.Text(), nullable=False),
    sa.Column('changed_share', sa.Float(), nullable=False),
    sa.Column('change', sa.Enum('created', 'improved', 'description_optimised', 'rewritten', 'rolled_back', 'retired', 'rejected', name='skill_event_kind'), nullable=False),
    sa.Column('rewrite_reason', sa.Text(), nullable=True),
    sa.Column('distiller', sa.String(length=32), nullable=False),
    sa.Column('llm_model', sa.String(length=128), nullable=True),
    sa.Column('prompt_hash', sa.String(length=64), nullable=True),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('evidence_runs', sa.Integer(), nullable=False),
    sa.Column('evidence_successes', sa.Integer(), nullable=False),
    sa.Column('evidence_failures', sa.Integer(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['skill_id'], ['skill.id'], name=op.f('fk_skill_version_skill_id_skill'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skill_version'))
    )
    op.create_index('ix_skill_version_content_fts', 'skill_version', [sa.literal_column("to_tsvector('english', content)")], unique=False, postgresql_using='gin')
    op.create_index('uq_skill_version_skill_id_version', 'skill_version', ['skill_id', 'version'], unique=True)
    op.create_table('skill_version_evidence',
    sa.Column('version_id', sa.Uuid(), nullable=False),
    sa.Column('trajectory_id', sa.Uuid(), nullable=False),
    sa.Column('agent_id', sa.String(length=256), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['trajectory_id'], ['trajectory.id'], name=op.f('fk_skill_version_evidence_trajectory_id_trajectory'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['skill_version.id'], name=op.f('fk_skill_version_evidence_version_id_skill_version'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'trajectory_id', name=op.f('pk_skill_version_evidence'))
    )
    op.create_index('ix_skill_version_evidence_trajectory_id', 'skill_version_evidence', ['trajectory_id'], unique=False)
    op.add_column('experience', sa.Column('skill_id', sa.Uuid(), nullable=True))
    op.create_index('ix_experience_skill_id', 'experience', ['skill_id'], unique=False)
    op.create_foreign_key(op.f('fk_experience_skill_id_skill'), 'experience', 'skill', ['skill_id'], ['id'], ondelete='SET NULL')
    op.add_column('trajectory', sa.Column('task_cluster_id', sa.Uuid(), nullable=True))
    op.add_column('trajectory', sa.Column('skills_seen_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_trajectory_task_cluster_id', 'trajectory', ['task_cluster_id'], unique=False)
    op.create_index('ix_trajectory_tenant_id_skills_pending', 'trajectory', ['tenant_id'], unique=False, postgresql_where=sa.text('skills_seen_at IS NULL'))
    op.create_foreign_key(op.f('fk_trajectory_task_cluster_id_task_cluster'), 'trajectory', 'task_cluster', ['task_cluster_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    op.drop_constraint(op.f('fk_trajectory_task_cluster_id_task_cluster'), 'trajectory', type_='foreignkey')
    op.drop_index('ix_trajectory_tenant_id_skills_pending', table_name='trajectory', postgresql_where=sa.text('skills_seen_at IS NULL'))
    op.drop_index('ix_trajectory_task_cluster_id', table_name='trajectory')
    op.drop_column('trajectory', 'skills_seen_at')
    op.drop_column('trajectory', 'task_cluster_id')
    op.drop_constraint(op.f('fk_experience_skill_id_skill'), 'experience', type_='foreignkey')
    op.drop_index('ix_experience_skill_id', table_name='experience')
    op.drop_column('experience', 'skill_id')
    op.drop_index('ix_skill_version_evidence_trajectory_id', table_name='skill_version_evidence')
    op.drop_table('skill_version_evidence')
    op.drop_index('uq_skill_version_skill_id_version', table_name='skill_version')
    op.drop_index('ix_skill_version_content_fts', table_name='skill_version', postgresql_using='gin')
    op.drop_table('skill_version')
    op.drop_index('ix_skill_link_child_id', table_name='skill_link')
    op.drop_table('skill_link')
    op.drop_index('ix_skill_event_skill_id_created_at', table_name='skill_event')
    op.drop_table('skill_event')
    op.drop_index('uq_skill_tenant_id_source_key', table_name='skill')
    op.drop_index('uq_skill_tenant_id_name', table_name='skill')
    op.drop_index('ix_skill_tenant_id_level_status', table_name='skill')
    op.drop_index('ix_skill_task_cluster_id', table_name='skill')
    op.drop_index('ix_skill_embedding_hnsw', table_name='skill', postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'embedding': 'vector_cosine_ops'})
    op.drop_table('skill')
    op.drop_index('ix_task_cluster_tenant_id_domain', table_name='task_cluster')
    op.drop_index('ix_task_cluster_centroid_hnsw', table_name='task_cluster', postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'centroid': 'vector_cosine_ops'})
    op.drop_table('task_cluster')
    for name in ('skill_event_kind', 'skill_status', 'skill_level'):
        sa.Enum(name=name).drop(op.get_bind(), checkfirst=True)
