"""HTTP endpoints of the operator console (docs/console.md).

- ``GET /``: the console page; ``/console/*``: its script, style sheet and the vendored Swagger UI.
- ``GET /docs``: the API documentation, with Swagger UI served from the package (works offline).
- ``GET /api/v1/whoami``: the caller's token name and role (so the page shows only what it may do).
- ``GET /api/v1/stream``: Server-Sent Events: first a ``snapshot``, then every event of the hub.
- ``GET /api/v1/events``: the events history, newest first, filtered by kind and cabinet.
- ``GET /api/v1/console/day``: the active upload's day for the day chart: prices, load and PV, the
  day-ahead plan, the latest plan, the re-plans and the sampled actual power and SoC.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from central.service.access import ApiAccess
from central.service.auth import Principal
from central.service.console_feed import snapshot
from central.service.event_log import EventRecord
from central.service.events import Event, EventHub, EventKind
from central.service.records import StoredPlan
from central.service.tokens import ApiRole
from shared.timeutil import format_utc

if TYPE_CHECKING:
    from central.service.app import CentralService

CONSOLE_PACKAGE = "central.console"
STATIC_PREFIX = "/console"
KEEPALIVE_S = 15.0
REVOCATION_CHECK_S = 2.0
MAX_EVENTS = 1000
MAX_SAMPLES_PER_CABINET = 5000
STREAM_RETRY_MS = 2000
# The page may talk to its own origin only: nothing it loads or sends leaves the site.
PAGE_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class WhoAmIOut(_Out):
    name: str | None = Field(description="The token's name; null without a token")
    role: ApiRole | None = Field(description="viewer | uploader | operator; null without a token")
    reads_open: bool = Field(description="Whether reads need no token here")


class EventOut(_Out):
    seq: int = Field(description="The history's number of the event (newest is highest)")
    type: EventKind
    at: str = Field(description="EMS clock, UTC")
    cabinet_id: str | None
    data: dict[str, Any]


def console_dir() -> Path:
    return Path(str(resources.files(CONSOLE_PACKAGE)))


def install_console(app: FastAPI, service: CentralService) -> None:
    """Add the page, its assets, the offline ``/docs`` and the console's API to ``app`` (created with
    ``docs_url=None``)."""
    directory = console_dir()
    app.mount(STATIC_PREFIX, StaticFiles(directory=directory), name="console")
    app.include_router(console_router(service, directory))


def console_router(service: CentralService, directory: Path) -> APIRouter:
    router = APIRouter(tags=["console"])
    access: ApiAccess = service.access
    read = [Depends(access.reader())]
    identified = Depends(access.identify())
    stream_reader = Depends(access.stream_reader())

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        headers = {
            "Cache-Control": "no-cache",
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return FileResponse(directory / "index.html", headers=headers)

    @router.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="hybrid-ems central service: API",
            swagger_js_url=f"{STATIC_PREFIX}/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PREFIX}/swagger/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PREFIX}/swagger/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get("/api/v1/whoami", response_model=WhoAmIOut, summary="The caller's token and role")
    async def whoami(principal: Principal | None = identified) -> WhoAmIOut:
        """The name and role of the bearer token sent (401 for a wrong one); without a token, whether
        reads are open here."""
        return WhoAmIOut(
            name=None if principal is None else principal.name,
            role=None if principal is None else principal.role,
            reads_open=not access.read_token_required,
        )

    @router.get(
        "/api/v1/stream",
        summary="Live events (Server-Sent Events)",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        last_event_id: Annotated[str | None, Header(description="Resume after this event id")] = None,
        last_id: Annotated[str | None, Query(description="Same as the Last-Event-ID header")] = None,
        principal: Principal | None = stream_reader,
    ) -> StreamingResponse:
        """One JSON object per event with its ``type`` (docs/console.md: the stream). First a
        ``snapshot`` of the whole state, or, after a reconnection with ``Last-Event-ID``, the events
        missed (a fresh snapshot when they are no longer buffered). A comment every 15 s keeps the
        connection open; the stream ends when the token is revoked."""
        still_valid: Callable[[], bool] = (
            (lambda: True) if principal is None else (lambda: access.verifier.is_current(principal))
        )
        body = _events(service, service.events, last_event_id or last_id, still_valid)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    @router.get("/api/v1/events", dependencies=read, response_model=list[EventOut], summary="Events history")
    async def events(
        kind: Annotated[list[EventKind] | None, Query(description="Only these kinds (repeatable)")] = None,
        cabinet_id: Annotated[str | None, Query(description="Only this cabinet's events")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 100,
        before: Annotated[int | None, Query(ge=1, description="Only events older than this seq")] = None,
    ) -> list[EventOut]:
        """Uploads, plans, runs, push outcomes, cabinet states (trips, holds), resets and edge connects
        and disconnects, newest first."""
        if cabinet_id is not None and cabinet_id not in service.site.cabinet_ids:
            raise HTTPException(422, f"cabinet_id: no cabinet {cabinet_id!r} in the site")
        records = await asyncio.to_thread(
            service.event_log.records,
            limit=limit,
            kinds=tuple(kind or ()),
            cabinet_id=cabinet_id,
            before_seq=before,
        )
        return [_event_view(r) for r in records]

    @router.get("/api/v1/console/day", dependencies=read, summary="The active day for the console's chart")
    async def day() -> dict[str, Any]:
        """The active upload's prices, load and PV, its day-ahead (first) and latest plan, every plan's
        trigger and time, and the sampled actual power and SoC per cabinet since the upload's start."""
        return await asyncio.to_thread(_day, service)

    return router


async def _events(
    service: CentralService, hub: EventHub, last_event_id: str | None, still_valid: Callable[[], bool]
) -> AsyncIterator[str]:
    subscriber = hub.subscribe()
    event: Event | None
    try:
        resume = hub.resume(last_event_id)
        after = hub.last_seq
        if resume.events is None:
            yield _snapshot_message(service, hub, after)
        else:
            yield f"retry: {STREAM_RETRY_MS}\n\n"
            for missed in resume.events:
                yield _message(hub, missed)
        checked = time.monotonic()
        while True:
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), REVOCATION_CHECK_S)
            except TimeoutError:
                event = None
            if time.monotonic() - checked >= REVOCATION_CHECK_S:
                checked = time.monotonic()
                if not still_valid():
                    yield 'event: end\ndata: {"type":"end","reason":"token revoked"}\n\n'
                    return
            if event is None:
                if time.monotonic() - subscriber.last_sent_s >= KEEPALIVE_S:
                    subscriber.last_sent_s = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            if event.kind is EventKind.SNAPSHOT:  # the queue overflowed: start again from the state
                after = hub.last_seq
                yield _snapshot_message(service, hub, after)
                continue
            if event.seq <= after:
                continue
            subscriber.last_sent_s = time.monotonic()
            yield _message(hub, event)
    finally:
        hub.unsubscribe(subscriber)


def _snapshot_message(service: CentralService, hub: EventHub, after: int) -> str:
    fleet = service.fleet
    body = {
        "id": after,
        "type": EventKind.SNAPSHOT.value,
        "at": format_utc(service.clock.now()),
        "cabinet_id": None,
        **snapshot(service.site, service.state, fleet.telemetry(), fleet.connected(), fleet.last_errors()),
    }
    data = json.dumps(body, separators=(",", ":"))
    return f"retry: {STREAM_RETRY_MS}\nid: {hub.stream_id(after)}\ndata: {data}\n\n"


def _message(hub: EventHub, event: Event) -> str:
    data = json.dumps(event.to_json_dict(), separators=(",", ":"))
    return f"id: {hub.stream_id(event.seq)}\ndata: {data}\n\n"


def _event_view(record: EventRecord) -> EventOut:
    return EventOut(
        seq=record.seq,
        type=record.kind,
        at=format_utc(record.at),
        cabinet_id=record.cabinet_id,
        data=record.data,
    )


def _plan_arrays(stored: StoredPlan | None) -> dict[str, Any] | None:
    if stored is None:
        return None
    p = stored.plan
    return {
        "plan_id": p.plan_id,
        "trigger": stored.trigger,
        "status": p.status.value,
        "start": format_utc(p.start),
        "interval_minutes": p.interval_minutes,
        "grid_kw": p.grid_kw,
        "cabinets": {
            cab: {"setpoint_kw": c.setpoint_kw, "soc_pct": c.soc_pct} for cab, c in p.cabinets.items()
        },
    }


def _day(service: CentralService) -> dict[str, Any]:
    upload = service.state.upload
    if upload is None:
        return {"upload": None, "now": format_utc(service.clock.now())}
    store = service.store
    d = upload.dayahead
    latest = service.state.plan
    if latest is not None and latest.upload_id != upload.upload_id:
        latest = None
    actual: dict[str, dict[str, list[Any]]] = {}
    for cabinet_id in service.site.cabinet_ids:
        samples = [
            s for s in store.telemetry_samples(cabinet_id, MAX_SAMPLES_PER_CABINET) if d.start <= s.at < d.end
        ]
        actual[cabinet_id] = {
            "at": [format_utc(s.at) for s in samples],
            "power_kw": [round(s.active_power_kw, 3) for s in samples],
            "soc_pct": [round(s.soc_pct, 3) for s in samples],
        }
    return {
        "now": format_utc(service.clock.now()),
        "upload": {
            "upload_id": upload.upload_id,
            "start": format_utc(d.start),
            "interval_minutes": d.interval_minutes,
            "import_price_per_kwh": list(d.import_price_per_kwh),
            "export_price_per_kwh": list(d.export_price_per_kwh),
            "load_kw": list(d.load_kw),
            "pv_kw": list(d.pv_kw),
        },
        "dayahead_plan": _plan_arrays(store.first_plan_for(upload.upload_id)),
        "latest_plan": _plan_arrays(latest),
        "plans": [
            {"plan_id": pid, "trigger": trig, "stored_at": format_utc(at), "start": format_utc(start)}
            for pid, trig, at, start in store.plan_times_for(upload.upload_id)
        ],
        "actual": actual,
    }
