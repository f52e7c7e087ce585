"""idempotent requests: an expert's keyed write, the fingerprint of what it asked for, and its answer

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:00:00

A retry with the same key gets the stored answer; the same key with another request is refused (422).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotent_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("expert_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["expert_id"],
            ["user_account.id"],
            name=op.f("fk_idempotent_request_expert_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotent_request")),
        sa.UniqueConstraint("expert_id", "key", name=op.f("uq_idempotent_request_expert_id_key")),
    )


def downgrade() -> None:
    op.drop_table("idempotent_request")
