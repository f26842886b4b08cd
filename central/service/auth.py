"""Who is calling: bearer tokens (named tokens, and the single ``EMS_API_TOKEN``), and short-lived signed
cookies for the browser's event stream.

Verification stays cheap per request: the tokens file is re-read only when its inode, size or mtime
changes (one ``stat`` per request); a token whose scrypt hash was verified once is remembered as an HMAC
of the token under a per-process random key, so later requests cost a microsecond-scale HMAC, not the
~50 ms scrypt. Cache entries die with any change of the file (revocation is immediate). At most
``MAX_PARALLEL_HASHES`` scrypt verifications run at once, in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from central.service.tokens import ApiRole, TokenEntry, TokenFileError, Tokens, load_tokens, split_token
from shared.opcua.users import verify_password

log = logging.getLogger(__name__)

MAX_PARALLEL_HASHES = 2
LEGACY_ENV_NAME = "$EMS_API_TOKEN"  # names of the single operator token in the audit trail; not valid
LEGACY_SITE_NAME = "[central] api_token"  # token names, so no named token can pose as them
STREAM_COOKIE = "ems_stream"
STREAM_COOKIE_PATH = "/api/v1/stream"
STREAM_COOKIE_MAX_AGE_S = 300


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: ApiRole
    key_id: str | None  # None: the single operator token from the environment or the site file


@dataclass(frozen=True)
class LegacyToken:
    """The single operator token of the first release (``EMS_API_TOKEN`` or ``[central] api_token``)."""

    name: str
    secret: str


class TokenVerifier:
    """Checks bearer tokens against the tokens file and the single operator token."""

    def __init__(self, path: Path, legacy: LegacyToken | None) -> None:
        self.path = path
        self._legacy = legacy
        self._tokens: Tokens | None = load_tokens(path)  # a bad file at start is the caller's error
        self._signature = _signature(path)
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[str, str]] = {}  # HMAC(token) -> (key_id, secret_hash)
        self._hashing = asyncio.Semaphore(MAX_PARALLEL_HASHES)
        self.hash_verifications_total = 0

    @property
    def has_legacy(self) -> bool:
        return self._legacy is not None

    def tokens(self) -> Tokens | None:
        """The current tokens (re-read when the file changed); None while the file is unusable."""
        signature = _signature(self.path)
        if signature != self._signature:
            self._signature = signature
            self._verified.clear()
            try:
                self._tokens = load_tokens(self.path)
                log.info("API tokens reloaded from %s: %d tokens", self.path, len(self._tokens.entries))
            except TokenFileError as exc:
                # Fail closed: named tokens are refused until the file is fixed.
                self._tokens = None
                log.error("API tokens file unusable, named tokens refused: %s", exc)
        return self._tokens

    async def authenticate(self, presented: str) -> Principal | None:
        """The caller ``presented`` identifies, or None (unknown, revoked, malformed)."""
        legacy = self._legacy
        if legacy is not None and hmac.compare_digest(presented.encode(), legacy.secret.encode()):
            return Principal(legacy.name, ApiRole.OPERATOR, None)
        parts = split_token(presented)
        tokens = self.tokens()
        if parts is None or tokens is None:
            return None
        key_id, secret = parts
        entry = tokens.by_key_id(key_id)
        if entry is None:
            return None
        digest = hmac.new(self._cache_key, presented.encode(), hashlib.sha256).digest()
        if self._verified.get(digest) == (entry.key_id, entry.secret_hash):
            return _principal(entry)
        async with self._hashing:
            self.hash_verifications_total += 1
            matches = await asyncio.to_thread(verify_password, secret, entry.secret_hash)
        current = self.tokens()  # it may have changed while we hashed
        if not matches or current is None or current.by_key_id(key_id) != entry:
            return None
        self._verified[digest] = (entry.key_id, entry.secret_hash)
        return _principal(entry)

    def is_current(self, principal: Principal) -> bool:
        """Whether ``principal``'s token still exists with the same role (for stream cookies)."""
        if principal.key_id is None:
            return self._legacy is not None and self._legacy.name == principal.name
        tokens = self.tokens()
        entry = None if tokens is None else tokens.by_key_id(principal.key_id)
        return entry is not None and entry.name == principal.name and entry.role == principal.role

    def count(self) -> int:
        tokens = self.tokens()
        return 0 if tokens is None else len(tokens.entries)


class StreamCookies:
    """Short-lived signed cookies that let a browser's ``EventSource`` (which cannot send headers) open the
    event stream: issued to a caller with a valid bearer token, bound to that token (revoking the token
    ends them), signed with a per-process key (a restart ends them), valid ``max_age_s``."""

    def __init__(
        self, max_age_s: int = STREAM_COOKIE_MAX_AGE_S, now_s: Callable[[], float] = time.time
    ) -> None:
        self.max_age_s = max_age_s
        self._now_s = now_s
        self._key = secrets.token_bytes(32)

    def issue(self, principal: Principal) -> str:
        expires = int(self._now_s()) + self.max_age_s
        claims = {"n": principal.name, "r": principal.role.value, "k": principal.key_id, "e": expires}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def principal(self, cookie: str) -> Principal | None:
        """The principal a cookie was issued to, or None when it is forged, malformed or expired."""
        payload, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            expires, name, role, key_id = (
                int(claims["e"]),
                str(claims["n"]),
                ApiRole(claims["r"]),
                claims["k"],
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if expires <= self._now_s() or not (key_id is None or isinstance(key_id, str)):
            return None
        return Principal(name, role, key_id)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _principal(entry: TokenEntry) -> Principal:
    return Principal(entry.name, entry.role, entry.key_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size
