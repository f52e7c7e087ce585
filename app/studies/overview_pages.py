"""The admin's landing page: every study at a glance, with what to do next."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import PageAdmin, SessionDep
from app.studies.overview import overview
from app.templating import render

router = APIRouter(tags=["pages"], include_in_schema=False)

OVERVIEW = "/admin"


@router.get(OVERVIEW)
async def overview_page(request: Request, session: SessionDep, principal: PageAdmin) -> Response:
    """Studies with tasks, experts, progress per mode, washout dates and next steps (admin)."""
    context = {"principal": principal, "nav": "overview", "studies": await overview(session, principal.user)}
    return render(request, "admin/overview.html", context)
