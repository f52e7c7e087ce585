"""slides: whole slides of a study stored once, and the images that are regions of them

Revision ID: 0011
Revises: 0008
Create Date: 2026-11-28 16:00:00

A region of interest of a slide is an ordinary image row (the slide's SHA-256 and a window), so tiles,
annotations and evaluation need nothing new; slide_region records which slide it came from.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slide",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file_format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("level_count", sa.Integer(), nullable=False),
        sa.Column("microns_per_pixel", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_slide_study_id_study"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slide")),
        sa.UniqueConstraint("study_id", "name", name=op.f("uq_slide_study_id_name")),
    )
    op.create_index(op.f("ix_slide_study_id"), "slide", ["study_id"])
    op.create_index(op.f("ix_slide_sha256"), "slide", ["sha256"])
    op.create_table(
        "slide_region",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("slide_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["image.id"], name=op.f("fk_slide_region_image_id_image"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["slide_id"], ["slide.id"], name=op.f("fk_slide_region_slide_id_slide")),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_slide_region")),
    )
    op.create_index(op.f("ix_slide_region_slide_id"), "slide_region", ["slide_id"])


def downgrade() -> None:
    op.drop_table("slide_region")
    op.drop_table("slide")
