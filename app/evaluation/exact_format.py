"""Reader and writer for the EXACT text export (see DESIGN.md, "Data formats").

One line per object with 11 `|`-separated fields, plus open/close lines, blank lines, `not in image` lines
and a template header that is not an image. Concord adds one line of its own: `SIMULATED_HEADER` first in
an export of a simulated study; the reader skips lines starting with `COMMENT_PREFIX`. Coordinates are pixels at level 0; timestamps are naive
local time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

OBJECT_FIELD_COUNT = 11
NOT_IN_IMAGE = "not in image"
TEMPLATE_HEADER = ("image name", "annotation type", NOT_IN_IMAGE)
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")
NO_EDITOR_VALUES = ("", "-1")
OPENED, CLOSED = 1, 2
COMMENT_PREFIX = "# concord:"
SIMULATED_HEADER = (
    f"{COMMENT_PREFIX} simulated study: run by simulated experts (concord simulate), not by people"
)
NAIVE_EPOCH = datetime(1970, 1, 1)


class ExactFormatError(ValueError):
    """A line that is none of the EXACT export's line variants."""

    def __init__(self, path: str, line_no: int, reason: str) -> None:
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path = path
        self.line_no = line_no
        self.reason = reason


@dataclass(frozen=True)
class ExactObject:
    """One annotation line; box corners in pixels, editors None when the export has '' or '-1'."""

    image: str
    label: str
    x1: int
    y1: int
    x2: int
    y2: int
    first_editor: str | None
    created: datetime
    last_editor: str | None
    last_edited: datetime
    uuid: str
    deleted: bool
    width: int
    height: int
    line_no: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ExactVisit:
    """An `[image|user|timestamp|1 or 2]` line: the user opened (1) or closed (2) the image."""

    image: str
    user: str
    at: datetime
    opened: bool
    line_no: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SkippedLine:
    line_no: int
    text: str
    reason: str


@dataclass
class ExactFile:
    """A parsed export; `image_order` lists images by first appearance in any counted line."""

    objects: list[ExactObject] = field(default_factory=list)
    visits: list[ExactVisit] = field(default_factory=list)
    empty_images: list[str] = field(default_factory=list)
    image_order: list[str] = field(default_factory=list)
    skipped: list[SkippedLine] = field(default_factory=list)

    def detection_order(self) -> list[ExactObject]:
        """Objects grouped by image in `image_order`, in file order inside an image."""
        rank = {image: index for index, image in enumerate(self.image_order)}
        return sorted(self.objects, key=lambda obj: rank[obj.image])


@dataclass(frozen=True)
class ExactArrays:
    """Objects as arrays for `app.evaluation.metrics`: boxes (N, 4) x1, y1, x2, y2 in pixels."""

    boxes: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]
    images: npt.NDArray[np.int64]
    deleted: npt.NDArray[np.bool_]
    widths: npt.NDArray[np.float64]
    heights: npt.NDArray[np.float64]
    last_edited_seconds: npt.NDArray[np.float64]

    def subset(self, mask: npt.NDArray[np.bool_]) -> ExactArrays:
        return ExactArrays(
            boxes=self.boxes[mask],
            labels=self.labels[mask],
            images=self.images[mask],
            deleted=self.deleted[mask],
            widths=self.widths[mask],
            heights=self.heights[mask],
            last_edited_seconds=self.last_edited_seconds[mask],
        )


def read_exact(path: str | Path) -> ExactFile:
    text = Path(path).read_text(encoding="utf-8-sig")
    return parse_exact(text, source=str(path))


def parse_exact(text: str, source: str = "<text>") -> ExactFile:
    parsed = ExactFile()
    seen_images: set[str] = set()
    for line_no, raw in enumerate(text.splitlines(), start=1):
        image = _parse_line(raw.strip("\r\n"), line_no, source, parsed)
        if image is not None and image not in seen_images:
            seen_images.add(image)
            parsed.image_order.append(image)
    return parsed


def _parse_line(line: str, line_no: int, source: str, parsed: ExactFile) -> str | None:
    """Adds the line to `parsed`; returns the image it names, or None for a skipped line."""
    if not line.strip():
        parsed.skipped.append(SkippedLine(line_no, line, "blank line"))
        return None
    if line.startswith(COMMENT_PREFIX):
        parsed.skipped.append(SkippedLine(line_no, line, "Concord comment"))
        return None
    if line.startswith("["):
        visit = _parse_visit(line, line_no, source)
        parsed.visits.append(visit)
        return visit.image
    fields = line.split("|")
    if len(fields) == len(TEMPLATE_HEADER):
        if tuple(fields) == TEMPLATE_HEADER:
            parsed.skipped.append(SkippedLine(line_no, line, "template header"))
            return None
        if fields[2] != NOT_IN_IMAGE:
            raise ExactFormatError(
                source,
                line_no,
                f"3 fields but the third is {fields[2]!r}, not {NOT_IN_IMAGE!r}",
            )
        parsed.empty_images.append(fields[0])
        return fields[0]
    if len(fields) != OBJECT_FIELD_COUNT:
        raise ExactFormatError(
            source,
            line_no,
            f"expected {OBJECT_FIELD_COUNT} fields, found {len(fields)}",
        )
    obj = _parse_object(fields, line_no, source)
    parsed.objects.append(obj)
    return obj.image


def _parse_visit(line: str, line_no: int, source: str) -> ExactVisit:
    if not line.endswith("]"):
        raise ExactFormatError(source, line_no, "open/close line without closing ']'")
    fields = line[1:-1].split("|")
    if len(fields) != 4:
        raise ExactFormatError(source, line_no, f"open/close line needs 4 fields, found {len(fields)}")
    image, user, timestamp, code = fields
    if code not in (str(OPENED), str(CLOSED)):
        raise ExactFormatError(source, line_no, f"open/close code must be 1 or 2, found {code!r}")
    at = _parse_timestamp(timestamp, line_no, source)
    return ExactVisit(image=image, user=user, at=at, opened=code == str(OPENED), line_no=line_no)


def _parse_object(fields: Sequence[str], line_no: int, source: str) -> ExactObject:
    (
        image,
        label,
        vector,
        first_editor,
        created,
        last_editor,
        last_edited,
        uuid,
        deleted,
        width,
        height,
    ) = fields
    if not image:
        raise ExactFormatError(source, line_no, "empty image name")
    x1, y1, x2, y2 = _parse_vector(vector, line_no, source)
    return ExactObject(
        image=image,
        label=label,
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        first_editor=_parse_editor(first_editor),
        created=_parse_timestamp(created, line_no, source),
        last_editor=_parse_editor(last_editor),
        last_edited=_parse_timestamp(last_edited, line_no, source),
        uuid=uuid,
        deleted=_parse_deleted(deleted, line_no, source),
        width=_parse_int(width, "width", line_no, source),
        height=_parse_int(height, "height", line_no, source),
        line_no=line_no,
    )


def _parse_vector(text: str, line_no: int, source: str) -> tuple[int, int, int, int]:
    # EXACT writes `{"x1": "207",...,}`: a trailing comma that JSON does not allow.
    try:
        vector = json.loads(text.replace(",}", "}"))
    except json.JSONDecodeError as error:
        raise ExactFormatError(source, line_no, f"vector is not readable: {error.msg}") from error
    if not isinstance(vector, dict):
        raise ExactFormatError(source, line_no, "vector is not an object")
    coordinates = []
    for key in ("x1", "y1", "x2", "y2"):
        if key not in vector:
            raise ExactFormatError(source, line_no, f"vector lacks {key}")
        coordinates.append(_parse_int(vector[key], key, line_no, source))
    x1, y1, x2, y2 = coordinates
    return x1, y1, x2, y2


def _parse_int(value: object, name: str, line_no: int, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ExactFormatError(source, line_no, f"{name} is not an integer: {value!r}")
    try:
        return int(value)
    except ValueError as error:
        raise ExactFormatError(source, line_no, f"{name} is not an integer: {value!r}") from error


def _parse_timestamp(text: str, line_no: int, source: str) -> datetime:
    for timestamp_format in TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(text, timestamp_format)
        except ValueError:
            continue
    raise ExactFormatError(source, line_no, f"timestamp {text!r} is not YYYY-MM-DD HH:MM:SS[.ffffff]")


def _parse_editor(text: str) -> str | None:
    return None if text in NO_EDITOR_VALUES else text


def _parse_deleted(text: str, line_no: int, source: str) -> bool:
    if text not in ("True", "False"):
        raise ExactFormatError(source, line_no, f"deleted must be True or False, found {text!r}")
    return text == "True"


def format_exact(objects: Iterable[ExactObject]) -> str:
    """EXACT lines (quoted vector with trailing comma) that `parse_exact` reads back to equal objects."""
    return "".join(_format_object(obj) + "\n" for obj in objects)


def _format_object(obj: ExactObject) -> str:
    vector = f'{{"x1": "{obj.x1}","y1": "{obj.y1}","x2": "{obj.x2}","y2": "{obj.y2}",}}'
    fields = (
        obj.image,
        obj.label,
        vector,
        obj.first_editor or "",
        _format_timestamp(obj.created),
        obj.last_editor or "",
        _format_timestamp(obj.last_edited),
        obj.uuid,
        str(obj.deleted),
        str(obj.width),
        str(obj.height),
    )
    return "|".join(fields)


def _format_timestamp(at: datetime) -> str:
    return at.isoformat(sep=" ")


def naive_seconds(at: datetime) -> float:
    """Seconds since 1970-01-01 of a naive local timestamp, taken as is (no time zone, no DST)."""
    return (at - NAIVE_EPOCH).total_seconds()


def index_of(names: Iterable[str]) -> dict[str, int]:
    """Stable integer ids in first-seen order: {'a': 0, 'b': 1}."""
    ids: dict[str, int] = {}
    for name in names:
        ids.setdefault(name, len(ids))
    return ids


def to_arrays(
    objects: Sequence[ExactObject], image_ids: dict[str, int], label_ids: dict[str, int]
) -> ExactArrays:
    """Objects in the given order as arrays; every image and label must have an id."""
    count = len(objects)
    return ExactArrays(
        boxes=np.array([(o.x1, o.y1, o.x2, o.y2) for o in objects], dtype=np.float64).reshape(count, 4),
        labels=np.array([label_ids[o.label] for o in objects], dtype=np.int64),
        images=np.array([image_ids[o.image] for o in objects], dtype=np.int64),
        deleted=np.array([o.deleted for o in objects], dtype=np.bool_),
        widths=np.array([o.width for o in objects], dtype=np.float64),
        heights=np.array([o.height for o in objects], dtype=np.float64),
        last_edited_seconds=np.array([naive_seconds(o.last_edited) for o in objects], dtype=np.float64),
    )
