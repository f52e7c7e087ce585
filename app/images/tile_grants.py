"""Signed tile grants: the image descriptor authorises once, the tile route checks a signature only.

A viewer asks ``GET /api/v1/images/{id}`` (or opens the workspace page) with its credential; that route
does the full authorisation (studies.get_image) and answers a tile URL template that carries a grant:
``/api/v1/images/{id}/granted-tiles/{user}-{expires}-{signature}/{level}/{col}/{row}``. The signature is
an HMAC-SHA256, with the server's tile-grant key, over the image id, the user id, the expiry, the
credential the descriptor was asked with (the API token or the session cookie) and the image's file
(SHA-256 and window). The tile route recomputes it from the request's own credential (once: a signature
found valid is remembered with the image id, grant, credential and file it was valid for, and only the
expiry is checked again) and answers without a database session, so:

- another user (another credential), another image, a changed image row, a tampered or expired grant,
  or a request without the credential: refused (401 without a credential, 403 otherwise);
- a revoked assignment, a disabled account or a revoked token or session is honoured when the grant
  expires, at most ``CONCORD_TILE_GRANT_SECONDS`` plus a quarter of it after the descriptor was asked
  (expiries are rounded up to a quarter of the lifetime, so that a browser's cached tiles keep their URLs
  across page loads within one quarter).

The key is ``CONCORD_TILE_GRANT_SECRET`` when set (several servers behind one address share it), else
32 random bytes kept in ``<data dir>/secrets/tile-grant.key``, made on first start.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings

KEY_BYTES = 32
SIGNATURE_BYTES = 16
SHA256_BLOCK_BYTES = 64
URLSAFE = bytes.maketrans(b"+/", b"-_")
MAX_CHECKED = 4096  # grants remembered as checked (image, grant, credential, file): a few per viewer
EXPIRED = "the tile grant has expired; ask the image again"


class GrantRefused(Exception):
    """The grant is malformed, expired, or not signed for this image, file and credential."""


@dataclass(slots=True)  # not frozen: parsed for every tile, in a fifth of a frozen one's time
class Grant:
    user_id: int
    expires_at: int
    signature: str

    @property
    def token(self) -> str:
        return f"{self.user_id}-{self.expires_at}-{self.signature}"


def file_identity(sha256: str, window: tuple[int, int, int, int]) -> str:
    """What a grant is bound to besides the image id: the stored file and the image's window of it."""
    return f"{sha256}:{','.join(map(str, window))}"


class TileGrants:
    def __init__(self, key: bytes, lifetime_seconds: int) -> None:
        if len(key) < 16:
            raise ValueError("the tile-grant key must have at least 16 bytes")
        self._inner, self._outer = _keyed_sha256_pair(key)
        self.lifetime_seconds = lifetime_seconds
        self._step = max(1, lifetime_seconds // 4)
        self._checked: dict[tuple[int, str, str, str], Grant] = {}

    def issue(
        self, image_id: int, user_id: int, credential: str, identity: str, now: float | None = None
    ) -> Grant:
        moment = int(time.time() if now is None else now)
        expires_at = -(-(moment + self.lifetime_seconds) // self._step) * self._step
        signature = self._sign(image_id, user_id, expires_at, credential, identity)
        return Grant(user_id, expires_at, signature)

    def check(
        self, token: str, image_id: int, credential: str, identity: str, now: float | None = None
    ) -> Grant:
        """The grant when it is valid for this image, file and credential now; else GrantRefused.

        A grant whose signature was found valid for these four values is remembered with them, so that the
        next tile's check is a look-up and the expiry (a viewer asks dozens of tiles with one grant; parsing
        and signing cost each tile 2-3 µs, a third of what a cached tile costs beyond a static file)."""
        key = (image_id, token, credential, identity)
        grant = self._checked.get(key)
        if grant is None:
            grant = unexpired(token, now)
            self.verify(grant, image_id, credential, identity)
            self._remember(key, grant)
        elif _expired(grant, now):
            raise GrantRefused(EXPIRED)
        return grant

    def _remember(self, key: tuple[int, str, str, str], grant: Grant) -> None:
        if len(self._checked) >= MAX_CHECKED:
            self._checked.clear()  # expired grants go too; the live ones are checked afresh once
        self._checked[key] = grant

    def verify(self, grant: Grant, image_id: int, credential: str, identity: str) -> None:
        """GrantRefused unless the grant's signature is this image's, file's and credential's."""
        expected = self._sign(image_id, grant.user_id, grant.expires_at, credential, identity)
        if not hmac.compare_digest(expected, grant.signature):
            raise GrantRefused("the tile grant is not valid for this image and credential")

    def _sign(self, image_id: int, user_id: int, expires_at: int, credential: str, identity: str) -> str:
        message = f"tile\n{image_id}\n{user_id}\n{expires_at}\n{identity}\n{credential}".encode()
        # HMAC-SHA256 from copies of its inner and outer hashes keyed once: an HMAC object's copy and digest
        # cost every tile 3 µs, these two hashes' 1 µs; the signature is the same (tested against hmac)
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        encoded = binascii.b2a_base64(outer.digest()[:SIGNATURE_BYTES], newline=False)
        return encoded.translate(URLSAFE).rstrip(b"=").decode()


def _keyed_sha256_pair(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC's inner and outer SHA-256 after the key's block (RFC 2104): a key longer than a block is
    hashed first, a shorter one padded with zeros."""
    if len(key) > SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    block = key.ljust(SHA256_BLOCK_BYTES, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))
    return inner, outer


def unexpired(token: str, now: float | None = None) -> Grant:
    """The grant, parsed, when it has not expired (the cheap part of a check, before any look-up)."""
    grant = parse(token)
    if _expired(grant, now):
        raise GrantRefused(EXPIRED)
    return grant


def _expired(grant: Grant, now: float | None) -> bool:
    return grant.expires_at <= (time.time() if now is None else now)


def parse(token: str) -> Grant:
    parts = token.split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(parts[0]) > 18:
        raise GrantRefused("malformed tile grant")
    if len(parts[1]) > 12:
        raise GrantRefused("malformed tile grant")
    return Grant(int(parts[0]), int(parts[1]), parts[2])


def grant_key(settings: Settings) -> bytes:
    """CONCORD_TILE_GRANT_SECRET, else the data dir's key file, made (0600) when missing."""
    if settings.tile_grant_secret:
        return settings.tile_grant_secret.encode()
    path = settings.data_dir / "secrets" / "tile-grant.key"
    if not path.is_file():
        _create_key(path)
    return path.read_bytes()


def _create_key(path: Path) -> None:
    """Atomic: of several processes starting at once, one key wins and all read it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, secrets.token_bytes(KEY_BYTES))
    finally:
        os.close(descriptor)
    try:
        os.link(partial, path)  # fails when another process made the key first; theirs is kept
    except FileExistsError:
        pass
    finally:
        partial.unlink()
