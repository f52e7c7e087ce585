"""One training run: a classifier trained on one set of experts' labels with one loss, and its outcome."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class TrainingRun(Base):
    __tablename__ = "training_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    loss: Mapped[str] = mapped_column(String(16))
    weighting: Mapped[str] = mapped_column(String(16))
    experts: Mapped[list[str]] = mapped_column(JSON)
    set_name: Mapped[str] = mapped_column(String(200))
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    device_reason: Mapped[str] = mapped_column(Text, default="")
    weights_init: Mapped[str] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float)
    samples_per_s: Mapped[float] = mapped_column(Float)
    train_samples: Mapped[int] = mapped_column(Integer)
    val_samples: Mapped[int] = mapped_column(Integer)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    onnx_path: Mapped[str | None] = mapped_column(Text)
    onnx_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
