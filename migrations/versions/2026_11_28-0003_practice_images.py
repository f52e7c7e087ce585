"""practice images: each image is for the study (unaided, aided) or for practice (training mode)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00

Training mode shows the reference after an image is done, so it must never work on a study image.
Existing images become study images.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE on both databases (SQLite >= 3.35): a batch copy of `image` on SQLite would break
# migration 0002's triggers, which name the table, and cascade-delete the image's rows.


def upgrade() -> None:
    op.add_column("image", sa.Column("purpose", sa.String(length=16), server_default="study", nullable=False))


def downgrade() -> None:
    op.execute("ALTER TABLE image DROP COLUMN purpose")
