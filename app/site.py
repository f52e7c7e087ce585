"""Site-wide routes that belong to no domain: the favicon."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(tags=["pages"], include_in_schema=False)

ONE_DAY_SECONDS = 86400


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The site icon (SVG), where browsers look for it without a link."""
    headers = {"Cache-Control": f"public, max-age={ONE_DAY_SECONDS}"}
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml", headers=headers)
