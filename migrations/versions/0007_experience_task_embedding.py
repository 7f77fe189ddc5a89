"""experience.task_embedding: the embedding of the task a lesson was learned on

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 23:45:00.000000

Retrieval serves an experience to queries whose task is of the same kind (cosine of the task texts at
or over `retrieval_experience_task_fit`). Rows from before stay NULL and are served to every task, as
before; nothing here needs the model.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('experience', sa.Column('task_embedding', Vector(384), nullable=True))


def downgrade() -> None:
    op.drop_column('experience', 'task_embedding')
