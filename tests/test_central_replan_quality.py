"""The central passes the plan the edges run and their live setpoints into every re-optimization."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from central.service.interfaces import dispatch_optimizer, live_setpoints_kw
from shared.dayahead import DayAhead
from shared.edge_api import EdgeMode, EdgeTelemetry
from shared.plan import Plan
from shared.site import SiteConfig
from tests.test_central_api import AUTH, SiteFiles, example_json, make_site, post_json, running


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("central-replan"))


def snapshot(cabinet_id: str, setpoint_kw: float) -> EdgeTelemetry:
    return EdgeTelemetry(
        cabinet_id=cabinet_id,
        soc_pct=50.0,
        active_power_kw=setpoint_kw,
        setpoint_kw=setpoint_kw,
        charge_limit_kw=100.0,
        discharge_limit_kw=100.0,
        mode=EdgeMode.SCHEDULE,
        schedule_id="s",
        schedule_valid_until=datetime(2026, 11, 24, tzinfo=UTC),
        interlock_active=False,
        interlock_reason="",
        cycle_time_p99_ms=1.0,
    )


def test_live_setpoints_come_only_from_connected_edges() -> None:
    telemetry = {
        "cab-1": snapshot("cab-1", -40.0),
        "cab-2": snapshot("cab-2", 25.0),
        "cab-3": None,
        "cab-4": snapshot("cab-4", float("nan")),
    }
    connected = {"cab-1": True, "cab-2": False, "cab-3": True, "cab-4": True}
    assert live_setpoints_kw(telemetry, connected) == {"cab-1": -40.0}


async def test_a_replan_gets_the_active_plan_and_stays_on_it(files: SiteFiles, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    plans: list[Plan] = []

    def recording(site: SiteConfig, dayahead: DayAhead, **kwargs: Any) -> Plan:
        calls.append(kwargs)
        plans.append(dispatch_optimizer(site, dayahead, **kwargs))
        return plans[-1]

    async with running(files, tmp_path / "db.sqlite3", optimizer=recording) as (_svc, client):
        answer = await post_json(client, example_json())
        assert answer.status_code == 201, answer.text
        assert answer.json()["run"]["plan"]["plan_id"] == plans[0].plan_id
        assert calls[0]["previous_plan"] is None
        answer = await client.post("/api/v1/optimize", headers=AUTH)
        assert answer.status_code == 200, answer.text
    first, second = plans
    previous = calls[1]["previous_plan"]
    assert previous is not None and previous.plan_id == first.plan_id
    assert calls[1]["current_setpoint_kw"] == {}  # the edges are not running here: nothing is known live
    # the re-plan's first stage started from the first plan's basis
    assert "warm start" not in first.solver.message and "warm start" in second.solver.message
    # Nothing changed but the SoC source: the re-plan keeps the plan on the intervals both cover.
    assert second.quality is not None and second.quality.deviation_from_previous_kw is not None
    assert max(second.quality.deviation_from_previous_kw.values()) < 1e-3
