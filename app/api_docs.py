"""/docs (Swagger UI) and /redoc from vendored files under /static: no CDN, no inline script (CSP).

The files are swagger-ui-dist 5.35.0 (swagger-ui-bundle.js, swagger-ui.css) and redoc 2.5.4
(bundles/redoc.standalone.js) from the npm registry, unchanged except for one line of ReDoc: its footer
logo pointed at cdn.redoc.ly and is an empty data: SVG here.
"""

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

SWAGGER_UI_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title>{head}</head><body data-openapi-url='{OPENAPI_URL}'>{body}</body></html>"
    )


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """The API reference, interactive."""
    return _page(
        "Concord API · Swagger UI",
        f"<link rel='stylesheet' href='/static/swagger-ui-{SWAGGER_UI_VERSION}.css'>"
        f"<script src='/static/swagger-ui-bundle-{SWAGGER_UI_VERSION}.js' defer></script>"
        "<script src='/static/api-docs.js' defer></script>",
        "<div id='swagger-ui'></div>",
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    """The API reference, for reading."""
    return _page(
        "Concord API · ReDoc",
        f"<script src='/static/redoc.standalone-{REDOC_VERSION}.js' defer></script>"
        "<script src='/static/api-docs.js' defer></script>",
        "<div id='redoc'></div>",
    )
