"""What the console is told: the service's state changes as hub events, and the snapshot a stream
starts with (so the page renders from the stream alone)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from central.edge_link.outcome import PushStatus
from central.service.events import EventHub, EventKind, cabinet_state, telemetry_fields
from central.service.records import PushRecord, StoredPlan, StoredUpload
from central.service.state import RunResult, ServiceState
from shared.edge_api import Decision, EdgeTelemetry
from shared.site import SiteConfig
from shared.timeutil import format_utc


class ConsoleFeed:
    """Turns state changes into events (a :class:`central.service.state.StateObserver`)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    def upload_set(self, upload: StoredUpload) -> None:
        self.hub.publish(EventKind.UPLOAD, upload_fields(upload))

    def upload_superseded(self, upload_id: str, superseded_by: str | None) -> None:
        self.hub.publish(
            EventKind.UPLOAD_SUPERSEDED, {"upload_id": upload_id, "superseded_by": superseded_by}
        )

    def plan_set(self, plan: StoredPlan) -> None:
        self.hub.publish(EventKind.PLAN, plan_fields(plan))

    def run_finished(self, result: RunResult) -> None:
        self.hub.publish(
            EventKind.RUN,
            {
                "trigger": result.trigger.value,
                "ok": result.ok,
                "skipped": result.skipped,
                "message": result.message,
                "upload_id": result.upload_id,
                "plan_id": None if result.plan is None else result.plan.plan.plan_id,
                "optimize_wall_s": round(result.optimize_wall_s, 3),
            },
        )

    def pushes_recorded(self, records: list[PushRecord]) -> None:
        for record in records:
            self.hub.publish(EventKind.PUSH, push_fields(record), record.cabinet_id)

    def reset(self, cabinet_id: str, requested_by: str, decision: Decision | None, error: str) -> None:
        self.hub.publish(
            EventKind.RESET,
            {
                "requested_by": requested_by,
                "accepted": None if decision is None else decision.accepted,
                "message": error if decision is None else decision.message,
            },
            cabinet_id,
        )


def upload_fields(upload: StoredUpload) -> dict[str, Any]:
    d = upload.dayahead
    return {
        "upload_id": upload.upload_id,
        "received_at": format_utc(upload.received_at),
        "format": upload.source_format,
        "start": format_utc(d.start),
        "end": format_utc(d.end),
        "interval_minutes": d.interval_minutes,
        "steps": d.steps,
    }


def plan_fields(plan: StoredPlan) -> dict[str, Any]:
    p = plan.plan
    return {
        "plan_id": p.plan_id,
        "upload_id": plan.upload_id,
        "trigger": plan.trigger,
        "status": p.status.value,
        "start": format_utc(p.start),
        "end": format_utc(p.end),
        "objective_total": round(p.objective.total, 4),
        "violations": list(p.violations),
    }


def push_fields(record: PushRecord) -> dict[str, Any]:
    return {
        "plan_id": record.plan_id,
        "status": record.status.value,
        "ok": record.status is PushStatus.ACCEPTED,
        "message": record.message,
        "pushed_at": format_utc(record.at),
        "duration_ms": round(record.duration_ms, 1),
    }


def snapshot(
    site: SiteConfig,
    state: ServiceState,
    telemetry: Mapping[str, EdgeTelemetry | None],
    connected: Mapping[str, bool],
    connection_errors: Mapping[str, str],
) -> dict[str, Any]:
    """The whole state the page needs (not the plan's arrays: those come from ``/api/v1/console/day``)."""
    pushes = state.push_outcomes()
    cabinets = []
    for cabinet in site.cabinets:
        t = telemetry.get(cabinet.id)
        online = bool(connected.get(cabinet.id, False))
        push = pushes.get(cabinet.id)
        cabinets.append(
            {
                "cabinet_id": cabinet.id,
                "state": cabinet_state(online, t).value,
                "connected": online,
                "connection_error": connection_errors.get(cabinet.id, ""),
                "capacity_kwh": cabinet.capacity_kwh,
                "rated_charge_kw": cabinet.charge_limit_kw,
                "rated_discharge_kw": cabinet.discharge_limit_kw,
                "telemetry": None if t is None or not online else telemetry_fields(t),
                "last_push": None if push is None else push_fields(push),
            }
        )
    run = state.last_run
    return {
        "site": {
            "name": site.site.name,
            "grid_import_limit_kw": site.site.grid_import_limit_kw,
            "grid_export_limit_kw": site.site.grid_export_limit_kw,
        },
        "cabinets": cabinets,
        "upload": None if state.upload is None else upload_fields(state.upload),
        "plan": None if state.plan is None else plan_fields(state.plan),
        "last_run": None
        if run is None
        else {"trigger": run.trigger.value, "ok": run.ok, "message": run.message},
    }
