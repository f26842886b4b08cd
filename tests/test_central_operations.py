"""Operating a site through the central: status reasons, interlock resets, OPC UA login errors, alerts.

Real edges (controller + SignAndEncrypt OPC UA server) on simulated SunSpec devices over Modbus TCP, all
on loopback in this process (``lab.localsite``); the central service on top of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from central.service.app import CentralService
from central.service.health import DegradedReason, HealthSnapshot, findings
from lab.localsite import LocalSite
from shared.clock import SimulatedClock
from shared.edge_api import EdgeMode, EdgeTelemetry
from tests.test_central_api import AUTH, DAY_START, TOKEN, SiteFiles, json_with, make_site, post_json
from tests.test_central_api import service_config as base_config
from tests.test_central_e2e import eventually

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "ems-alerts.yml"
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[SiteFiles, LocalSite]]:
    files = make_site(
        tmp_path_factory.mktemp("central-ops"), central="reoptimize_every_minutes = 1440.0", cabinets=2
    )
    clock = SimulatedClock(DAY_START + timedelta(minutes=1), 60.0)
    async with LocalSite(files.site, clock, files.directory) as local:
        yield files, local


@contextlib.asynccontextmanager
async def central(
    files: SiteFiles, local: LocalSite, database: Path, *, password: str | None = None
) -> AsyncIterator[tuple[CentralService, httpx.AsyncClient]]:
    config = base_config(files, database)
    if password is not None:
        config = replace(config, opcua_password=password)
    async with (
        CentralService(files.site, local.clock, config) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client,
    ):
        yield svc, client


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/api/v1/status")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def reasons(body: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(r["reason"], r["cabinet_id"]) for r in body["reasons"]}


async def reset(client: httpx.AsyncClient, cabinet_id: str, **kwargs: Any) -> httpx.Response:
    return await client.post(f"/api/v1/cabinets/{cabinet_id}/reset-interlock", **kwargs)


async def test_tripped_cabinet_degrades_the_status_and_an_operator_resets_it(
    site: tuple[SiteFiles, LocalSite], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, local = site
    caplog.set_level(logging.INFO, logger="central")
    async with central(files, local, tmp_path / "c.sqlite3") as (svc, client):
        await eventually(lambda: all(svc.connected().values()), 15.0, "every edge connected")
        # On a busy machine the in-process edges may have latched a comm-loss trip at start: an
        # operator's reset clears it (the device data is fresh again by now).
        for cabinet_id in files.site.cabinet_ids:
            for _ in range(40):
                if (await reset(client, cabinet_id, headers=AUTH)).status_code == 200:
                    break
                await asyncio.sleep(0.25)
        await eventually(lambda: reasons_now(svc) == {("no_valid_plan", None)}, 5.0, "only: no plan yet")
        body = json_with(initial_soc_pct={"cab-1": 55.0, "cab-2": 45.0})
        assert (await post_json(client, body)).status_code == 201
        await eventually(lambda: all(local.running(svc.state.plan.plan.plan_id).values()), 5.0, "plan runs")  # type: ignore[union-attr]
        body = await status(client)
        assert body["status"] == "ok" and body["reasons"] == [], body
        metrics = (await client.get("/metrics")).text.splitlines()
        assert "ems_central_degraded 0" in metrics

        # A reset without a latched interlock: the edge says so, and accepts.
        answer = await reset(client, "cab-1", headers=AUTH)
        assert answer.status_code == 200 and answer.json() == {
            "cabinet_id": "cab-1",
            "accepted": True,
            "message": "no interlock is latched",
        }

        # Over-temperature at the device: the edge trips and latches.
        faults = local.simulator.cabinet("cab-1").faults
        faults.over_temperature(70.0)
        await eventually(
            lambda: ("cabinet_tripped", "cab-1") in reasons_now(svc), 10.0, "the central sees cab-1 tripped"
        )
        body = await status(client)
        assert body["status"] == "degraded"
        tripped = next(r for r in body["reasons"] if r["reason"] == "cabinet_tripped")
        assert "cab-1 is tripped" in tripped["detail"] and "ems reset-interlock cab-1" in tripped["detail"]
        metrics = (await client.get("/metrics")).text.splitlines()
        assert "ems_central_degraded 1" in metrics
        assert 'ems_central_degraded_reason{reason="cabinet_tripped"} 1' in metrics
        assert 'ems_central_edge_interlock_active{cabinet="cab-1"} 1' in metrics
        health = (await client.get("/healthz")).json()
        assert health["status"] == "degraded" and any("cab-1 is tripped" in p for p in health["problems"])

        # Still too hot: the edge refuses the reset, with its reason (409, Accepted false).
        answer = await reset(client, "cab-1", headers=AUTH)
        assert answer.status_code == 409, answer.text
        refused = answer.json()
        assert refused["accepted"] is False and "still present" in refused["message"]

        # Cooled down: the same command is accepted and the cabinet comes back by itself.
        faults.clear_all()
        await asyncio.sleep(0.5)  # fresh, valid data reaches the edge
        accepted: httpx.Response | None = None
        for _ in range(20):
            accepted = await reset(client, "cab-1", headers=AUTH)
            if accepted.status_code == 200:
                break
            await asyncio.sleep(0.25)
        assert accepted is not None and accepted.status_code == 200, accepted.text
        assert accepted.json()["accepted"] is True and "interlock reset" in accepted.json()["message"]
        await eventually(lambda: ("cabinet_tripped", "cab-1") not in reasons_now(svc), 10.0, "cab-1 back")

        # Every reset was logged with the token and the client that asked, and is in the audit trail with
        # the edge's answer; the counter has each outcome.
        lines = [r.getMessage() for r in caplog.records if "reset-interlock of cab-1" in r.getMessage()]
        asked = "asked by token '$EMS_API_TOKEN' from 127.0.0.1: "
        assert len(lines) >= 3 and all(asked in line for line in lines), lines
        assert any("refused by the edge: cannot reset: still present" in line for line in lines)
        audit = [r for r in svc.audit_log.records(limit=200) if r.action.value == "reset-interlock"]
        cab1 = [(r.status_code, r.detail) for r in audit if r.detail.startswith("cab-1: ")]
        assert (409, f"cab-1: refused by the edge: {refused['message']}") in cab1, cab1
        assert (200, f"cab-1: accepted by the edge: {accepted.json()['message']}") in cab1, cab1
        assert all(r.token_name == "$EMS_API_TOKEN" and r.client_address == "127.0.0.1" for r in audit)
        metrics = (await client.get("/metrics")).text.splitlines()
        refused_line = 'ems_central_interlock_resets_total{cabinet="cab-1",result="refused"} '
        assert any(line.startswith(refused_line) and int(line.split()[-1]) >= 1 for line in metrics)


def reasons_now(svc: CentralService) -> set[tuple[str, str | None]]:
    from central.service.health import findings

    return {(f.reason.value, f.cabinet_id) for f in findings(svc.health_snapshot())}


async def test_reset_of_an_unknown_or_unreachable_cabinet_and_without_the_token(
    site: tuple[SiteFiles, LocalSite], tmp_path: Path
) -> None:
    files, local = site
    async with central(files, local, tmp_path / "c.sqlite3") as (svc, client):
        await eventually(lambda: all(svc.connected().values()), 15.0, "every edge connected")
        assert (await reset(client, "cab-1")).status_code == 401
        unknown = await reset(client, "cab-9", headers=AUTH)
        assert unknown.status_code == 404 and "no cabinet 'cab-9'" in unknown.json()["detail"]
        await local.edges["cab-2"].stop()
        try:
            await eventually(lambda: not svc.connected()["cab-2"], 10.0, "cab-2 seen down")
            down = await reset(client, "cab-2", headers=AUTH)
            assert down.status_code == 503, down.text
            assert down.json()["detail"].startswith(
                "reset-interlock of cab-2 not sent: edge cab-2 is not connected"
            )
            assert ("edge_unreachable", "cab-2") in reasons(await status(client))
        finally:
            await local.edges["cab-2"].start()
        await eventually(lambda: all(svc.connected().values()), 15.0, "cab-2 back")
        # A restart in this busy process may have latched a comm-loss trip: leave the cabinet clean.
        for _ in range(40):
            if (await reset(client, "cab-2", headers=AUTH)).status_code == 200:
                break
            await asyncio.sleep(0.25)


async def test_ems_reset_interlock_command(site: tuple[SiteFiles, LocalSite], tmp_path: Path) -> None:
    files, local = site
    async with central(files, local, tmp_path / "c.sqlite3") as (svc, _):
        await eventually(lambda: all(svc.connected().values()), 15.0, "every edge connected")

        async def ems(*args: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ems", "reset-interlock", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            return int(proc.returncode or 0), out.decode(), err.decode()

        code, out, _ = await ems("cab-2", "--url", svc.url, "--token", TOKEN)
        assert code == 0 and out.startswith("cab-2: reset accepted by the edge: "), out
        code, _, err = await ems("cab-7", "--url", svc.url, "--token", TOKEN)
        assert code == 2 and "HTTP 404" in err and "no cabinet 'cab-7'" in err
        code, _, err = await ems("cab-2", "--url", svc.url, "--token", "wrong")
        assert code == 2 and "HTTP 401" in err
        local.simulator.cabinet("cab-2").faults.over_temperature(70.0)
        try:
            await eventually(lambda: ("cabinet_tripped", "cab-2") in reasons_now(svc), 10.0, "cab-2 tripped")
            code, out, _ = await ems("cab-2", "--url", svc.url, "--token", TOKEN)
            assert code == 1 and out.startswith(
                "cab-2: reset refused by the edge: cannot reset: still present"
            )
        finally:
            local.simulator.cabinet("cab-2").faults.clear_all()
        for _ in range(40):
            code, out, _ = await ems("cab-2", "--url", svc.url, "--token", TOKEN)
            if code == 0:
                break
            await asyncio.sleep(0.25)
        assert code == 0 and "interlock reset" in out


async def test_a_wrong_opcua_password_is_named_as_such(
    site: tuple[SiteFiles, LocalSite], tmp_path: Path
) -> None:
    files, local = site
    async with central(files, local, tmp_path / "c.sqlite3", password="not-the-password") as (svc, client):
        refused = "wrong user name or password: the edge refused OPC UA user 'central'"
        await eventually(
            lambda: all(e.startswith(refused) for e in svc.fleet.last_errors().values()), 15.0, "refused"
        )
        for cabinet_id, error in svc.fleet.last_errors().items():
            assert error.startswith("wrong user name or password: the edge refused OPC UA user 'central'"), (
                cabinet_id,
                error,
            )
            assert "permission" not in error
        body = await status(client)
        unreachable = [r for r in body["reasons"] if r["reason"] == DegradedReason.EDGE_UNREACHABLE]
        assert len(unreachable) == 2 and all(
            "wrong user name or password" in r["detail"] for r in unreachable
        )


# ------------------------------------------------------------------------------------------- alerts

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
PROMETHEUS_OWN = {"up"}  # added by Prometheus to every scrape target


def alert_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    # Label lists of vector matching and aggregation (on(cabinet), by(reason)) name labels, not metrics.
    without_ranges = re.sub(
        r"\b(on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)", r"\1", without_ranges
    )
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()\b", without_ranges))
    functions = set(re.findall(r"([a-zA-Z_]+)\s*\(", without_ranges))
    return {n for n in names - functions - PROMQL_WORDS if not n.isdigit()}


async def test_alert_rules_parse_and_name_metrics_the_central_exports(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)) >= 8
    for rule in alerts:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
    # Each degraded reason that the issue names has an alert.
    exprs = " ".join(rule["expr"] for rule in alerts)
    for reason in ("no_valid_plan", "active_upload_without_plan", "solve_failed"):
        assert f'reason="{reason}"' in exprs

    files = make_site(tmp_path)
    clock = SimulatedClock(DAY_START, 60.0)
    async with (
        CentralService(files.site, clock, base_config(files, tmp_path / "db")) as svc,
        httpx.AsyncClient(base_url=svc.url) as client,
    ):
        text = (await client.get("/metrics")).text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    used = set().union(*(alert_metrics(rule["expr"]) for rule in alerts))
    assert {"ems_central_degraded_reason", "ems_central_edge_connected", "up"} <= used
    missing = used - families - PROMETHEUS_OWN
    assert not missing, f"alert rules use metrics the central does not export: {sorted(missing)}"
    # The reason label values the rules use exist as series.
    for reason in re.findall(r'reason="([a-z_]+)"', exprs):
        assert reason in {r.value for r in DegradedReason}


@pytest.mark.parametrize(
    ("mode", "active", "expected"),
    [
        (EdgeMode.TRIPPED, True, DegradedReason.CABINET_TRIPPED),
        (EdgeMode.STARTING, True, DegradedReason.CABINET_HOLDING),  # a comm-loss hold: ends by itself
        (EdgeMode.SCHEDULE, False, None),
    ],
)
def test_a_hold_is_not_reported_as_a_trip(
    mode: EdgeMode, active: bool, expected: DegradedReason | None
) -> None:
    """Only a latched interlock (mode tripped) asks for a reset; a communication-loss hold says it resumes."""
    telemetry = EdgeTelemetry(
        "cab-1", 50.0, 0.0, 0.0, 100.0, 100.0, mode, "", None, active, "comm_loss (not latched; ...)", 1.0
    )
    snapshot = HealthSnapshot(
        now=datetime(2026, 11, 24, tzinfo=UTC),
        upload=None,
        plan=None,
        last_run=None,
        push={},
        connected={"cab-1": True},
        connection_errors={},
        telemetry={"cab-1": telemetry},
        jobs={},
        cabinet_ids=("cab-1",),
    )
    edge = [f for f in findings(snapshot) if f.cabinet_id == "cab-1"]
    assert [f.reason for f in edge] == ([expected] if expected else [])
    if expected is DegradedReason.CABINET_HOLDING:
        assert "resumes by itself" in edge[0].detail and "reset" not in edge[0].detail
