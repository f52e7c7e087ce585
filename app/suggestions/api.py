"""JSON routes of suggestion sets, error injection and the hidden register (all admin only).

Sets are immutable: there is deliberately no route that edits or deletes one.
"""

from fastapi import APIRouter

from app.deps import AdminUser, SessionDep, SuggestionSetDep, TaskDep
from app.offload import ComputeDep
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
    session: SessionDep, _admin: AdminUser, task: TaskDep
) -> list[SuggestionSetOut]:
    """Suggestion sets of a task (admin)."""
    return await service.list_sets(session, task)


@router.post("/tasks/{task_id}/suggestion-sets", status_code=201)
async def import_suggestion_set(
    data: SuggestionSetImport, session: SessionDep, _admin: AdminUser, task: TaskDep
) -> SuggestionSetOut:
    """Import a suggestion set (admin); all or nothing."""
    created = await service.create_suggestion_set(
        session, task, data.name, "import", data.suggestions, notes=data.notes
    )
    return await service.describe_set(session, created)


@router.get("/suggestion-sets/{set_id}")
async def get_suggestion_set(
    session: SessionDep, _admin: AdminUser, suggestion_set: SuggestionSetDep
) -> SuggestionSetDetail:
    """One suggestion set with its suggestions (admin)."""
    return await service.set_detail(session, suggestion_set)


@router.get("/suggestion-sets/{set_id}/register")
async def get_register(
    session: SessionDep, _admin: AdminUser, suggestion_set: SuggestionSetDep
) -> list[RegisterEntryOut]:
    """The hidden register of injected errors of a set (admin only, never shown to experts)."""
    return await service.register(session, suggestion_set)


@router.post("/suggestion-sets/{set_id}/inject/preview")
async def preview_injection(
    data: InjectionRequest,
    session: SessionDep,
    _admin: AdminUser,
    suggestion_set: SuggestionSetDep,
    compute: ComputeDep,
) -> InjectionPreview:
    """Counts per error kind and difficulty group that an injection would make; writes nothing (admin)."""
    return await service.preview(session, suggestion_set, data, compute)


@router.post("/suggestion-sets/{set_id}/inject", status_code=201)
async def inject_errors(
    data: InjectionRequest,
    session: SessionDep,
    _admin: AdminUser,
    suggestion_set: SuggestionSetDep,
    compute: ComputeDep,
) -> InjectionOut:
    """Apply an error-injection protocol: a new immutable set plus its hidden register (admin)."""
    return await service.inject(session, suggestion_set, data, compute)


@router.get("/injection-presets")
async def list_presets(_admin: AdminUser) -> dict[str, dict[str, object]]:
    """The error-injection presets that follow the paper (admin)."""
    return {name: protocols.PRESETS[name] for name in protocols.preset_names()}
