"""Queries of annotations, their events, visits and image views."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, bindparam, case, exists, func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import BindParameter

from app.accounts.repository import TOKEN_IS_VALID
from app.models import (
    Annotation,
    AnnotationEvent,
    ApiToken,
    Assignment,
    IdempotentRequest,
    Image,
    ImageView,
    ImageVisit,
    Label,
    Study,
    Suggestion,
    Task,
    User,
)
from app.models.base import utcnow
from app.models.study import ImagePurpose, Mode, purpose_of_mode


@dataclass(frozen=True)
class WorkspaceRow:
    image: Image
    task: Task
    study: Study
    assignment: Assignment
    seen: bool
    labels: list[Label]


# The edit routes' statements are built once, with bound parameters: building a statement costs more CPU
# than SQLAlchemy's cached compilation and the database's own work together.
_expert: BindParameter[int] = bindparam("b_expert")
_image: BindParameter[int] = bindparam("b_image")
_mode: BindParameter[str] = bindparam("b_mode")


def _joined_workspace(query: Any, expert: Any, mode: Any) -> Any:
    """The workspace's joins onto a query holding the image: its task and study, the expert's assignment of
    that task in the mode, the expert's first-open mark and the task's labels (one row each, label order)."""
    return (
        query.join(Task, Task.id == Image.task_id)
        .join(Study, Study.id == Task.study_id)
        .join(
            Assignment,
            and_(Assignment.task_id == Task.id, Assignment.expert_id == expert, Assignment.mode == mode),
        )
        .outerjoin(
            ImageView,
            and_(ImageView.image_id == Image.id, ImageView.expert_id == expert, ImageView.mode == mode),
        )
        .outerjoin(Label, Label.task_id == Task.id)
        .order_by(Label.position)
    )


_WORKSPACE_ROWS = _joined_workspace(
    select(Image, Task, Study, Assignment, ImageView.id, Label), _expert, _mode
).where(Image.id == _image, Image.purpose == bindparam("b_purpose"))


async def workspace_row(
    session: AsyncSession, expert_id: int, image_id: int, mode: str
) -> WorkspaceRow | None:
    """In one query: the image, its task and study, the expert's assignment of that task in the mode,
    whether the expert has opened the image in the mode before, and the task's labels (one row each).
    None when any of them is missing or the image is not of the mode's purpose (practice images for
    training, study images otherwise)."""
    parameters = {
        "b_expert": expert_id,
        "b_image": image_id,
        "b_mode": mode,
        "b_purpose": purpose_of_mode(mode),
    }
    rows = (await session.execute(_WORKSPACE_ROWS, parameters)).all()
    if not rows:
        return None
    image, task, study, assignment, view_id, _ = rows[0]
    labels = [row[5] for row in rows if row[5] is not None]
    return WorkspaceRow(image, task, study, assignment, view_id is not None, labels)


@dataclass(frozen=True)
class AuthorisedRow:
    """A bearer token's user and token, with that user's workspace row."""

    user: User
    api_token: ApiToken
    workspace: WorkspaceRow
    unaided_finished_at: datetime | None  # of an aided workspace's unaided assignment (its washout)
    has_unaided: bool
    annotation: Annotation | None = None  # the user's own object it was asked for, untracked


def _purpose_of(mode: Any) -> Any:
    """`purpose_of_mode` in SQL."""
    return case((mode == Mode.training.value, ImagePurpose.practice.value), else_=ImagePurpose.study.value)


_Unaided = aliased(Assignment)
_ANNOTATION_TABLE = Annotation.metadata.tables[Annotation.__tablename__]
# the object's columns, read by the statement that authorises an edit of it (after the workspace's)
_ANNOTATION_COLUMNS = tuple(column.label(f"annotation_{column.name}") for column in _ANNOTATION_TABLE.c)
_ANNOTATION_NAMES = tuple(column.name for column in _ANNOTATION_TABLE.c)
_WORKSPACE_WIDTH = 10  # the authorising statement's columns before the object's


def _authorised_rows(of_annotation: bool) -> Any:
    """The workspace statement joined to a valid bearer token's enabled user, who is the expert; the image
    and mode are bound, or those of the user's own object `b_annotation`."""
    expert = User.id
    image_id: Any
    mode: Any
    query = select(
        User, ApiToken, Image, Task, Study, Assignment, ImageView.id, Label, _Unaided.id, _Unaided.finished_at
    ).join(ApiToken, ApiToken.user_id == User.id)
    if of_annotation:
        query = query.add_columns(*_ANNOTATION_COLUMNS).join(
            Annotation, and_(Annotation.id == bindparam("b_annotation"), Annotation.expert_id == expert)
        )
        image_id, mode = Annotation.image_id, Annotation.mode
    else:
        image_id, mode = _image, _mode
    unaided = and_(
        _Unaided.task_id == Task.id, _Unaided.expert_id == expert, _Unaided.mode == Mode.unaided.value
    )
    joined = _joined_workspace(query.join(Image, Image.id == image_id), expert, mode)
    return joined.outerjoin(_Unaided, unaided).where(TOKEN_IS_VALID, Image.purpose == _purpose_of(mode))


_AUTHORISED_IMAGE_ROWS = _authorised_rows(of_annotation=False)
_AUTHORISED_ANNOTATION_ROWS = _authorised_rows(of_annotation=True)


def _authorised(rows: Sequence[Any]) -> AuthorisedRow | None:
    if not rows:
        return None
    first = rows[0]
    user, api_token, image, task, study, assignment, view_id, _, unaided_id, unaided_finished_at = first[
        :_WORKSPACE_WIDTH
    ]
    labels = [row[7] for row in rows if row[7] is not None]
    workspace = WorkspaceRow(image, task, study, assignment, view_id is not None, labels)
    annotation = _untracked_annotation(first[_WORKSPACE_WIDTH:])
    return AuthorisedRow(user, api_token, workspace, unaided_finished_at, unaided_id is not None, annotation)


def _untracked_annotation(values: Sequence[Any]) -> Annotation | None:
    """The object's row as an untracked `Annotation` (as `annotation_by_id` builds it); None without one."""
    return Annotation(**dict(zip(_ANNOTATION_NAMES, values, strict=True))) if values else None


def authorised_image_row(
    session: Session, token_hash: str, now: datetime, image_id: int, mode: str
) -> AuthorisedRow | None:
    """In one statement: the valid token's enabled user and that user's workspace row (`workspace_row`)
    on the image in the mode, with the end of the unaided assignment of the task (an aided workspace's
    washout). None when anything is missing: the caller takes the step-by-step path. Read in the edit's own
    transaction, so that nothing it decides on changes before the edit is written."""
    parameters = {"token_hash": token_hash, "now": now, "b_image": image_id, "b_mode": mode}
    return _authorised(session.execute(_AUTHORISED_IMAGE_ROWS, parameters).all())


def authorised_annotation_row(
    session: Session, token_hash: str, now: datetime, annotation_id: int
) -> AuthorisedRow | None:
    """As `authorised_image_row`, for the image and mode of the user's own object, with that object as the
    transaction sees it (the edit reads it from here: one round trip fewer)."""
    parameters = {"token_hash": token_hash, "now": now, "b_annotation": annotation_id}
    return _authorised(session.execute(_AUTHORISED_ANNOTATION_ROWS, parameters).all())


@dataclass(frozen=True)
class AuthorisedVisit:
    """A bearer token's own visit, with the time scale of its study (`time_scale_of_visit`'s columns)."""

    visit: ImageVisit
    api_token: ApiToken
    simulation_time_scale: float | None
    simulation: Any


_AUTHORISED_VISIT = (
    select(ImageVisit, ApiToken, Study.simulation_time_scale, Study.simulation)
    .join(User, User.id == ImageVisit.expert_id)
    .join(ApiToken, ApiToken.user_id == User.id)
    .join(Image, Image.id == ImageVisit.image_id)
    .join(Task, Task.id == Image.task_id)
    .join(Study, Study.id == Task.study_id)
    .where(ImageVisit.id == bindparam("b_visit"), TOKEN_IS_VALID)
)


def authorised_visit(
    session: Session, token_hash: str, now: datetime, visit_id: int
) -> AuthorisedVisit | None:
    """In one statement: the valid token's enabled user's own visit and its study's time scale. None when
    anything is missing: the caller takes the step-by-step path."""
    parameters = {"token_hash": token_hash, "now": now, "b_visit": visit_id}
    row = session.execute(_AUTHORISED_VISIT, parameters).first()
    return None if row is None else AuthorisedVisit(*row)


_OWN_ANNOTATIONS = (
    select(Annotation)
    .where(Annotation.image_id == _image, Annotation.expert_id == _expert, Annotation.mode == _mode)
    .order_by(Annotation.position, Annotation.id)
)
_OWN_LIVE_ANNOTATIONS = _OWN_ANNOTATIONS.where(Annotation.deleted.is_(False))


def _own_annotations(
    image_id: int, expert_id: int, mode: str, include_deleted: bool
) -> tuple[Any, dict[str, Any]]:
    statement = _OWN_ANNOTATIONS if include_deleted else _OWN_LIVE_ANNOTATIONS
    return statement, {"b_image": image_id, "b_expert": expert_id, "b_mode": mode}


async def annotations_of(
    session: AsyncSession,
    image_id: int,
    expert_id: int,
    mode: str,
    include_deleted: bool,
) -> Sequence[Annotation]:
    statement, parameters = _own_annotations(image_id, expert_id, mode, include_deleted)
    return (await session.scalars(statement, parameters)).all()


def annotations_in(
    session: Session, image_id: int, expert_id: int, mode: str, include_deleted: bool
) -> Sequence[Annotation]:
    """`annotations_of` in a synchronous session (the edit's own transaction)."""
    statement, parameters = _own_annotations(image_id, expert_id, mode, include_deleted)
    return session.scalars(statement, parameters).all()


# Core statements on the table: through the ORM entity each ran the ORM's bulk insert/update handling
_REQUEST_TABLE = IdempotentRequest.metadata.tables[IdempotentRequest.__tablename__]


def _claim_statement(insert: Any) -> Any:
    return (
        insert(_REQUEST_TABLE)
        .values(expert_id=_expert, key=bindparam("b_key"), fingerprint=bindparam("b_fingerprint"))
        .on_conflict_do_nothing(index_elements=["expert_id", "key"])
        .returning(_REQUEST_TABLE.c.id)
    )


_CLAIM = {"postgresql": _claim_statement(postgresql.insert), "sqlite": _claim_statement(sqlite.insert)}
_REQUEST_BY_KEY = select(IdempotentRequest).where(
    IdempotentRequest.expert_id == _expert, IdempotentRequest.key == bindparam("b_key")
)
_REMEMBER_ANSWER = (
    update(_REQUEST_TABLE)
    .where(_REQUEST_TABLE.c.expert_id == _expert, _REQUEST_TABLE.c.key == bindparam("b_key"))
    .values(response=bindparam("b_response", type_=_REQUEST_TABLE.c.response.type))
)


def claim_key(session: Session, expert_id: int, key: str, fingerprint: str) -> bool:
    """Insert the key's row unless the key is taken; a concurrent holder is waited for until it ends."""
    statement = _CLAIM[session.get_bind().dialect.name]
    parameters = {"b_expert": expert_id, "b_key": key, "b_fingerprint": fingerprint}
    return session.execute(statement, parameters).first() is not None


def request_by_key(session: Session, expert_id: int, key: str) -> IdempotentRequest | None:
    return session.scalar(_REQUEST_BY_KEY, {"b_expert": expert_id, "b_key": key})


@dataclass(frozen=True)
class RememberedAnswer:
    """The answer of a keyed request, stored on its key's row."""

    expert_id: int
    key: str
    response: Any


def _answer_parameters(answer: RememberedAnswer) -> dict[str, Any]:
    return {"b_expert": answer.expert_id, "b_key": answer.key, "b_response": answer.response}


def remember_answer(session: Session, answer: RememberedAnswer) -> None:
    session.execute(_REMEMBER_ANSWER, _answer_parameters(answer))


_NEXT_POSITION = select(func.coalesce(func.max(_ANNOTATION_TABLE.c.position) + 1, 0)).where(
    _ANNOTATION_TABLE.c.image_id == _image,
    _ANNOTATION_TABLE.c.expert_id == _expert,
    _ANNOTATION_TABLE.c.mode == _mode,
)
_INSERT_AT_NEXT_POSITION = (
    insert(_ANNOTATION_TABLE)
    .values(position=_NEXT_POSITION.scalar_subquery())
    .returning(_ANNOTATION_TABLE.c.id, _ANNOTATION_TABLE.c.position)
)


def insert_annotation(session: Session, values: dict[str, Any]) -> tuple[int, int]:
    """Insert one object row (every column but the id and position given) after the last of its expert's
    objects on the image in the mode, in one statement; its id and position."""
    keys = {"b_image": values["image_id"], "b_expert": values["expert_id"], "b_mode": values["mode"]}
    new_id, position = session.execute(_INSERT_AT_NEXT_POSITION, {**values, **keys}).one()
    return int(new_id), int(position)


@dataclass(frozen=True)
class KeyClaim:
    """A keyed request's claim of its key (`claim_key`)."""

    expert_id: int
    key: str
    fingerprint: str

    def parameters(self) -> dict[str, Any]:
        """Those of the claim made in a WITH (`_CLAIMED`)."""
        return {
            "b_expert": self.expert_id,
            "b_key": self.key,
            "b_fingerprint": self.fingerprint,
            "b_claimed_at": utcnow(),
        }


def claims_with_writes(session: Session) -> bool:
    """Whether a key's claim and the write it guards can be one statement (PostgreSQL's data-modifying
    WITH): `claim_and_insert_annotation`, `claim_and_write_edit`."""
    return bool(session.get_bind().dialect.name == "postgresql")


# PostgreSQL: the key claimed in a data-modifying WITH, the write done only if it was (a column's Python
# default is not applied in a WITH: the time is bound)
_CLAIMED = (
    _claim_statement(postgresql.insert)
    .values(created_at=bindparam("b_claimed_at", type_=_REQUEST_TABLE.c.created_at.type))
    .cte("claimed_key")
)
_IS_CLAIMED = exists(select(_CLAIMED.c.id))
_INSERTED_NAMES = tuple(c.name for c in _ANNOTATION_TABLE.c if c.name not in ("id", "position"))
_INSERTED = (
    insert(_ANNOTATION_TABLE)
    .from_select(
        [*_INSERTED_NAMES, "position"],
        select(
            *(bindparam(f"n_{name}", type_=_ANNOTATION_TABLE.c[name].type) for name in _INSERTED_NAMES),
            _NEXT_POSITION.scalar_subquery(),
        ).where(_IS_CLAIMED),
    )
    .returning(_ANNOTATION_TABLE.c.id, _ANNOTATION_TABLE.c.position)
    .cte("inserted")
)
_CLAIM_AND_INSERT = (
    select(_INSERTED.c.id, _INSERTED.c.position).select_from(_CLAIMED).outerjoin(_INSERTED, true())
)


def claim_and_insert_annotation(
    session: Session, claim: KeyClaim, values: dict[str, Any]
) -> tuple[int, int] | None:
    """`claim_key` and `insert_annotation` in one statement (`claims_with_writes`): the row is inserted only
    if the key was claimed; None when it was taken (a concurrent holder is waited for, as by `claim_key`)."""
    keys = {"b_image": values["image_id"], "b_mode": values["mode"]}  # b_expert: the claim's, the same
    parameters = {f"n_{name}": values[name] for name in _INSERTED_NAMES}
    row = session.execute(_CLAIM_AND_INSERT, {**parameters, **keys, **claim.parameters()}).first()
    return None if row is None else (int(row[0]), int(row[1]))


_ANNOTATION_BY_ID = select(_ANNOTATION_TABLE).where(_ANNOTATION_TABLE.c.id == bindparam("b_id"))
EDITABLE_COLUMNS = ("x1", "y1", "x2", "y2", "label_id", "deleted", "origin", "updated_at")
_WRITE_EDIT = (
    update(_ANNOTATION_TABLE)
    .where(_ANNOTATION_TABLE.c.id == bindparam("b_id"), _ANNOTATION_TABLE.c.version == bindparam("b_version"))
    .values(
        version=_ANNOTATION_TABLE.c.version + 1,
        **{name: bindparam(f"b_{name}", type_=_ANNOTATION_TABLE.c[name].type) for name in EDITABLE_COLUMNS},
    )
)


def annotation_by_id(session: Session, annotation_id: int) -> Annotation | None:
    """The object's row as an untracked `Annotation`: its change is written by `write_edit`, not a flush."""
    row = session.execute(_ANNOTATION_BY_ID, {"b_id": annotation_id}).first()
    return None if row is None else Annotation(**row._mapping)


def write_edit(session: Session, annotation: Annotation, read_version: int) -> bool:
    """Write the object's editable columns and raise its version, only if the stored version is still the
    one it was read at (the optimistic check the ORM's version column made); False when it is not."""
    parameters = {f"b_{name}": getattr(annotation, name) for name in EDITABLE_COLUMNS}
    arguments = {"b_id": annotation.id, "b_version": read_version, **parameters}
    result = cast(CursorResult[Any], session.execute(_WRITE_EDIT, arguments))
    return result.rowcount == 1


_EDITED = _WRITE_EDIT.where(_IS_CLAIMED).returning(_ANNOTATION_TABLE.c.id).cte("edited")
_CLAIM_AND_EDIT = select(_CLAIMED.c.id, _EDITED.c.id).select_from(_CLAIMED).outerjoin(_EDITED, true())


def claim_and_write_edit(
    session: Session, claim: KeyClaim, annotation: Annotation, read_version: int
) -> bool | None:
    """`claim_key` and `write_edit` in one statement (`claims_with_writes`): the object is written only if
    the key was claimed; None when it was taken, else whether the object was written."""
    parameters = {f"b_{name}": getattr(annotation, name) for name in EDITABLE_COLUMNS}
    arguments = {"b_id": annotation.id, "b_version": read_version, **parameters, **claim.parameters()}
    row = session.execute(_CLAIM_AND_EDIT, arguments).first()
    return None if row is None else row[1] is not None


_EVENT_TABLE = AnnotationEvent.metadata.tables[AnnotationEvent.__tablename__]
_APPEND_EVENT = insert(_EVENT_TABLE)  # Core: no ORM bulk-insert handling for one row
_EVENT_COLUMNS = tuple(column.name for column in _EVENT_TABLE.c if column.name != "id")
# PostgreSQL: the event inserted by a data-modifying WITH of the statement that remembers the answer
_APPEND_EVENT_AND_REMEMBER = _REMEMBER_ANSWER.add_cte(
    insert(_EVENT_TABLE)
    .values({name: bindparam(f"e_{name}", type_=_EVENT_TABLE.c[name].type) for name in _EVENT_COLUMNS})
    .cte("appended_event")
)


def append_event(session: Session, event: dict[str, Any], answer: RememberedAnswer | None = None) -> None:
    """Insert one event row (columns of `AnnotationEvent`; the server time is the column's default) and
    remember the answer of the keyed request it records (`remember_answer`), on PostgreSQL in one
    statement (one round trip: the event's insert a data-modifying WITH of the answer's update)."""
    if answer is None:
        session.execute(_APPEND_EVENT, event)
    elif session.get_bind().dialect.name == "postgresql":
        values = {"server_ts": utcnow(), **event}
        parameters = {f"e_{name}": values[name] for name in _EVENT_COLUMNS}
        session.execute(_APPEND_EVENT_AND_REMEMBER, {**parameters, **_answer_parameters(answer)})
    else:
        session.execute(_APPEND_EVENT, event)
        remember_answer(session, answer)


async def events_of(
    session: AsyncSession, image_id: int, expert_id: int, mode: str
) -> Sequence[AnnotationEvent]:
    query = (
        select(AnnotationEvent)
        .where(
            AnnotationEvent.image_id == image_id,
            AnnotationEvent.expert_id == expert_id,
            AnnotationEvent.mode == mode,
        )
        .order_by(AnnotationEvent.id)
    )
    return (await session.scalars(query)).all()


async def visits_of(session: AsyncSession, image_id: int, expert_id: int, mode: str) -> Sequence[ImageVisit]:
    query = (
        select(ImageVisit)
        .where(
            ImageVisit.image_id == image_id,
            ImageVisit.expert_id == expert_id,
            ImageVisit.mode == mode,
        )
        .order_by(ImageVisit.id)
    )
    return (await session.scalars(query)).all()


def image_view(session: Session, image_id: int, expert_id: int, mode: str) -> ImageView | None:
    query = select(ImageView).where(
        ImageView.image_id == image_id,
        ImageView.expert_id == expert_id,
        ImageView.mode == mode,
    )
    return session.scalar(query)


def suggestions_of(session: Session, suggestion_set_id: int, image_id: int) -> Sequence[Suggestion]:
    query = (
        select(Suggestion)
        .where(
            Suggestion.suggestion_set_id == suggestion_set_id,
            Suggestion.image_id == image_id,
        )
        .order_by(Suggestion.position, Suggestion.id)
    )
    return session.scalars(query).all()
