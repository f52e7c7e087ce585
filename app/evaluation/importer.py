"""Import of EXACT text exports into a study: ground truth, suggestion sets, expert work, injected-error register.

All or nothing: every file is parsed and checked before the first row is written, and the caller's
transaction holds every write, so a malformed line (reported as `file:line: reason`) changes nothing.
Imported images have no pixels: `file_format` is 'missing' and `sha256` is empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from argon2 import PasswordHasher
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repository
from app.accounts import service as accounts
from app.errors import Conflict, Invalid
from app.evaluation import repository
from app.evaluation.exact_format import ExactFile, ExactFormatError, ExactObject, parse_exact
from app.evaluation.metrics import inside_image_mask
from app.evaluation.schemas import ImportedFileOut, ImportReport, ImportRole, SkippedLineOut
from app.images import repository as images_repository
from app.models import (
    Annotation,
    GroundTruthObject,
    Image,
    ImageView,
    InjectedError,
    Label,
    Origin,
    Role,
    Study,
    Suggestion,
    SuggestionSet,
    Task,
    TaskKind,
    User,
)
from app.models.base import utcnow
from app.studies import repository as studies_repository
from app.studies import service as studies
from app.studies.schemas import StudyCreate, TaskCreate

MISSING_FORMAT = "missing"
ERROR_KINDS = ("class_changed", "removed", "duplicate", "false_positive", "grade_shifted")
IMPORT_SOURCE = "import"


@dataclass(frozen=True)
class ImportFile:
    name: str
    text: str


@dataclass(frozen=True)
class ImportRequest:
    study: str
    task: str
    kind: str
    role: ImportRole
    mode: str | None = None
    expert: str | None = None
    error_kind: str | None = None
    group: int | None = None


@dataclass(frozen=True)
class ParsedFile:
    name: str
    parsed: ExactFile
    expert: str | None


@dataclass
class Target:
    """The study and task being imported into, with name → row maps that the import extends."""

    study: Study
    task: Task
    created_study: bool
    created_task: bool
    labels: dict[str, Label]
    images: dict[str, Image]
    new_labels: list[str]
    new_images: int = 0


async def import_exact(
    session: AsyncSession, request: ImportRequest, files: Sequence[ImportFile]
) -> ImportReport:
    """Parses and checks every file, then writes; raises Invalid/Conflict before or during writing."""
    check_request(request, len(files))
    parsed = [_parse(request, item) for item in files]
    sizes = _image_sizes(parsed)
    target = await _target(session, request, parsed, sizes)
    new_experts = await _ensure_experts(session, [item.expert for item in parsed if item.expert])
    suggestion_set_id = None
    reports = []
    for item in parsed:
        stored, set_id = await _store(session, request, target, item)
        suggestion_set_id = set_id if set_id is not None else suggestion_set_id
        reports.append(_file_report(request, item, stored, _size_report(item, target.images)))
    await session.flush()
    await repository.store_study_object_columns(session, target.study.id)
    return ImportReport(
        study=target.study.name,
        study_id=target.study.id,
        task=target.task.name,
        task_id=target.task.id,
        created_study=target.created_study,
        created_task=target.created_task,
        new_labels=target.new_labels,
        new_images=target.new_images,
        new_experts=new_experts,
        suggestion_set_id=suggestion_set_id,
        files=reports,
    )


def check_request(request: ImportRequest, file_count: int) -> None:
    if file_count == 0:
        raise Invalid("no files were sent")
    if request.kind not in tuple(TaskKind):
        raise Invalid(f"unknown task kind {request.kind!r}; use {', '.join(TaskKind)}")
    if request.role == "expert":
        if request.mode not in ("unaided", "aided"):
            raise Invalid("expert files need --mode unaided or aided")
        if request.expert and file_count > 1:
            raise Invalid("--expert names one expert: import one file per expert, or leave it out")
    if request.role == "injected" and request.error_kind not in ERROR_KINDS:
        raise Invalid(f"injected files need --error-kind, one of {', '.join(ERROR_KINDS)}")


# ---------------------------------------------------------------- reading and checking


def _parse(request: ImportRequest, item: ImportFile) -> ParsedFile:
    try:
        parsed = parse_exact(item.text.lstrip("\ufeff"), source=item.name)
    except ExactFormatError as error:
        raise Invalid(f"{error.path}:{error.line_no}: {error.reason}; nothing was imported") from error
    expert = _expert_of(request, item.name, parsed) if request.role == "expert" else None
    return ParsedFile(item.name, parsed, expert)


def _expert_of(request: ImportRequest, name: str, parsed: ExactFile) -> str:
    """--expert, else the user of most open/close lines, else the most frequent last editor."""
    if request.expert:
        return request.expert
    users = Counter(visit.user for visit in parsed.visits if visit.user)
    if not users:
        users = Counter(obj.last_editor for obj in parsed.objects if obj.last_editor)
    if not users:
        raise Invalid(f"{name}: cannot tell whose file this is; give --expert")
    return users.most_common(1)[0][0]


def _image_sizes(parsed: Sequence[ParsedFile]) -> dict[str, tuple[int, int]]:
    """Width and height of every image named by an object line, the first file's where files disagree.

    A file that gives one image two sizes contradicts itself and is refused; files that disagree with each
    other or with the task (scripts often write a placeholder size such as 10000×10000) are imported, and
    the report counts their lines (`_size_report`).
    """
    sizes: dict[str, tuple[int, int]] = {}
    for item in parsed:
        own: dict[str, tuple[int, int]] = {}
        for obj in item.parsed.objects:
            size = own.setdefault(obj.image, (obj.width, obj.height))
            if size != (obj.width, obj.height):
                raise Invalid(
                    f"{item.name}:{obj.line_no}: image {obj.image!r} is {obj.width}×{obj.height} here "
                    f"but {size[0]}×{size[1]} earlier in the same file; nothing was imported"
                )
        for name, size in own.items():
            sizes.setdefault(name, size)
    return sizes


# ---------------------------------------------------------------- study, task, labels, images, experts


async def _target(
    session: AsyncSession,
    request: ImportRequest,
    parsed: Sequence[ParsedFile],
    sizes: dict[str, tuple[int, int]],
) -> Target:
    label_names = list(dict.fromkeys(obj.label for item in parsed for obj in item.parsed.objects))
    study, created_study = await _study(session, request.study)
    task = await studies_repository.task_by_name(session, study.id, request.task)
    created_task = task is None
    if task is None:
        task = await _new_task(session, study, request, label_names)
    elif task.kind != request.kind:
        raise Conflict(f"task {task.name!r} is a {task.kind} task, not {request.kind}")
    labels = await studies.label_map(session, task.id)
    new_labels = [name for name in label_names if name not in labels]
    if not created_task:
        labels.update((label.name, label) for label in await studies.add_labels(session, task, new_labels))
    images = {image.name: image for image in await images_repository.images_of_task(session, task.id, None)}
    target = Target(study, task, created_study, created_task, labels, images, new_labels)
    await _ensure_images(session, target, parsed, sizes)
    return target


async def _study(session: AsyncSession, name: str) -> tuple[Study, bool]:
    study = await studies_repository.study_by_name(session, name)
    if study is not None:
        return study, False
    return await studies.create_study(session, StudyCreate(name=name)), True


async def _new_task(session: AsyncSession, study: Study, request: ImportRequest, labels: list[str]) -> Task:
    if not labels:
        raise Invalid("a new task needs labels, but the files hold no objects")
    try:
        data = TaskCreate.model_validate(
            {"name": request.task, "kind": request.kind, "labels": [{"name": name} for name in labels]}
        )
    except ValidationError as error:
        raise Invalid(f"cannot create task {request.task!r}: {error.errors()[0]['msg']}") from error
    task, _ = await studies.create_task(session, study, data)
    return task


async def _ensure_images(
    session: AsyncSession,
    target: Target,
    parsed: Sequence[ParsedFile],
    sizes: dict[str, tuple[int, int]],
) -> None:
    """Creates images by name in first-seen order; size 0×0 until a file with objects on it tells the size."""
    position = await images_repository.next_image_position(session, target.task.id)
    for name in dict.fromkeys(image for item in parsed for image in item.parsed.image_order):
        width, height = sizes.get(name, (0, 0))
        image = target.images.get(name)
        if image is None:
            image = _missing_image(target.task, name, width, height, position)
            session.add(image)
            target.images[name] = image
            target.new_images += 1
            position += 1
        elif name in sizes:
            _check_size(image, width, height)
    await session.flush()


def _missing_image(task: Task, name: str, width: int, height: int, position: int) -> Image:
    if not name or len(name) > 300:
        raise Invalid(f"bad image name {name!r}")
    return Image(
        task_id=task.id,
        name=name,
        sha256="",
        file_format=MISSING_FORMAT,
        file_width=width,
        file_height=height,
        width=width,
        height=height,
        position=position,
    )


def _check_size(image: Image, width: int, height: int) -> None:
    """A size-less image takes the file's size; an image whose size the task knows keeps it."""
    if (image.width, image.height) == (0, 0) and image.file_format == MISSING_FORMAT:
        image.width = image.file_width = width
        image.height = image.file_height = height


def _size_report(item: ParsedFile, images: dict[str, Image]) -> tuple[int, int]:
    """(object lines whose size disagrees with the image's kept size, objects not deleted that then lie
    outside the image or on its border: within 2 px, so that no evaluation counts them)."""
    objects = [obj for obj in item.parsed.objects if obj.image in images]
    disagreeing = sum(
        (obj.width, obj.height) != (images[obj.image].width, images[obj.image].height) for obj in objects
    )
    kept = [obj for obj in objects if not obj.deleted]
    if not kept:
        return disagreeing, 0
    boxes = np.array([(obj.x1, obj.y1, obj.x2, obj.y2) for obj in kept], dtype=np.float64)
    widths = np.array([images[obj.image].width for obj in kept], dtype=np.float64)
    heights = np.array([images[obj.image].height for obj in kept], dtype=np.float64)
    return disagreeing, int(np.count_nonzero(~inside_image_mask(boxes, widths, heights)))


async def _ensure_experts(session: AsyncSession, names: list[str]) -> list[str]:
    created = []
    for name in dict.fromkeys(names):
        if await accounts_repository.user_by_name(session, name) is None:
            await accounts.create_user(session, PasswordHasher(), name, Role.expert, None)
            created.append(name)
    return created


# ---------------------------------------------------------------- writing each role


async def _store(
    session: AsyncSession, request: ImportRequest, target: Target, item: ParsedFile
) -> tuple[int, int | None]:
    """Stores the file's rows; returns how many, and the suggestion set written to, if any."""
    if request.role == "expert":
        return await _store_expert(session, request, target, item), None
    if request.role == "ground-truth":
        return await _store_ground_truth(session, target, item), None
    if request.role == "suggestions":
        return await _store_suggestions(session, target, item)
    return await _store_register(session, request, target, item)


async def _store_expert(
    session: AsyncSession, request: ImportRequest, target: Target, item: ParsedFile
) -> int:
    assert item.expert is not None
    assert request.mode is not None
    expert = await accounts_repository.user_by_name(session, item.expert)
    assert expert is not None, "_ensure_experts created every expert named"
    mode = request.mode
    if await repository.has_annotations(session, target.task.id, expert.id, mode):
        raise Conflict(f"{expert.name} already has {mode} annotations in task {target.task.name!r}")
    await _finished_assignment(session, target.task, expert, mode)
    session.add_all(_annotations(target, expert, mode, item.parsed.objects))
    session.add_all(_views(target, expert, mode, item.parsed.image_order))
    await session.flush()
    return len(item.parsed.objects)


async def _finished_assignment(session: AsyncSession, task: Task, expert: User, mode: str) -> None:
    """The expert's assignment of this task and mode, created finished when the import brings it."""
    if await studies_repository.assignment_for(session, expert.id, task.id, mode) is not None:
        return
    assignment = await studies.create_assignment(session, task, expert.name, mode, None)
    await studies.finish_assignment(session, assignment)
    assignment.opened_at = assignment.finished_at


def _annotations(target: Target, expert: User, mode: str, objects: list[ExactObject]) -> list[Annotation]:
    """Timestamps are stored as the file's naive local time (read back as such), microseconds kept."""
    return [
        Annotation(
            image_id=target.images[obj.image].id,
            expert_id=expert.id,
            mode=mode,
            label_id=target.labels[obj.label].id,
            x1=obj.x1,
            y1=obj.y1,
            x2=obj.x2,
            y2=obj.y2,
            origin=Origin.imported,
            deleted=obj.deleted,
            position=position,
            created_at=obj.created,
            updated_at=obj.last_edited,
        )
        for position, obj in enumerate(objects)
    ]


def _views(target: Target, expert: User, mode: str, image_order: list[str]) -> list[ImageView]:
    # image_view has no position column: first-appearance order is kept as microsecond steps of first_seen_at.
    start = utcnow()
    return [
        ImageView(
            image_id=target.images[name].id,
            expert_id=expert.id,
            mode=mode,
            first_seen_at=start + timedelta(microseconds=rank),
        )
        for rank, name in enumerate(image_order)
    ]


async def _store_ground_truth(session: AsyncSession, target: Target, item: ParsedFile) -> int:
    if await repository.has_ground_truth(session, target.task.id):
        raise Conflict(f"task {target.task.name!r} has ground truth already")
    kept = [obj for obj in item.parsed.objects if not obj.deleted]
    session.add_all(
        GroundTruthObject(
            image_id=target.images[obj.image].id,
            label_id=target.labels[obj.label].id,
            x1=obj.x1,
            y1=obj.y1,
            x2=obj.x2,
            y2=obj.y2,
            position=position,
        )
        for position, obj in enumerate(kept)
    )
    await session.flush()
    return len(kept)


async def _store_suggestions(session: AsyncSession, target: Target, item: ParsedFile) -> tuple[int, int]:
    suggestion_set = SuggestionSet(
        task_id=target.task.id, name=item.name[:200], source=IMPORT_SOURCE, notes="imported EXACT export"
    )
    session.add(suggestion_set)
    await session.flush()
    kept = [obj for obj in item.parsed.objects if not obj.deleted]
    session.add_all(
        Suggestion(
            suggestion_set_id=suggestion_set.id,
            image_id=target.images[obj.image].id,
            label_id=target.labels[obj.label].id,
            x1=obj.x1,
            y1=obj.y1,
            x2=obj.x2,
            y2=obj.y2,
            score=1.0,
            position=position,
        )
        for position, obj in enumerate(kept)
    )
    await session.flush()
    return len(kept), suggestion_set.id


async def _store_register(
    session: AsyncSession, request: ImportRequest, target: Target, item: ParsedFile
) -> tuple[int, int]:
    register = await _register_set(session, target.task)
    start = await repository.next_register_position(session, register.id)
    kept = [obj for obj in item.parsed.objects if not obj.deleted]
    session.add_all(
        InjectedError(
            suggestion_set_id=register.id,
            image_id=target.images[obj.image].id,
            kind=request.error_kind,
            group=request.group,
            ref_label_id=target.labels[obj.label].id,
            ref_x1=obj.x1,
            ref_y1=obj.y1,
            ref_x2=obj.x2,
            ref_y2=obj.y2,
            position=start + offset,
        )
        for offset, obj in enumerate(kept)
    )
    await session.flush()
    return len(kept), register.id


async def _register_set(session: AsyncSession, task: Task) -> SuggestionSet:
    """The task's imported register: an injected suggestion set without suggestions of its own."""
    register = await repository.imported_register(session, task.id)
    if register is None:
        register = SuggestionSet(
            task_id=task.id,
            name=repository.IMPORTED_REGISTER_NAME,
            source=repository.INJECTED_SOURCE,
            notes="register entries imported from EXACT files; shown boxes unknown",
        )
        session.add(register)
        await session.flush()
    return register


# ---------------------------------------------------------------- report


def _file_report(
    request: ImportRequest, item: ParsedFile, stored: int, sizes: tuple[int, int]
) -> ImportedFileOut:
    parsed = item.parsed
    skipped = [
        SkippedLineOut(line=line.line_no, reason=line.reason, text=line.text) for line in parsed.skipped
    ]
    if request.role != "expert":
        skipped += [
            SkippedLineOut(line=obj.line_no, reason="deleted object: not a reference, suggestion or entry")
            for obj in parsed.objects
            if obj.deleted
        ]
        skipped += [
            SkippedLineOut(line=visit.line_no, reason="open/close line: only expert files record views")
            for visit in parsed.visits
        ]
    return ImportedFileOut(
        file=item.name,
        role=request.role,
        expert=item.expert,
        mode=request.mode if request.role == "expert" else None,
        objects=len(parsed.objects),
        deleted=sum(obj.deleted for obj in parsed.objects),
        visits=len(parsed.visits),
        empty_images=len(parsed.empty_images),
        images=len(parsed.image_order),
        stored=stored,
        size_disagreements=sizes[0],
        outside_image=sizes[1],
        skipped=sorted(skipped, key=lambda line: line.line),
    )
