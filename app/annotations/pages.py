"""HTML routes of the annotation workspace: the image page and the training-mode reference overlay."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.annotations import service
from app.annotations.service import Workspace
from app.config import Settings
from app.deps import Principal, SessionDep, SettingsDep, request_credential
from app.errors import NotFound
from app.images import repository as images_repository
from app.images import service as images
from app.images.tiles import TileCache
from app.models import Assignment, AssignmentStatus, Image, Mode, Study, TaskKind, purpose_of_mode
from app.schemas_common import PathId
from app.studies import repository as studies_repository
from app.studies import service as studies
from app.templating import PagePrincipal, redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)

TILE_SIZE = 256
HEARTBEAT_SECONDS = 15
API = "/api/v1"
MODE_BANNERS = {
    Mode.training: "practice images: after marking an image done you may compare with the reference.",
    Mode.aided: "the objects start from an algorithm's suggestions. Check and correct every one.",
}
UNAIDED_BANNERS = {
    TaskKind.classify: "box every cell you see and give it its label.",
    TaskKind.grade: "box every cell you see and give it its grade.",
    TaskKind.detect: "find and box every object of the labels below; most of the image holds none.",
}


def mode_banner(mode: str, kind: str) -> str:
    """The workspace's one-line instruction: the unaided one depends on what the task asks for."""
    if mode == Mode.unaided:
        return UNAIDED_BANNERS[TaskKind(kind)]
    return MODE_BANNERS[Mode(mode)]


async def _own_workspace(
    session: SessionDep, principal: Principal, assignment_id: int, image_id: int
) -> Workspace:
    assignment = await studies.get_assignment(session, principal.user, assignment_id)
    if assignment.expert_id != principal.user.id:
        raise NotFound(f"no assignment {assignment_id} of yours")
    workspace = await service.find_workspace(session, principal.user, image_id, assignment.mode)
    if workspace.assignment.id != assignment.id:
        raise NotFound(f"image {image_id} is not part of assignment {assignment_id}")
    return workspace


async def _own_assignment(session: SessionDep, principal: Principal, assignment_id: int) -> Assignment:
    assignment = await studies.get_assignment(session, principal.user, assignment_id)
    if assignment.expert_id != principal.user.id:
        raise NotFound(f"no assignment {assignment_id} of yours")
    return assignment


@router.get("/work/{assignment_id}")
async def resume(
    request: Request, assignment_id: PathId, session: SessionDep, principal: PagePrincipal
) -> Response:
    """Open the first image of an own assignment that is not done yet."""
    assignment = await _own_assignment(session, principal, assignment_id)
    purpose = purpose_of_mode(assignment.mode)
    image_list = await images_repository.images_of_task(session, assignment.task_id, purpose)
    if not image_list:
        raise NotFound(f"this task has no {purpose} images yet")
    done = await studies_repository.completed_image_ids(session, assignment.id)
    first = next((image for image in image_list if image.id not in done), image_list[0])
    return redirect(request, f"/work/{assignment.id}/images/{first.id}")


@router.get("/work/{assignment_id}/images/{image_id}")
async def workspace_page(
    request: Request,
    assignment_id: PathId,
    image_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
) -> Response:
    """The annotation workspace of one image; changes nothing: annotate.js opens the image (POST) and
    shows the objects that answers."""
    workspace = await _own_workspace(session, principal, assignment_id, image_id)
    purpose = purpose_of_mode(workspace.assignment.mode)
    image_list = list(await images_repository.images_of_task(session, workspace.task.id, purpose))
    done = await studies_repository.completed_image_ids(session, workspace.assignment.id)
    cache: TileCache = request.app.state.tile_cache
    described = await images.describe(cache, settings, workspace.image)
    index = next(i for i, image in enumerate(image_list) if image.id == image_id)
    config = _config(workspace, described.levels, image_list, index, done)
    config |= _tile_grant(request, settings, principal, workspace.image)
    context = {
        "principal": principal,
        "nav": "dashboard",
        "workspace": workspace,
        "banner": mode_banner(workspace.assignment.mode, workspace.task.kind),
        "images": image_list,
        "index": index,
        "done": done,
        "all_done": all(image.id in done for image in image_list),
        "labels": sorted(workspace.labels_by_name.values(), key=lambda label: label.position),
        "config": config,
    }
    return render(request, "work/workspace.html", context)


def _tile_grant(request: Request, settings: Settings, principal: Principal, image: Image) -> dict[str, Any]:
    """The granted tile URL for annotate.js (it asks GET /api/v1/images/{id} again before it expires)."""
    credential = request_credential(request)
    if credential is None or image.file_format == "missing":
        return {"tileUrl": None, "tileUrlExpiresAt": None}
    state = request.app.state
    url, expires_at = images.grant_tiles(
        state.tile_grants, state.image_files, state.tile_cache, settings, image, principal.user, credential
    )
    return {"tileUrl": url, "tileUrlExpiresAt": expires_at}


def _url(workspace: Workspace, image: Image) -> str:
    return f"/work/{workspace.assignment.id}/images/{image.id}"


def _config(
    workspace: Workspace,
    levels: list[tuple[int, int]],
    image_list: list[Image],
    index: int,
    done: set[int],
) -> dict[str, Any]:
    """What annotate.js needs; never suggestion origins, scores or register data."""
    image, mode = workspace.image, workspace.assignment.mode
    labels = sorted(workspace.labels_by_name.values(), key=lambda label: label.position)
    return {
        "imageId": image.id,
        "mode": mode,
        "width": image.width,
        "height": image.height,
        "levels": levels,
        "tileSize": TILE_SIZE,
        "api": API,
        "labels": [{"name": label.name, "colour": label.colour, "key": label.key} for label in labels],
        "defaultBoxSize": workspace.task.default_box_size,
        "prevUrl": _url(workspace, image_list[index - 1]) if index > 0 else None,
        "nextUrl": _url(workspace, image_list[index + 1]) if index + 1 < len(image_list) else None,
        "done": image.id in done,
        "nextOpenUrl": _next_open_url(workspace, image_list, index, done),
        "othersLeft": sum(1 for other in image_list if other.id not in done and other.id != image.id),
        "readOnly": workspace.assignment.status == AssignmentStatus.finished,
        "heartbeatSeconds": HEARTBEAT_SECONDS,
        "referenceUrl": f"{_url(workspace, image)}/reference" if mode == Mode.training else None,
    }


def _next_open_url(workspace: Workspace, image_list: list[Image], index: int, done: set[int]) -> str | None:
    """The next image not done yet after this one, wrapping round; None when all others are done."""
    following = image_list[index + 1 :] + image_list[:index]
    return next((_url(workspace, image) for image in following if image.id not in done), None)


@router.get("/work/{assignment_id}/images/{image_id}/reference")
async def reference_overlay(
    request: Request, assignment_id: PathId, image_id: PathId, session: SessionDep, principal: PagePrincipal
) -> Response:
    """Reference objects over the own ones (training mode, image done): what was missed and added."""
    workspace = await _own_workspace(session, principal, assignment_id, image_id)
    comparison = await service.training_reference(session, workspace)
    context = {
        "principal": principal,
        "image": workspace.image,
        "labels_by_id": workspace.labels_by_id,
        "comparison": comparison,
        "missed": sum(1 for _, found in comparison.reference if not found),
    }
    return render(request, "work/reference.html", context)


@router.get("/work/{assignment_id}/finish")
async def finish_page(
    request: Request, assignment_id: PathId, session: SessionDep, principal: PagePrincipal
) -> Response:
    """What finishing an own assignment means (images left, the washout it starts), and its button."""
    assignment = await _own_assignment(session, principal, assignment_id)
    preview = await studies.finish_preview(session, assignment)
    task = await studies.get_task(session, principal.user, assignment.task_id)
    study = await session.get(Study, task.study_id)
    context = {"principal": principal, "nav": "dashboard", "preview": preview, "task": task, "study": study}
    return render(request, "work/finish.html", context)


@router.post("/work/{assignment_id}/finish")
async def finish(
    request: Request, assignment_id: PathId, session: SessionDep, principal: PagePrincipal
) -> Response:
    """Finish an own assignment once every image is done; its annotations become read only."""
    assignment = await _own_assignment(session, principal, assignment_id)
    await studies.finish_when_all_done(session, assignment)
    return redirect(request, "/dashboard")
