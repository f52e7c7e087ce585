"""HTML routes of suggestion sets (admin): a task's sets, detector runs, injection preview/apply, the register."""

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import PageAdmin, SessionDep, SettingsDep, SuggestionSetDep, TaskDep
from app.detectors import service as detectors
from app.detectors.schemas import DetectRequest
from app.errors import Conflict, Invalid
from app.models import DetectorModel, Task
from app.offload import ComputeDep
from app.studies import service as studies
from app.suggestions import protocols, service
from app.suggestions.schemas import InjectionPreview, InjectionRequest, SuggestionSetOut
from app.templating import is_htmx, redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)

TEMPLATE = "admin/suggestions.html"


@dataclass(frozen=True)
class InjectionForm:
    """The injection form as typed in, shown again next to its preview or error."""

    preset: str = protocols.preset_names()[0]
    seed: str = "0"
    overrides: str = ""
    name: str = ""

    def request(self) -> InjectionRequest:
        """The service request; a bad seed, overrides document or name raises FieldError with the reason."""
        try:
            overrides = _parse_overrides(self.overrides)
        except ValueError as error:
            raise FieldError("overrides", str(error)) from error
        if self.seed.strip():
            try:
                overrides["seed"] = _parse_seed(self.seed)
            except ValueError as error:
                raise FieldError("seed", str(error)) from error
        try:
            return InjectionRequest(preset=self.preset, overrides=overrides, name=self.name.strip() or None)
        except ValidationError as error:
            raise FieldError("name", error.errors()[0]["msg"]) from error


class FieldError(ValueError):
    """A field of the injection form that cannot be read; the page outlines that field alone."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _error_field(form: InjectionForm, error: Exception, presets: list[str]) -> str | None:
    """The form field to outline: the one that failed to parse, else the preset when it does not fit,
    else the overrides when some were given (a fitting preset alone is valid), else none (a data problem)."""
    if isinstance(error, FieldError):
        return error.field
    if form.preset not in presets:
        return "preset"
    return "overrides" if form.overrides.strip() else None


def _parse_overrides(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"overrides are not valid JSON: {error.msg} (line {error.lineno})") from error
    if not isinstance(value, dict):
        raise ValueError('overrides must be a JSON object, e.g. {"steps": {"0": {"count": 10}}}')
    return value


def _parse_seed(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError as error:
        raise ValueError(f"the seed must be a whole number, not {text.strip()!r}") from error


@dataclass(frozen=True)
class CountRow:
    kind: str
    group: str
    count: int


def count_rows(preview: InjectionPreview) -> list[CountRow]:
    """One row per error kind and difficulty group, the group named as its protocol step names it."""
    names = _group_names(preview.protocol)
    return [
        CountRow(kind, _group_label(names.get(kind, []), group), count)
        for kind, groups in preview.counts.items()
        for group, count in groups.items()
    ]


def _group_names(protocol: dict[str, Any]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for step in protocol.get("steps", []):
        if step.get("group_names"):
            names.setdefault(step["kind"], list(step["group_names"]))
    return names


def _group_label(names: list[str], group: str) -> str:
    if group == "none":
        return "–"
    index = int(group)
    return f"{index} ({names[index]})" if index < len(names) else str(index)


def _default_preset(task: Task) -> str:
    names = protocols.preset_names()
    return f"paper-{task.kind}" if f"paper-{task.kind}" in names else names[0]


@dataclass(frozen=True)
class DetectorChoice:
    detector: DetectorModel
    problem: str | None


async def _detector_choices(session: AsyncSession, task: Task) -> list[DetectorChoice]:
    """Every registered detector, with the reason it cannot run on this task (labels that do not fit)."""
    choices = []
    for detector in await detectors.list_detectors(session):
        try:
            await detectors.fitting_sidecar(session, task, detector)
            choices.append(DetectorChoice(detector, None))
        except Invalid as error:
            choices.append(DetectorChoice(detector, error.message))
    return choices


async def _context(session: AsyncSession, principal: PageAdmin, task: Task, **extra: Any) -> dict[str, Any]:
    """Everything the page shows; routes add the preview, errors, register or job they produced."""
    study = await studies.get_study(session, principal.user, task.study_id)
    return {
        "principal": principal,
        "nav": "studies",
        "study": study,
        "task": task,
        "sets": await service.list_sets(session, task),
        "presets": protocols.presets_for(task.kind),
        "default_form": InjectionForm(preset=_default_preset(task)),
        "forms": {},
        "previews": {},
        "errors": {},
        "created_id": None,
        "register": None,
        "register_set": None,
        "detectors": await _detector_choices(session, task),
        "detect_job": None,
        "detect_error": None,
        **extra,
    }


@router.get("/admin/tasks/{task_id}/suggestions")
async def suggestions_page(
    request: Request, session: SessionDep, principal: PageAdmin, task: TaskDep
) -> Response:
    """A task's suggestion sets, detector runs and error injection (admin)."""
    return render(request, TEMPLATE, await _context(session, principal, task), block="sets")


@router.get("/admin/suggestion-sets/{set_id}/register")
async def register_page(
    request: Request, session: SessionDep, principal: PageAdmin, suggestion_set: SuggestionSetDep
) -> Response:
    """The hidden register of a set, read-only (admin)."""
    task = await studies.get_task(session, principal.user, suggestion_set.task_id)
    entries = await service.register(session, suggestion_set)
    context = await _context(
        session,
        principal,
        task,
        register=entries,
        register_set=await service.describe_set(session, suggestion_set),
    )
    return render(request, TEMPLATE, context, block="register")


def _injection_form(
    preset: Annotated[str, Form()] = "",
    seed: Annotated[str, Form()] = "0",
    overrides: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> InjectionForm:
    return InjectionForm(preset=preset, seed=seed, overrides=overrides, name=name)


InjectionFormDep = Annotated[InjectionForm, Depends(_injection_form)]


@router.post("/admin/suggestion-sets/{set_id}/preview")
async def preview_injection(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    suggestion_set: SuggestionSetDep,
    form: InjectionFormDep,
    compute: ComputeDep,
) -> Response:
    """Counts per error kind and group that an injection would make; writes nothing (admin)."""
    task = await studies.get_task(session, principal.user, suggestion_set.task_id)
    shown = await service.describe_set(session, suggestion_set)
    try:
        preview = await service.preview(session, suggestion_set, form.request(), compute)
    except (ValueError, Invalid) as error:
        return await _form_error(request, session, principal, task, shown, form, error)
    set_id = suggestion_set.id
    extra = {"forms": {set_id: form}, "previews": {set_id: (preview, count_rows(preview))}, "item": shown}
    return render(request, TEMPLATE, await _context(session, principal, task, **extra), block="injection")


@router.post("/admin/suggestion-sets/{set_id}/inject")
async def apply_injection(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    suggestion_set: SuggestionSetDep,
    form: InjectionFormDep,
    compute: ComputeDep,
) -> Response:
    """Create the injected set and its hidden register (admin)."""
    task = await studies.get_task(session, principal.user, suggestion_set.task_id)
    try:
        created = await service.inject(session, suggestion_set, form.request(), compute)
    except (ValueError, Invalid) as error:
        shown = await service.describe_set(session, suggestion_set)
        response = await _form_error(request, session, principal, task, shown, form, error)
        response.headers["HX-Retarget"] = f"#injection-{suggestion_set.id}"
        response.headers["HX-Reswap"] = "outerHTML"
        return response
    if not is_htmx(request):
        return redirect(request, f"/admin/tasks/{task.id}/suggestions")
    context = await _context(session, principal, task, created_id=created.suggestion_set.id)
    return render(request, TEMPLATE, context, block="sets")


async def _form_error(
    request: Request,
    session: AsyncSession,
    principal: PageAdmin,
    task: Task,
    shown: SuggestionSetOut,
    form: InjectionForm,
    error: Exception,
) -> Response:
    message = error.message if isinstance(error, Invalid) else str(error)
    field = _error_field(form, error, protocols.presets_for(task.kind))
    extra = {"forms": {shown.id: form}, "errors": {shown.id: (field, message)}, "item": shown}
    context = await _context(session, principal, task, **extra)
    return render(request, TEMPLATE, context, block="injection", status_code=422)


@router.post("/admin/tasks/{task_id}/detect")
async def run_detector(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PageAdmin,
    task: TaskDep,
    detector_id: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    """Queue a detect job for the task and show its progress (admin)."""
    try:
        data = DetectRequest.model_validate({"detector_id": detector_id, "name": name.strip() or None})
        job = await detectors.start_detection(session, settings, task, data, principal.user)
    except ValidationError:
        return await _detect_error(request, session, principal, task, "choose a registered detector")
    except (Invalid, Conflict) as error:
        return await _detect_error(request, session, principal, task, error.message)
    if not is_htmx(request):
        return redirect(request, "/admin/jobs")
    context = await _context(session, principal, task, detect_job=job)
    return render(request, TEMPLATE, context, block="detect_job")


async def _detect_error(
    request: Request, session: AsyncSession, principal: PageAdmin, task: Task, message: str
) -> Response:
    context = await _context(session, principal, task, detect_error=message)
    return render(request, TEMPLATE, context, block="detect_job", status_code=422)
