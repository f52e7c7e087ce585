"""Rules of suggestion sets: all-or-nothing imports, immutable sets, injection with its hidden register.

A suggestion set never changes once written; injecting errors makes a new set (source ``injected``,
``parent_id`` the source set, the resolved protocol stored with it) plus its register entries. Every
function here is for admins; routes check the role, experts never reach a set or its register.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Invalid, NotFound
from app.images import repository as images_repository
from app.images.placement import place_named
from app.models import Image, InjectedError, Label, Suggestion, SuggestionSet, Task
from app.offload import Compute, in_thread
from app.studies import repository as studies_repository
from app.suggestions import protocols, repository
from app.suggestions.protocols import InjectionResult, Protocol, ProtocolError, TaskInput, TaskObject
from app.suggestions.schemas import (
    InjectionOut,
    InjectionPreview,
    InjectionRequest,
    RegisterEntryOut,
    SuggestionIn,
    SuggestionOut,
    SuggestionSetDetail,
    SuggestionSetOut,
)

CREATED_SOURCES = ("detector", "import")
INJECTED = "injected"


async def get_set(session: AsyncSession, set_id: int) -> SuggestionSet:
    suggestion_set = await session.get(SuggestionSet, set_id)
    if suggestion_set is None:
        raise NotFound(f"no suggestion set {set_id}")
    return suggestion_set


async def create_suggestion_set(
    session: AsyncSession,
    task: Task,
    name: str,
    source: str,
    items: Sequence[SuggestionIn],
    detector_model_id: int | None = None,
    provider: str | None = None,
    images_per_second: float | None = None,
    notes: str = "",
) -> SuggestionSet:
    """All or nothing: unknown images or labels and boxes outside their image answer 422."""
    if source not in CREATED_SOURCES:
        raise Invalid(f"source must be one of {', '.join(CREATED_SOURCES)}, not {source!r}")
    images = {image.name: image for image in await images_repository.images_of_task(session, task.id)}
    labels = {label.name: label for label in await studies_repository.labels_of_task(session, task.id)}
    rows = [_suggestion_row(index, item, images, labels) for index, item in enumerate(items)]
    suggestion_set = SuggestionSet(
        task_id=task.id,
        name=name,
        source=source,
        detector_model_id=detector_model_id,
        provider=provider,
        images_per_second=images_per_second,
        notes=notes,
    )
    session.add(suggestion_set)
    await session.flush()
    for row in rows:
        row.suggestion_set_id = suggestion_set.id
    session.add_all(rows)
    await session.flush()
    return suggestion_set


def _suggestion_row(
    index: int, item: SuggestionIn, images: dict[str, Image], labels: dict[str, Label]
) -> Suggestion:
    box = (item.x1, item.y1, item.x2, item.y2)
    image, label = place_named(f"suggestion {index}", item.image, item.label, box, images, labels)
    return Suggestion(
        image_id=image.id,
        label_id=label.id,
        x1=item.x1,
        y1=item.y1,
        x2=item.x2,
        y2=item.y2,
        score=item.score,
        position=index,
    )


async def list_sets(session: AsyncSession, task: Task) -> list[SuggestionSetOut]:
    sets = await repository.sets_of_task(session, task.id)
    return await _describe_all(session, sets)


async def _describe_all(session: AsyncSession, sets: Sequence[SuggestionSet]) -> list[SuggestionSetOut]:
    ids = [suggestion_set.id for suggestion_set in sets]
    suggestions = await repository.suggestion_counts(session, ids)
    errors = await repository.error_counts(session, ids)
    return [_set_out(item, suggestions.get(item.id, 0), errors.get(item.id, 0)) for item in sets]


def _set_out(suggestion_set: SuggestionSet, suggestion_count: int, error_count: int) -> SuggestionSetOut:
    return SuggestionSetOut(
        id=suggestion_set.id,
        task_id=suggestion_set.task_id,
        name=suggestion_set.name,
        source=suggestion_set.source,
        parent_id=suggestion_set.parent_id,
        detector_model_id=suggestion_set.detector_model_id,
        provider=suggestion_set.provider,
        images_per_second=suggestion_set.images_per_second,
        protocol=suggestion_set.protocol,
        notes=suggestion_set.notes,
        locked_at=suggestion_set.locked_at,
        created_at=suggestion_set.created_at,
        suggestion_count=suggestion_count,
        error_count=error_count,
    )


async def describe_set(session: AsyncSession, suggestion_set: SuggestionSet) -> SuggestionSetOut:
    return (await _describe_all(session, [suggestion_set]))[0]


async def set_detail(session: AsyncSession, suggestion_set: SuggestionSet) -> SuggestionSetDetail:
    summary = await describe_set(session, suggestion_set)
    names = await _names(session, suggestion_set.task_id)
    suggestions = [
        SuggestionOut(
            id=row.id,
            image_id=row.image_id,
            image=names.images[row.image_id],
            label=names.labels[row.label_id],
            x1=row.x1,
            y1=row.y1,
            x2=row.x2,
            y2=row.y2,
            score=row.score,
            position=row.position,
        )
        for row in await repository.suggestions_of_set(session, suggestion_set.id)
    ]
    return SuggestionSetDetail(**summary.model_dump(), suggestions=suggestions)


class _Names:
    def __init__(self, images: dict[int, str], labels: dict[int, str]) -> None:
        self.images = images
        self.labels = labels


async def _names(session: AsyncSession, task_id: int) -> _Names:
    images = {image.id: image.name for image in await images_repository.images_of_task(session, task_id)}
    labels = {label.id: label.name for label in await studies_repository.labels_of_task(session, task_id)}
    return _Names(images, labels)


async def register(session: AsyncSession, suggestion_set: SuggestionSet) -> list[RegisterEntryOut]:
    names = await _names(session, suggestion_set.task_id)
    return [
        _entry_out(entry, names) for entry in await repository.register_of_set(session, suggestion_set.id)
    ]


def _entry_out(entry: InjectedError, names: _Names) -> RegisterEntryOut:
    ref = (entry.ref_x1, entry.ref_y1, entry.ref_x2, entry.ref_y2)
    shown = (entry.shown_x1, entry.shown_y1, entry.shown_x2, entry.shown_y2)
    return RegisterEntryOut(
        id=entry.id,
        kind=entry.kind,
        image_id=entry.image_id,
        image=names.images[entry.image_id],
        group=entry.group,
        score=entry.score,
        ref_label=None if entry.ref_label_id is None else names.labels[entry.ref_label_id],
        ref_box=_box(ref),
        shown_label=None if entry.shown_label_id is None else names.labels[entry.shown_label_id],
        shown_box=_box(shown),
        suggestion_id=entry.suggestion_id,
    )


def _box(values: tuple[float | None, ...]) -> tuple[float, float, float, float] | None:
    if any(value is None for value in values):
        return None
    x1, y1, x2, y2 = (float(value) for value in values if value is not None)
    return x1, y1, x2, y2


# --- injection -------------------------------------------------------------------------------------


def resolve(request: InjectionRequest) -> Protocol:
    document = None if request.protocol is None else request.protocol.model_dump(mode="json")
    try:
        return protocols.resolve_protocol(request.preset, document, request.overrides)
    except ProtocolError as error:
        raise Invalid(str(error)) from error


async def task_input(session: AsyncSession, suggestion_set: SuggestionSet) -> TaskInput:
    """The task and the source set as plain data for the pure protocol code."""
    task = await session.get(Task, suggestion_set.task_id)
    assert task is not None
    images = await images_repository.images_of_task(session, task.id)
    labels = await studies_repository.labels_of_task(session, task.id)
    truth = await images_repository.ground_truth_of_task(session, task.id)
    suggestions = await repository.suggestions_of_set(session, suggestion_set.id)
    return TaskInput(
        kind=task.kind,
        images=tuple(protocols.ImageInfo(i.id, i.name, i.width, i.height) for i in images),
        label_ids=tuple(label.id for label in labels),
        ground_truth=tuple(_plain(row, 1.0) for row in truth),
        suggestions=tuple(_plain(row, row.score) for row in suggestions),
        default_box_size=task.default_box_size,
    )


def _plain(row: Suggestion | Any, score: float) -> TaskObject:
    return TaskObject(row.image_id, row.label_id, protocols.Box(row.x1, row.y1, row.x2, row.y2), score)


async def _run(
    session: AsyncSession, suggestion_set: SuggestionSet, protocol: Protocol, compute: Compute
) -> InjectionResult:
    """Check the protocol's limits against the task, then apply it off the event loop."""
    task = await task_input(session, suggestion_set)
    try:
        protocols.check_limits(task, protocol)
    except ProtocolError as error:
        raise Invalid(str(error)) from error
    return await compute(_apply, task, protocol)


def _apply(task: TaskInput, protocol: Protocol) -> InjectionResult:
    try:
        return protocols.apply_protocol(task, protocol)
    except ProtocolError as error:
        raise Invalid(str(error)) from error


async def preview(
    session: AsyncSession,
    suggestion_set: SuggestionSet,
    request: InjectionRequest,
    compute: Compute = in_thread,
) -> InjectionPreview:
    """What an injection would make, counted per kind and difficulty group; writes nothing."""
    protocol = resolve(request)
    result = await _run(session, suggestion_set, protocol, compute)
    names = await _names(session, suggestion_set.task_id)
    images: dict[str, list[str]] = {}
    for entry in result.register:
        listed = images.setdefault(entry.kind.value, [])
        if names.images[entry.image_id] not in listed:
            listed.append(names.images[entry.image_id])
    return InjectionPreview(
        protocol=protocol.model_dump(mode="json"),
        counts=result.counts(),
        images=images,
        total=len(result.register),
        shown_count=len(result.shown),
    )


async def inject(
    session: AsyncSession,
    suggestion_set: SuggestionSet,
    request: InjectionRequest,
    compute: Compute = in_thread,
) -> InjectionOut:
    """Write the injected set and its register; the source set stays as it is.

    The protocol is applied by `compute` before anything is written (a request passes `ComputeDep`).
    """
    protocol = resolve(request)
    result = await _run(session, suggestion_set, protocol, compute)
    name = request.name or f"{suggestion_set.name} + {request.preset or 'protocol'} (seed {protocol.seed})"
    injected = SuggestionSet(
        task_id=suggestion_set.task_id,
        name=name[:200],
        source=INJECTED,
        parent_id=suggestion_set.id,
        detector_model_id=suggestion_set.detector_model_id,
        protocol={"preset": request.preset, **protocol.model_dump(mode="json")},
    )
    session.add(injected)
    await session.flush()
    await _write_result(session, injected, result)
    summary = await describe_set(session, injected)
    return InjectionOut(suggestion_set=summary, counts=result.counts(), total=len(result.register))


async def _write_result(session: AsyncSession, injected: SuggestionSet, result: InjectionResult) -> None:
    shown = [
        Suggestion(
            suggestion_set_id=injected.id,
            image_id=item.image_id,
            label_id=item.label_id,
            x1=item.box.x1,
            y1=item.box.y1,
            x2=item.box.x2,
            y2=item.box.y2,
            score=item.score,
            position=index,
        )
        for index, item in enumerate(result.shown)
    ]
    session.add_all(shown)
    await session.flush()
    session.add_all(
        _entry_row(injected.id, index, entry, shown) for index, entry in enumerate(result.register)
    )
    await session.flush()


def _entry_row(
    set_id: int, index: int, entry: protocols.RegisterEntry, shown: list[Suggestion]
) -> InjectedError:
    ref = entry.ref_box
    seen = entry.shown_box
    return InjectedError(
        suggestion_set_id=set_id,
        image_id=entry.image_id,
        kind=entry.kind.value,
        group=entry.group,
        score=entry.score,
        ref_label_id=entry.ref_label_id,
        ref_x1=None if ref is None else ref.x1,
        ref_y1=None if ref is None else ref.y1,
        ref_x2=None if ref is None else ref.x2,
        ref_y2=None if ref is None else ref.y2,
        shown_label_id=entry.shown_label_id,
        shown_x1=None if seen is None else seen.x1,
        shown_y1=None if seen is None else seen.y1,
        shown_x2=None if seen is None else seen.x2,
        shown_y2=None if seen is None else seen.y2,
        suggestion_id=None if entry.shown_index is None else shown[entry.shown_index].id,
        position=index,
    )
