"""Property-based tests of the access-control parsers and the limiter: garbage is refused with the entry
named, never a crash and never an acceptance."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from central.service.auth import Principal, StreamCookies
from central.service.ratelimit import FailureLimiter
from central.service.tokens import (
    ApiRole,
    TokenEntry,
    TokenFileError,
    Tokens,
    add_token,
    load_tokens,
    parse_tokens,
    render_tokens,
    split_token,
)
from shared.opcua.users import hash_password

FAST_HASH = hash_password("a-secret-for-tests", n=2**10, r=1, p=1)
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_.@-", min_size=1, max_size=64)
KEY_IDS = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12)


@given(st.text(max_size=400))
@settings(max_examples=300)
def test_any_text_is_parsed_or_refused_with_a_location(text: str) -> None:
    try:
        tokens = parse_tokens(text, "tokens.toml")
    except TokenFileError as exc:
        assert exc.problems and all(line.startswith("tokens.toml: ") for line in exc.lines())
    else:
        assert all(isinstance(e.role, ApiRole) for e in tokens.entries)


@given(
    st.lists(st.tuples(NAMES, st.sampled_from(list(ApiRole)), KEY_IDS), max_size=5, unique_by=lambda t: t[0])
)
def test_rendered_tokens_parse_back(rows: list[tuple[str, ApiRole, str]]) -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    key_ids = {key for _, _, key in rows}
    entries = tuple(TokenEntry(name, role, key, FAST_HASH, created) for name, role, key in rows)
    text = render_tokens(Tokens(entries))
    if len(key_ids) < len(rows):
        try:
            parse_tokens(text)
        except TokenFileError as exc:
            assert any("duplicate key id" in p.message for p in exc.problems)
        else:
            raise AssertionError("duplicate key ids were accepted")
        return
    assert parse_tokens(text) == Tokens(entries)


def toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly."""
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in text)
    return f'"{escaped}"'


@given(
    st.sampled_from(["name", "role", "key_id", "secret_hash", "created_at"]),
    st.one_of(st.text(max_size=30), st.integers(), st.booleans()),
)
def test_a_bad_field_is_named(field: str, value: object) -> None:
    fields = {
        "name": '"ok"',
        "role": '"viewer"',
        "key_id": '"0123456789ab"',
        "secret_hash": f'"{FAST_HASH}"',
        "created_at": '"2026-01-01T00:00:00Z"',
    }
    fields[field] = toml_string(value) if isinstance(value, str) else json.dumps(value)
    text = "[[tokens]]\n" + "".join(f"{key} = {shown}\n" for key, shown in fields.items())
    try:
        parsed = parse_tokens(text, "f")
    except TokenFileError as exc:
        assert any(p.location.startswith("tokens[0]") for p in exc.problems), exc.lines()
    else:  # the value happened to be valid for the field
        assert len(parsed.entries) == 1


@given(st.text(max_size=200))
def test_split_token_accepts_only_the_token_shape(text: str) -> None:
    parts = split_token(text)
    if parts is not None:
        key_id, secret = parts
        assert text == f"emsk_{key_id}_{secret}" and len(key_id) == 12


def test_added_tokens_have_the_token_shape(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    _, token = add_token(path, "a", ApiRole.VIEWER)
    parts = split_token(token)
    assert parts is not None and load_tokens(path).by_key_id(parts[0]) is not None
    assert parts[1] not in path.read_text()


@given(st.text(max_size=300))
def test_stream_cookie_garbage_is_never_a_principal(text: str) -> None:
    cookies = StreamCookies()
    assert cookies.principal(text) is None


@given(NAMES, st.sampled_from(list(ApiRole)), st.one_of(st.none(), KEY_IDS), st.integers(0, 299))
def test_stream_cookie_round_trip_and_expiry(
    name: str, role: ApiRole, key_id: str | None, later_s: int
) -> None:
    now = [1_000_000.0]
    cookies = StreamCookies(max_age_s=300, now_s=lambda: now[0])
    principal = Principal(name, role, key_id)
    cookie = cookies.issue(principal)
    now[0] += later_s
    assert cookies.principal(cookie) == principal
    now[0] += 300
    assert cookies.principal(cookie) is None
    assert StreamCookies().principal(cookie) is None  # another process's key: refused


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0.0, 5.0)), max_size=300))
def test_limiter_blocks_exactly_on_the_21st_failure_within_60_s(events: list[tuple[str, float]]) -> None:
    now = [0.0]
    limiter = FailureLimiter(now_s=lambda: now[0])
    recent: dict[str, list[float]] = {}  # the model: failures within the window since the last block
    for client, step in events:
        now[0] += step
        if limiter.blocked_for_s(client) > 0:
            continue  # a blocked client is answered 429 before its token is looked at
        failures = [t for t in recent.get(client, []) if t > now[0] - 60.0] + [now[0]]
        blocked = limiter.record_failure(client)
        assert blocked == (len(failures) > 20), (client, len(failures))
        recent[client] = [] if blocked else failures
        if blocked:
            assert limiter.blocked_for_s(client) == 60.0
