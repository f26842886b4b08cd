"""No input yields a 500: arbitrary JSON in every field, truncated bodies, the start window, a bug in a
handler, and a second `ems central` on a busy port. Against a real service (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.service.app import CentralService
from shared.clock import SimulatedClock
from shared.timeutil import format_utc, parse_utc
from tests.test_central_api import (
    AUTH,
    DAY_START,
    SiteFiles,
    example_json,
    json_with,
    make_site,
    post_json,
    running,
    service_config,
)

NOW = DAY_START + timedelta(minutes=5)


# ------------------------------------------------------------------------ a service in a thread


@dataclass
class Served:
    url: str
    service: CentralService
    client: httpx.Client | None = None


@contextlib.contextmanager
def served(files: SiteFiles, database: Path) -> Iterator[Served]:
    """A running service in its own thread and event loop, for synchronous (hypothesis) tests."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        clock = SimulatedClock(NOW, 1.0)
        try:
            async with CentralService(files.site, clock, service_config(files, database)) as svc:
                box["served"] = Served(svc.url, svc)
                box["loop"] = asyncio.get_running_loop()
                ready.set()
                await svc.wait_stopped()
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="central-under-test")
    thread.start()
    try:
        assert ready.wait(60), "the service did not start"
        if "error" in box:
            raise box["error"]
        yield box["served"]
    finally:
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["served"].service.request_stop)
        thread.join(30)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("central-input"))


@pytest.fixture(scope="module")
def service(files: SiteFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with (
        served(files, tmp_path_factory.mktemp("db") / "central.sqlite3") as running_service,
        httpx.Client(base_url=running_service.url, timeout=30) as client,
    ):
        running_service.client = client
        yield running_service


# ------------------------------------------------------------------------------- JSON in any field

SPECIAL = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "0", "null", "true", "false",
    '""', "[]", "{}", "[" * 3000 + "]" * 3000, "1" + "0" * 5000, "-" + "9" * 4301,
    "1" + "0" * 400 + ".5", "1E+99999", "0.1e-99999",
]  # fmt: skip
DATES = [
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
    "2026-11-24T00:00:00+14:00", "2026-11-24T00:00:00.999999999Z", "2026-02-30T00:00:00Z",
    "+002026-11-24T00:00:00Z", "2026-11-24", "now", "2026-11-24T24:00:00Z", "-2026-11-24T00:00:00Z",
]  # fmt: skip


def scalars() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SPECIAL),
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.text(max_size=20).map(json.dumps),
        st.sampled_from(DATES).map(json.dumps),
        st.datetimes(timezones=st.just(UTC)).map(lambda d: json.dumps(format_utc(d))),
    )


def containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    objects = st.dictionaries(st.text(max_size=8), children, max_size=3).map(
        lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
    )
    return st.one_of(arrays, objects)


FRAGMENTS = st.recursive(scalars(), containers, max_leaves=8)
FIELDS = [
    "start", "interval_minutes", "import_price_per_kwh", "export_price_per_kwh", "load_kw", "pv_kw",
    "grid_commitment_kw", "initial_soc_pct", "unknown_key",
]  # fmt: skip
ELEMENTS = [("import_price_per_kwh", 0), ("load_kw", 5), ("pv_kw", 95), ("initial_soc_pct", "cab-1")]
PLACEHOLDER = '"@@fragment@@"'


def body_with(field: str | tuple[str, int | str] | None, fragment: str) -> bytes:
    """The example upload (re-dated to now) with one field, one element, or the whole body replaced by
    the raw JSON text ``fragment``."""
    if field is None:
        return fragment.encode()
    data = json.loads(json_with(start=format_utc(DAY_START), pv_kw=[0.0] * 96))
    data["grid_commitment_kw"] = [100.0] * 96
    if isinstance(field, tuple):
        data[field[0]][field[1]] = "@@fragment@@"
    else:
        data[field] = "@@fragment@@"
    return json.dumps(data).replace(PLACEHOLDER, fragment).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.one_of(st.none(), st.sampled_from(FIELDS), st.sampled_from(ELEMENTS)),
    fragment=FRAGMENTS,
)
def test_arbitrary_json_in_any_field_never_gets_a_5xx(
    service: Served, field: str | tuple[str, int | str] | None, fragment: str
) -> None:
    body = body_with(field, fragment)
    headers = {**AUTH, "Content-Type": "application/json"}
    assert service.client is not None
    answer = service.client.post("/api/v1/day-ahead", content=body, headers=headers, params={"wait": "false"})
    assert answer.status_code < 500, (field, fragment[:200], answer.text[:500])
    assert answer.status_code in (202, 422), (field, fragment[:200], answer.text[:500])
    detail = answer.json()["detail" if answer.status_code == 422 else "message"]
    assert "\n" not in detail and detail
    if answer.status_code == 202:  # accepted: it starts within the window around the service's now
        start = parse_utc(answer.json()["upload"]["start"])
        assert NOW - timedelta(days=2, seconds=5) <= start <= NOW + timedelta(days=14, seconds=5), start


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.one_of(
        st.datetimes(timezones=st.just(UTC)),
        st.datetimes(
            min_value=datetime(2026, 11, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
        ),
    )
)
def test_any_start_is_refused_naming_it_or_lies_within_the_window(service: Served, start: datetime) -> None:
    body = body_with("start", json.dumps(format_utc(start)))
    headers = {**AUTH, "Content-Type": "application/json"}
    assert service.client is not None
    answer = service.client.post("/api/v1/day-ahead", content=body, headers=headers, params={"wait": "false"})
    now = service.service.clock.now()
    inside = now - timedelta(days=2) <= start <= now + timedelta(days=14) and start + timedelta(days=1) > now
    if answer.status_code == 202:
        assert inside or abs((start - now).total_seconds()) < 5  # the clock ran on between the two reads
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["problems"][0]["location"] == "start"
        assert not inside or abs((start - now).total_seconds()) < 5


def test_no_request_of_the_fuzzing_was_an_internal_error(service: Served) -> None:
    metrics = httpx.get(f"{service.url}/metrics", timeout=10).text.splitlines()
    assert not [line for line in metrics if line.startswith("ems_central_http_unhandled_errors_total{")]


# ---------------------------------------------------------------------------------- start window


async def test_an_upload_must_start_within_the_window_around_now(tmp_path: Path) -> None:
    files = make_site(tmp_path)
    async with running(files, tmp_path / "db.sqlite3", start=NOW) as (svc, client):
        three_days_ago = format_utc(DAY_START - timedelta(days=3))
        for body, words in (
            (json_with(start="3000-01-01T00:00:00Z"), "more than 14 days after now"),
            # 96 hours from three days ago: not over yet, but it starts too long ago.
            (json_with(start=three_days_ago, interval_minutes=60), "more than 2 days before now"),
            # 96 quarter hours from three days ago: over, and the answer says how to re-date the file.
            (json_with(start=three_days_ago), "which is over (now 2026-11-24T00:0"),
        ):
            answer = await post_json(client, body, wait="false")
            assert answer.status_code == 422, answer.text
            problems = answer.json()["problems"]
            assert problems[0]["location"] == "start" and words in problems[0]["message"], problems
            if "over" in words:
                assert problems[0]["message"].endswith("; `ems upload FILE --start today` re-dates a file")
        ahead = format_utc(DAY_START + timedelta(days=13))
        assert (await post_json(client, json_with(start=ahead), wait="false")).status_code == 202
        assert svc.store.count_uploads() == 1
    (tmp_path / "wider").mkdir()
    wider = make_site(tmp_path / "wider", central="upload_start_max_future_days = 30.0")
    async with running(wider, tmp_path / "db2.sqlite3", start=NOW) as (svc, client):
        ahead = format_utc(DAY_START + timedelta(days=20))
        assert (await post_json(client, json_with(start=ahead), wait="false")).status_code == 202


# ------------------------------------------------------------------------- truncated, bugs, port


async def raw_request(
    port: int, head: bytes, body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    return reader, writer


def upload_head(length: int) -> bytes:
    return (
        "POST /api/v1/day-ahead HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_body_shorter_than_its_content_length_times_out_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    files = make_site(tmp_path, central="http_body_timeout_s = 0.5")
    async with running(files, tmp_path / "db.sqlite3", start=NOW) as (svc, client):
        body = example_json()
        reader, writer = await raw_request(svc.http_port, upload_head(len(body)), body[:100])
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
        finally:
            writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
        detail = json.loads(payload)["detail"]
        assert detail == f"request body incomplete after 0.5 s (100 of {len(body)} bytes received)"
        # A client that gives up half-way is no error either.
        reader, writer = await raw_request(svc.http_port, upload_head(len(body)), body[:100])
        writer.close()
        await asyncio.sleep(0.2)
        assert (await post_json(client, example_json(), wait="false")).status_code == 202
        assert svc.store.count_uploads() == 1
    assert not [r for r in caplog.records if r.exc_info is not None and r.levelno >= logging.INFO]
    assert not [r for r in caplog.records if "ClientDisconnect" in r.getMessage()]
    incomplete = [r for r in caplog.records if "body incomplete" in r.getMessage()]
    assert len(incomplete) == 1 and incomplete[0].levelno == logging.WARNING


async def test_an_unexpected_exception_is_one_line_a_json_500_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    files = make_site(tmp_path)
    async with running(files, tmp_path / "db.sqlite3", start=NOW) as (svc, client):

        def broken() -> Any:
            raise RuntimeError("telemetry exploded\nsecond line")

        working = svc.telemetry
        svc.telemetry = broken  # type: ignore[method-assign]  # a bug in a handler's path
        answer = await client.get("/api/v1/cabinets")
        svc.telemetry = working  # type: ignore[method-assign]
        assert answer.status_code == 500
        assert answer.json() == {
            "detail": "internal error in GET /api/v1/cabinets: RuntimeError: telemetry exploded"
        }
        assert (await client.get("/api/v1/plan/latest")).status_code == 404  # the service goes on
        metrics = (await client.get("/metrics")).text.splitlines()
        assert (
            'ems_central_http_unhandled_errors_total{route="/api/v1/cabinets",exception="RuntimeError"} 1'
            in metrics
        )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "internal error in GET /api/v1/cabinets: RuntimeError: telemetry exploded"
    ]
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)


def test_a_second_central_on_a_busy_port_stops_before_anything_else(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    host, port = site.site.central.http_address.rsplit(":", 1)
    edge_host, edge_port = (
        site.site.cabinets[0].opcua_endpoint.removeprefix("opc.tcp://").split("/")[0].split(":")
    )
    with (
        socket.create_server((host, int(port))) as busy,
        socket.create_server((edge_host, int(edge_port))) as edge,
    ):
        assert busy and edge
        env = {**os.environ, site.site.opcua.central_password_env: site.password}
        command = [sys.executable, "-m", "ems", "central", "--site", str(site.path)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        edge.setblocking(False)
        with pytest.raises(BlockingIOError):
            edge.accept()  # nobody tried to reach the edge
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        f"error: cannot start the central service: cannot listen on {host}:{port}: Address already in use"
    ], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not Path(site.site.central.database_path).exists()  # the database was not even opened
