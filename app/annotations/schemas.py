"""Request and response models of annotations, events and visits."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas_common import FiniteFloat

Coordinate = FiniteFloat


class Box(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x1: Coordinate
    y1: Coordinate
    x2: Coordinate
    y2: Coordinate


class AnnotationCreate(Box):
    label: Annotated[str, Field(min_length=1, max_length=100)]
    idempotency_key: Annotated[str | None, Field(min_length=8, max_length=100)] = None
    client_ts: datetime | None = None


class AnnotationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    x1: Coordinate | None = None
    y1: Coordinate | None = None
    x2: Coordinate | None = None
    y2: Coordinate | None = None
    label: Annotated[str | None, Field(min_length=1, max_length=100)] = None
    idempotency_key: Annotated[str | None, Field(min_length=8, max_length=100)] = None
    client_ts: datetime | None = None

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        parts = (self.x1, self.y1, self.x2, self.y2)
        if all(part is None for part in parts):
            return None
        if any(part is None for part in parts):
            raise ValueError("send all four of x1, y1, x2, y2 to move or resize")
        return (float(self.x1), float(self.y1), float(self.x2), float(self.y2))  # type: ignore[arg-type]


class StateChange(BaseModel):
    """Delete, restore or accept: the version the client saw, and an idempotency key."""

    model_config = ConfigDict(extra="forbid")
    version: int
    idempotency_key: Annotated[str | None, Field(min_length=8, max_length=100)] = None
    client_ts: datetime | None = None


class AnnotationOut(BaseModel):
    id: int
    image_id: int
    mode: str
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    origin: str
    deleted: bool
    version: int
    created_at: datetime
    updated_at: datetime


class EventOut(BaseModel):
    id: int
    annotation_id: int
    kind: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_ts: datetime | None
    server_ts: datetime
    idempotency_key: str | None


class VisitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    image_id: int
    mode: str
    opened_at: datetime
    last_seen_at: datetime
    closed_at: datetime | None
    active_seconds: float


class ClientTime(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_ts: datetime | None = None
    active: bool = True
