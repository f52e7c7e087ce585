"""Request and response models of images, slides and ground truth."""

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

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
    tile_url: Annotated[
        str | None,
        Field(
            description="GET /images/{id} only: tile URL template with a signed grant; fill {level}, {col}, "
            "{row} (and ?size=, ?format= as for /tiles); valid with this request's credential until "
            "tile_url_expires_at"
        ),
    ] = None
    tile_url_expires_at: Annotated[int | None, Field(description="Unix seconds")] = None


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


class SlideOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    study_id: int
    name: str
    file_format: Annotated[
        str, Field(description="svs, ndpi, scn (read through OpenSlide), tiff, png or jpeg")
    ]
    width: int
    height: int
    level_count: int
    microns_per_pixel: float | None


class RegionIn(BaseModel):
    """A rectangle in the slide's level-0 pixels, or `hpf` high-power fields (0.237 mm² each, 4:3) centred
    on a point, sized from the slide's resolution."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=300)]
    x: Annotated[int | None, Field(ge=0)] = None
    y: Annotated[int | None, Field(ge=0)] = None
    width: Annotated[int | None, Field(ge=1)] = None
    height: Annotated[int | None, Field(ge=1)] = None
    center_x: Annotated[FiniteFloat | None, Field(ge=0)] = None
    center_y: Annotated[FiniteFloat | None, Field(ge=0)] = None
    hpf: Annotated[int | None, Field(ge=1, le=1000)] = None

    @model_validator(mode="after")
    def one_form(self) -> Self:
        rectangle = (self.x, self.y, self.width, self.height)
        fields = (self.center_x, self.center_y, self.hpf)
        if all(value is not None for value in rectangle) and all(value is None for value in fields):
            return self
        if all(value is not None for value in fields) and all(value is None for value in rectangle):
            return self
        raise ValueError("give either x, y, width and height, or center_x, center_y and hpf")


class SlideRegionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slide_id: int
    purpose: Annotated[ImagePurpose, Field(description="study (unaided, aided) or practice")] = (
        ImagePurpose.study
    )
    regions: Annotated[list[RegionIn], Field(min_length=1, max_length=1000)]
