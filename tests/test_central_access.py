"""Access to the central's HTTP API against a running service on loopback: roles, 401/403/429, token
changes while it runs, the audit trail (and that it holds no secret), the token endpoints, the limiter.

TLS, the exposure check and the command line are in test_central_tls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from central.service.access import limiter_key
from central.service.app import CentralService
from central.service.ratelimit import FailureLimiter
from central.service.tokens import ApiRole, add_token, split_token
from shared.clock import SimulatedClock
from tests.test_central_api import DAY_START, TOKEN, SiteFiles, example_json, make_site, service_config

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("central-access"))


@dataclass
class FakeSeconds:
    """A monotonic clock the test moves by hand (the limiter's 60 s pass at once)."""

    now_s: float = 1000.0

    def __call__(self) -> float:
        return self.now_s


@dataclass(frozen=True)
class Tokens:
    viewer: str
    uploader: str
    operator: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie_header(value: str) -> dict[str, str]:
    """What a browser sends with the stream cookie."""
    return {"Cookie": f"ems_stream={value}"}


@contextlib.asynccontextmanager
async def serving(
    files: SiteFiles, directory: Path, *, limiter: FailureLimiter | None = None, **changes: Any
) -> AsyncIterator[tuple[CentralService, httpx.AsyncClient]]:
    config = replace(
        service_config(files, directory / "central.sqlite3"),
        tokens_file=directory / "api-tokens.toml",
        **changes,
    )
    clock = SimulatedClock(DAY_START + timedelta(minutes=5), 60.0)
    async with (
        CentralService(files.site, clock, config, limiter=limiter) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client,
    ):
        yield svc, client


def secret_part(token: str) -> str:
    """The secret of a named token (what follows ``emsk_<key_id>_``), or the whole single token."""
    parts = split_token(token)
    return token if parts is None else parts[1]


def named_tokens(path: Path) -> Tokens:
    return Tokens(*(add_token(path, role.value, role)[1] for role in ApiRole))


async def upload(client: httpx.AsyncClient, token: str | None, **params: str) -> httpx.Response:
    headers = {**JSON, **(bearer(token) if token else {})}
    return await client.post("/api/v1/day-ahead", content=example_json(), headers=headers, params=params)


def metric(text: str, series: str) -> float:
    """The value of one series (``name`` or ``name{labels}``) on a metrics page."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    raise AssertionError(f"no metric {series}")


# ------------------------------------------------------------------------------------------- roles


async def test_each_role_gets_what_it_may_and_is_refused_the_rest(files: SiteFiles, tmp_path: Path) -> None:
    tokens = named_tokens(tmp_path / "api-tokens.toml")
    async with serving(files, tmp_path, read_token_required=True) as (svc, client):
        # No token, an unknown well-formed token, a malformed one: 401, nothing stored.
        assert (await upload(client, None)).status_code == 401
        unknown = "emsk_0123456789ab_" + "A" * 43
        for token in (unknown, "not-a-token", tokens.viewer + "x"):
            answer = await upload(client, token)
            assert answer.status_code == 401, token
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert svc.store.count_uploads() == 0

        # Reads need a viewer token here (as on a non-loopback address).
        for read in ("/api/v1/cabinets", "/api/v1/status", "/metrics"):
            assert (await client.get(read)).status_code == 401, read
            for token in (tokens.viewer, tokens.uploader, tokens.operator, TOKEN):
                assert (await client.get(read, headers=bearer(token))).status_code == 200, (read, token)
        assert (await client.get("/healthz")).status_code == 200  # liveness stays open

        # viewer uploading: 403, nothing stored.
        answer = await upload(client, tokens.viewer)
        assert answer.status_code == 403 and "needs uploader" in answer.json()["detail"]
        assert svc.store.count_uploads() == 0
        # uploader uploads, but may not optimize, read the audit trail or manage tokens.
        assert (await upload(client, tokens.uploader, wait="false")).status_code == 202
        assert svc.store.count_uploads() == 1
        for method, path in (
            ("POST", "/api/v1/optimize"),
            ("GET", "/api/v1/audit"),
            ("GET", "/api/v1/tokens"),
            ("DELETE", "/api/v1/tokens/viewer"),
        ):
            answer = await client.request(method, path, headers=bearer(tokens.uploader))
            assert answer.status_code == 403, (method, path)
        # operator does everything; so does the single EMS_API_TOKEN.
        for token in (tokens.operator, TOKEN):
            answer = await client.post("/api/v1/optimize", headers=bearer(token), params={"wait": "false"})
            assert answer.status_code == 202, answer.text
            assert (await client.get("/api/v1/audit", headers=bearer(token))).status_code == 200


async def test_reset_interlock_needs_the_operator_role(files: SiteFiles, tmp_path: Path) -> None:
    """The reset endpoint applies ``access.require(ApiRole.OPERATOR, AuditAction.RESET_INTERLOCK)``; an
    operator's call reaches the edge link (no edge runs here: 503 with the link's reason)."""
    tokens = named_tokens(tmp_path / "api-tokens.toml")
    async with serving(files, tmp_path) as (_, client):
        path = "/api/v1/cabinets/cab-1/reset-interlock"
        assert (await client.post(path)).status_code == 401
        assert (await client.post(path, headers=bearer(tokens.uploader))).status_code == 403
        assert (await client.post(path, headers=bearer(tokens.viewer))).status_code == 403
        passed = await client.post(path, headers=bearer(tokens.operator))
        assert passed.status_code == 503, passed.text
        assert passed.json()["detail"].startswith("reset-interlock of cab-1 not sent: edge cab-1 is not")
        unknown = await client.post("/api/v1/cabinets/cab-9/reset-interlock", headers=bearer(tokens.operator))
        assert unknown.status_code == 404
        records = (await client.get("/api/v1/audit", headers=bearer(tokens.operator))).json()
        resets = [r for r in records if r["action"] == "reset-interlock"]
        assert {(r["token_name"], r["status_code"]) for r in resets} == {
            ("", 401),
            ("uploader", 403),
            ("viewer", 403),
            ("operator", 503),
            ("operator", 404),
        }
        by_status = {r["status_code"]: r for r in resets}
        assert by_status[403]["outcome"] == "denied" and "needs role operator" in by_status[403]["detail"]
        not_sent = by_status[503]
        assert not_sent["outcome"] == "failed" and "cab-1: not sent: edge cab-1" in not_sent["detail"]
        assert by_status[404]["outcome"] == "refused" and "no cabinet 'cab-9'" in by_status[404]["detail"]


async def test_tokens_added_and_revoked_on_the_command_line_apply_while_running(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path)
    env = {**os.environ, site.site.opcua.central_password_env: site.password}
    env.pop("EMS_API_TOKEN", None)

    def ems_token(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ems", "token", *arguments, "--site", str(site.path)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    async with serving(site, tmp_path, api_token=None) as (svc, client):
        added = await asyncio.to_thread(ems_token, "add", "trading", "--role", "uploader")
        assert added.returncode == 0, added.stderr
        token = added.stdout.split()[-1]
        assert token.startswith("emsk_")
        assert (await upload(client, token, wait="false")).status_code == 202  # no restart needed
        listed = await asyncio.to_thread(ems_token, "list")
        assert "trading" in listed.stdout and "uploader" in listed.stdout and token not in listed.stdout
        taken = await asyncio.to_thread(ems_token, "add", "trading", "--role", "viewer")
        assert taken.returncode == 2 and "exists" in taken.stderr

        revoked = await asyncio.to_thread(ems_token, "revoke", "trading")
        assert revoked.returncode == 0, revoked.stderr
        answer = await upload(client, token)
        assert answer.status_code == 401  # revoked while running: refused at the next request
        assert svc.store.count_uploads() == 1
        missing = await asyncio.to_thread(ems_token, "revoke", "trading")
        assert missing.returncode == 2 and "no token named 'trading'" in missing.stderr

        records = svc.audit_log.records(limit=20)
    by_action = {(r.action.value, r.outcome.value) for r in records}
    assert {("token-add", "success"), ("token-add", "refused"), ("token-revoke", "success")} <= by_action
    assert {("token-revoke", "refused"), ("upload", "success"), ("upload", "denied")} <= by_action
    cli = [r for r in records if r.action.value.startswith("token")]
    assert all(r.token_name.startswith("local:") and r.client_address == "local" for r in cli)
    uploads = [r for r in records if r.action.value == "upload"]
    assert {r.token_name for r in uploads} == {"trading", ""}


# ------------------------------------------------------------------------------------------- audit


async def test_the_audit_trail_records_every_write_and_no_secret(
    files: SiteFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = named_tokens(tmp_path / "api-tokens.toml")
    async with serving(files, tmp_path) as (_, client):
        assert (await upload(client, tokens.uploader)).status_code == 201
        bad = await client.post(
            "/api/v1/day-ahead", content=b"{not json", headers={**JSON, **bearer(tokens.uploader)}
        )
        assert bad.status_code == 422
        assert (await upload(client, tokens.viewer)).status_code == 403
        assert (await upload(client, "emsk_0123456789ab_" + "B" * 43)).status_code == 401
        assert (await client.post("/api/v1/optimize", headers=bearer(TOKEN))).status_code == 200
        created = await client.post(
            "/api/v1/tokens", json={"name": "scada", "role": "viewer"}, headers=bearer(tokens.operator)
        )
        assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
        new_token = created.json()["token"]
        assert (await client.get("/api/v1/audit", headers=bearer(new_token))).status_code == 403
        removed = await client.delete("/api/v1/tokens/scada", headers=bearer(tokens.operator))
        assert removed.status_code == 200 and removed.json()["name"] == "scada"
        assert (
            await client.get("/api/v1/cabinets", headers=bearer(new_token))
        ).status_code == 200  # open read
        gone = await client.delete("/api/v1/tokens/scada", headers=bearer(tokens.operator))
        assert gone.status_code == 404
        answer = await client.get("/api/v1/audit", headers=bearer(tokens.operator), params={"limit": 50})
        records = answer.json()

    rows = [(r["action"], r["token_name"], r["outcome"], r["status_code"]) for r in reversed(records)]
    assert rows == [
        ("upload", "uploader", "success", 201),
        ("upload", "uploader", "refused", 422),
        ("upload", "viewer", "denied", 403),
        ("upload", "", "denied", 401),
        ("optimize", "$EMS_API_TOKEN", "success", 200),
        ("token-add", "operator", "success", 201),
        ("token-revoke", "operator", "success", 200),
        ("token-revoke", "operator", "refused", 404),
    ]
    assert all(r["client_address"] == "127.0.0.1" for r in records)
    assert records[-1]["detail"].startswith("upload upload-")  # the upload id
    assert "'scada' (viewer)" in records[2]["detail"]
    # No secret anywhere: the database (and its WAL), the audit answer, the log.
    secrets_ = [tokens.viewer, tokens.uploader, tokens.operator, TOKEN, new_token]
    stored = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("central.sqlite3*")))  # noqa: ASYNC240
    tokens_file = (tmp_path / "api-tokens.toml").read_text()
    for secret in secrets_:
        part = secret_part(secret)
        assert secret.encode() not in stored and part.encode() not in stored
        assert secret not in answer.text and part not in answer.text
        assert secret not in caplog.text and part not in caplog.text
        assert part not in tokens_file


async def test_audit_query_filters_and_retention(files: SiteFiles, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from central.service.audit import AuditAction, AuditEntry, AuditLog, AuditOutcome

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    log = AuditLog(tmp_path / "audit.sqlite3", retention_days=30, wall_clock=lambda: now[0])
    entry = AuditEntry("op", "operator", "10.0.0.1", AuditAction.OPTIMIZE, AuditOutcome.SUCCESS, 200, "")
    log.add(entry)
    now[0] += timedelta(days=20)
    log.add(replace(entry, action=AuditAction.UPLOAD, detail="x" * 2000))
    assert [r.action for r in log.records()] == [AuditAction.UPLOAD, AuditAction.OPTIMIZE]
    assert len(log.records()[0].detail) == 500
    assert [r.action for r in log.records(action=AuditAction.OPTIMIZE)] == [AuditAction.OPTIMIZE]
    assert len(log.records(since=now[0] - timedelta(days=1))) == 1
    now[0] += timedelta(days=15)  # the first record is 35 days old now
    assert log.prune() == 1
    assert [r.action for r in log.records()] == [AuditAction.UPLOAD]
    log.close()
    tokens = named_tokens(tmp_path / "api-tokens.toml")
    async with serving(files, tmp_path) as (_, client):
        headers = bearer(tokens.operator)
        assert (
            await client.get("/api/v1/audit", params={"since": "yesterday"}, headers=headers)
        ).status_code == 422
        assert (await client.get("/api/v1/audit", params={"limit": 0}, headers=headers)).status_code == 422


# ------------------------------------------------------------------------------------------ limiter


async def test_more_than_20_failures_block_the_address_for_60_s(files: SiteFiles, tmp_path: Path) -> None:
    tokens = named_tokens(tmp_path / "api-tokens.toml")
    seconds = FakeSeconds()
    wrong = "emsk_0123456789ab_" + "C" * 43
    async with serving(files, tmp_path, limiter=FailureLimiter(now_s=seconds)) as (svc, client):
        for attempt in range(20):
            answer = await upload(client, wrong)
            assert answer.status_code == 401, attempt
            seconds.now_s += 1.0
        answer = await upload(client, wrong)  # the 21st within 60 s
        assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
        # Blocked: even a valid token gets 429 now, and nothing is looked at.
        for token in (tokens.operator, wrong):
            assert (await client.get("/api/v1/audit", headers=bearer(token))).status_code == 429
        # Another client address (127.0.0.2 is loopback too) is not blocked.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=svc.url, transport=transport) as other:
            assert (await other.get("/api/v1/audit", headers=bearer(tokens.operator))).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "ems_central_auth_blocked_clients") == 1
        assert metric(metrics, "ems_central_auth_failures_total") == 21
        assert metric(metrics, 'ems_central_auth_denied_total{reason="rate_limited"}') == 3
        seconds.now_s += 59.0
        assert (await client.get("/api/v1/audit", headers=bearer(tokens.operator))).status_code == 429
        seconds.now_s += 1.5  # 60 s after the block: recovered
        assert (await client.get("/api/v1/audit", headers=bearer(tokens.operator))).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "ems_central_auth_blocked_clients") == 0
        records = svc.audit_log.records(limit=100)
    uploads = [r for r in records if r.action.value == "upload"]
    assert len(uploads) == 21  # the 20 refusals and the one that blocked; later 429s are not each written
    assert uploads[0].status_code == 429 and "blocked for 60 s" in uploads[0].detail


def test_limiter_keys_ipv6_clients_by_their_64_network() -> None:
    assert limiter_key("192.0.2.7") == "192.0.2.7"
    assert limiter_key("2001:db8:1:2:aaaa::1") == limiter_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert limiter_key("2001:db8:1:3::1") != limiter_key("2001:db8:1:2::1")
    assert limiter_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert limiter_key("unknown") == "unknown"


def test_limiter_window_and_memory_bound() -> None:
    seconds = FakeSeconds()
    limiter = FailureLimiter(now_s=seconds, max_clients=100)
    # Failures spread wider than the window never block.
    for _ in range(100):
        assert not limiter.record_failure("a")
        seconds.now_s += 3.1
    assert limiter.blocked_for_s("a") == 0
    # Many addresses: the table stays bounded, the oldest go first.
    for index in range(1000):
        limiter.record_failure(f"10.0.{index // 256}.{index % 256}")
    stats = limiter.stats()
    assert stats.tracked_clients == 100 and stats.evicted_total == 901


# ----------------------------------------------------------------------------------- verification


async def test_a_verified_token_is_not_hashed_again(files: SiteFiles, tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.toml"
    tokens = named_tokens(path)
    async with serving(files, tmp_path) as (svc, client):
        for _ in range(20):
            assert (await client.get("/api/v1/audit", headers=bearer(tokens.operator))).status_code == 200
        assert svc.access.verifier.hash_verifications_total == 1
        # Any change of the file forgets what was verified (a revocation must never be cached away).
        add_token(path, "another", ApiRole.VIEWER)
        assert (await client.get("/api/v1/audit", headers=bearer(tokens.operator))).status_code == 200
        assert svc.access.verifier.hash_verifications_total == 2
        # A broken file fails closed for named tokens; the single operator token still works.
        path.write_text("[[tokens]]\nname = 1\n")
        assert (await client.get("/api/v1/audit", headers=bearer(tokens.operator))).status_code == 401
        assert (await client.get("/api/v1/audit", headers=bearer(TOKEN))).status_code == 200


async def test_stream_cookie_is_short_lived_scoped_and_bound_to_its_token(
    files: SiteFiles, tmp_path: Path
) -> None:
    from fastapi import Depends, FastAPI

    from central.service.auth import Principal

    path = tmp_path / "api-tokens.toml"
    tokens = named_tokens(path)
    async with serving(files, tmp_path, read_token_required=True) as (svc, client):
        answer = await client.post("/api/v1/stream-cookie", headers=bearer(tokens.viewer))
        assert answer.status_code == 204
        cookie = answer.headers["set-cookie"]
        for attribute in ("ems_stream=", "HttpOnly", "Max-Age=300", "Path=/api/v1/stream", "SameSite=strict"):
            assert attribute.lower() in cookie.lower(), attribute
        assert "secure" not in cookie.lower()  # plain HTTP on loopback; set with TLS
        assert (await client.post("/api/v1/stream-cookie")).status_code == 401
        value = answer.cookies["ems_stream"]

        # The stream endpoint's dependency, on a tiny app sharing the running service's access control.
        stream = FastAPI()
        reader = Depends(svc.access.stream_reader())

        @stream.get("/api/v1/stream")
        async def events(principal: Principal | None = reader) -> dict[str, str]:
            return {"name": "" if principal is None else principal.name}

        transport = httpx.ASGITransport(app=stream, client=("127.0.0.3", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as browser:
            ok = await browser.get("/api/v1/stream", headers=cookie_header(value))
            assert ok.status_code == 200 and ok.json() == {"name": "viewer"}
            forged = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
            assert (await browser.get("/api/v1/stream", headers=cookie_header(forged))).status_code == 401
            assert (await browser.get("/api/v1/stream")).status_code == 401
            assert (await browser.get("/api/v1/stream", headers=bearer(tokens.viewer))).status_code == 200
            from central.service.tokens import revoke_token

            revoke_token(path, "viewer")  # revoking the token ends its cookies too
            assert (await browser.get("/api/v1/stream", headers=cookie_header(value))).status_code == 401
