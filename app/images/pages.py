"""HTML routes of images: the admin upload form's target."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from app.deps import PageAdmin, SessionDep, SettingsDep
from app.images import service
from app.models import ImagePurpose
from app.schemas_common import PathId
from app.studies import service as studies
from app.templating import is_htmx, redirect

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.post("/admin/tasks/{task_id}/images")
async def upload_images(
    request: Request,
    task_id: PathId,
    files: Annotated[list[UploadFile], File()],
    session: SessionDep,
    settings: SettingsDep,
    principal: PageAdmin,
    purpose: Annotated[ImagePurpose, Form()] = ImagePurpose.study,
) -> Response:
    """Upload study or practice images from the admin form (CSRF token in the header); all are validated
    before any is stored."""
    task = await studies.get_task(session, principal.user, task_id)
    items = [
        service.NewImage(name=upload.filename or f"upload-{index}", stream=upload.file, purpose=purpose)
        for index, upload in enumerate(files)
    ]
    images = await service.add_images(session, settings, task, items)
    if not is_htmx(request):
        return redirect(request, f"/admin/studies/{task.study_id}")
    count = len(images)
    message = f"Uploaded {count} {purpose} image{'' if count == 1 else 's'}."
    return HTMLResponse(message, headers={"HX-Trigger-After-Settle": "study-changed", "Vary": "HX-Request"})
