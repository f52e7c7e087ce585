"""training run: one classifier trained on experts' labels with BCE or VotesLoss, and its outcome

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("loss", sa.String(length=16), nullable=False),
        sa.Column("weighting", sa.String(length=16), nullable=False),
        sa.Column("experts", sa.JSON(), nullable=False),
        sa.Column("set_name", sa.String(length=200), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("best_val_accuracy", sa.Float(), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("device_reason", sa.Text(), nullable=False),
        sa.Column("weights_init", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("samples_per_s", sa.Float(), nullable=False),
        sa.Column("train_samples", sa.Integer(), nullable=False),
        sa.Column("val_samples", sa.Integer(), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("onnx_path", sa.Text(), nullable=True),
        sa.Column("onnx_sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_training_run_study_id_study"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_training_run_task_id_task"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_run")),
    )
    op.create_index(op.f("ix_training_run_study_id"), "training_run", ["study_id"], unique=False)
    op.create_index(op.f("ix_training_run_task_id"), "training_run", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_training_run_task_id"), table_name="training_run")
    op.drop_index(op.f("ix_training_run_study_id"), table_name="training_run")
    op.drop_table("training_run")
