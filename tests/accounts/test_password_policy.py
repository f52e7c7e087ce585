"""Passwords: not too short, not the user name or a close variant, not among the commonest ones."""

import pytest

from app.accounts.password_policy import common_passwords, password_problem
from app.cli import main
from tests.factories import make_user

NAME_VARIANTS = [
    "alicealice",
    "Alice2024!",
    "ALICE12345",
    "4l1c3-4l1c3",
    "ecila9999",
    "alice_alice",
    "!!alice!!",
]
COMMON = ["password", "password123", "P@ssw0rd!", "qwertyuiop", "Sunshine2024", "iloveyou!", "12345678"]
ACCEPTED = ["alice-correct-horse", "correct-horse-battery", "Tr0ub4dor&3-staple", "mauve-otter-bicycle"]


def test_the_shipped_list_holds_thousands_of_common_passwords() -> None:
    common = common_passwords()
    assert len(common) >= 5000
    assert {"password", "123456789", "iloveyou", "sunshine"} <= common


@pytest.mark.parametrize("password", NAME_VARIANTS)
def test_the_user_name_and_close_variants_are_refused(password: str) -> None:
    assert password_problem(password, "alice") == (
        "the password is too close to the user name; choose one that does not contain it"
    )


@pytest.mark.parametrize("password", COMMON)
def test_common_passwords_are_refused(password: str) -> None:
    problem = password_problem(password, "bob")
    assert problem is not None
    assert "most common" in problem


@pytest.mark.parametrize("password", ACCEPTED)
def test_good_passwords_pass(password: str) -> None:
    assert password_problem(password, "alice") is None


def test_length_limits() -> None:
    assert password_problem("x7#kq2", "bob") == "passwords need at least 8 characters"
    assert password_problem("x" * 201, "bob") == "passwords have at most 200 characters"


async def test_the_api_refuses_a_weak_password_with_the_reason(app, client_for):
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")

    named = await admin.post(
        "/api/v1/users", json={"name": "carol", "role": "expert", "password": "Carol-2024"}
    )
    common = await admin.post(
        "/api/v1/users", json={"name": "dave", "role": "expert", "password": "football1"}
    )

    assert named.status_code == 422
    assert "too close to the user name" in named.json()["detail"]
    assert common.status_code == 422
    assert "most common" in common.json()["detail"]
    names = [user["name"] for user in (await admin.get("/api/v1/users")).json()]
    assert "carol" not in names
    assert "dave" not in names


def test_the_cli_refuses_a_weak_password_with_the_reason(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("CONCORD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CONCORD_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 0

    assert main(["user", "add", "erin", "--role", "expert", "--password", "erin1234"]) == 2
    assert "too close to the user name" in capsys.readouterr().err
    assert main(["user", "add", "erin", "--role", "expert", "--password", "baseball"]) == 2
    assert "most common" in capsys.readouterr().err
    assert main(["user", "add", "erin", "--role", "expert", "--password", "erin-walks-far-away"]) == 0
