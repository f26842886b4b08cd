"""The central service and `ems upload` with implausible input and on the real clock.

A real service (HTTP, SQLite, solver); the edges are not running (pushes are 'unreachable'). `ems upload`
runs as a real subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from central.service.app import CentralService
from shared.clock import Clock, RealClock, SimulatedClock
from shared.dayahead import load_dayahead
from shared.errors import ConfigError
from tests.test_central_api import (
    AUTH,
    DAY_START,
    EXAMPLES,
    TOKEN,
    SiteFiles,
    example_csv,
    example_json,
    json_with,
    make_site,
    post_json,
    service_config,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("central-plausibility"))


@contextlib.asynccontextmanager
async def central(
    files: SiteFiles, database: Path, clock: Clock
) -> AsyncIterator[tuple[CentralService, httpx.AsyncClient]]:
    async with (
        CentralService(files.site, clock, service_config(files, database)) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client,
    ):
        yield svc, client


async def ems_upload(svc: CentralService, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ems", "upload", *args, "--url", svc.url, "--token", TOKEN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def example_in_w_with_soc_fractions() -> bytes:
    data = json.loads(example_json())
    data["load_kw"] = [v * 1000 for v in data["load_kw"]]
    data["initial_soc_pct"] = {"cab-1": 0.5, "cab-2": 0.5, "cab-3": 0.4}
    return json.dumps(data).encode()


async def test_warnings_are_in_the_upload_answer_and_the_log(
    files: SiteFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimulatedClock(DAY_START + timedelta(minutes=5), 60.0)
    async with central(files, tmp_path / "db.sqlite3", clock) as (_svc, client):
        with caplog.at_level(logging.INFO, logger="central.service.app"):
            answer = await post_json(client, example_in_w_with_soc_fractions(), wait="false")
        assert answer.status_code == 202, answer.text
        warnings = answer.json()["warnings"]
        assert [(w["location"], w["kind"], w["severity"]) for w in warnings] == [
            ("initial_soc_pct.cab-1", "wrong_unit", "warning"),
            ("initial_soc_pct.cab-2", "wrong_unit", "warning"),
            ("initial_soc_pct.cab-3", "wrong_unit", "warning"),
            ("load_kw[49]", "wrong_unit", "warning"),
        ]
        assert warnings[3]["message"].endswith("looks like W; kW expected")
        upload_id = answer.json()["upload"]["upload_id"]
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert f"upload {upload_id}: warning: {warnings[3]['location']}: {warnings[3]['message']}" in logged

        # The CSV form carries no initial SoC: the answer says what the central does instead.
        csv = await client.post(
            "/api/v1/day-ahead", content=example_csv(), headers={**AUTH, "Content-Type": "text/csv"},
            params={"wait": "false"},
        )  # fmt: skip
        assert [(w["kind"], w["severity"]) for w in csv.json()["warnings"]] == [("no_initial_soc", "note")]
        assert "live SoC, else from 50 %" in csv.json()["warnings"][0]["message"]
        sane = await post_json(client, example_json(), wait="false")
        assert sane.status_code == 202 and sane.json()["warnings"] == []


async def test_strict_plausibility_refuses_the_upload_and_stores_nothing(tmp_path: Path) -> None:
    strict = make_site(tmp_path, central="strict_plausibility = true", cabinets=1)
    clock = SimulatedClock(DAY_START + timedelta(minutes=5), 60.0)
    async with central(strict, tmp_path / "db.sqlite3", clock) as (svc, client):
        answer = await post_json(client, json_with(initial_soc_pct={"cab-1": 0.5}))
        assert answer.status_code == 422, answer.text
        assert answer.json()["problems"] == [
            {
                "location": "initial_soc_pct.cab-1",
                "message": "0.5 %: looks like a fraction 0-1; percent 0-100 expected "
                "(refused: [central] strict_plausibility)",
            }
        ]
        assert svc.store.count_uploads() == 0 and svc.state.upload is None
        # A note does not refuse: the CSV upload (no initial SoC) is taken.
        csv = await client.post(
            "/api/v1/day-ahead", content=example_csv(), headers={**AUTH, "Content-Type": "text/csv"},
            params={"wait": "false"},
        )  # fmt: skip
        assert csv.status_code == 202, csv.text


async def test_the_central_does_not_start_on_a_plan_window_beyond_the_edge_hard_limits(
    files: SiteFiles, tmp_path: Path
) -> None:
    cabinets = [files.site.cabinets[0].model_copy(update={"soc_min_pct": 1.0}), *files.site.cabinets[1:]]
    bad = files.site.model_copy(update={"cabinets": cabinets})
    database = tmp_path / "db.sqlite3"
    service = CentralService(bad, RealClock(), service_config(files, database))
    with pytest.raises(ConfigError) as info:
        await service.__aenter__()
    assert [p.location for p in info.value.problems] == ["cabinets[0].soc_min_pct"]
    assert "soc_hard_min_pct (2 %)" in str(info.value)
    assert not database.exists()  # nothing started

    # The command: exit 2 and the problem once.
    text = files.path.read_text().replace("soc_min_pct = 10.0", "soc_min_pct = 1.0", 1)
    (tmp_path / "site.toml").write_text(text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ems", "central", "--site", str(tmp_path / "site.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, (out, err)
    assert err.decode().count("cabinets[0].soc_min_pct") == 1
    assert "Traceback" not in err.decode()


async def test_the_example_on_the_real_clock_with_ems_upload_start(files: SiteFiles, tmp_path: Path) -> None:
    example = EXAMPLES / "day-ahead.json"
    async with central(files, tmp_path / "db.sqlite3", RealClock()) as (svc, _client):
        now = datetime.now(UTC)
        if load_dayahead(example).end <= now:
            # As shipped, the example day is over: refused, each problem printed once.
            code, out, err = await ems_upload(svc, str(example))
            assert code == 2, (out, err)
            assert err.count("which is over") == 1, err
            assert svc.state.upload is None

        code, out, err = await ems_upload(svc, str(example), "--start", "today")
        assert code == 1, (out, err)  # stored and planned; the edges are not running
        assert "accepted (json)" in out
        stored = svc.state.upload
        assert stored is not None
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        assert stored.dayahead.start in (today, today - timedelta(days=1))  # a test run across midnight
        original = load_dayahead(example)
        assert stored.dayahead.load_kw == original.load_kw
        assert stored.dayahead.initial_soc_pct == original.initial_soc_pct

        code, out, err = await ems_upload(svc, str(EXAMPLES / "day-ahead.csv"), "--start", "now")
        assert code == 1, (out, err)
        assert "note: initial_soc_pct: a CSV upload carries no initial SoC" in out
        # No edge is running: the plan starts from the default, and `ems upload` says so.
        assert "warning: cab-1, cab-2, cab-3 planned from the default SoC 50 %" in out
        stored = svc.state.upload
        assert stored is not None and stored.dayahead.interval_minutes == 15
        start = stored.dayahead.start
        assert start.minute % 15 == 0 and start.second == 0
        assert timedelta(0) <= datetime.now(UTC) - start < timedelta(minutes=16)


async def test_ems_upload_start_now_follows_the_given_clock(files: SiteFiles, tmp_path: Path) -> None:
    clock = SimulatedClock(DAY_START + timedelta(days=3, hours=7, minutes=50), 1.0)
    async with central(files, tmp_path / "db.sqlite3", clock) as (svc, _client):
        code, out, err = await ems_upload(
            svc, str(EXAMPLES / "day-ahead.json"), "--start", "now", "--clock", clock.spec()
        )
        assert code == 1, (out, err)
        stored = svc.state.upload
        assert stored is not None
        assert stored.dayahead.start == DAY_START + timedelta(days=3, hours=7, minutes=45)
