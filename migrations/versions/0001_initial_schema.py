"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:53:38.533537
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table('tenant',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant')),
    sa.UniqueConstraint('name', name=op.f('uq_tenant_name'))
    )
    op.create_table('api_key',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.ARRAY(sa.String(length=16)), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_api_key_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_key_key_hash'))
    )
    op.create_index('ix_api_key_tenant_id_created_at', 'api_key', ['tenant_id', 'created_at'], unique=False)
    op.create_table('audit_log',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.String(length=128), nullable=False),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_audit_log_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_tenant_id_created_at', 'audit_log', ['tenant_id', 'created_at'], unique=False)
    op.create_table('event',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', name='event_status'), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_event_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event'))
    )
    op.create_index('ix_event_status_created_at', 'event', ['status', 'created_at'], unique=False)
    op.create_index('ix_event_tenant_id_created_at', 'event', ['tenant_id', 'created_at'], unique=False)
    op.create_table('idempotency_record',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('key', sa.String(length=256), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_idempotency_record_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'key', name=op.f('pk_idempotency_record'))
    )
    op.create_table('trajectory',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=True),
    sa.Column('task', sa.Text(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=True),
    sa.Column('agent_id', sa.String(length=256), nullable=False),
    sa.Column('session_id', sa.String(length=256), nullable=True),
    sa.Column('success', sa.Boolean(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('step_count', sa.Integer(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['event.id'], name=op.f('fk_trajectory_event_id_event'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_trajectory_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trajectory'))
    )
    op.create_index(op.f('ix_trajectory_event_id'), 'trajectory', ['event_id'], unique=False)
    op.create_index('ix_trajectory_tenant_id_agent_id', 'trajectory', ['tenant_id', 'agent_id'], unique=False)
    op.create_index('ix_trajectory_tenant_id_created_at_id', 'trajectory', ['tenant_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_trajectory_tenant_id_domain', 'trajectory', ['tenant_id', 'domain'], unique=False)
    op.create_index('ix_trajectory_tenant_id_session_id', 'trajectory', ['tenant_id', 'session_id'], unique=False)
    op.create_table('trajectory_step',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('trajectory_id', sa.Uuid(), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('observation', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('tool', sa.String(length=256), nullable=True),
    sa.Column('tool_input', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('tool_output', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('reward', sa.Float(), nullable=True),
    sa.Column('retrieval_id', sa.String(length=64), nullable=True),
    sa.Column('used_item_ids', sa.ARRAY(sa.String(length=128)), nullable=False),
    sa.Column('embedding', Vector(384), nullable=True),
    sa.Column('embedding_model', sa.String(length=128), nullable=True),
    sa.Column('embedded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_trajectory_step_tenant_id_tenant'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trajectory_id'], ['trajectory.id'], name=op.f('fk_trajectory_step_trajectory_id_trajectory'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trajectory_step')),
    sa.UniqueConstraint('trajectory_id', 'idx', name='uq_trajectory_step_trajectory_id_idx')
    )
    op.create_index('ix_trajectory_step_tenant_id', 'trajectory_step', ['tenant_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_trajectory_step_tenant_id', table_name='trajectory_step')
    op.drop_table('trajectory_step')
    op.drop_index('ix_trajectory_tenant_id_session_id', table_name='trajectory')
    op.drop_index('ix_trajectory_tenant_id_domain', table_name='trajectory')
    op.drop_index('ix_trajectory_tenant_id_created_at_id', table_name='trajectory')
    op.drop_index('ix_trajectory_tenant_id_agent_id', table_name='trajectory')
    op.drop_index(op.f('ix_trajectory_event_id'), table_name='trajectory')
    op.drop_table('trajectory')
    op.drop_table('idempotency_record')
    op.drop_index('ix_event_tenant_id_created_at', table_name='event')
    op.drop_index('ix_event_status_created_at', table_name='event')
    op.drop_table('event')
    op.drop_index('ix_audit_log_tenant_id_created_at', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_api_key_tenant_id_created_at', table_name='api_key')
    op.drop_table('api_key')
    op.drop_table('tenant')
    sa.Enum(name='event_status').drop(op.get_bind(), checkfirst=True)
    op.execute("DROP EXTENSION IF EXISTS vector")
