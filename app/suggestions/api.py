"""JSON routes of suggestion sets, error injection and the hidden register (all admin only).

Sets are immutable: there is deliberately no route that edits or deletes one.
"""

from fastapi import APIRouter

from app.deps import AdminUser, SessionDep
from app.offload import ComputeDep
from app.schemas_common import PathId
from app.studies import service as studies
from app.suggestions import protocols, service
from app.suggestions.schemas import (
    InjectionOut,
    InjectionPreview,
    InjectionRequest,
    RegisterEntryOut,
    SuggestionSetDetail,
    SuggestionSetImport,
    SuggestionSetOut,
)

router = APIRouter(tags=["suggestions"])


@router.get("/tasks/{task_id}/suggestion-sets")
async def list_suggestion_sets(
    task_id: PathId, session: SessionDep, admin: AdminUser
) -> list[SuggestionSetOut]:
    """Suggestion sets of a task (admin)."""
    task = await studies.get_task(session, admin, task_id)
    return await service.list_sets(session, task)


@router.post("/tasks/{task_id}/suggestion-sets", status_code=201)
async def import_suggestion_set(
    task_id: PathId, data: SuggestionSetImport, session: SessionDep, admin: AdminUser
) -> SuggestionSetOut:
    """Import a suggestion set (admin); all or nothing."""
    task = await studies.get_task(session, admin, task_id)
    created = await service.create_suggestion_set(
        session, task, data.name, "import", data.suggestions, notes=data.notes
    )
    return await service.describe_set(session, created)


@router.get("/suggestion-sets/{set_id}")
async def get_suggestion_set(set_id: PathId, session: SessionDep, _admin: AdminUser) -> SuggestionSetDetail:
    """One suggestion set with its suggestions (admin)."""
    return await service.set_detail(session, await service.get_set(session, set_id))


@router.get("/suggestion-sets/{set_id}/register")
async def get_register(set_id: PathId, session: SessionDep, _admin: AdminUser) -> list[RegisterEntryOut]:
    """The hidden register of injected errors of a set (admin only, never shown to experts)."""
    return await service.register(session, await service.get_set(session, set_id))


@router.post("/suggestion-sets/{set_id}/inject/preview")
async def preview_injection(
    set_id: PathId, data: InjectionRequest, session: SessionDep, _admin: AdminUser, compute: ComputeDep
) -> InjectionPreview:
    """Counts per error kind and difficulty group that an injection would make; writes nothing (admin)."""
    return await service.preview(session, await service.get_set(session, set_id), data, compute)


@router.post("/suggestion-sets/{set_id}/inject", status_code=201)
async def inject_errors(
    set_id: PathId, data: InjectionRequest, session: SessionDep, _admin: AdminUser, compute: ComputeDep
) -> InjectionOut:
    """Apply an error-injection protocol: a new immutable set plus its hidden register (admin)."""
    return await service.inject(session, await service.get_set(session, set_id), data, compute)


@router.get("/injection-presets")
async def list_presets(_admin: AdminUser) -> dict[str, dict[str, object]]:
    """The error-injection presets that follow the paper (admin)."""
    return {name: protocols.PRESETS[name] for name in protocols.preset_names()}
