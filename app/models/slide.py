"""Whole slides of a study, stored once; their regions of interest are images of tasks."""

from sqlalchemy import Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class Slide(CreatedAt, Base):
    """A scanner's slide (or any large image) kept in the image store by SHA-256, not shown to experts."""

    __tablename__ = "slide"
    __table_args__ = (UniqueConstraint("study_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    file_format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    level_count: Mapped[int] = mapped_column(Integer)
    microns_per_pixel: Mapped[float | None] = mapped_column(Float)


class SlideRegion(Base):
    """An image that is a region of a slide: the image row holds the window, this row the provenance.

    A slide with regions cannot be deleted on its own (the study's deletion removes both)."""

    __tablename__ = "slide_region"

    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), primary_key=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slide.id"), index=True)
