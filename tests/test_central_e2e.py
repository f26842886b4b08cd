"""End to end: upload -> plan -> push -> every edge runs the new schedule.

Real everything over loopback: the HTTP API, the HiGHS solver, secure OPC UA sessions (SignAndEncrypt,
certificates, users) to three edge controllers, which drive simulated SunSpec devices over Modbus TCP, all
on one simulated clock running faster than real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from central.service.app import CentralService
from lab.localsite import LocalSite
from shared.clock import SimulatedClock
from shared.edge_api import EdgeMode
from shared.site import SiteConfig
from tests.test_central_api import (
    AUTH,
    DAY_START,
    EXAMPLES,
    TOKEN,
    SiteFiles,
    example_csv,
    example_json,
    make_site,
    post_json,
    service_config,
)

SPEED = 60.0  # one simulated minute per wall second
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Edges:
    """One set of running edges (and simulators) for the whole module: starting an edge's OPC UA server
    takes about 2 s of CPU, a central service well under one."""

    files: SiteFiles
    clock: SimulatedClock
    local: LocalSite


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edges(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edges]:
    # Scheduled re-optimization once a simulated day: a test's plan stays the active one unless the test
    # re-optimizes itself (test_scheduled_... uses a faster central on the same edges).
    files = make_site(tmp_path_factory.mktemp("central-e2e"), central="reoptimize_every_minutes = 1440.0")
    clock = SimulatedClock(DAY_START + timedelta(minutes=1), SPEED)
    soc = {"cab-1": 55.0, "cab-2": 45.0, "cab-3": 60.0}
    async with LocalSite(files.site, clock, files.directory, initial_soc_pct=soc) as local:
        yield Edges(files, clock, local)


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def central(
    edges: Edges, database: Path, site: SiteConfig | None = None
) -> AsyncIterator[tuple[CentralService, httpx.AsyncClient]]:
    files = edges.files if site is None else replace(edges.files, site=site)
    async with (
        CentralService(files.site, edges.clock, service_config(files, database)) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client,
    ):
        await eventually(lambda: all(svc.connected().values()), 15.0, "every edge connected")
        yield svc, client


def plan_id_of(answer: httpx.Response) -> str:
    assert answer.status_code == 201, answer.text
    run: dict[str, Any] = answer.json()["run"]
    assert run["ok"], run["message"]
    return str(run["plan"]["plan_id"])


async def test_json_and_csv_uploads_reach_every_edge(edges: Edges, tmp_path: Path) -> None:
    local = edges.local
    async with central(edges, tmp_path / "central.sqlite3") as (svc, client):
        # JSON through the real `ems upload` command: every edge accepts, exit status 0.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ems", "upload", str(EXAMPLES / "day-ahead.json"), "--url", svc.url,
            "--token", TOKEN, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, (out.decode(), err.decode())
        printed = out.decode()
        assert printed.count("accepted") >= 4  # the upload line and one per cabinet
        first = svc.state.plan
        assert first is not None and first.trigger == "upload" and first.plan.plan_id in printed
        # From the interval the run started in (the day's first unless this busy machine was slow).
        index = (first.plan.created_at - DAY_START) // timedelta(minutes=15)
        assert first.plan.start == DAY_START + index * timedelta(minutes=15)
        assert first.plan.steps == 96 - index
        await eventually(lambda: all(local.running(first.plan.plan_id).values()), 5.0, "edges run plan 1")
        run = svc.state.last_run
        assert run is not None
        # The upload's initial SoC applies to its first optimization when the horizon starts at the
        # upload's start; once the day has moved on, the live SoC does.
        if index == 0:
            assert {cab: (c.soc_pct, c.source) for cab, c in run.initial_soc.items()} == {
                "cab-1": (50.0, "upload"),
                "cab-2": (50.0, "upload"),
                "cab-3": (40.0, "upload"),
            }
        else:
            assert {c.source for c in run.initial_soc.values()} == {"telemetry"}
        for cabinet_id, edge in local.edges.items():
            telemetry = edge.telemetry()
            assert telemetry is not None and telemetry.mode is EdgeMode.SCHEDULE
            assert telemetry.schedule_valid_until == DAY_START + timedelta(days=1)
            assert cabinet_id in telemetry.schedule_id

        # CSV (no initial SoC in it): the plan starts from the live SoC of the edges.
        answer = await client.post(
            "/api/v1/day-ahead", content=example_csv(), headers={**AUTH, "Content-Type": "text/csv"}
        )
        second = plan_id_of(answer)
        assert second != first.plan.plan_id
        run_out = answer.json()["run"]
        assert {p["status"] for p in run_out["push"].values()} == {"accepted"}
        assert {c["source"] for c in run_out["initial_soc"].values()} == {"telemetry"}
        for cabinet_id, choice in run_out["initial_soc"].items():
            live = local.edges[cabinet_id].telemetry()
            assert live is not None and abs(live.soc_pct - choice["soc_pct"]) < 1.0
        await eventually(lambda: all(local.running(second).values()), 5.0, "edges run plan 2")
        await eventually(
            lambda: all(t is not None and t.schedule_id.startswith(second) for t in svc.telemetry().values()),
            5.0,
            "the central sees every edge on plan 2",
        )
        cabinets = (await client.get("/api/v1/cabinets")).json()
        assert all(c["runs_active_plan"] and c["last_push"]["status"] == "accepted" for c in cabinets)
        assert all(c["mode"] == "schedule" for c in cabinets)
        health = (await client.get("/healthz")).json()
        assert health["status"] == "ok", health["problems"]
        metrics = (await client.get("/metrics")).text.splitlines()
        assert 'ems_central_edge_connected{cabinet="cab-3"} 1' in metrics
        assert 'ems_central_push_total{cabinet="cab-1",status="accepted"} 2' in metrics
        # Every push outcome is on record.
        outcomes = svc.store.push_outcomes_for(second)
        assert sorted(r.cabinet_id for r in outcomes) == ["cab-1", "cab-2", "cab-3"]


async def test_an_edge_down_does_not_stop_the_others(edges: Edges, tmp_path: Path) -> None:
    local = edges.local
    async with central(edges, tmp_path / "central.sqlite3") as (svc, client):
        await local.edges["cab-2"].stop()
        try:
            await eventually(lambda: not svc.connected()["cab-2"], 10.0, "cab-2 seen down")
            answer = await post_json(client, example_json())
            plan_id = plan_id_of(answer)
            push = answer.json()["run"]["push"]
            assert push["cab-1"]["status"] == "accepted" and push["cab-3"]["status"] == "accepted"
            assert push["cab-2"]["status"] == "unreachable" and push["cab-2"]["message"]
            await eventually(
                lambda: (
                    local.edges["cab-1"].runs(f"{plan_id}/cab-1")
                    and local.edges["cab-3"].runs(f"{plan_id}/cab-3")
                ),
                5.0,
                "cab-1 and cab-3 run the plan",
            )
            health = (await client.get("/healthz")).json()
            assert health["status"] == "degraded"
            # An unreachable edge is named as such (not also as one that did not accept the plan).
            found = [(r["reason"], r["cabinet_id"]) for r in health["reasons"]]
            assert found == [("edge_unreachable", "cab-2")]
            assert health["problems"][0].startswith("edge cab-2 unreachable: ")
        finally:
            # The edge comes back: it gets the active plan without a new upload, and that is recorded.
            await local.edges["cab-2"].start()
        await eventually(lambda: local.edges["cab-2"].runs(f"{plan_id}/cab-2"), 15.0, "cab-2 runs the plan")
        await eventually(
            lambda: svc.state.push_outcomes()["cab-2"].status == "accepted", 5.0, "cab-2 outcome recorded"
        )
        assert svc.store.latest_push_outcomes()["cab-2"].plan_id == plan_id
        await eventually(lambda: all(svc.connected().values()), 5.0, "all connected again")
        health = (await client.get("/healthz")).json()
        assert health["status"] == "ok", health["problems"]


async def test_restart_resumes_without_a_new_upload(edges: Edges, tmp_path: Path) -> None:
    local = edges.local
    database = tmp_path / "central.sqlite3"
    async with central(edges, database) as (svc, client):
        plan_id = plan_id_of(await post_json(client, example_json()))
        await eventually(lambda: all(local.running(plan_id).values()), 5.0, "edges run the plan")
    # The central is down; the edges go on with their schedule.
    assert all(local.running(plan_id).values())
    async with central(edges, database) as (svc, client):
        latest = await client.get("/api/v1/plan/latest")
        assert latest.status_code == 200 and latest.json()["plan_id"] == plan_id
        # The restored plan is handed to the fleet again; each edge confirms it.
        await eventually(
            lambda: all(
                r.plan_id == plan_id and r.status == "accepted" for r in svc.state.push_outcomes().values()
            ),
            5.0,
            "the restored plan accepted by every edge",
        )
        assert svc.recovery.startswith(f"resumed plan {plan_id} ")
        # Re-optimizing needs no new upload: it starts from the live SoC.
        answer = await client.post("/api/v1/optimize", headers=AUTH)
        assert answer.status_code == 200, answer.text
        run = answer.json()
        assert {c["source"] for c in run["initial_soc"].values()} == {"telemetry"}
        new_plan = run["plan"]["plan_id"]
        assert svc.state.upload is not None and run["plan"]["upload_id"] == svc.state.upload.upload_id
        await eventually(lambda: all(local.running(new_plan).values()), 5.0, "edges run the new plan")


async def test_scheduled_reoptimization_follows_the_clock_with_live_soc(edges: Edges, tmp_path: Path) -> None:
    site = edges.files.site
    fast = site.model_copy(
        update={"central": site.central.model_copy(update={"reoptimize_every_minutes": 1.0})}
    )
    async with central(edges, tmp_path / "central.sqlite3", fast) as (svc, client):
        uploaded = plan_id_of(await post_json(client, example_json()))

        def scheduled_run_pushed() -> bool:
            run = svc.state.last_run
            return (
                run is not None
                and run.trigger == "schedule"
                and run.plan is not None
                and len(run.outcomes) == 3
                and all(r.status == "accepted" for r in run.outcomes.values())
            )

        await eventually(scheduled_run_pushed, 10.0, "a scheduled re-optimization pushed")
        run = svc.state.last_run
        assert run is not None and run.plan is not None
        plan = run.plan.plan
        assert plan.plan_id != uploaded
        # Rolling horizon: from the interval that contains the run's start to the end of the upload.
        assert plan.start <= run.started_at < plan.start + timedelta(minutes=15)
        assert plan.end == DAY_START + timedelta(days=1)
        assert plan.steps == (plan.end - plan.start) // timedelta(minutes=15)
        assert {c.source for c in run.initial_soc.values()} == {"telemetry"}
        # The job that requested the run records it once the queue has answered it (a moment later).
        await eventually(lambda: svc.state.jobs()["reoptimize"].runs >= 1, 10.0, "the job saw its run")
        assert svc.state.jobs()["reoptimize"].failures == 0
