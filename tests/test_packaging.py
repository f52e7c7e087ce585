"""A regular install (the container image) carries every template and migration as a data file."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _data_files() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        data: dict[str, list[str]] = tomllib.load(file)["tool"]["setuptools"]["data-files"]
    return data


def test_every_template_and_migration_is_installed_beside_the_package() -> None:
    patterns = [(target, pattern) for target, items in _data_files().items() for pattern in items]
    wanted = [ROOT / "alembic.ini", *(ROOT / "templates").rglob("*"), *(ROOT / "migrations").rglob("*")]
    files = [path for path in wanted if path.is_file() and "__pycache__" not in path.parts]
    missing = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        target = f"share/concord/{Path(relative).parent.as_posix()}".removesuffix("/.")
        if not any(place == target and fnmatch.fnmatch(relative, item) for place, item in patterns):
            missing.append(relative)
    assert missing == [], "add these to [tool.setuptools.data-files] in pyproject.toml"
    assert len(files) > 20


def test_the_published_reference_stays_out_of_the_installed_packages() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        include: list[str] = tomllib.load(file)["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch("app.detectors", pattern) for pattern in include)
    assert not any(fnmatch.fnmatch("reference", pattern) for pattern in include)
    assert (ROOT / "reference" / "published.py").is_file()
