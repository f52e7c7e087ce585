"""Detector models, immutable suggestion sets, and the hidden register of injected errors."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UTCDateTime


class DetectorModel(CreatedAt, Base):
    __tablename__ = "detector_model"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    sidecar: Mapped[dict[str, Any]] = mapped_column(JSON)


class SuggestionSet(CreatedAt, Base):
    """Immutable once created; `source` is detector, import or injected."""

    __tablename__ = "suggestion_set"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("suggestion_set.id", ondelete="RESTRICT"))
    detector_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("detector_model.id", ondelete="RESTRICT")
    )
    protocol: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    provider: Mapped[str | None] = mapped_column(String(64))
    images_per_second: Mapped[float | None] = mapped_column(Float)
    notes: Mapped[str] = mapped_column(Text, default="")
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Suggestion(Base):
    __tablename__ = "suggestion"
    __table_args__ = (Index("ix_suggestion_set_image", "suggestion_set_id", "image_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    suggestion_set_id: Mapped[int] = mapped_column(ForeignKey("suggestion_set.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    label_id: Mapped[int] = mapped_column(ForeignKey("label.id", ondelete="CASCADE"))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float, default=1.0)
    position: Mapped[int] = mapped_column(Integer, default=0)


class InjectedError(Base):
    """Hidden register entry: never readable by an expert through any route or page."""

    __tablename__ = "injected_error"

    id: Mapped[int] = mapped_column(primary_key=True)
    suggestion_set_id: Mapped[int] = mapped_column(
        ForeignKey("suggestion_set.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    group: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    ref_label_id: Mapped[int | None] = mapped_column(ForeignKey("label.id", ondelete="CASCADE"))
    ref_x1: Mapped[float | None] = mapped_column(Float)
    ref_y1: Mapped[float | None] = mapped_column(Float)
    ref_x2: Mapped[float | None] = mapped_column(Float)
    ref_y2: Mapped[float | None] = mapped_column(Float)
    shown_label_id: Mapped[int | None] = mapped_column(ForeignKey("label.id", ondelete="CASCADE"))
    shown_x1: Mapped[float | None] = mapped_column(Float)
    shown_y1: Mapped[float | None] = mapped_column(Float)
    shown_x2: Mapped[float | None] = mapped_column(Float)
    shown_y2: Mapped[float | None] = mapped_column(Float)
    suggestion_id: Mapped[int | None] = mapped_column(ForeignKey("suggestion.id", ondelete="SET NULL"))
    position: Mapped[int] = mapped_column(Integer, default=0)
