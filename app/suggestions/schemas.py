"""Request and response models of suggestion sets, their import, injection and the hidden register."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.annotations.schemas import Box
from app.schemas_common import FiniteFloat
from app.suggestions.protocols import Protocol

Box4 = Annotated[list[float], Field(min_length=4, max_length=4, description="x1, y1, x2, y2")]


class SuggestionIn(Box):
    """One suggested object of an import or a detector run; the box in level-0 pixels of its image."""

    image: Annotated[str, Field(min_length=1, description="image name within the task")]
    label: Annotated[str, Field(min_length=1)]
    score: Annotated[FiniteFloat, Field(ge=0.0, le=1.0)] = 1.0


class SuggestionSetImport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    notes: str = ""
    suggestions: Annotated[list[SuggestionIn], Field(max_length=200_000)]


class SuggestionSetOut(BaseModel):
    id: int
    task_id: int
    name: str
    source: str
    parent_id: int | None
    detector_model_id: int | None
    provider: str | None
    images_per_second: float | None
    protocol: dict[str, Any] | None
    notes: str
    locked_at: datetime | None
    created_at: datetime
    suggestion_count: int
    error_count: int


class SuggestionOut(BaseModel):
    id: int
    image_id: int
    image: str
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    position: int


class SuggestionSetDetail(SuggestionSetOut):
    suggestions: list[SuggestionOut]


class RegisterEntryOut(BaseModel):
    """A hidden register entry (admin only)."""

    id: int
    kind: str
    image_id: int
    image: str
    group: int | None
    score: float | None
    ref_label: str | None
    ref_box: Box4 | None
    shown_label: str | None
    shown_box: Box4 | None
    suggestion_id: int | None


class InjectionRequest(BaseModel):
    """A preset by name (with overrides) or a whole protocol document."""

    model_config = ConfigDict(extra="forbid")
    preset: str | None = None
    protocol: Protocol | None = None
    overrides: dict[str, Any] | None = None
    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None


class InjectionPreview(BaseModel):
    protocol: dict[str, Any]
    counts: dict[str, dict[str, int]]
    images: dict[str, list[str]]
    total: int
    shown_count: int


class InjectionOut(BaseModel):
    suggestion_set: SuggestionSetOut
    counts: dict[str, dict[str, int]]
    total: int
