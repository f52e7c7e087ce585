"""Password hashing and random secrets; tokens are stored only as SHA-256 digests."""

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_DUMMY_HASHES: dict[tuple[int, int, int], str] = {}


def make_password_hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)


def hash_password(hasher: PasswordHasher, password: str) -> str:
    return hasher.hash(password)


def dummy_hash(hasher: PasswordHasher) -> str:
    """A hash of a random secret with the hasher's own costs, checked when there is no real hash."""
    key = (hasher.time_cost, hasher.memory_cost, hasher.parallelism)
    if key not in _DUMMY_HASHES:
        _DUMMY_HASHES[key] = hasher.hash(secrets.token_urlsafe(16))
    return _DUMMY_HASHES[key]


def verify_password(hasher: PasswordHasher, password_hash: str | None, password: str) -> bool:
    """Exactly one argon2 verification, whether or not the account (or its password) exists.

    An unknown user name then costs the same work as a wrong password, so timing does not tell which."""
    try:
        matched = hasher.verify(password_hash or dummy_hash(hasher), password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """API tokens and session ids carry 256 bits of entropy, so a plain SHA-256 is a safe store."""
    return hashlib.sha256(secret.encode()).hexdigest()
