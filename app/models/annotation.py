"""Expert annotations, their append-only event log, and image visits."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.study import Task


class Origin(StrEnum):
    expert = "expert"
    suggestion = "suggestion"
    suggestion_edited = "suggestion_edited"
    imported = "imported"


class EventKind(StrEnum):
    create = "create"
    move = "move"
    relabel = "relabel"
    delete = "delete"
    restore = "restore"
    accept = "accept"
    edit = "edit"


class Annotation(Base):
    """An expert's current object on an image in a mode; box in level-0 pixels of the image."""

    __tablename__ = "annotation"
    __table_args__ = (Index("ix_annotation_image_expert_mode", "image_id", "expert_id", "mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    expert_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    label_id: Mapped[int] = mapped_column(ForeignKey("label.id", ondelete="CASCADE"))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    origin: Mapped[str] = mapped_column(String(20), default=Origin.expert)
    suggestion_id: Mapped[int | None] = mapped_column(ForeignKey("suggestion.id", ondelete="SET NULL"))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class AnnotationEvent(Base):
    """Append-only: one row per edit, never updated."""

    __tablename__ = "annotation_event"
    __table_args__ = (
        UniqueConstraint("expert_id", "idempotency_key"),
        Index("ix_annotation_event_image_expert_mode", "image_id", "expert_id", "mode"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotation.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    expert_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    client_ts: Mapped[datetime | None] = mapped_column(UTCDateTime())
    server_ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))


class IdempotentRequest(Base):
    """An expert's write sent with an idempotency key, and its answer, for retries with the same key.

    `fingerprint` hashes what the request asked for (route, target and body, not the key or client time);
    a later request with the same key and another fingerprint is refused (IETF Idempotency-Key draft).
    The row is written in the transaction of the write it answers, so it exists exactly when the write does.
    """

    __tablename__ = "idempotent_request"
    __table_args__ = (UniqueConstraint("expert_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ImageVisit(Base):
    """Open, heartbeats and close of an image; gaps longer than the idle limit do not count."""

    __tablename__ = "image_visit"
    __table_args__ = (Index("ix_image_visit_image_expert_mode", "image_id", "expert_id", "mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    expert_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    active_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class ImageView(Base):
    """The order in which an expert first saw the images of a task in a mode (evaluation order)."""

    __tablename__ = "image_view"
    __table_args__ = (UniqueConstraint("image_id", "expert_id", "mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    expert_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    imported_seconds: Mapped[float | None] = mapped_column(Float)


class ObjectRevision(Base):
    """How often an expert's objects of a task in a mode were written: database triggers raise it on every
    annotation insert, update and delete (migration 0014). A task's objects revision is
    `task_objects_revision`: the task's own base plus the sum of these counters."""

    __tablename__ = "object_revision"

    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    expert_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)


def task_objects_revision(task_id: Any) -> Any:
    """The SQL expression of a task's objects revision: it rises with every write of the task's annotations."""
    counters = select(func.sum(ObjectRevision.revision)).where(ObjectRevision.task_id == task_id)
    return Task.objects_revision + func.coalesce(counters.scalar_subquery(), 0)


class ObjectColumns(Base):
    """A task's non-deleted expert objects as one binary float64 table, for the evaluation's read.

    Derived data: valid only while `revision` equals the task's objects revision (`task_objects_revision`),
    which database triggers raise on every annotation write (migrations 0002, 0014); `layout` names the table's columns
    (`app.evaluation.object_columns`).
    """

    __tablename__ = "object_columns"

    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    layout: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    groups: Mapped[bytes | None] = mapped_column(
        LargeBinary
    )  # `object_columns.GROUP_COLUMNS`, migration 0013
    built_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
