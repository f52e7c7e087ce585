"""Jinja2 templates with block rendering for HTMX, and the login redirect of pages (app.deps raises it)."""

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from jinja2_fragments.fastapi import Jinja2Blocks

from app.deps import LoginRequired
from app.deps import PageAdmin as PageAdmin  # re-exported until every page imports it from app.deps
from app.deps import PagePrincipal as PagePrincipal
from app.error_pages import install_error_pages
from app.flash import clear_flash, read_flash
from app.resources import resource_root

TEMPLATE_DIR = resource_root() / "templates"
HTMX_VERSION = "2.0.11"


def make_templates() -> Jinja2Blocks:
    templates = Jinja2Blocks(directory=str(TEMPLATE_DIR))
    templates.env.globals["htmx_js"] = f"/static/htmx-{HTMX_VERSION}.min.js"
    return templates


def get_templates(request: Request) -> Jinja2Blocks:
    templates: Jinja2Blocks = request.app.state.templates
    return templates


TemplatesDep = Annotated[Jinja2Blocks, Depends(get_templates)]


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    block: str | None = None,
    status_code: int = 200,
) -> Response:
    """The whole page, or only `block` when HTMX asks; always `Vary: HX-Request`."""
    templates = get_templates(request)
    block_name = block if block and is_htmx(request) else None
    message = read_flash(request) if block_name is None else None
    if message:
        context = {**context, "flash": message}
    response: Response = templates.TemplateResponse(
        request, name, context, status_code=status_code, block_name=block_name
    )
    if message:
        clear_flash(response)
    response.headers["Vary"] = "HX-Request"
    return response


def redirect(request: Request, url: str) -> Response:
    """A 303 for plain requests; HX-Redirect for HTMX so the whole page changes."""
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": url, "Vary": "HX-Request"})
    return RedirectResponse(url, status_code=303, headers={"Vary": "HX-Request"})


def login_url(next_url: str = "/", expired: bool = False) -> str:
    url = f"/login?next={quote(next_url, safe='/')}"
    return url + "&expired=1" if expired else url


async def handle_login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return redirect(request, login_url(exc.next_url, exc.expired))


def install_page_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, handle_login_required)
    install_error_pages(app)
