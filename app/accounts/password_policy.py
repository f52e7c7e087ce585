"""What a password must not be: short, the user's own name (or a close variant), or a common password."""

import re
from functools import cache
from pathlib import Path

MIN_LENGTH = 8
MAX_LENGTH = 200
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
# Digits and symbols that stand in for letters ("p@ssw0rd"); folded before comparing with names and lists.
LOOKALIKES = str.maketrans("0134578@$!|", "oieastbasil")
NOT_LETTER = re.compile(r"[^a-z]+")
DECORATION = re.compile(r"^[\W\d_]+|[\W\d_]+$")
# After taking the user name out, a password needs at least this many letters of its own.
OWN_LETTERS = 4


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def _letters(text: str, *, lookalikes: bool) -> str:
    lowered = text.lower()
    return NOT_LETTER.sub("", lowered.translate(LOOKALIKES) if lookalikes else lowered)


def _is_close_to_name(password: str, user_name: str) -> bool:
    """The name (forwards or backwards, any case, look-alike digits) plus only digits or symbols."""
    for lookalikes in (False, True):
        name = _letters(user_name, lookalikes=lookalikes)
        rest = _letters(password, lookalikes=lookalikes)
        if len(name) < 3 or (name not in rest and name[::-1] not in rest):
            continue
        if len(rest.replace(name, "").replace(name[::-1], "")) < OWN_LETTERS:
            return True
    return False


def _is_common(password: str) -> bool:
    common = common_passwords()
    lowered = password.lower()
    undecorated = DECORATION.sub("", lowered)
    return lowered in common or undecorated in common or undecorated.translate(LOOKALIKES) in common


def password_problem(password: str, user_name: str) -> str | None:
    """Why the password is refused, in words for the user; None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"passwords need at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"passwords have at most {MAX_LENGTH} characters"
    if _is_close_to_name(password, user_name):
        return "the password is too close to the user name; choose one that does not contain it"
    if _is_common(password):
        return "this password is among the most common ones and easily guessed; choose another"
    return None
