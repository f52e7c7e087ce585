"""CLI commands on a fresh data dir, from any working directory; the default data dir; an unusable one;
the README's reproduction commands run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings, default_data_dir

ROOT = Path(__file__).resolve().parent.parent
ASTHMA = ROOT.parent / "shared" / "data" / "exact-study" / "Asthma"
GT_LINE = '{image}|Neutrophile|{{"x1": "10","y1": "10","x2": "40","y2": "40",}}|a|2020-01-23 18:16:32|a|2020-01-23 18:16:32|u1|False|200|150'


def concord(*args: str, data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONCORD_DATA_DIR": str(data_dir), "CONCORD_DATABASE_URL": ""}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_default_data_dir_is_per_user_not_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONCORD_DATA_DIR", raising=False)
    folder = default_data_dir()
    assert folder.is_absolute()
    assert folder.name == "concord"
    assert Settings(_env_file=None).data_dir == folder


def test_database_commands_work_on_a_fresh_data_dir_from_any_directory(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "fresh" / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "gt.txt").write_text(GT_LINE.format(image="a.png") + "\n")

    missing = concord("evaluate", "--study", "S", data_dir=data, cwd=elsewhere)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip() == "concord: no study 'S'", missing.stderr
    imported = concord(
        "import-exact", "gt.txt", "--study", "S", "--task", "T", "--kind", "classify", "--role", "ground-truth",
        data_dir=data, cwd=elsewhere,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    expert = concord(
        "import-exact", "gt.txt", "--study", "S", "--task", "T", "--kind", "classify", "--role", "expert",
        "--mode", "aided", "--expert", "bob", data_dir=data, cwd=elsewhere,
    )  # fmt: skip
    assert expert.returncode == 0, expert.stderr
    evaluated = concord(
        "evaluate", "--study", "S", "--json", "--consensus-nms", "0.5", data_dir=data, cwd=ROOT
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout.splitlines()[-1])
    consensus = metrics["tasks"]["T"]["modes"]["aided"]["consensus"]
    assert (consensus["method"], consensus["nms_iou"], consensus["objects"]) == ("nms", 0.5, 1)
    both = concord(
        "evaluate",
        "--study",
        "S",
        "--consensus-nms",
        "0.5",
        "--consensus-radius",
        "50",
        data_dir=data,
        cwd=ROOT,
    )
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    jobs = concord("jobs", "list", data_dir=tmp_path / "other", cwd=elsewhere)
    assert jobs.returncode == 0, jobs.stderr


def test_an_unusable_data_dir_gives_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = concord("evaluate", "--study", "S", data_dir=blocker / "data", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"concord: cannot use the data dir {blocker / 'data'}: ")
    assert "CONCORD_DATA_DIR" in result.stderr


def _reproduction_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Reproducing the published study", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.skipif(not ASTHMA.is_dir(), reason="the published Asthma data is not beside the checkout")
def test_the_readme_reproduction_runs_as_written(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "concord").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app.cli "$@"\n')
    (bin_dir / "concord").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "CONCORD_DATA_DIR": str(tmp_path / "data"),
        "CONCORD_DATABASE_URL": "",
    }
    metrics_file = tmp_path / "metrics.json"
    script = "set -e\n" + _reproduction_block() + f"concord evaluate --study Asthma --json > {metrics_file}\n"

    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert "mean (sd)" in done.stdout
    assert "vote-weighted" in done.stdout
    metrics = json.loads(metrics_file.read_text())
    aided = metrics["tasks"]["asthma"]["modes"]["aided"]["summary"]["concordance"]
    assert aided["mean"] == pytest.approx(0.841, abs=5e-4)
