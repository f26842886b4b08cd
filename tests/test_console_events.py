"""The console's server side: the event hub, the SSE stream, the events history, whoami, the page and the
offline API docs, with a real service (no edges running: pushes are 'unreachable')."""

from __future__ import annotations

import asyncio
import json
import re
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.service.app import CentralService
from central.service.console_api import console_dir
from central.service.events import CabinetState, EventHub, EventKind, cabinet_state
from central.service.tokens import ApiRole, add_token, revoke_token
from shared.clock import SimulatedClock
from shared.edge_api import EdgeMode, EdgeTelemetry
from tests.test_central_api import (
    AUTH,
    DAY_START,
    SiteFiles,
    example_json,
    make_site,
    post_json,
    running,
    service_config,
)

ROOT = Path(__file__).resolve().parent.parent


def telemetry(cabinet_id: str, mode: EdgeMode = EdgeMode.SCHEDULE, **changes: Any) -> EdgeTelemetry:
    values: dict[str, Any] = {
        "cabinet_id": cabinet_id,
        "soc_pct": 50.0,
        "active_power_kw": 10.0,
        "setpoint_kw": 10.0,
        "charge_limit_kw": 100.0,
        "discharge_limit_kw": 100.0,
        "mode": mode,
        "schedule_id": "p/c",
        "schedule_valid_until": None,
        "interlock_active": False,
        "interlock_reason": "",
        "cycle_time_p99_ms": 3.0,
    }
    values.update(changes)
    return EdgeTelemetry(**values)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SiteFiles:
    return make_site(tmp_path_factory.mktemp("console"))


def hub(**kwargs: Any) -> EventHub:
    return EventHub(SimulatedClock(DAY_START, 1.0), **kwargs)


# ------------------------------------------------------------------------------------------------ hub


def test_cabinet_state_from_connection_and_telemetry() -> None:
    assert cabinet_state(False, telemetry("c")) is CabinetState.OFFLINE
    assert cabinet_state(True, None) is CabinetState.OFFLINE
    assert (
        cabinet_state(True, telemetry("c", EdgeMode.TRIPPED, interlock_active=True)) is CabinetState.TRIPPED
    )
    assert cabinet_state(True, telemetry("c", interlock_active=True)) is CabinetState.HOLDING
    assert cabinet_state(True, telemetry("c", EdgeMode.FALLBACK)) is CabinetState.FALLBACK


async def test_telemetry_is_coalesced_and_state_changes_are_published_at_once() -> None:
    recorded: list[EventKind] = []
    h = hub(record=lambda e: recorded.append(e.kind))
    sub = h.subscribe()
    for power in range(50):
        h.on_telemetry("c1", telemetry("c1", active_power_kw=float(power)))
    # the first telemetry changed the state (unknown -> schedule): one event at once, no telemetry yet
    assert [e.kind for e in _drain(sub.queue)] == [EventKind.CABINET_STATE]
    h.flush()
    events = _drain(sub.queue)
    assert [e.kind for e in events] == [EventKind.TELEMETRY]
    assert events[0].data["active_power_kw"] == 49.0
    h.on_telemetry("c1", telemetry("c1", EdgeMode.TRIPPED, interlock_active=True, interlock_reason="temp"))
    (trip,) = _drain(sub.queue)
    assert trip.kind is EventKind.CABINET_STATE and trip.cabinet_id == "c1"
    assert trip.data["state"] == "tripped" and trip.data["previous"] == "schedule"
    assert trip.data["interlock_reason"] == "temp"
    h.flush()
    assert _drain(sub.queue) == []  # the state event carried the values
    assert recorded == [EventKind.CABINET_STATE, EventKind.CABINET_STATE]  # telemetry is not history


async def test_connection_changes_are_events() -> None:
    h = hub()
    sub = h.subscribe()
    connected = {"c1": False, "c2": False}
    h.start(lambda: connected)
    try:
        h.flush()
        assert _drain(sub.queue) == []  # not connected yet at start: no event
        connected["c1"] = True
        h.flush()
        connected["c1"] = False
        h.flush()
        kinds = [(e.kind, e.cabinet_id, e.data.get("state")) for e in _drain(sub.queue)]
        assert kinds == [
            (EventKind.EDGE_CONNECTED, "c1", None),
            (EventKind.EDGE_DISCONNECTED, "c1", None),
            (EventKind.CABINET_STATE, "c1", "offline"),
        ]
    finally:
        await h.stop()


async def test_ids_increase_resume_from_the_buffer_or_ask_for_a_snapshot() -> None:
    h = hub(buffer_size=10)
    ids = [h.publish(EventKind.RUN, {"n": n}).seq for n in range(25)]
    assert ids == list(range(1, 26))
    resumed = h.resume(h.stream_id(20)).events
    assert resumed is not None and [e.seq for e in resumed] == [21, 22, 23, 24, 25]
    assert h.resume(h.stream_id(25)).events == ()
    assert h.resume(h.stream_id(15)).events is not None  # 16..25 are still buffered
    assert h.resume(h.stream_id(14)).events is None  # 15 fell out
    assert h.resume(h.stream_id(26)).events is None  # from the future: another run of the service
    assert h.resume("0badboot-20").events is None
    assert h.resume(None).events is None


@given(st.text(max_size=40))
def test_any_last_event_id_resumes_or_asks_for_a_snapshot(text: str) -> None:
    h = hub(buffer_size=5)
    for n in range(8):
        h.publish(EventKind.RUN, {"n": n})
    events = h.resume(text).events
    assert events is None or all(e.seq > 3 for e in events)
    assert h.resume(h.stream_id(8) + text).events in (None, ())


async def test_a_slow_subscriber_is_bounded_and_gets_a_snapshot_marker() -> None:
    h = hub(queue_size=5)
    slow = h.subscribe()
    for n in range(12):
        h.publish(EventKind.RUN, {"n": n})
    queued = _drain(slow.queue)
    assert len(queued) <= 5 and slow.overflows >= 1 and h.overflows_total >= 1
    assert any(e.kind is EventKind.SNAPSHOT for e in queued)
    h.unsubscribe(slow)
    assert h.subscribers == 0


def _drain(queue: asyncio.Queue[Any]) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


# ------------------------------------------------------------------------------------------- service


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each SSE message."""
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield event_id, json.loads("\n".join(data))
            data = []


async def collect_until(
    client: httpx.AsyncClient, wanted: set[str], headers: dict[str, str] | None = None
) -> list[tuple[str | None, dict[str, Any]]]:
    seen: list[tuple[str | None, dict[str, Any]]] = []
    async with client.stream("GET", "/api/v1/stream", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(60):
            async for item in sse_events(response):
                seen.append(item)
                if wanted <= {d["type"] for _, d in seen}:
                    return seen
    raise AssertionError(f"stream ended before {wanted}: {seen}")


async def test_stream_snapshot_live_events_resume_and_history(files: SiteFiles, tmp_path: Path) -> None:
    async with running(files, tmp_path / "c.sqlite3", start=DAY_START + timedelta(minutes=1)) as (
        svc,
        client,
    ):
        stream_task = asyncio.create_task(collect_until(client, {"snapshot", "upload", "plan", "run"}))
        await _eventually(lambda: svc.events.subscribers == 1)
        answer = await post_json(client, example_json())
        assert answer.status_code in (201, 202), answer.text
        seen = await stream_task
        first_id, snap = seen[0]
        assert snap["type"] == "snapshot" and first_id is not None
        assert [c["cabinet_id"] for c in snap["cabinets"]] == files.site.cabinet_ids
        assert {c["state"] for c in snap["cabinets"]} == {"offline"}
        assert snap["site"]["grid_import_limit_kw"] == files.site.site.grid_import_limit_kw
        kinds = [d["type"] for _, d in seen[1:]]
        assert kinds.index("upload") < kinds.index("plan") < kinds.index("run")
        plan = next(d for _, d in seen if d["type"] == "plan")
        assert plan["trigger"] == "upload" and plan["plan_id"] == svc.state.plan.plan.plan_id  # type: ignore[union-attr]
        ids = [int(i.rsplit("-", 1)[1]) for i, _ in seen if i is not None]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

        # Resume after the snapshot: the missed events come again, no snapshot.
        resumed = await collect_until(client, {"plan"}, {"Last-Event-ID": first_id})
        assert resumed[0][1]["type"] != "snapshot"
        assert [d["type"] for _, d in resumed][: kinds.index("plan") + 1] == kinds[: kinds.index("plan") + 1]
        # An unknown id: a fresh snapshot.
        fresh = await collect_until(client, {"snapshot"}, {"Last-Event-ID": "feedbeef-3"})
        assert fresh[0][1]["type"] == "snapshot" and fresh[0][1]["plan"]["plan_id"] == plan["plan_id"]

        # The history: newest first, filtered by kind and cabinet.
        async def history(**params: Any) -> list[dict[str, Any]]:
            response = await client.get("/api/v1/events", params=params)
            assert response.status_code == 200, response.text
            out: list[dict[str, Any]] = response.json()
            return out

        await _eventually_async(lambda: history(kind="push"), lambda h: len(h) == len(files.site.cabinets))
        every = await history()
        assert [e["seq"] for e in every] == sorted((e["seq"] for e in every), reverse=True)
        assert {"upload", "plan", "run", "push"} <= {e["type"] for e in every}
        pushes = await history(kind="push", cabinet_id="cab-2")
        assert [(e["type"], e["cabinet_id"], e["data"]["status"]) for e in pushes] == [
            ("push", "cab-2", "unreachable")
        ]
        both = await history(kind=["plan", "upload"])
        assert {e["type"] for e in both} == {"plan", "upload"}
        refused = await client.get("/api/v1/events", params={"cabinet_id": "nope"})
        assert refused.status_code == 422 and "cabinet_id" in refused.text
        assert (await client.get("/api/v1/events", params={"kind": "nope"})).status_code == 422

        day = (await client.get("/api/v1/console/day")).json()
        assert day["upload"]["upload_id"] == svc.state.upload.upload_id  # type: ignore[union-attr]
        assert day["dayahead_plan"]["plan_id"] == day["latest_plan"]["plan_id"] == plan["plan_id"]
        assert len(day["upload"]["import_price_per_kwh"]) == 96
        assert set(day["actual"]) == set(files.site.cabinet_ids)


async def test_whoami_tells_the_role(files: SiteFiles, tmp_path: Path) -> None:
    async with running(files, tmp_path / "c.sqlite3") as (_, client):
        anonymous = (await client.get("/api/v1/whoami")).json()
        assert anonymous == {"name": None, "role": None, "reads_open": True}
        operator = (await client.get("/api/v1/whoami", headers=AUTH)).json()
        assert operator["role"] == "operator" and operator["name"]
        wrong = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


async def test_page_and_docs_load_nothing_from_outside(files: SiteFiles, tmp_path: Path) -> None:
    async with running(files, tmp_path / "c.sqlite3") as (_, client):
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert not EXTERNAL.search(page.text)
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        assets = re.findall(r"""(?:src|href)="(/[^"]+)\"""", page.text)
        assert "/console/app.js" in assets and "/console/app.css" in assets
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert not EXTERNAL.search(docs.text), docs.text
        assert "validatorUrl" in docs.text
        for asset in re.findall(r"""(?:src|href)=['"](/[^'"]+)['"]""", docs.text):
            got = await client.get(asset)
            assert got.status_code == 200 and len(got.content) > 0, asset
        assert (await client.get("/openapi.json")).json()["paths"]["/api/v1/stream"]


def test_console_assets_are_declared_package_data() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = declared["central.console"]
    directory = console_dir()
    shipped = [p for p in directory.rglob("*") if p.is_file() and p.suffix != ".py"]
    assert {"index.html", "app.js", "app.css", "swagger-ui-bundle.js", "LICENSE"} <= {p.name for p in shipped}
    for path in shipped:
        relative = path.relative_to(directory).as_posix()
        assert any(Path(relative).match(pattern) for pattern in patterns), relative
    assert "Apache License" in (directory / "swagger" / "LICENSE").read_text()


async def _eventually(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _eventually_async(fetch: Any, condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition(await fetch()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_where_reads_need_a_token_a_revoked_token_ends_the_stream(
    files: SiteFiles, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "tokens.toml"
    _, viewer = add_token(tokens_file, "wall-screen", ApiRole.VIEWER)
    config = replace(
        service_config(files, tmp_path / "c.sqlite3"), read_token_required=True, tokens_file=tokens_file
    )
    clock = SimulatedClock(DAY_START + timedelta(minutes=1), 60.0)
    async with (
        CentralService(files.site, clock, config) as svc,
        httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client,
    ):
        assert (await client.get("/api/v1/whoami")).status_code == 401
        denied = await client.get("/api/v1/stream")
        assert denied.status_code == 401
        bearer = {"Authorization": f"Bearer {viewer}"}
        assert (await client.get("/api/v1/whoami", headers=bearer)).json()["role"] == "viewer"
        # The browser's way: a cookie from POST /api/v1/stream-cookie, then the stream without a header.
        assert (await client.post("/api/v1/stream-cookie", headers=bearer)).status_code == 204
        async with client.stream("GET", "/api/v1/stream") as response:
            assert response.status_code == 200
            events = sse_events(response)
            _, first = await anext(events)
            assert first["type"] == "snapshot"
            await asyncio.to_thread(revoke_token, tokens_file, "wall-screen")
            async with asyncio.timeout(30):
                async for _, data in events:
                    if data["type"] == "end":
                        assert data["reason"] == "token revoked"
                        break
        await _eventually(lambda: svc.events.subscribers == 0, 10.0)  # the stream let go of its queue
        assert (await client.get("/api/v1/stream", headers=bearer)).status_code == 401
