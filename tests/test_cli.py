"""The `concord` command: every command and subcommand answers --help; user and token commands work."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser, main


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths.extend(_command_paths(child, (*prefix, name)))
    return paths


COMMANDS = _command_paths(build_parser())


def test_the_public_command_names_exist() -> None:
    names = set(COMMANDS)
    for expected in [
        ("serve",),
        ("migrate",),
        ("user", "add"),
        ("user", "token"),
        ("demo",),
        ("worker",),
        ("import-exact",),
        ("evaluate",),
        ("detector", "train"),
        ("train", "run"),
        ("train", "experiment"),
        ("jobs", "list"),
        ("jobs", "show"),
        ("jobs", "cancel"),
    ]:
        assert expected in names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "concord")
def test_every_command_answers_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: concord" in capsys.readouterr().out


def test_user_add_and_token_on_a_fresh_database(tmp_path: Path) -> None:
    env = {"CONCORD_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "app.cli"]
    migrate = subprocess.run([*run, "migrate"], env=env, capture_output=True, text=True, check=False)
    assert migrate.returncode == 0, migrate.stderr
    added = subprocess.run(
        [*run, "user", "add", "ann", "--role", "expert", "--password", "long-enough-pw"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    token = subprocess.run(
        [*run, "user", "token", "ann"], env=env, capture_output=True, text=True, check=False
    )
    assert token.returncode == 0
    assert token.stdout.strip().startswith("cc_")
    duplicate = subprocess.run(
        [*run, "user", "add", "ann", "--role", "expert", "--password", "long-enough-pw"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert duplicate.returncode == 2
    assert "already exists" in duplicate.stderr
    unknown = subprocess.run(
        [*run, "user", "token", "nobody"], env=env, capture_output=True, text=True, check=False
    )
    assert unknown.returncode == 2
    assert "no user" in unknown.stderr
