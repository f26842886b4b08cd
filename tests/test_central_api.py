"""The central service's HTTP API with a real service: auth, refused uploads, status, failures, restart.

The edges are not running here (every push is 'unreachable'); the end-to-end tests with edges are in
test_central_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from central.service.app import CentralService, ServiceConfig
from central.service.interfaces import Optimizer, dispatch_optimizer
from lab.localsite import prepare_security
from shared.clock import SimulatedClock
from shared.dayahead import DayAhead
from shared.plan import Plan
from shared.site import SiteConfig
from tests.support import free_port, write_site

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DAY_START = datetime(2026, 11, 24, tzinfo=UTC)
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class SiteFiles:
    directory: Path
    path: Path
    site: SiteConfig
    password: str


# The whole site shares one event loop in these tests (and the machine with other test runs): the edges'
# communication timeouts allow for loop stalls. They are not what these tests are about.
IN_PROCESS_EDGE = """
[edge]
modbus_timeout_ms = 1000.0
comm_timeout_ms = 3000.0
reconnect_min_s = 0.05
reconnect_max_s = 0.5
"""


def make_site(directory: Path, *, central: str = "", cabinets: int = 3) -> SiteFiles:
    extra = (
        f"{IN_PROCESS_EDGE}\n"
        "[central]\n"
        f'http_address = "127.0.0.1:{free_port()}"\n'
        f'database_path = "{directory / "central.sqlite3"}"\n'
        f"{central}\n"
        "[opcua]\n"
        f'pki_dir = "{directory / "pki"}"\n'
        "request_timeout_s = 1.0\n"
        "reconnect_max_s = 0.5\n"
    )
    path, site = write_site(directory, cabinets=cabinets, extra=extra)
    password = prepare_security(site, directory / "pki")
    return SiteFiles(directory, path, site, password)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("central-api"))


def service_config(files: SiteFiles, database: Path, token: str | None = TOKEN) -> ServiceConfig:
    env = {files.site.opcua.central_password_env: files.password}
    if token is not None:
        env["EMS_API_TOKEN"] = token
    return replace(ServiceConfig.from_site(files.site, env), database_path=database)


@contextlib.asynccontextmanager
async def running(
    files: SiteFiles,
    database: Path,
    *,
    token: str | None = TOKEN,
    start: datetime = DAY_START + timedelta(minutes=5),
    speed: float = 60.0,
    optimizer: Optimizer = dispatch_optimizer,
) -> AsyncIterator[tuple[CentralService, httpx.AsyncClient]]:
    clock = SimulatedClock(start, speed)
    async with (
        CentralService(files.site, clock, service_config(files, database, token), optimizer=optimizer) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client,
    ):
        yield svc, client


def example_json() -> bytes:
    return (EXAMPLES / "day-ahead.json").read_bytes()


def example_csv() -> bytes:
    return (EXAMPLES / "day-ahead.csv").read_bytes()


def json_with(**changes: Any) -> bytes:
    data = json.loads(example_json())
    data.update(changes)
    return json.dumps(data).encode()


async def post_json(client: httpx.AsyncClient, body: bytes, **params: Any) -> httpx.Response:
    headers = {**AUTH, "Content-Type": "application/json"}
    return await client.post("/api/v1/day-ahead", content=body, headers=headers, params=params)


# ---------------------------------------------------------------------------------------------- auth


async def test_write_endpoints_need_the_bearer_token_reads_are_open(files: SiteFiles, tmp_path: Path) -> None:
    async with running(files, tmp_path / "db.sqlite3") as (svc, client):
        body = example_json()
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": "Bearer"},
        ):
            answer = await client.post(
                "/api/v1/day-ahead", content=body, headers={**headers, "Content-Type": "application/json"}
            )
            assert answer.status_code == 401, headers
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert (await client.post("/api/v1/optimize", headers=headers)).status_code == 401
        assert svc.store.count_uploads() == 0 and svc.state.upload is None

        # Reads are open on loopback.
        assert (await client.get("/api/v1/plan/latest")).status_code == 404
        cabinets = (await client.get("/api/v1/cabinets")).json()
        assert [c["cabinet_id"] for c in cabinets] == ["cab-1", "cab-2", "cab-3"]
        assert all(c["connected"] is False and c["telemetry"] is None for c in cabinets)
        health = (await client.get("/healthz")).json()
        assert health["status"] == "degraded"
        assert any(p.startswith("edge cab-1 unreachable: ") for p in health["problems"])
        assert {"reason": "edge_unreachable", "cabinet_id": "cab-1"}.items() <= health["reasons"][1].items()
        schema = (await client.get("/openapi.json")).json()
        assert {"/api/v1/day-ahead", "/api/v1/plan/latest", "/api/v1/cabinets", "/api/v1/optimize"} <= set(
            schema["paths"]
        )
        assert set(schema["paths"]["/api/v1/day-ahead"]["post"]["requestBody"]["content"]) == {
            "application/json",
            "text/csv",
        }
        # Nothing to optimize yet.
        answer = await client.post("/api/v1/optimize", headers=AUTH)
        assert answer.status_code == 409 and "no day-ahead upload" in answer.json()["message"]


async def test_without_a_configured_token_writes_are_refused(files: SiteFiles, tmp_path: Path) -> None:
    async with running(files, tmp_path / "db.sqlite3", token=None) as (svc, client):
        answer = await post_json(client, example_json())  # a token nobody configured: unknown
        assert answer.status_code == 401 and answer.json()["detail"] == "invalid bearer token"
        assert svc.store.count_uploads() == 0


def test_reads_need_the_token_off_loopback(files: SiteFiles) -> None:
    open_site = files.site.model_copy(
        update={"central": files.site.central.model_copy(update={"http_address": "0.0.0.0:8080"})}
    )
    assert ServiceConfig.from_site(open_site, {}).read_token_required
    assert not ServiceConfig.from_site(files.site, {}).read_token_required
    public = open_site.model_copy(
        update={"central": open_site.central.model_copy(update={"public_reads": True})}
    )
    assert not ServiceConfig.from_site(public, {}).read_token_required
    # The environment's token wins over the site file's.
    with_token = files.site.model_copy(
        update={"central": files.site.central.model_copy(update={"api_token": "from-file"})}
    )
    assert ServiceConfig.from_site(with_token, {}).api_token == "from-file"
    assert ServiceConfig.from_site(with_token, {}).api_token_name == "[central] api_token"
    from_env = ServiceConfig.from_site(with_token, {"EMS_API_TOKEN": "from-env"})
    assert from_env.api_token == "from-env" and from_env.api_token_name == "$EMS_API_TOKEN"


# ------------------------------------------------------------------------------------- bad uploads

BAD_JSON: list[tuple[str, bytes, str]] = [
    ("wrong length", json_with(export_price_per_kwh=[0.05] * 95), "export_price_per_kwh"),
    ("NaN", example_json().replace(b'"load_kw": [\n  90.0', b'"load_kw": [\n  NaN', 1), "load_kw[0]"),
    ("negative load", json_with(load_kw=[100.0] * 5 + [-1.0] + [100.0] * 90), "load_kw[5]"),
    ("unknown cabinet", json_with(initial_soc_pct={"cab-9": 50.0}), "initial_soc_pct.cab-9"),
    ("not UTC", json_with(start="2026-11-24T00:00:00+01:00"), "start"),
    ("naive time", json_with(start="2026-11-24T00:00:00"), "start"),
    ("over already", json_with(start="2026-11-20T00:00:00Z"), "start"),
    ("not JSON", b"{not json", ""),
    ("missing field", json_with(load_kw=None), "load_kw"),
]


def csv_without_row(number: int) -> bytes:
    lines = example_csv().decode().splitlines(keepends=True)
    del lines[number]
    return "".join(lines).encode()


def csv_with_cell(row: int, column: int, value: str) -> bytes:
    lines = example_csv().decode().splitlines(keepends=True)
    cells = lines[row].rstrip("\n").split(",")
    cells[column] = value
    lines[row] = ",".join(cells) + "\n"
    return "".join(lines).encode()


BAD_CSV: list[tuple[str, bytes, str]] = [
    ("gap", csv_without_row(10), "row 10.start"),
    ("not a number", csv_with_cell(3, 3, "lots"), "row 3.load_kw"),
    ("negative load", csv_with_cell(7, 3, "-5"), "load_kw[6]"),
    ("unknown column", example_csv().replace(b"pv_kw", b"wind_kw", 1), "header"),
]


async def test_bad_uploads_are_refused_whole_and_change_nothing(files: SiteFiles, tmp_path: Path) -> None:
    async with running(files, tmp_path / "db.sqlite3") as (svc, client):
        good = await post_json(client, example_json(), wait="false")
        assert good.status_code == 202, good.text
        active = svc.state.upload
        assert active is not None
        for fmt, cases in (("application/json", BAD_JSON), ("text/csv", BAD_CSV)):
            for name, body, location in cases:
                answer = await client.post(
                    "/api/v1/day-ahead", content=body, headers={**AUTH, "Content-Type": fmt}
                )
                assert answer.status_code == 422, (name, answer.text)
                error = answer.json()
                assert error["detail"].startswith("upload refused: "), name
                locations = [p["location"] for p in error["problems"]]
                assert location in locations, (name, locations)
        answer = await client.post(
            "/api/v1/day-ahead", content=example_json(), headers={**AUTH, "Content-Type": "text/plain"}
        )
        assert answer.status_code == 415
        answer = await client.post(
            "/api/v1/day-ahead",
            content=b" " * (svc.max_upload_bytes + 1),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert answer.status_code == 413
        # Nothing of any refused upload was stored; the active upload is the good one.
        assert svc.store.count_uploads() == 1
        assert svc.state.upload is active
        assert svc.store.latest_upload() == active
        metrics = (await client.get("/metrics")).text
        refused = len(BAD_JSON) + len(BAD_CSV)
        assert 'ems_central_uploads_total{result="accepted"} 1' in metrics.splitlines()
        assert f'ems_central_uploads_total{{result="refused"}} {refused}' in metrics.splitlines()


# ------------------------------------------------------------------------------- failures, restart


async def test_a_failing_optimizer_is_reported_and_the_service_goes_on(
    files: SiteFiles, tmp_path: Path
) -> None:
    calls: list[int] = []

    def exploding(site: SiteConfig, dayahead: DayAhead, **kwargs: Any) -> Plan:
        calls.append(dayahead.steps)
        if len(calls) == 1:
            raise RuntimeError("solver exploded")
        return dispatch_optimizer(site, dayahead, **kwargs)

    async with running(files, tmp_path / "db.sqlite3", optimizer=exploding) as (_svc, client):
        answer = await post_json(client, example_json())
        assert answer.status_code == 201, answer.text  # the upload itself is accepted and stored
        run = answer.json()["run"]
        assert run["ok"] is False and "solver exploded" in run["message"] and run["plan"] is None
        health = (await client.get("/healthz")).json()
        assert health["jobs"]["planning"]["last_ok"] is False
        failed = [r for r in health["reasons"] if r["reason"] == "solve_failed"]
        assert len(failed) == 1 and "solver exploded" in failed[0]["detail"]
        assert (await client.get("/api/v1/plan/latest")).status_code == 404
        # The service still works: the next run succeeds (edges unreachable, but the plan is made).
        answer = await client.post("/api/v1/optimize", headers=AUTH)
        assert answer.status_code == 200, answer.text
        run = answer.json()
        assert run["ok"] is True and run["trigger"] == "manual"
        assert {p["status"] for p in run["push"].values()} == {"unreachable"}
        assert (await client.get("/api/v1/plan/latest")).json()["plan_id"] == run["plan"]["plan_id"]
        metrics = (await client.get("/metrics")).text.splitlines()
        assert 'ems_central_optimizations_total{trigger="upload",result="failed"} 1' in metrics
        assert 'ems_central_optimizations_total{trigger="manual",result="ok"} 1' in metrics
        assert 'ems_central_push_total{cabinet="cab-2",status="unreachable"} 1' in metrics


async def test_restart_restores_upload_and_plan(files: SiteFiles, tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    async with running(files, database) as (svc, client):
        answer = await post_json(client, example_json())
        assert answer.status_code == 201
        first = answer.json()
        plan = (await client.get("/api/v1/plan/latest")).content
    async with running(files, database, start=DAY_START + timedelta(minutes=7)) as (svc, client):
        assert svc.state.upload is not None
        assert svc.state.upload.upload_id == first["upload"]["upload_id"]
        latest = await client.get("/api/v1/plan/latest")
        assert latest.status_code == 200 and latest.content == plan
        assert latest.headers["x-upload-id"] == first["upload"]["upload_id"]
        assert latest.headers["x-plan-trigger"] == "upload"
        health = (await client.get("/healthz")).json()
        assert health["upload"]["upload_id"] == first["upload"]["upload_id"]
        assert health["plan"]["plan_id"] == first["run"]["plan"]["plan_id"]
        # Re-optimizing needs no new upload; it is the second plan of that upload: no upload SoC.
        answer = await client.post("/api/v1/optimize", headers=AUTH)
        assert answer.status_code == 200
        # No telemetry (no edges here) and the horizon still starts at the upload's start: its figures.
        assert {c["source"] for c in answer.json()["initial_soc"].values()} == {"upload"}


async def test_reoptimization_runs_every_period_of_simulated_time(files: SiteFiles, tmp_path: Path) -> None:
    # 900 x: 15 simulated minutes per wall second.
    async with running(files, tmp_path / "db.sqlite3", speed=900.0) as (svc, client):
        answer = await post_json(client, json_with(initial_soc_pct={"cab-1": 70.0}))
        assert answer.status_code == 201
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            job = svc.state.jobs().get("reoptimize")
            if job is not None and job.runs >= 2 and not job.running:
                break
            await asyncio.sleep(0.05)
        plan = svc.state.plan
        assert plan is not None and plan.trigger == "schedule"
        # The rolling horizon starts at a quarter hour after the upload's start and runs to its end.
        offset = plan.plan.start - DAY_START
        assert offset >= timedelta(minutes=30) and offset % timedelta(minutes=15) == timedelta(0)
        assert plan.plan.end == DAY_START + timedelta(days=1)
        run = svc.state.last_run
        assert run is not None and run.initial_soc["cab-1"].source == "default"  # mid-upload, no telemetry


# ------------------------------------------------------------------------------------ command line


@pytest.fixture
def ems_env(files: SiteFiles) -> Iterator[Mapping[str, str]]:
    env = {**os.environ, "EMS_API_TOKEN": TOKEN, files.site.opcua.central_password_env: files.password}
    env.pop("EMS_CLOCK", None)
    yield env


def test_ems_central_serves_and_stops_on_sigterm(
    files: SiteFiles, tmp_path: Path, ems_env: Mapping[str, str]
) -> None:
    site = make_site(tmp_path)
    env = {**ems_env, site.site.opcua.central_password_env: site.password}
    clock = f"sim:2026-11-24T00:05:00Z:60:{time.time()!r}"
    command = [sys.executable, "-m", "ems", "central", "--site", str(site.path), "--clock", clock]
    no_password = {k: v for k, v in env.items() if k != site.site.opcua.central_password_env}
    refused = subprocess.run(command, env=no_password, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "EMS_OPCUA_PASSWORD" in refused.stderr and "not set" in refused.stderr
    bad_clock = subprocess.run(
        [*command[:-1], "sim:yesterday"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad_clock.returncode == 2 and "clock spec" in bad_clock.stderr
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://{site.site.central.http_address}"
        deadline = time.monotonic() + 30.0
        while True:
            try:
                health = httpx.get(f"{url}/healthz", timeout=1.0)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "ems central did not come up"
                time.sleep(0.1)
        assert health.json()["site"] == "test-site"
        # `ems upload` against it: stored and optimized; no edge is running, so exit status 1.
        upload = subprocess.run(
            [sys.executable, "-m", "ems", "upload", str(EXAMPLES / "day-ahead.csv"), "--url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upload.returncode == 1, upload.stderr
        assert "accepted (csv): 96 x 15 min from 2026-11-24T00:00:00Z" in upload.stdout
        assert "cab-3" in upload.stdout and "unreachable" in upload.stdout
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, output
        assert "stopping" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_ems_upload_prints_every_problem_of_a_refused_upload(
    files: SiteFiles, tmp_path: Path, ems_env: Mapping[str, str]
) -> None:
    async def scenario() -> tuple[int, str, str]:
        async with running(files, tmp_path / "db.sqlite3") as (svc, _):
            bad = tmp_path / "bad.csv"
            bad.write_bytes(csv_with_cell(3, 3, "lots"))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ems", "upload", str(bad), "--url", svc.url,
                env=dict(ems_env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert svc.store.count_uploads() == 0
            return int(proc.returncode or 0), out.decode(), err.decode()

    code, out, err = asyncio.run(scenario())
    assert code == 2, (out, err)
    assert "row 3.load_kw: must be a finite number, got 'lots'" in err
