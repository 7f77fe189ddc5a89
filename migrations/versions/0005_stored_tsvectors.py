"""stored tsvector columns for full-text search

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:00:00

Full-text search matched and ranked `to_tsvector('english', ...)` computed per row: ranking a match
rebuilt its vector from the text, and for common words the planner scanned the table. Stored
generated columns, indexed with GIN, make both a lookup.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('experience', sa.Column(
        'text_tsv', postgresql.TSVECTOR(), sa.Computed("to_tsvector('english', text)", persisted=True), nullable=True,
    ))
    op.drop_index('ix_experience_text_fts', table_name='experience', postgresql_using='gin')
    op.create_index('ix_experience_text_tsv', 'experience', ['text_tsv'], unique=False, postgresql_using='gin')
    op.add_column('skill_version', sa.Column(
        'content_tsv', postgresql.TSVECTOR(), sa.Computed("to_tsvector('english', content)", persisted=True),
        nullable=True,
    ))
    op.drop_index('ix_skill_version_content_fts', table_name='skill_version', postgresql_using='gin')
    op.create_index(
        'ix_skill_version_content_tsv', 'skill_version', ['content_tsv'], unique=False, postgresql_using='gin'
    )


def downgrade() -> None:
    op.drop_index('ix_skill_version_content_tsv', table_name='skill_version', postgresql_using='gin')
    op.create_index(
        'ix_skill_version_content_fts', 'skill_version', [sa.literal_column("to_tsvector('english', content)")],
        unique=False, postgresql_using='gin',
    )
    op.drop_column('skill_version', 'content_tsv')
    op.drop_index('ix_experience_text_tsv', table_name='experience', postgresql_using='gin')
    op.create_index(
        'ix_experience_text_fts', 'experience', [sa.literal_column("to_tsvector('english', text)")],
        unique=False, postgresql_using='gin',
    )
    op.drop_column('experience', 'text_tsv')
