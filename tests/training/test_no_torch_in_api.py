"""The API process never imports torch: the training routes, service and job registry stay torch-free."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_training_api_and_the_train_job_registration_never_import_torch() -> None:
    code = (
        "import sys, app.main, app.training.api, app.training.service, app.training.cli, app.jobs.cli\n"
        "import worker.tasks.train_experiment\n"
        "from app.jobs.registry import job_kind\n"
        "assert job_kind('train') and job_kind('train_experiment')\n"
        "app.main.api_routers(); app.main.page_routers()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
