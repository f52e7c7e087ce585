"""Request and response models of images and ground truth."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.annotations.schemas import Box
from app.models import ImagePurpose
from app.schemas_common import FiniteFloat

# Written out: the generated schema of a tuple (prefixItems) reaches OpenAPI tools as an invalid `items` list.
LEVELS_SCHEMA = {
    "type": "array",
    "description": "width and height in pixels of each pyramid level, level 0 first",
    "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
}


class ImageOut(BaseModel):
    id: int
    task_id: int
    name: str
    width: int
    height: int
    microns_per_pixel: float | None
    file_format: str
    position: int
    purpose: Annotated[ImagePurpose, Field(description="study (unaided, aided) or practice (training)")]
    levels: Annotated[list[tuple[int, int]], WithJsonSchema(LEVELS_SCHEMA)]


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
