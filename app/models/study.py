"""Studies, their tasks, label schemas, images, ground truth and expert assignments."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UTCDateTime, utcnow


class TaskKind(StrEnum):
    classify = "classify"
    grade = "grade"
    detect = "detect"


class Mode(StrEnum):
    training = "training"
    unaided = "unaided"
    aided = "aided"


class ImagePurpose(StrEnum):
    """Practice images serve training mode only; study images serve unaided and aided mode only."""

    study = "study"
    practice = "practice"


def purpose_of_mode(mode: str) -> ImagePurpose:
    """The images a mode works on: training on practice images, unaided and aided on study images."""
    return ImagePurpose.practice if mode == Mode.training else ImagePurpose.study


class AssignmentStatus(StrEnum):
    open = "open"
    finished = "finished"


class Study(CreatedAt, Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    washout_days: Mapped[int] = mapped_column(Integer, default=14)
    # Set for a study run by simulated experts (migration 0007): visits count wall seconds × this scale.
    simulation_time_scale: Mapped[float | None] = mapped_column(Float)
    simulation: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    @property
    def simulated(self) -> bool:
        return self.simulation_time_scale is not None


class Task(CreatedAt, Base):
    __tablename__ = "task"
    __table_args__ = (UniqueConstraint("study_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    default_box_size: Mapped[int] = mapped_column(Integer, default=50)
    # Raised by database triggers on every annotation write of the task (migration 0002).
    objects_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Raised by database triggers on every write of the task's reference rows (migration 0015).
    reference_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Label(Base):
    __tablename__ = "label"
    __table_args__ = (UniqueConstraint("task_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    colour: Mapped[str] = mapped_column(String(7))
    key: Mapped[str] = mapped_column(String(1))
    position: Mapped[int] = mapped_column(Integer)


class Image(CreatedAt, Base):
    """A patch, or a region (offset_x, offset_y, width, height) of a large tiled TIFF."""

    __tablename__ = "image"
    __table_args__ = (UniqueConstraint("task_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    file_format: Mapped[str] = mapped_column(String(8))
    file_width: Mapped[int] = mapped_column(Integer)
    file_height: Mapped[int] = mapped_column(Integer)
    offset_x: Mapped[int] = mapped_column(Integer, default=0)
    offset_y: Mapped[int] = mapped_column(Integer, default=0)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    microns_per_pixel: Mapped[float | None] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer, default=0)
    purpose: Mapped[str] = mapped_column(String(16), default=ImagePurpose.study, server_default="study")


class GroundTruthObject(Base):
    """A reference object; box in level-0 pixels of its image."""

    __tablename__ = "ground_truth_object"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("label.id", ondelete="CASCADE"))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    difficulty: Mapped[float | None] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer, default=0)


class ReferenceColumns(Base):
    """A task's reference rows for the evaluation, as float64 tables: its ground-truth objects, suggestions
    and error register (`app.evaluation.reference_columns` names the layout's columns).

    Derived data: valid only while `revision` equals `Task.reference_revision`, which database triggers raise
    on every write that can change one of those rows (migration 0015). `kinds`: the register's error kinds
    (JSON list), each coded by its position.
    """

    __tablename__ = "reference_columns"

    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    layout: Mapped[int] = mapped_column(Integer)
    truth_rows: Mapped[int] = mapped_column(Integer)
    suggestion_rows: Mapped[int] = mapped_column(Integer)
    register_rows: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Assignment(CreatedAt, Base):
    """Expert × task × mode; an aided one opens after the unaided one plus the washout period."""

    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("task_id", "expert_id", "mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=AssignmentStatus.open)
    suggestion_set_id: Mapped[int | None] = mapped_column(
        ForeignKey("suggestion_set.id", ondelete="RESTRICT"), index=True
    )
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    washout_override_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    washout_override_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    washout_override_reason: Mapped[str | None] = mapped_column(Text)


class ImageCompletion(Base):
    """An expert marked an image of an assignment as done."""

    __tablename__ = "image_completion"
    __table_args__ = (UniqueConstraint("assignment_id", "image_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime())
