"""object revisions per expert: an annotation write raises a counter of its (task, expert, mode), not the task's

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 22:10:00

Why: the triggers of migration 0002 updated the task row on every annotation write. On PostgreSQL that row
lock is held until the writing transaction commits, so every expert's edits on a task waited for each other
(an insert waited 130 ms on average at 16 experts). An expert's own edits come one after the other, so a
counter per (task, expert, mode) is seldom contended. A task's objects revision is now
task.objects_revision plus the sum of its counters: each write raises the sum, as it raised the column.
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = ("insert", "update", "delete")
RAISE_COUNTERS = (
    "INSERT INTO object_revision (task_id, expert_id, mode, revision) {groups} "
    "ON CONFLICT (task_id, expert_id, mode) DO UPDATE SET revision = object_revision.revision + 1"
)
OLD_BUMP = "UPDATE task SET objects_revision = objects_revision + 1 WHERE id IN ({images})"


def upgrade() -> None:
    op.create_table(
        "object_revision",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("expert_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_object_revision_task_id_task"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "expert_id", "mode", name=op.f("pk_object_revision")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_function(
            RAISE_COUNTERS.format(
                groups="SELECT DISTINCT image.task_id, changed.expert_id, changed.mode, 1 "
                "FROM changed JOIN image ON image.id = changed.image_id ORDER BY 1, 2, 3"
            )
        )
    else:
        _sqlite_triggers(_counter_bump)


def downgrade() -> None:
    op.execute(
        "UPDATE task SET objects_revision = objects_revision + COALESCE("
        "(SELECT SUM(revision) FROM object_revision WHERE object_revision.task_id = task.id), 0)"
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_function(
            OLD_BUMP.format(
                images="SELECT image.task_id FROM image JOIN changed ON changed.image_id = image.id"
            )
        )
    else:
        _sqlite_triggers(_task_bump)
    op.drop_table("object_revision")


def _postgresql_function(body: str) -> None:
    """The statement triggers of 0002 call this function: only its body changes."""
    op.execute(
        "CREATE OR REPLACE FUNCTION annotation_objects_revision() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {body}; RETURN NULL; END $$"
    )


def _counter_bump(names: tuple[str, ...]) -> str:
    groups = " UNION ".join(
        f"SELECT task_id, {name}.expert_id, {name}.mode, 1 FROM image WHERE id = {name}.image_id"
        for name in names
    )
    return RAISE_COUNTERS.format(groups=groups)


def _task_bump(names: tuple[str, ...]) -> str:
    image_ids = ", ".join(f"{name}.image_id" for name in names)
    return OLD_BUMP.format(images=f"SELECT task_id FROM image WHERE id IN ({image_ids})")


def _sqlite_triggers(bump: Callable[[tuple[str, ...]], str]) -> None:
    """Row triggers, as 0002's: SQLite has no statement triggers."""
    rows = {"insert": ("NEW",), "update": ("OLD", "NEW"), "delete": ("OLD",)}
    for event, names in rows.items():
        op.execute(f"DROP TRIGGER annotation_objects_revision_{event}")
        op.execute(
            f"CREATE TRIGGER annotation_objects_revision_{event} AFTER {event.upper()} ON annotation "
            f"BEGIN {bump(names)}; END"
        )
