"""OPC UA users: a TOML file of names, roles and salted scrypt password hashes.

```toml
[[users]]
name = "central"
role = "operator"          # operator: read, subscribe, call WriteSchedule/ResetInterlock
password_hash = "scrypt$16384$8$1$<salt base64>$<hash base64>"
```

Only hashes are stored. scrypt (RFC 7914) is slow and memory-hard on purpose; its parameters are stored
with each hash, bounded when read so a doctored file cannot make a login take minutes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InputError, Problem, pydantic_location

SCRYPT_N = 2**14  # ~50 ms and 16 MiB per hash on a small edge PC
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_CHARS = 12
_MAX_LOG2_N = 20
# User and API token names: letters, digits and _ . @ -, at most 64 characters.
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"


class Role(StrEnum):
    """What a user may do on an edge: ``operator`` may call the methods, ``viewer`` may read/subscribe."""

    OPERATOR = "operator"
    VIEWER = "viewer"


class UsersFileError(InputError):
    """A users file that cannot be used."""


def generate_password() -> str:
    """A random password (24 URL-safe characters, 144 bits)."""
    return secrets.token_urlsafe(18)


def password_problem(password: str) -> str | None:
    """Why ``password`` is too weak to store, or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"password must have at least {MIN_PASSWORD_CHARS} characters"
    return None


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """Salted scrypt hash of ``password``: ``scrypt$N$r$p$salt$hash`` (base64 salt and hash)."""
    _check_parameters(n, r, p)
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; ``ValueError`` when ``encoded`` is not a valid hash."""
    n, r, p, salt, expected = _decode(encoded)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


def hash_problem(encoded: str) -> str | None:
    """Why ``encoded`` is not a usable password hash, or None."""
    try:
        _decode(encoded)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class UserEntry:
    name: str
    role: Role
    password_hash: str


@dataclass(frozen=True)
class Users:
    """The users of a site, by name."""

    entries: tuple[UserEntry, ...]

    def find(self, name: str) -> UserEntry | None:
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None

    def authenticate(self, name: str, password: str) -> UserEntry | None:
        """The user when the password matches, else None (same cost for unknown names)."""
        entry = self.find(name)
        if entry is None:
            # Spend the same time as for a known user, so response times do not reveal user names.
            verify_password(password, _dummy_hash())
            return None
        return entry if verify_password(password, entry.password_hash) else None

    def with_user(self, entry: UserEntry) -> Users:
        """A copy with ``entry`` added, replacing a user of the same name."""
        kept = tuple(e for e in self.entries if e.name != entry.name)
        return Users((*kept, entry))


class _UserModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    password_hash: str


class _UsersModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[_UserModel] = Field(default_factory=list)


def parse_users(text: str, source: str = "users file") -> Users:
    """Parse users TOML; raise :class:`UsersFileError` naming the entry and what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(source, [Problem("", f"not valid TOML: {exc}")]) from exc
    try:
        model = _UsersModel.model_validate(raw)
    except ValidationError as exc:
        problems = [Problem(pydantic_location(e["loc"]), e["msg"]) for e in exc.errors()]
        raise UsersFileError(source, problems) from exc
    problems = []
    seen: set[str] = set()
    for index, user in enumerate(model.users):
        if user.name in seen:
            problems.append(Problem(f"users[{index}].name", f"duplicate user {user.name!r}"))
        seen.add(user.name)
        reason = hash_problem(user.password_hash)
        if reason is not None:
            problems.append(Problem(f"users[{index}].password_hash", reason))
    if problems:
        raise UsersFileError(source, problems)
    return Users(tuple(UserEntry(u.name, u.role, u.password_hash) for u in model.users))


def load_users(path: Path) -> Users:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(str(path), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise UsersFileError(str(path), [Problem("", f"not UTF-8 text: {exc}")]) from exc
    return parse_users(text, str(path))


def render_users(users: Users) -> str:
    lines = [
        "# hybrid-ems OPC UA users (docs/opcua.md). Only salted scrypt hashes are stored.",
        "# Roles: operator = read, subscribe, call WriteSchedule/ResetInterlock; viewer = read, subscribe.",
        "",
    ]
    for entry in users.entries:
        lines += [
            "[[users]]",
            f'name = "{entry.name}"',
            f'role = "{entry.role.value}"',
            f'password_hash = "{entry.password_hash}"',
            "",
        ]
    return "\n".join(lines)


def write_users(path: Path, users: Users) -> None:
    """Write the users file, readable by its owner only (hashes are still worth protecting)."""
    write_private(path, render_users(users).encode("utf-8"))


def write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=HASH_BYTES
    )


def _check_parameters(n: int, r: int, p: int) -> None:
    if n < 2**10 or n > 2**_MAX_LOG2_N or n & (n - 1):
        raise ValueError(f"scrypt N={n} must be a power of two in [2^10, 2^{_MAX_LOG2_N}]")
    if not 1 <= r <= 32:
        raise ValueError(f"scrypt r={r} must be in [1, 32]")
    if not 1 <= p <= 16:
        raise ValueError(f"scrypt p={p} must be in [1, 16]")


def _decode(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("password hash must look like scrypt$N$r$p$salt$hash")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"password hash is malformed: {exc}") from None
    _check_parameters(n, r, p)
    if len(salt) < 8:
        raise ValueError("password hash salt is shorter than 8 bytes")
    if len(digest) != HASH_BYTES:
        raise ValueError(f"password hash must be {HASH_BYTES} bytes")
    return n, r, p, salt, digest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def _dummy_hash() -> str:
    return hash_password(generate_password())
