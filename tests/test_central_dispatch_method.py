"""The central's dispatch method: ``[central] dispatch_method`` reaches the plan, and a large solve runs in a
worker process while the service keeps answering."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from central.dispatch import DispatchOptions, solve_dispatch
from central.service.interfaces import dispatch_optimizer
from lab.bench.dispatch import bench_site
from shared.dayahead import DayAhead
from shared.plan import DispatchMethod, Plan
from shared.site import SiteConfig
from tests.test_central_api import AUTH, example_json, make_site, post_json, running


async def test_the_configured_method_runs_and_the_plan_names_it(tmp_path: Path) -> None:
    files = make_site(tmp_path, central='dispatch_method = "block_ipm"')
    async with running(files, tmp_path / "db.sqlite3") as (_svc, client):
        answer = await post_json(client, example_json())
        assert answer.status_code == 201, answer.text
        assert answer.json()["run"]["ok"] is True
        plan = Plan.model_validate((await client.get("/api/v1/plan/latest")).json())
    assert plan.solver.method is DispatchMethod.BLOCK_IPM and plan.solver.backend == "block_ipm"
    assert plan.solver.lower_bound is not None and plan.solver.lower_bound <= plan.objective.total
    assert plan.solver.gap_pct is not None and plan.solver.gap_pct <= 0.01


async def test_the_service_answers_while_a_large_solve_runs(tmp_path: Path) -> None:
    files = make_site(tmp_path)
    big_site, big_day = bench_site(1000, 96)
    solving = threading.Event()
    solved = threading.Event()

    def large_first(site: SiteConfig, dayahead: DayAhead, **kwargs: Any) -> Plan:
        # What the central does for a large site (block_ipm in a worker process), then the real plan.
        solving.set()
        options = DispatchOptions(method=DispatchMethod.BLOCK_IPM, in_worker=True, time_limit_s=60.0)
        result = solve_dispatch(big_site, big_day, options=options)
        solved.set()
        assert result.solver.method is DispatchMethod.BLOCK_IPM
        return dispatch_optimizer(site, dayahead, **kwargs)

    async with running(files, tmp_path / "db.sqlite3", optimizer=large_first) as (_svc, client):
        upload = asyncio.create_task(post_json(client, example_json()))
        deadline = time.monotonic() + 60.0
        while not solving.is_set():
            assert time.monotonic() < deadline, "the solve did not start"
            await asyncio.sleep(0.01)
        latencies: list[float] = []
        while not solved.is_set():
            began = time.perf_counter()
            health = await client.get("/healthz")
            status = await client.get("/api/v1/status", headers=AUTH)
            elapsed = time.perf_counter() - began
            if not solved.is_set():  # both answers came while the solve ran
                latencies.append(elapsed)
            assert health.status_code in (200, 503) and status.status_code == 200
            await asyncio.sleep(0.05)
        answer = await upload
        assert answer.status_code == 201 and answer.json()["run"]["ok"] is True
    assert len(latencies) >= 3, latencies  # the solve took a while, and the service answered meanwhile
    assert max(latencies) < 2.0, latencies  # generous: a busy machine; the solve itself takes seconds
