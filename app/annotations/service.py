"""Editing rules: one transaction and one appended event per edit, idempotent retries, stale versions."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.annotations import repository
from app.annotations.schemas import (
    AnnotationCreate,
    AnnotationOut,
    AnnotationUpdate,
    StateChange,
    VisitOut,
)
from app.errors import AppError, Conflict, Forbidden, Invalid, NotFound
from app.evaluation import metrics
from app.images import repository as images_repository
from app.images.placement import check_box
from app.models import (
    Annotation,
    AnnotationEvent,
    Assignment,
    AssignmentStatus,
    EventKind,
    GroundTruthObject,
    Image,
    ImagePurpose,
    ImageView,
    ImageVisit,
    Label,
    Mode,
    Origin,
    Study,
    Task,
    User,
)
from app.models.base import utcnow
from app.observability.metrics import note_inserted_edit
from app.simulation import repository as simulation_repository
from app.studies import repository as studies_repository
from app.studies import service as studies


@dataclass(frozen=True)
class Workspace:
    """What every edit needs: who edits which image of which task in which mode, and the labels."""

    user: User
    image: Image
    task: Task
    assignment: Assignment
    labels_by_name: dict[str, Label]
    # the user's own object an edit is on, as the statement that authorised the edit read it in the edit's
    # transaction (untracked); None when the edit reads it itself
    annotation: Annotation | None = None

    @property
    def labels_by_id(self) -> dict[int, Label]:
        return {label.id: label for label in self.labels_by_name.values()}


MODES = frozenset(Mode)


async def find_workspace(session: AsyncSession, user: User, image_id: int, mode: str) -> Workspace:
    """The expert's workspace for reading: authorised as for editing, and changes nothing. An image not
    opened yet shows what exists (in aided mode no objects: the suggestions are copied by the open)."""
    row = await _open_row(session, user, image_id, mode)
    return await _workspace(session, user, image_id, mode, row)


async def open_workspace(session: AsyncSession, user: User, image_id: int, mode: str) -> Workspace:
    """The expert's workspace for writing: the first call opens the assignment and the image (see
    `_first_open`), later ones change nothing. A finished assignment is not opened: it can no longer change."""
    row = await _open_row(session, user, image_id, mode)
    workspace = await _workspace(session, user, image_id, mode, row)
    if row is not None and row.seen and row.assignment.opened_at is not None:
        return workspace  # the usual path of an edit: opened before
    if workspace.assignment.status != AssignmentStatus.finished:
        await session.run_sync(_open_first_time, workspace)
    return workspace


async def _open_row(
    session: AsyncSession, user: User, image_id: int, mode: str
) -> repository.WorkspaceRow | None:
    """The workspace in one query on the usual path (an open assignment); None sends the caller to the
    checked path, which answers the precise 403/404/422."""
    row = await repository.workspace_row(session, user.id, image_id, mode) if mode in MODES else None
    if row is None:
        return None
    is_open, _ = await studies.assignment_opens_at(session, row.assignment, row.study)
    return row if is_open else None


async def _workspace(
    session: AsyncSession, user: User, image_id: int, mode: str, row: repository.WorkspaceRow | None
) -> Workspace:
    if row is None:
        return await _checked_workspace(session, user, image_id, mode)
    labels = {label.name: label for label in row.labels}
    return Workspace(
        user=user, image=row.image, task=row.task, assignment=row.assignment, labels_by_name=labels
    )


async def _checked_workspace(session: AsyncSession, user: User, image_id: int, mode: str) -> Workspace:
    image = await studies.get_image(session, user, image_id)
    studies.require_image_of_mode(image, mode)
    task = await studies.get_task(session, user, image.task_id)
    assignment = await studies.working_assignment(session, user, task, mode)
    labels = await studies.label_map(session, task.id)
    return Workspace(user=user, image=image, task=task, assignment=assignment, labels_by_name=labels)


async def workspace_of_annotation(
    session: AsyncSession, user: User, annotation_id: int
) -> tuple[Workspace, Annotation]:
    annotation = await session.get(Annotation, annotation_id)
    if annotation is None or annotation.expert_id != user.id:
        raise NotFound(f"no annotation {annotation_id}")
    workspace = await open_workspace(session, user, annotation.image_id, annotation.mode)
    return workspace, annotation


def _open_first_time(session: Session, workspace: Workspace) -> None:
    """Open the assignment (the first time) and record the first sight of the image (`_first_open`)."""
    studies.open_assignment_in(session, workspace.assignment)
    _first_open(session, workspace)


def _first_open(session: Session, workspace: Workspace) -> None:
    """Record the first sight of the image; in aided mode the suggestions become the expert's objects."""
    user, image, mode = workspace.user, workspace.image, workspace.assignment.mode
    if repository.image_view(session, image.id, user.id, mode):
        return
    try:
        with session.begin_nested():
            session.add(ImageView(image_id=image.id, expert_id=user.id, mode=mode))
            session.flush()
            if mode == Mode.aided and workspace.assignment.suggestion_set_id is not None:
                _seed_suggestions(session, workspace, workspace.assignment.suggestion_set_id)
    except IntegrityError:
        pass  # a concurrent request recorded the first open and seeded the suggestions


def _seed_suggestions(session: Session, workspace: Workspace, suggestion_set_id: int) -> None:
    """Copy the set's objects in an order shuffled per assignment and image, so that neither the order nor
    the ids tell injected objects (appended last to their set) from the others; seeded, so reproducible."""
    suggestions = list(repository.suggestions_of(session, suggestion_set_id, workspace.image.id))
    rng = np.random.default_rng([workspace.assignment.id, workspace.user.id, workspace.image.id])
    order = rng.permutation(len(suggestions))
    for position, suggestion in enumerate(suggestions[index] for index in order):
        session.add(
            Annotation(
                image_id=workspace.image.id,
                expert_id=workspace.user.id,
                mode=workspace.assignment.mode,
                label_id=suggestion.label_id,
                x1=suggestion.x1,
                y1=suggestion.y1,
                x2=suggestion.x2,
                y2=suggestion.y2,
                origin=Origin.suggestion,
                suggestion_id=suggestion.id,
                position=position,
            )
        )
    session.flush()


def resolve_label(workspace: Workspace, name: str) -> Label:
    label = workspace.labels_by_name.get(name)
    if label is None:
        known = ", ".join(workspace.labels_by_name)
        raise Invalid(f"unknown label {name!r}; this task's labels are: {known}")
    return label


def state_of(annotation: Annotation, labels_by_id: dict[int, Label]) -> dict[str, Any]:
    return {
        "x1": annotation.x1,
        "y1": annotation.y1,
        "x2": annotation.x2,
        "y2": annotation.y2,
        "label": labels_by_id[annotation.label_id].name,
        "deleted": annotation.deleted,
        "origin": annotation.origin,
    }


def to_out(annotation: Annotation, labels_by_id: dict[int, Label]) -> AnnotationOut:
    return AnnotationOut(
        id=annotation.id,
        image_id=annotation.image_id,
        mode=annotation.mode,
        label=labels_by_id[annotation.label_id].name,
        x1=annotation.x1,
        y1=annotation.y1,
        x2=annotation.x2,
        y2=annotation.y2,
        origin=annotation.origin,
        deleted=annotation.deleted,
        version=annotation.version,
        created_at=annotation.created_at,
        updated_at=annotation.updated_at,
    )


def workspace_by_token(
    session: Session, token_hash: str, image_id: int, mode: str, opens: bool = True
) -> Workspace | None:
    """An edit's authorisation in one statement, in the edit's own transaction: the bearer token's user and
    its workspace on the image, opened as `open_workspace` opens it (unless `opens` is False: then an image
    not opened before is left to the caller). None when the token, the workspace or the usual path fails:
    the caller then authorises step by step, which answers the precise 401/403/404/409/422."""
    now = utcnow()
    row = repository.authorised_image_row(session, token_hash, now, image_id, mode)
    return _authorised_workspace(session, row, now, opens)


def annotation_workspace_by_token(session: Session, token_hash: str, annotation_id: int) -> Workspace | None:
    """As `workspace_by_token`, for the workspace of the token's user's own object."""
    now = utcnow()
    row = repository.authorised_annotation_row(session, token_hash, now, annotation_id)
    return _authorised_workspace(session, row, now, opens=True)


def _authorised_workspace(
    session: Session, row: repository.AuthorisedRow | None, now: datetime, opens: bool
) -> Workspace | None:
    if row is None:
        return None
    found = row.workspace
    opened = found.seen and found.assignment.opened_at is not None
    # a finished assignment is not opened: the step-by-step path answers it as before
    if not opened and (not opens or found.assignment.status == AssignmentStatus.finished):
        return None
    if not _washout_over(found.assignment, found.study, row, now):
        return None
    accounts.note_token_use(row.api_token, now)
    workspace = Workspace(
        user=row.user,
        image=found.image,
        task=found.task,
        assignment=found.assignment,
        labels_by_name={label.name: label for label in found.labels},
        annotation=row.annotation,
    )
    if not opened:
        _open_first_time(session, workspace)
    return workspace


def _washout_over(assignment: Assignment, study: Study, row: repository.AuthorisedRow, now: datetime) -> bool:
    """`studies.assignment_opens_at` on the authorising row: the unaided assignment came with it."""
    if assignment.mode != Mode.aided or assignment.washout_override_at is not None or not row.has_unaided:
        return True
    finished_at = row.unaided_finished_at
    return finished_at is not None and finished_at + timedelta(days=study.washout_days) <= now


def mark_done(session: Session, workspace: Workspace) -> dict[str, int]:
    """`studies.mark_image_done` in an authorised workspace (its checks passed in the authorising statement)."""
    studies.require_unfinished(workspace.assignment)
    studies_repository.complete_image(session, workspace.assignment.id, workspace.image.id, utcnow())
    return {"assignment_id": workspace.assignment.id, "image_id": workspace.image.id}


@dataclass(frozen=True)
class Keyed:
    """A write sent with an idempotency key, and the fingerprint of what it asks for."""

    key: str
    fingerprint: str


UNFINGERPRINTED = frozenset({"idempotency_key", "client_ts"})


def _request_body(data: BaseModel) -> dict[str, Any]:
    return data.model_dump(mode="json", exclude=set(UNFINGERPRINTED))


def keyed(key: str | None, route: str, target: str, body: Any) -> Keyed | None:
    """The request's key and fingerprint: route, target and body without the key and the client's clock."""
    if key is None:
        return None
    canonical = json.dumps([route, target, body], sort_keys=True, separators=(",", ":"))
    return Keyed(key=key, fingerprint=hashlib.sha256(canonical.encode()).hexdigest())


def _claim(session: Session, user: User, request: Keyed | None) -> Any | None:
    """None when this request may go ahead (it holds its key, or has none); else the earlier answer.

    A concurrent request with the same key is waited for by the database, so a retry racing its original
    gets the original's answer, never a conflict with itself. The same key with another request is 422.
    """
    if request is None or repository.claim_key(session, user.id, request.key, request.fingerprint):
        return None
    return _earlier_answer(session, user.id, request.key, request.fingerprint)


def _earlier_answer(session: Session, expert_id: int, key: str, fingerprint: str) -> Any:
    """The answer of the request that holds the key (which this one could not claim)."""
    earlier = repository.request_by_key(session, expert_id, key)
    if earlier is None or earlier.response is None:
        raise Conflict("this idempotency key is in use by another request; retry")
    if earlier.fingerprint != fingerprint:
        raise Invalid("this idempotency key was already used for a different request; use a new key")
    return earlier.response


def _claim_with_write(session: Session, user: User, request: Keyed | None) -> repository.KeyClaim | None:
    """The key's claim, to be made by the statement that writes the edit (PostgreSQL); None: claim first."""
    if request is None or not repository.claims_with_writes(session):
        return None
    return repository.KeyClaim(user.id, request.key, request.fingerprint)


def _claimed_or_refused(session: Session, user: User, request: Keyed | None, refusal: AppError) -> Any:
    """An edit that would be refused claims its key first, as any edit did: a retry gets the earlier
    answer, not the refusal (its first try may be what the refusal is about)."""
    earlier = _claim(session, user, request)
    if earlier is None:
        raise refusal
    return earlier


def _remembered(
    user: User, request: Keyed | None, answer: AnnotationOut | list[AnnotationOut]
) -> repository.RememberedAnswer | None:
    if request is None:
        return None
    if isinstance(answer, list):
        response: Any = [item.model_dump(mode="json") for item in answer]
    else:
        response = answer.model_dump(mode="json")
    return repository.RememberedAnswer(user.id, request.key, response)


def _remember(
    session: Session, user: User, request: Keyed | None, answer: AnnotationOut | list[AnnotationOut]
) -> None:
    remembered = _remembered(user, request, answer)
    if remembered is not None:
        repository.remember_answer(session, remembered)


def _append_event(
    session: Session,
    workspace: Workspace,
    annotation: Annotation,
    kind: EventKind,
    before: dict[str, Any] | None,
    key: str | None,
    client_ts: datetime | None,
    answer: repository.RememberedAnswer | None,
) -> None:
    """The edit's event, inserted as a plain row (it is never read back or changed in this transaction),
    with the keyed request's answer remembered (`repository.append_event`)."""
    event = {
        "annotation_id": annotation.id,
        "image_id": workspace.image.id,
        "expert_id": workspace.user.id,
        "mode": workspace.assignment.mode,
        "kind": kind,
        "before": before,
        "after": state_of(annotation, workspace.labels_by_id),
        "client_ts": client_ts,
        "idempotency_key": key,
    }
    try:
        repository.append_event(session, event, answer)
    except IntegrityError as error:
        raise Conflict("this idempotency key was already used") from error
    note_inserted_edit(session, kind)


async def list_annotations(
    session: AsyncSession, workspace: Workspace, include_deleted: bool = False
) -> list[AnnotationOut]:
    found = await repository.annotations_of(
        session,
        workspace.image.id,
        workspace.user.id,
        workspace.assignment.mode,
        include_deleted,
    )
    labels_by_id = workspace.labels_by_id
    return [to_out(annotation, labels_by_id) for annotation in found]


def annotations_in(
    session: Session, workspace: Workspace, include_deleted: bool = False
) -> list[AnnotationOut]:
    """`list_annotations` in an authorised workspace's own transaction."""
    found = repository.annotations_in(
        session, workspace.image.id, workspace.user.id, workspace.assignment.mode, include_deleted
    )
    labels_by_id = workspace.labels_by_id
    return [to_out(annotation, labels_by_id) for annotation in found]


def create_annotation(
    session: Session, workspace: Workspace, data: AnnotationCreate
) -> tuple[AnnotationOut, bool]:
    """Create one object; returns it and whether this request created it (False on a replay)."""
    mode = workspace.assignment.mode
    request = keyed(data.idempotency_key, "create", f"image {workspace.image.id} {mode}", _request_body(data))
    claim = _claim_with_write(session, workspace.user, request)
    if claim is None:
        earlier = _claim(session, workspace.user, request)
        if earlier is not None:
            return AnnotationOut.model_validate(earlier), False
        row = _new_row(workspace, data)
        new_id, position = repository.insert_annotation(session, row)
    else:
        try:
            row = _new_row(workspace, data)
        except AppError as refusal:
            earlier = _claimed_or_refused(session, workspace.user, request, refusal)
            return AnnotationOut.model_validate(earlier), False
        written = repository.claim_and_insert_annotation(session, claim, row)
        if written is None:
            earlier = _earlier_answer(session, claim.expert_id, claim.key, claim.fingerprint)
            return AnnotationOut.model_validate(earlier), False
        new_id, position = written
    # a plain row: the new object is not changed again in this transaction, so the ORM need not track it
    annotation = Annotation(id=new_id, position=position, **row)
    created = _record(session, workspace, annotation, EventKind.create, None, request, data.client_ts)
    return created, True


def _new_row(workspace: Workspace, data: AnnotationCreate) -> dict[str, Any]:
    """The new object's row (all but its id and position), once the edit is allowed."""
    studies.require_unfinished(workspace.assignment)
    check_box(workspace.image, data.x1, data.y1, data.x2, data.y2)
    label = resolve_label(workspace, data.label)
    now = utcnow()
    return {
        "image_id": workspace.image.id,
        "expert_id": workspace.user.id,
        "mode": workspace.assignment.mode,
        "label_id": label.id,
        "x1": data.x1,
        "y1": data.y1,
        "x2": data.x2,
        "y2": data.y2,
        "origin": Origin.expert,
        "suggestion_id": None,
        "deleted": False,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


def create_many(
    session: Session, workspace: Workspace, items: list[AnnotationCreate], key: str | None = None
) -> tuple[list[AnnotationOut], bool]:
    """All or nothing: every item is checked before any is written. The key covers the whole upload:
    a retry returns the same objects (and False), never a second copy."""
    target = f"image {workspace.image.id} {workspace.assignment.mode}"
    request = keyed(key, "bulk", target, [_request_body(item) for item in items])
    earlier = _claim(session, workspace.user, request)
    if earlier is not None:
        return [AnnotationOut.model_validate(item) for item in earlier], False
    for index, item in enumerate(items):
        try:
            check_box(workspace.image, item.x1, item.y1, item.x2, item.y2)
            resolve_label(workspace, item.label)
        except Invalid as error:
            raise Invalid(f"item {index}: {error.message}") from error
    keys = [item.idempotency_key for item in items if item.idempotency_key]
    if len(set(keys)) != len(keys) or key in keys:
        raise Invalid("idempotency keys repeat within the upload")
    created = [create_annotation(session, workspace, item)[0] for item in items]
    _remember(session, workspace.user, request, created)
    return created, True


def update_annotation(
    session: Session,
    workspace: Workspace,
    annotation_id: int,
    data: AnnotationUpdate,
) -> AnnotationOut:
    request = keyed(data.idempotency_key, "update", f"annotation {annotation_id}", _request_body(data))
    change = partial(_updated, workspace, annotation_id, data)
    return _change_of_object(session, workspace, annotation_id, request, change, data.client_ts)


@dataclass(frozen=True)
class Change:
    """An object changed in memory: its event's kind (None: nothing changed) and its state before."""

    annotation: Annotation
    kind: EventKind | None
    before: dict[str, Any] | None


def _change_of_object(
    session: Session,
    workspace: Workspace,
    annotation_id: int,
    request: Keyed | None,
    change: Callable[[Session], Change],
    client_ts: datetime | None,
) -> AnnotationOut:
    """Claim the key (a retry gets the earlier answer), read the own object, apply `change` and write it
    with its event. Where the authorising statement read the object and the claim can be made by the
    statement that writes it (PostgreSQL), the change is worked out first and claimed and written at once;
    a change that would be refused claims its key first all the same."""
    claim = _claim_with_write(session, workspace.user, request)
    if claim is None or workspace.annotation is None or workspace.annotation.id != annotation_id:
        earlier = _claim(session, workspace.user, request)
        if earlier is not None:
            return AnnotationOut.model_validate(earlier)
        changed = change(session)
        return _write_change(session, workspace, changed, request, client_ts)
    try:
        changed = change(session)
    except AppError as refusal:
        return AnnotationOut.model_validate(_claimed_or_refused(session, workspace.user, request, refusal))
    if changed.kind is None:  # nothing to write but the answer
        earlier = _claim(session, workspace.user, request)
        return (
            AnnotationOut.model_validate(earlier)
            if earlier is not None
            else _write_change(session, workspace, changed, request, client_ts)
        )
    written = repository.claim_and_write_edit(session, claim, changed.annotation, changed.annotation.version)
    if written is None:
        return AnnotationOut.model_validate(
            _earlier_answer(session, claim.expert_id, claim.key, claim.fingerprint)
        )
    if not written:
        raise Conflict(OBJECT_CHANGED)
    changed.annotation.version += 1
    return _record(session, workspace, changed.annotation, changed.kind, changed.before, request, client_ts)


def _write_change(
    session: Session, workspace: Workspace, changed: Change, request: Keyed | None, client_ts: datetime | None
) -> AnnotationOut:
    if changed.kind is None:
        unchanged = to_out(changed.annotation, workspace.labels_by_id)
        _remember(session, workspace.user, request, unchanged)
        return unchanged
    _write_edit(session, changed.annotation)
    return _record(session, workspace, changed.annotation, changed.kind, changed.before, request, client_ts)


def _updated(workspace: Workspace, annotation_id: int, data: AnnotationUpdate, session: Session) -> Change:
    """The object moved, resized or relabelled as `data` asks, once allowed."""
    studies.require_unfinished(workspace.assignment)
    annotation = _own_annotation(session, workspace, annotation_id)
    _check_version(annotation, data.version)
    if annotation.deleted:
        raise Conflict("this object is deleted; restore it first")
    try:
        box = data.box
    except ValueError as error:
        raise Invalid(str(error)) from error
    label = resolve_label(workspace, data.label) if data.label is not None else None
    if box is not None:
        check_box(workspace.image, *box)
    kind = _edit_kind(annotation, box, label)
    if kind is None:
        return Change(annotation, None, None)
    before = state_of(annotation, workspace.labels_by_id)
    if box is not None:
        annotation.x1, annotation.y1, annotation.x2, annotation.y2 = box
    if label is not None:
        annotation.label_id = label.id
    _mark_edited(annotation)
    return Change(annotation, kind, before)


def _edit_kind(
    annotation: Annotation,
    box: tuple[float, float, float, float] | None,
    label: Label | None,
) -> EventKind | None:
    moved = box is not None and box != (
        annotation.x1,
        annotation.y1,
        annotation.x2,
        annotation.y2,
    )
    relabelled = label is not None and label.id != annotation.label_id
    if moved and relabelled:
        return EventKind.edit
    if moved:
        return EventKind.move
    if relabelled:
        return EventKind.relabel
    return None


def _mark_edited(annotation: Annotation) -> None:
    annotation.updated_at = utcnow()
    if annotation.origin == Origin.suggestion:
        annotation.origin = Origin.suggestion_edited


def change_state(
    session: Session,
    workspace: Workspace,
    annotation_id: int,
    data: StateChange,
    kind: EventKind,
) -> AnnotationOut:
    """Delete (soft), restore, or accept a suggestion unchanged."""
    request = keyed(data.idempotency_key, kind, f"annotation {annotation_id}", _request_body(data))
    change = partial(_state_changed, workspace, annotation_id, data, kind)
    return _change_of_object(session, workspace, annotation_id, request, change, data.client_ts)


def _state_changed(
    workspace: Workspace, annotation_id: int, data: StateChange, kind: EventKind, session: Session
) -> Change:
    studies.require_unfinished(workspace.assignment)
    annotation = _own_annotation(session, workspace, annotation_id)
    _check_version(annotation, data.version)
    before = state_of(annotation, workspace.labels_by_id)
    if kind == EventKind.delete:
        _require(not annotation.deleted, "this object is already deleted")
        annotation.deleted = True
    elif kind == EventKind.restore:
        _require(annotation.deleted, "this object is not deleted")
        annotation.deleted = False
    else:
        _require(
            annotation.origin == Origin.suggestion and not annotation.deleted,
            "only an untouched suggestion can be accepted",
        )
    annotation.updated_at = utcnow()
    return Change(annotation, kind, before)


def _own_annotation(session: Session, workspace: Workspace, annotation_id: int) -> Annotation:
    """The object as the writing transaction sees it (the route checked it is the expert's own), untracked:
    its change is written by `_write_edit`. Read by the authorising statement when that was the token's."""
    annotation = workspace.annotation
    if annotation is None or annotation.id != annotation_id:
        annotation = repository.annotation_by_id(session, annotation_id)
    if annotation is None or annotation.expert_id != workspace.user.id:
        raise NotFound(f"no annotation {annotation_id}")
    return annotation


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Conflict(message)


def _check_version(annotation: Annotation, version: int) -> None:
    if annotation.version != version:
        raise Conflict(
            f"object {annotation.id} changed meanwhile (version {annotation.version}, "
            f"you sent {version}); reload it"
        )


def _record(
    session: Session,
    workspace: Workspace,
    annotation: Annotation,
    kind: EventKind,
    before: dict[str, Any] | None,
    request: Keyed | None,
    client_ts: datetime | None,
) -> AnnotationOut:
    """Append the object's event (its change is written) and remember the answer, the object's new state."""
    answer = to_out(annotation, workspace.labels_by_id)
    remembered = _remembered(workspace.user, request, answer)
    key = request.key if request else None
    _append_event(session, workspace, annotation, kind, before, key, client_ts, remembered)
    return answer


OBJECT_CHANGED = "the object changed meanwhile; reload it"


def _write_edit(session: Session, annotation: Annotation) -> None:
    """Store the changed object with its version raised by one; 409 when another edit came first."""
    if not repository.write_edit(session, annotation, annotation.version):
        raise Conflict(OBJECT_CHANGED)
    annotation.version += 1


async def events(session: AsyncSession, workspace: Workspace) -> list[AnnotationEvent]:
    return list(
        await repository.events_of(session, workspace.image.id, workspace.user.id, workspace.assignment.mode)
    )


async def get_visit(session: AsyncSession, user: User, visit_id: int) -> ImageVisit:
    visit = await session.get(ImageVisit, visit_id)
    if visit is None or visit.expert_id != user.id:
        raise NotFound(f"no visit {visit_id}")
    return visit


def start_visit(session: Session, workspace: Workspace) -> VisitOut:
    """A new visit of the workspace's image, opened now, in the authorised workspace's own transaction."""
    now = utcnow()
    visit = ImageVisit(
        image_id=workspace.image.id,
        expert_id=workspace.user.id,
        mode=workspace.assignment.mode,
        opened_at=now,
        last_seen_at=now,
    )
    session.add(visit)
    session.flush()
    return VisitOut.model_validate(visit)


def presence_by_token(
    session: Session, token_hash: str, visit_id: int, idle_limit_s: float, active: bool, close: bool
) -> VisitOut | None:
    """A heartbeat or a close of the bearer token's own visit, authorised in one statement in the
    transaction that writes it; None when that statement finds nothing (the caller goes step by step)."""
    now = utcnow()
    found = repository.authorised_visit(session, token_hash, now, visit_id)
    if found is None:
        return None
    accounts.note_token_use(found.api_token, now)
    visit = found.visit
    scale = simulation_repository.time_scale_for(
        visit.expert_id, found.simulation_time_scale, found.simulation
    )
    record_presence(visit, idle_limit_s, active, close=close, now=now, time_scale=scale)
    session.flush()
    return VisitOut.model_validate(visit)


def record_presence(
    visit: ImageVisit,
    idle_limit_s: float,
    active: bool,
    close: bool,
    now: datetime | None = None,
    time_scale: float = 1.0,
) -> None:
    """Add the time since the last sign of life, at most the idle limit, and only if the user was active.
    Closing a closed visit changes nothing and succeeds: a client whose close was committed but whose
    answer was lost (a dropped connection, a restarted server) retries it. A simulated study's visits count
    wall seconds × its time scale (the simulated experts work that much faster than real time)."""
    if visit.closed_at is not None:
        if close:
            return
        raise Conflict("this visit is closed; open a new one")
    now = now or utcnow()
    elapsed = max((now - visit.last_seen_at).total_seconds(), 0.0) * time_scale
    if active:
        visit.active_seconds += min(elapsed, idle_limit_s)
    visit.last_seen_at = now
    if close:
        visit.closed_at = now


def stale_before(idle_limit_s: float) -> datetime:
    return utcnow() - timedelta(seconds=idle_limit_s)


@dataclass(frozen=True)
class ReferenceComparison:
    """Training feedback: reference boxes (missed or found) and the expert's own objects not in it."""

    reference: list[tuple[GroundTruthObject, bool]]
    added: list[AnnotationOut]


async def training_reference(session: AsyncSession, workspace: Workspace) -> ReferenceComparison:
    """Reference objects, only in training mode and only once the image is marked done (else 403)."""
    if workspace.assignment.mode != Mode.training or workspace.image.purpose != ImagePurpose.practice:
        raise Forbidden("reference objects are shown only of practice images in training mode")
    done = await studies_repository.completed_image_ids(session, workspace.assignment.id)
    if workspace.image.id not in done:
        raise Forbidden("mark the image as done before showing the reference")
    reference = list(await images_repository.ground_truth_of_image(session, workspace.image.id))
    own = await list_annotations(session, workspace)
    own_pairs, ref_pairs = metrics.one_to_one_match(
        np.array([[a.x1, a.y1, a.x2, a.y2] for a in own], dtype=np.float64).reshape(-1, 4),
        np.array([workspace.labels_by_name[a.label].id for a in own], dtype=np.int64),
        np.zeros(len(own), dtype=np.int64),
        np.array([[g.x1, g.y1, g.x2, g.y2] for g in reference], dtype=np.float64).reshape(-1, 4),
        np.array([g.label_id for g in reference], dtype=np.int64),
        np.zeros(len(reference), dtype=np.int64),
    )
    found, matched_own = set(ref_pairs.tolist()), set(own_pairs.tolist())
    return ReferenceComparison(
        reference=[(g, index in found) for index, g in enumerate(reference)],
        added=[a for index, a in enumerate(own) if index not in matched_own],
    )
