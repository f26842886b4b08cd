"""Named API tokens of the central's HTTP API: roles, the tokens file, and adding and revoking tokens.

```toml
[[tokens]]
name = "trading"
role = "uploader"              # viewer < uploader < operator
key_id = "3f9a1c0b7d2e"        # public: the part of the token that finds this entry
secret_hash = "scrypt$16384$8$1$<salt base64>$<hash base64>"
created_at = "2026-11-24T10:00:00Z"
```

A token is ``emsk_<key_id>_<secret>`` (12 hex digits, then 256 random bits in URL-safe base64). Only the
salted scrypt hash of the secret is stored, with the hasher of the OPC UA users file
(:mod:`shared.opcua.users`: bounded parameters, constant-time comparison). The file is written atomically
with mode 0600; ``ems token`` and the service's token endpoints serialize their changes with a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InputError, Problem, pydantic_location
from shared.opcua.users import NAME_PATTERN, hash_password, hash_problem, write_private
from shared.site import SiteConfig
from shared.timeutil import format_utc, parse_utc

TOKEN_PREFIX = "emsk"  # nosec B105  # the public prefix of every token, not a secret
TOKENS_FILE_NAME = "api-tokens.toml"
_KEY_ID_HEX = 12
_TOKEN_PATTERN = re.compile(rf"^{TOKEN_PREFIX}_([0-9a-f]{{{_KEY_ID_HEX}}})_([A-Za-z0-9_-]{{20,128}})$")


class ApiRole(StrEnum):
    """What a token may do: ``viewer`` reads, ``uploader`` also uploads day-ahead data, ``operator`` does
    everything (optimize, reset interlocks, read the audit trail, manage tokens)."""

    VIEWER = "viewer"
    UPLOADER = "uploader"
    OPERATOR = "operator"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: ApiRole) -> bool:
        return self.rank >= required.rank


_RANKS = {ApiRole.VIEWER: 0, ApiRole.UPLOADER: 1, ApiRole.OPERATOR: 2}


class TokenFileError(InputError):
    """A tokens file that cannot be used."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: ApiRole
    key_id: str
    secret_hash: str
    created_at: datetime


@dataclass(frozen=True)
class Tokens:
    """The named tokens of a site."""

    entries: tuple[TokenEntry, ...]

    def find(self, name: str) -> TokenEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def by_key_id(self, key_id: str) -> TokenEntry | None:
        return next((e for e in self.entries if e.key_id == key_id), None)


def tokens_path(site: SiteConfig) -> Path:
    """``[central] api_tokens_file``, else ``api-tokens.toml`` beside the database."""
    if site.central.api_tokens_file:
        return Path(site.central.api_tokens_file)
    return Path(site.central.database_path).parent / TOKENS_FILE_NAME


def split_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed token, else None."""
    match = _TOKEN_PATTERN.match(token)
    return None if match is None else (match.group(1), match.group(2))


class _TokenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(pattern=NAME_PATTERN)
    role: ApiRole
    key_id: str = Field(pattern=rf"^[0-9a-f]{{{_KEY_ID_HEX}}}$")
    secret_hash: str
    created_at: str


class _TokensModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[_TokenModel] = Field(default_factory=list)


def parse_tokens(text: str, source: str = "tokens file") -> Tokens:
    """Parse tokens TOML; :class:`TokenFileError` naming the entry and what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(source, [Problem("", f"not valid TOML: {exc}")]) from exc
    try:
        model = _TokensModel.model_validate(raw)
    except ValidationError as exc:
        found = [Problem(pydantic_location(e["loc"]), e["msg"]) for e in exc.errors()]
        raise TokenFileError(source, found) from exc
    problems: list[Problem] = []
    entries: list[TokenEntry] = []
    names: set[str] = set()
    key_ids: set[str] = set()
    for index, token in enumerate(model.tokens):
        where = f"tokens[{index}]"
        if token.name in names:
            problems.append(Problem(f"{where}.name", f"duplicate token name {token.name!r}"))
        if token.key_id in key_ids:
            problems.append(Problem(f"{where}.key_id", f"duplicate key id {token.key_id!r}"))
        names.add(token.name)
        key_ids.add(token.key_id)
        reason = hash_problem(token.secret_hash)
        if reason is not None:
            problems.append(Problem(f"{where}.secret_hash", reason))
        try:
            created = parse_utc(token.created_at)
        except ValueError as exc:
            problems.append(Problem(f"{where}.created_at", str(exc)))
            continue
        entries.append(TokenEntry(token.name, token.role, token.key_id, token.secret_hash, created))
    if problems:
        raise TokenFileError(source, problems)
    return Tokens(tuple(entries))


def load_tokens(path: Path) -> Tokens:
    """The tokens in ``path``; an absent file holds no tokens."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Tokens(())
    except OSError as exc:
        raise TokenFileError(str(path), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise TokenFileError(str(path), [Problem("", f"not UTF-8 text: {exc}")]) from exc
    return parse_tokens(text, str(path))


def render_tokens(tokens: Tokens) -> str:
    lines = [
        "# hybrid-ems API tokens (docs/security.md). Only salted scrypt hashes of the secrets are stored.",
        "# Change with `ems token add|revoke`; roles: viewer < uploader < operator.",
        "",
    ]
    for entry in tokens.entries:
        lines += [
            "[[tokens]]",
            f'name = "{entry.name}"',
            f'role = "{entry.role.value}"',
            f'key_id = "{entry.key_id}"',
            f'secret_hash = "{entry.secret_hash}"',
            f'created_at = "{format_utc(entry.created_at)}"',
            "",
        ]
    return "\n".join(lines)


def add_token(path: Path, name: str, role: ApiRole, now: datetime | None = None) -> tuple[TokenEntry, str]:
    """Add a token ``name`` with ``role``; return its entry and the token (the only time it exists in
    clear). :class:`InputError` for a bad or taken name."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise InputError("NAME", [Problem("", f"{name!r}: use 1-64 letters, digits and _ . @ -")])
    key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    entry = TokenEntry(name, role, key_id, hash_password(secret), created)
    with _locked(path):
        tokens = load_tokens(path)
        if tokens.find(name) is not None:
            raise InputError("NAME", [Problem("", f"a token named {name!r} exists: revoke it first")])
        if tokens.by_key_id(key_id) is not None:  # 48 random bits: practically never
            raise InputError("NAME", [Problem("", "key id collision, try again")])
        write_private(path, render_tokens(Tokens((*tokens.entries, entry))).encode("utf-8"))
    return entry, f"{TOKEN_PREFIX}_{key_id}_{secret}"


def revoke_token(path: Path, name: str) -> TokenEntry:
    """Remove the token ``name``; return what it was. :class:`InputError` when there is none."""
    with _locked(path):
        tokens = load_tokens(path)
        entry = tokens.find(name)
        if entry is None:
            known = ", ".join(e.name for e in tokens.entries) or "none"
            raise InputError("NAME", [Problem("", f"no token named {name!r} (tokens: {known})")])
        kept = tuple(e for e in tokens.entries if e.name != name)
        write_private(path, render_tokens(Tokens(kept)).encode("utf-8"))
    return entry


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize read-modify-write of the tokens file between processes (an exclusive lock file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
