"""simulated study: a study run by simulated experts keeps its time scale and how it was simulated

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 12:00:00

Visits of a simulated study's images count their wall-clock seconds times the time scale, so a study run
X times faster than real time records the model's seconds per image. NULL: a study of real experts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("simulation_time_scale", sa.Float(), nullable=True))
        batch.add_column(sa.Column("simulation", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.drop_column("simulation")
        batch.drop_column("simulation_time_scale")
