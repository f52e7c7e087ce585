"""Request and response models of images and ground truth."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.annotations.schemas import Box
from app.schemas_common import FiniteFloat


class ImageOut(BaseModel):
    id: int
    task_id: int
    name: str
    width: int
    height: int
    microns_per_pixel: float | None
    file_format: str
    position: int
    levels: list[tuple[int, int]]


class GroundTruthIn(Box):
    image: Annotated[str, Field(min_length=1, description="image name within the task")]
    label: Annotated[str, Field(min_length=1)]
    difficulty: Annotated[FiniteFloat | None, Field(ge=0, le=1)] = None


class GroundTruthOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    image_id: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficulty: float | None


class GroundTruthUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    objects: Annotated[list[GroundTruthIn], Field(max_length=200_000)]
    replace: bool = False
