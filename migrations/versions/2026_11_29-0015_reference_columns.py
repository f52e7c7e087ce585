"""reference columns: each task's reference rows (ground truth, suggestions, error register) as binary tables

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 18:20:00

The evaluation read every ground-truth object, suggestion and register entry of a study as Python tuples on
every evaluation. A task's rows of those three reads are now stored as float64 tables (`reference_columns`),
valid while their revision equals task.reference_revision, which database triggers raise on every write that
can change a row of those reads: an insert, update or delete of a ground-truth object, suggestion or injected
error; a change of an image's task or purpose, or its delete; a suggestion set moved to another task, or its
delete (a cascade deletes the child rows after their parent, when they no longer lead to the task). An image's
size is not watched: the tables hold the reads' rows, counted or not, and whether a box counts is decided from
the image sizes read on every evaluation. Reference rows change seldom (imports, new suggestion sets), so one
column on the task is raised, not a counter per writer.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = ("insert", "update", "delete")
RAISE = "UPDATE task SET reference_revision = reference_revision + 1 WHERE id IN ({tasks})"
RAISE_ONE = "UPDATE task SET reference_revision = reference_revision + 1 WHERE id = ({task})"
# table → (its column leading to the task, the table holding that key's task)
CHILDREN = {
    "ground_truth_object": ("image_id", "image"),
    "suggestion": ("suggestion_set_id", "suggestion_set"),
    "injected_error": ("suggestion_set_id", "suggestion_set"),
}
# table → its columns whose change moves its rows to another task or out of the reads
PARENTS = {"image": ("task_id", "purpose"), "suggestion_set": ("task_id",)}


def upgrade() -> None:
    op.add_column("task", sa.Column("reference_revision", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "reference_columns",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("layout", sa.Integer(), nullable=False),
        sa.Column("truth_rows", sa.Integer(), nullable=False),
        sa.Column("suggestion_rows", sa.Integer(), nullable=False),
        sa.Column("register_rows", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_reference_columns_task_id_task"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_reference_columns")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reference_columns ALTER COLUMN payload SET STORAGE EXTERNAL")  # as 0002's
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, event in _triggers():
        suffix = f" ON {table}" if postgresql else ""
        op.execute(f"DROP TRIGGER {table}_reference_revision_{event}{suffix}")
    if postgresql:
        for table in (*CHILDREN, *PARENTS):
            op.execute(f"DROP FUNCTION {table}_reference_revision()")
        op.execute("DROP FUNCTION moved_reference_revision()")
    op.drop_table("reference_columns")
    # Plain ALTER TABLE (SQLite ≥ 3.35): a batch copy of task would cascade-delete its rows.
    op.execute("ALTER TABLE task DROP COLUMN reference_revision")


def _triggers() -> list[tuple[str, str]]:
    return [
        *((table, event) for table in CHILDREN for event in EVENTS),
        *((table, event) for table in PARENTS for event in ("update", "delete")),
    ]


def _create_sqlite_triggers() -> None:
    """Row triggers: SQLite has no statement triggers. A cascade delete fires them too. Each looks its task up
    with `=`, not `IN`: five times cheaper per row (an IN list builds a temporary table each time)."""
    for table, (key, parent) in CHILDREN.items():
        old, new = (
            RAISE_ONE.format(task=f"SELECT task_id FROM {parent} WHERE id = {name}.{key}")
            for name in ("OLD", "NEW")
        )
        bodies = {
            "insert": new,
            "update": f"{old}; {new} AND NEW.{key} IS NOT OLD.{key}",
            "delete": old,
        }
        for event, body in bodies.items():
            op.execute(
                f"CREATE TRIGGER {table}_reference_revision_{event} AFTER {event.upper()} ON {table} "
                f"BEGIN {body}; END"
            )
    for table, columns in PARENTS.items():
        changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in columns)
        op.execute(
            f"CREATE TRIGGER {table}_reference_revision_update AFTER UPDATE OF {', '.join(columns)} "
            f"ON {table} WHEN {changed} BEGIN {RAISE.format(tasks='OLD.task_id, NEW.task_id')}; END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_reference_revision_delete AFTER DELETE ON {table} "
            f"BEGIN {RAISE_ONE.format(task='OLD.task_id')}; END"
        )


def _create_postgresql_triggers() -> None:
    """Statement triggers over transition tables for the rows' writes and deletes: one task update per
    statement, however many rows (a suggestion set's thousands of suggestions). A parent's update is a row
    trigger limited to the columns that matter (PostgreSQL gives no transition tables to triggers with a
    column list), so the many updates of other columns of an image or set never call it."""
    for table, (key, parent) in CHILDREN.items():
        task_of = f"SELECT task_id FROM {parent} WHERE id IN ({{keys}})"
        written = RAISE.format(tasks=task_of.format(keys=f"SELECT {key} FROM changed"))
        moved = RAISE.format(
            tasks=task_of.format(keys=f"SELECT {key} FROM changed UNION SELECT {key} FROM earlier")
        )
        _function(f"{table}_reference_revision", f"IF TG_OP = 'UPDATE' THEN {moved}; ELSE {written}; END IF")
        transition = {
            "insert": "NEW TABLE AS changed",
            "update": "OLD TABLE AS earlier NEW TABLE AS changed",
            "delete": "OLD TABLE AS changed",
        }
        for event, tables in transition.items():
            op.execute(
                f"CREATE TRIGGER {table}_reference_revision_{event} AFTER {event.upper()} ON {table} "
                f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {table}_reference_revision()"
            )
    _function("moved_reference_revision", RAISE.format(tasks="OLD.task_id, NEW.task_id"))
    for table, columns in PARENTS.items():
        _function(f"{table}_reference_revision", RAISE.format(tasks="SELECT task_id FROM changed"))
        op.execute(
            f"CREATE TRIGGER {table}_reference_revision_delete AFTER DELETE ON {table} "
            "REFERENCING OLD TABLE AS changed FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {table}_reference_revision()"
        )
        changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns)
        op.execute(
            f"CREATE TRIGGER {table}_reference_revision_update AFTER UPDATE OF {', '.join(columns)} "
            f"ON {table} FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION moved_reference_revision()"
        )


def _function(name: str, body: str) -> None:
    op.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$"
    )
