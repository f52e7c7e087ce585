"""JSON routes of the current expert's annotations, their event log, visits and done images."""

from collections.abc import Callable
from functools import partial
from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Header, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.accounts.security import digest
from app.annotations import repository, service
from app.annotations.schemas import (
    AnnotationCreate,
    AnnotationOut,
    AnnotationUpdate,
    ClientTime,
    EventOut,
    StateChange,
    VisitOut,
)
from app.annotations.service import Workspace
from app.batched_writes import EditRunner
from app.config import Settings
from app.deps import CurrentUser, SessionDep, optional_principal, require_principal
from app.models import EventKind, Mode, User
from app.schemas_common import PathId
from app.simulation import repository as simulation_repository
from app.studies import service as studies

router = APIRouter(tags=["annotations"])
T = TypeVar("T")

ModeQuery = Annotated[Mode, Query(description="training, unaided or aided")]
IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=100)]
MAX_BULK = 5000


def _edits(request: Request) -> EditRunner:
    """Where the request's edit is written. Not a FastAPI dependency: a sub-dependency is solved anew on
    every request, a measurable share of an edit's CPU on the server."""
    return EditRunner(request.app.state.sessionmaker, request.app.state.batch_writer)


def _bearer_token(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    return authorization[7:].strip() if authorization.lower().startswith("bearer ") else None


Edit = Callable[[Session, Workspace], T]


async def _user(request: Request, session: AsyncSession) -> User:
    return (await require_principal(await optional_principal(request, session))).user


def _authorised_edit(
    authorise: Callable[[Session], Workspace | None], edit: Edit[T]
) -> Callable[[Session], T | None]:
    """The edit, written in the transaction that authorised it; None when the one statement did not."""

    def work(session: Session) -> T | None:
        workspace = authorise(session)
        return None if workspace is None else edit(session, workspace)

    return work


def _in_workspace(edit: Edit[T], workspace: Workspace) -> Callable[[Session], T]:
    return lambda session: edit(session, workspace)


async def _by_token_on_image(
    request: Request, image_id: int, mode: str, edit: Edit[T], opens: bool = True
) -> T | None:
    """`edit` authorised by the bearer token in one statement and written in one hand-off, the image opened
    first if it was not (unless `opens` is False); None when there is no token or the statement did not
    authorise it (the caller then goes step by step)."""
    token = _bearer_token(request)
    if not token:
        return None
    authorise = partial(
        service.workspace_by_token, token_hash=digest(token), image_id=image_id, mode=mode, opens=opens
    )
    return await _edits(request).run(_authorised_edit(authorise, edit))


async def _edit_on_image(request: Request, image_id: int, mode: str, edit: Edit[T]) -> T:
    """A bearer token's edit is authorised (the image opened if it was not) and written in one hand-off;
    otherwise (a cookie, a finished assignment, or a refusal to tell precisely) the workspace is opened step
    by step first."""
    done = await _by_token_on_image(request, image_id, mode, edit)
    if done is not None:
        return done
    edits = _edits(request)
    async with edits.unit_of_work() as session:
        workspace = await service.open_workspace(session, await _user(request, session), image_id, mode)
        return await edits.run_in(session, _in_workspace(edit, workspace))


async def _edit_of_annotation(request: Request, annotation_id: int, edit: Edit[T]) -> T:
    """As `_edit_on_image`, on the workspace of the user's own object."""
    edits = _edits(request)
    token = _bearer_token(request)
    if token:
        authorise = partial(
            service.annotation_workspace_by_token, token_hash=digest(token), annotation_id=annotation_id
        )
        done = await edits.run(_authorised_edit(authorise, edit))
        if done is not None:
            return done
    async with edits.unit_of_work() as session:
        user = await _user(request, session)
        workspace, _ = await service.workspace_of_annotation(session, user, annotation_id)
        return await edits.run_in(session, _in_workspace(edit, workspace))


@router.post("/images/{image_id}/open")
async def open_image(
    image_id: PathId, mode: ModeQuery, request: Request, include_deleted: bool = False
) -> list[AnnotationOut]:
    """Open an image to work on it, and answer the current expert's objects on it (as the list does).
    The first open records the first view and, in aided mode, copies the suggestions into the expert's
    objects; opening again changes nothing. Edits open the image too; a finished assignment is not opened."""
    listing = partial(service.annotations_in, include_deleted=include_deleted)
    opened = await _by_token_on_image(request, image_id, mode, listing)
    if opened is not None:
        return opened
    async with _edits(request).unit_of_work() as session:
        workspace = await service.open_workspace(session, await _user(request, session), image_id, mode)
        return await service.list_annotations(session, workspace, include_deleted)


@router.get("/images/{image_id}/annotations")
async def list_annotations(
    image_id: PathId, mode: ModeQuery, session: SessionDep, user: CurrentUser, include_deleted: bool = False
) -> list[AnnotationOut]:
    """The current expert's objects on an image in a mode, as they are: changes nothing (before the image
    is opened, an aided image has no objects yet)."""
    workspace = await service.find_workspace(session, user, image_id, mode)
    return await service.list_annotations(session, workspace, include_deleted)


@router.post("/images/{image_id}/annotations", status_code=201)
async def create_annotation(
    image_id: PathId,
    mode: ModeQuery,
    data: AnnotationCreate,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyHeader = None,
) -> AnnotationOut:
    """Create one object; a retry with the same idempotency key returns it unchanged (200)."""
    if data.idempotency_key is None and idempotency_key is not None:
        data = data.model_copy(update={"idempotency_key": idempotency_key})
    edit = partial(service.create_annotation, data=data)
    created, is_new = await _edit_on_image(request, image_id, mode, edit)
    if not is_new:
        response.status_code = 200
    return created


@router.post("/images/{image_id}/annotations/bulk", status_code=201)
async def upload_annotations(
    image_id: PathId,
    mode: ModeQuery,
    items: Annotated[list[AnnotationCreate], Body(max_length=MAX_BULK)],
    request: Request,
    response: Response,
    idempotency_key: IdempotencyHeader = None,
) -> list[AnnotationOut]:
    """Upload a JSON list of objects, each created with its own event; a keyed retry returns them (200)."""
    edit = partial(service.create_many, items=items, key=idempotency_key)
    created, is_new = await _edit_on_image(request, image_id, mode, edit)
    if not is_new:
        response.status_code = 200
    return created


@router.patch("/annotations/{annotation_id}")
async def update_annotation(
    annotation_id: PathId,
    data: AnnotationUpdate,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> AnnotationOut:
    """Move, resize or relabel an own object; the version must be the current one (else 409)."""
    if data.idempotency_key is None and idempotency_key is not None:
        data = data.model_copy(update={"idempotency_key": idempotency_key})
    edit = partial(service.update_annotation, annotation_id=annotation_id, data=data)
    return await _edit_of_annotation(request, annotation_id, edit)


async def _change(
    annotation_id: int,
    data: StateChange,
    request: Request,
    kind: EventKind,
    key: str | None,
) -> AnnotationOut:
    if data.idempotency_key is None and key is not None:
        data = data.model_copy(update={"idempotency_key": key})
    edit = partial(service.change_state, annotation_id=annotation_id, data=data, kind=kind)
    return await _edit_of_annotation(request, annotation_id, edit)


@router.post("/annotations/{annotation_id}/delete")
async def delete_annotation(
    annotation_id: PathId,
    data: StateChange,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> AnnotationOut:
    """Delete an own object (soft delete: it can be restored)."""
    return await _change(annotation_id, data, request, EventKind.delete, idempotency_key)


@router.post("/annotations/{annotation_id}/restore")
async def restore_annotation(
    annotation_id: PathId,
    data: StateChange,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> AnnotationOut:
    """Restore an own deleted object."""
    return await _change(annotation_id, data, request, EventKind.restore, idempotency_key)


@router.post("/annotations/{annotation_id}/accept")
async def accept_suggestion(
    annotation_id: PathId,
    data: StateChange,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> AnnotationOut:
    """Accept a suggestion unchanged (recorded as an event)."""
    return await _change(annotation_id, data, request, EventKind.accept, idempotency_key)


@router.get("/images/{image_id}/events")
async def list_events(
    image_id: PathId, mode: ModeQuery, session: SessionDep, user: CurrentUser
) -> list[EventOut]:
    """The current expert's append-only edit log of an image in a mode."""
    workspace = await service.find_workspace(session, user, image_id, mode)
    return [
        EventOut(
            id=event.id,
            annotation_id=event.annotation_id,
            kind=event.kind,
            before=event.before,
            after=event.after,
            client_ts=event.client_ts,
            server_ts=event.server_ts,
            idempotency_key=event.idempotency_key,
        )
        for event in await service.events(session, workspace)
    ]


@router.post("/images/{image_id}/visits", status_code=201)
async def open_visit(image_id: PathId, mode: ModeQuery, request: Request) -> VisitOut:
    """Record that the expert opened an image."""
    return await _edit_on_image(request, image_id, mode, service.start_visit)


@router.get("/images/{image_id}/visits")
async def list_visits(
    image_id: PathId, mode: ModeQuery, session: SessionDep, user: CurrentUser
) -> list[VisitOut]:
    """The current expert's visits of an image in a mode, with active seconds."""
    workspace = await service.find_workspace(session, user, image_id, mode)
    visits = await repository.visits_of(session, image_id, user.id, workspace.assignment.mode)
    return [VisitOut.model_validate(visit) for visit in visits]


@router.post("/visits/{visit_id}/heartbeat")
async def heartbeat(visit_id: PathId, request: Request, data: ClientTime | None = None) -> VisitOut:
    """The page is visible and the expert active; idle gaps beyond the limit do not count."""
    return await _presence(request, visit_id, data or ClientTime(), close=False)


@router.post("/visits/{visit_id}/close")
async def close_visit(visit_id: PathId, request: Request, data: ClientTime | None = None) -> VisitOut:
    """The expert left the image."""
    return await _presence(request, visit_id, data or ClientTime(), close=True)


async def _presence(request: Request, visit_id: int, data: ClientTime, close: bool) -> VisitOut:
    settings: Settings = request.app.state.settings
    edits = _edits(request)
    idle_limit_s = settings.heartbeat_idle_seconds
    token = _bearer_token(request)
    if token:
        work = partial(
            service.presence_by_token,
            token_hash=digest(token),
            visit_id=visit_id,
            idle_limit_s=idle_limit_s,
            active=data.active,
            close=close,
        )
        done = await edits.run(work)
        if done is not None:
            return done
    async with edits.unit_of_work() as session:
        user = await _user(request, session)
        visit = await service.get_visit(session, user, visit_id)
        scale = await simulation_repository.time_scale_of_visit(session, visit.image_id, user.id)
        service.record_presence(visit, idle_limit_s, data.active, close=close, time_scale=scale)
        await session.flush()
        return VisitOut.model_validate(visit)


@router.post("/images/{image_id}/done")
async def mark_done(image_id: PathId, mode: ModeQuery, request: Request) -> dict[str, int]:
    """Mark an image of the own assignment as done."""
    # a done mark opens the assignment but records no first sight of the image: the step-by-step path
    done = await _by_token_on_image(request, image_id, mode, service.mark_done, opens=False)
    if done is not None:
        return done
    async with _edits(request).unit_of_work() as session:
        user = await _user(request, session)
        image = await studies.get_image(session, user, image_id)
        assignment = await studies.mark_image_done(session, user, image, mode)
        return {"assignment_id": assignment.id, "image_id": image.id}
