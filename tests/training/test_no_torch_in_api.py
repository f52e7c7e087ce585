"""The API process never imports torch: every module of the app package, the app with every router
mounted, and the job registry (which names the torch job kinds by dotted path) stay torch-free."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

CODE = """
import importlib, pkgutil, sys
from fastapi import APIRouter
from fastapi.routing import APIRoute, iter_route_contexts
import app
from app.config import Settings
from app.main import create_app
from app.jobs.registry import job_kind
import worker.tasks.train_experiment

modules = [importlib.import_module(info.name) for info in pkgutil.walk_packages(app.__path__, "app.")]
routers = {module.__name__: module.router for module in modules if isinstance(getattr(module, "router", None), APIRouter)}
with_routers = {id(router): name for name, router in routers.items()}
application = create_app(Settings(data_dir=sys.argv[1], database_url="sqlite+aiosqlite:///" + sys.argv[1] + "/c.db"))
mounted = {context.original_route.endpoint for context in iter_route_contexts(application.routes) if isinstance(context.original_route, APIRoute)}
unmounted = sorted(name for name, router in routers.items() if not any(route.endpoint in mounted for route in router.routes))
assert not unmounted, f"routers the app does not mount: {unmounted}"
assert len(with_routers) >= 20, sorted(routers)
assert job_kind("train") and job_kind("train_experiment") and job_kind("detector_train")
assert "torch" not in sys.modules, "torch was imported"
print(len(modules), len(with_routers), len(application.routes))
"""


def test_the_app_with_every_router_and_the_job_registry_never_import_torch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    modules, routers, routes = (int(part) for part in done.stdout.split())
    assert modules > routers
    assert routes > routers
