"""retrieval log and feedback

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:31:22.136831
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('retrieval',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('api_key_id', sa.Uuid(), nullable=True),
    sa.Column('session_id', sa.String(length=256), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('situation_hash', sa.String(length=64), nullable=False),
    sa.Column('strategy_skill_id', sa.Uuid(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('outcome', sa.Enum('success', 'failure', 'harmful', name='retrieval_outcome'), nullable=True),
    sa.Column('feedback_reason', sa.Text(), nullable=True),
    sa.Column('feedback_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_key.id'], name=op.f('fk_retrieval_api_key_id_api_key'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['strategy_skill_id'], ['skill.id'], name=op.f('fk_retrieval_strategy_skill_id_skill'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_retrieval_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retrieval'))
    )
    op.create_index('ix_retrieval_tenant_id_created_at', 'retrieval', ['tenant_id', 'created_at'], unique=False)
    op.create_index('ix_retrieval_tenant_id_session_id', 'retrieval', ['tenant_id', 'session_id'], unique=False)
    op.create_table('retrieval_session',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.String(length=256), nullable=False),
    sa.Column('strategy_skill_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['strategy_skill_id'], ['skill.id'], name=op.f('fk_retrieval_session_strategy_skill_id_skill'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_retrieval_session_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'session_id', name=op.f('pk_retrieval_session'))
    )
    op.create_table('retrieval_item',
    sa.Column('retrieval_id', sa.Uuid(), nullable=False),
    sa.Column('item_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Enum('skill', 'experience', name='item_kind'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('withheld', sa.Boolean(), nullable=False),
    sa.Column('used', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['retrieval_id'], ['retrieval.id'], name=op.f('fk_retrieval_item_retrieval_id_retrieval'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('retrieval_id', 'item_id', name=op.f('pk_retrieval_item'))
    )
    op.create_index('ix_retrieval_item_item_id', 'retrieval_item', ['item_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_retrieval_item_item_id', table_name='retrieval_item')
    op.drop_table('retrieval_item')
    op.drop_table('retrieval_session')
    op.drop_index('ix_retrieval_tenant_id_session_id', table_name='retrieval')
    op.drop_index('ix_retrieval_tenant_id_created_at', table_name='retrieval')
    op.drop_table('retrieval')
    for name in ('item_kind', 'retrieval_outcome'):
        sa.Enum(name=name).drop(op.get_bind(), checkfirst=True)
