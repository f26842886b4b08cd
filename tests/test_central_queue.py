"""The planning queue: durable across SIGKILL, coalescing under a burst, each answer about its own upload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from central.service.store import Store, UploadPlanning
from shared.timeutil import format_utc
from tests.test_central_api import (
    AUTH,
    DAY_START,
    TOKEN,
    SiteFiles,
    example_json,
    make_site,
    post_json,
    running,
)
from tests.test_central_store import START, make_dayahead, make_plan


def priced_upload(number: int, *, steps: int = 96, interval_minutes: int = 15) -> bytes:
    """A valid upload whose prices differ per ``number`` (every upload makes a different plan)."""
    base = json.loads(example_json())
    prices = [0.10 + 0.15 * ((i * 7 + number) % 24) / 24 for i in range(steps)]
    load = [80.0 + 40.0 * ((i * 5 + number) % 17) / 17 for i in range(steps)]
    return json.dumps(
        {
            "start": base["start"],
            "interval_minutes": interval_minutes,
            "import_price_per_kwh": prices,
            "export_price_per_kwh": [p * 0.3 for p in prices],
            "load_kw": load,
            "initial_soc_pct": base["initial_soc_pct"],
        }
    ).encode()


# ----------------------------------------------------------------------------------- store level


def test_claim_takes_the_newest_and_supersedes_the_rest(tmp_path: Path) -> None:
    with Store(tmp_path / "c.sqlite3") as store:
        for n in range(1, 5):
            store.add_upload(f"u{n}", START, "json", b"x", make_dayahead())
        assert {r.planning for r in store.upload_records()} == {UploadPlanning.PENDING}
        claim = store.claim_newest_pending()
        assert claim.upload_id == "u4" and claim.superseded == ("u3", "u2", "u1")
        records = {r.upload_id: r for r in store.upload_records()}
        assert records["u4"].planning is UploadPlanning.PENDING  # until its plan is stored
        assert all(records[u].planning is UploadPlanning.SUPERSEDED for u in ("u1", "u2", "u3"))
        assert all(records[u].superseded_by == "u4" for u in ("u1", "u2", "u3"))
        # A crash now leaves u4 queued: a new claim finds it again.
        assert store.claim_newest_pending().upload_id == "u4"
        store.add_plan(make_plan("p4"), "u4", "upload", START)
        assert store.upload_record("u4").planning is UploadPlanning.PLANNED  # type: ignore[union-attr]
        assert store.claim_newest_pending().upload_id is None
        # A later failed plan or an "expired" does not undo "planned".
        from shared.plan import PlanStatus

        store.add_plan(make_plan("p5", PlanStatus.FAILED), "u4", "schedule", START)
        store.set_planning("u4", UploadPlanning.EXPIRED)
        assert store.upload_record("u4").planning is UploadPlanning.PLANNED  # type: ignore[union-attr]
        store.add_upload("u5", START, "json", b"x", make_dayahead())
        store.add_plan(make_plan("p6", PlanStatus.FAILED), "u5", "upload", START)
        assert store.upload_record("u5").planning is UploadPlanning.FAILED  # type: ignore[union-attr]


SCHEMA_1 = """
CREATE TABLE uploads (seq INTEGER PRIMARY KEY AUTOINCREMENT, upload_id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL, source_format TEXT NOT NULL, start TEXT NOT NULL,
    interval_minutes INTEGER NOT NULL, steps INTEGER NOT NULL, sha256 TEXT NOT NULL, raw BLOB NOT NULL,
    dayahead_json TEXT NOT NULL);
CREATE TABLE plans (seq INTEGER PRIMARY KEY AUTOINCREMENT, plan_id TEXT NOT NULL UNIQUE,
    upload_id TEXT NOT NULL REFERENCES uploads(upload_id), trigger TEXT NOT NULL, stored_at TEXT NOT NULL,
    status TEXT NOT NULL, start TEXT NOT NULL, steps INTEGER NOT NULL, objective_total REAL NOT NULL,
    plan_json TEXT NOT NULL);
PRAGMA user_version=1;
"""


def test_a_schema_1_database_is_migrated_with_planning_states(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    day = make_dayahead().to_json()
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1)
        for n in (1, 2, 3, 4):
            conn.execute(
                "INSERT INTO uploads (upload_id, received_at, source_format, start, interval_minutes, steps,"
                " sha256, raw, dayahead_json) VALUES (?, ?, 'json', ?, 15, 4, 'h', x'00', ?)",
                (f"u{n}", format_utc(START), format_utc(START), day),
            )
        conn.execute(
            "INSERT INTO plans (plan_id, upload_id, trigger, stored_at, status, start, steps,"
            " objective_total, plan_json) VALUES ('p2', 'u2', 'upload', ?, 'optimal', ?, 4, 0.0, ?)",
            (format_utc(START), format_utc(START), make_plan("p2").model_dump_json()),
        )
    with Store(path) as store:
        states = {r.upload_id: (r.planning, r.superseded_by) for r in store.upload_records()}
        assert states == {
            "u1": (UploadPlanning.SUPERSEDED, "u4"),
            "u2": (UploadPlanning.PLANNED, None),
            "u3": (UploadPlanning.SUPERSEDED, "u4"),
            "u4": (UploadPlanning.PENDING, None),  # the newest, never planned: optimized at start
        }
        assert store.latest_plan() is not None and store.integrity_problems() == []
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


# --------------------------------------------------------------------------- concurrent answers


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("central-queue"))


async def test_concurrent_waiting_uploads_each_get_their_own_run_or_superseded(
    files: SiteFiles, tmp_path: Path
) -> None:
    async with running(files, tmp_path / "db.sqlite3") as (svc, client):
        answers = await asyncio.gather(*(post_json(client, priced_upload(n)) for n in range(10)))
        assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
        bodies = [a.json() for a in answers]
        planned = {b["upload"]["upload_id"] for b in bodies if b["planning"] == "planned"}
        for body in bodies:
            upload_id = body["upload"]["upload_id"]
            if body["planning"] == "planned":
                run = body["run"]
                assert run["upload_id"] == upload_id and run["plan"]["upload_id"] == upload_id
                assert run["ok"] and run["trigger"] == "upload"
                stored = svc.store.upload_record(upload_id)
                assert stored is not None and stored.planning is UploadPlanning.PLANNED
            else:
                assert body["planning"] == "superseded" and body["run"] is None, body
                assert body["superseded_by"] in planned and "superseded by" in body["message"]
        # A burst coalesces: fewer optimizations than uploads, and the newest one is planned.
        records = svc.store.upload_records()
        assert len(records) == 10 and records[-1].upload_id in planned
        assert 1 <= len(planned) < 10
        assert svc.store.count_plans() == len(planned)
        latest = await client.get("/api/v1/plan/latest")
        assert latest.headers["x-upload-id"] == records[-1].upload_id
        metrics = (await client.get("/metrics")).text.splitlines()
        assert f"ems_central_uploads_superseded_total {10 - len(planned)}" in metrics


# ------------------------------------------------------------------------------------ SIGKILL


@pytest.fixture
def central_env(files: SiteFiles) -> Iterator[dict[str, str]]:
    env = {**os.environ, "EMS_API_TOKEN": TOKEN, files.site.opcua.central_password_env: files.password}
    env.pop("EMS_CLOCK", None)
    yield env


def start_central(site: SiteFiles, env: dict[str, str], clock: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "ems", "central", "--site", str(site.path), "--clock", clock]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_up(url: str, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1.0)
            return
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "ems central did not come up"
            time.sleep(0.02)


def test_sigkill_with_uploads_queued_loses_nothing_and_plans_the_newest_at_restart(
    tmp_path: Path, central_env: dict[str, str]
) -> None:
    site = make_site(tmp_path)
    env = {**central_env, site.site.opcua.central_password_env: site.password}
    clock = f"sim:{format_utc(DAY_START + timedelta(minutes=5))}:60:{time.time()!r}"
    url = f"http://{site.site.central.http_address}"
    database = Path(site.site.central.database_path)
    # Two days of minutes: each solve takes long enough for a storm to queue up behind it.
    storm = [priced_upload(n, steps=2880, interval_minutes=1) for n in range(30)]
    first = start_central(site, env, clock)
    acknowledged: list[str] = []
    try:
        wait_up(url, first)
        with httpx.Client(base_url=url, headers={**AUTH, "Content-Type": "application/json"}) as client:
            for body in storm:
                answer = client.post("/api/v1/day-ahead", content=body, params={"wait": "false"}, timeout=30)
                assert answer.status_code == 202, answer.text
                acknowledged.append(answer.json()["upload"]["upload_id"])
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    newest = acknowledged[-1]
    with sqlite3.connect(database) as conn:
        at_kill = dict(conn.execute("SELECT upload_id, planning FROM uploads").fetchall())
    assert set(at_kill) == set(acknowledged)  # every acknowledged upload is stored
    assert at_kill[newest] == "pending", at_kill  # the newest was still queued when the process died

    restarted_at = time.monotonic()
    second = start_central(site, env, clock)
    try:
        wait_up(url, second)
        api_up_s = time.monotonic() - restarted_at
        while True:
            latest = httpx.get(f"{url}/api/v1/plan/latest", timeout=5)
            if latest.status_code == 200 and latest.headers["x-upload-id"] == newest:
                break
            assert time.monotonic() - restarted_at < 60.0, "the newest upload was not planned after restart"
            time.sleep(0.01)
        newest_plan_s = time.monotonic() - restarted_at
        plan: dict[str, Any] = latest.json()
        status = httpx.get(f"{url}/api/v1/status", timeout=5).json()
        assert "active_upload_without_plan" not in {r["reason"] for r in status["reasons"]}
        while status["recovery"].startswith("optimizing the active upload"):  # its push round ends
            assert time.monotonic() - restarted_at < 60.0
            time.sleep(0.05)
            status = httpx.get(f"{url}/api/v1/status", timeout=5).json()
        assert status["recovery"] == "optimized the active upload at start"
        with sqlite3.connect(database) as conn:
            after = {row[0]: (row[1], row[2]) for row in conn.execute(
                "SELECT upload_id, planning, superseded_by FROM uploads"
            )}  # fmt: skip
        planned = [u for u in acknowledged if after[u][0] == "planned"]
        superseded = [u for u in acknowledged if after[u][0] == "superseded"]
        assert len(planned) + len(superseded) == len(acknowledged), after
        assert newest in planned

        def replaced_by(upload_id: str) -> str:  # a superseding upload may itself have been superseded
            while after[upload_id][0] == "superseded":
                upload_id = after[upload_id][1]
            return upload_id

        assert all(replaced_by(u) in planned for u in superseded)
        solve_s = float(plan["solver"]["build_s"]) + float(plan["solver"]["solve_s"])
        print(
            f"\nSIGKILL recovery: acknowledged {len(acknowledged)}, planned {len(planned)}, superseded"
            f" {len(superseded)}, pending at kill {sum(1 for v in at_kill.values() if v == 'pending')};"
            f" restart -> API up {api_up_s:.2f} s, -> newest plan served {newest_plan_s:.2f} s"
            f" (its solve {solve_s:.2f} s)"
        )
        # The newest plan is there about one solve after the API is up (the recovery runs first).
        assert newest_plan_s - api_up_s < max(10.0, 5 * solve_s)
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
        assert second.returncode == 0, output
        assert "Traceback" not in output
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()


def test_ems_upload_says_when_its_upload_was_superseded(capsys: pytest.CaptureFixture[str]) -> None:
    from central.cli_upload import _report

    upload = {"upload_id": "u1", "format": "json", "steps": 96, "interval_minutes": 15}
    upload |= {"start": "s", "end": "e"}
    answer = {"upload": upload, "planning": "superseded", "superseded_by": "u2", "run": None, "message": ""}
    assert _report(Path("day.json"), 201, answer) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "plan: none for this upload: superseded by u2 before its run"
