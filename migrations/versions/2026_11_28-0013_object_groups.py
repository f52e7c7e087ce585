"""object groups: a digest of each (mode, expert, image) group of a task's annotations beside its object columns

Revision ID: 0013
Revises: 0011
Create Date: 2026-11-28 18:40:00

When a task's revision moved on, the evaluation compares these digests with the annotation table's and reads
again only the groups that changed (an expert's edit touches one), instead of every object of the task.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("object_columns", sa.Column("groups", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite ≥ 3.35), as 0002 drops its column
    op.execute("ALTER TABLE object_columns DROP COLUMN groups")
