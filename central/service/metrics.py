"""Prometheus metrics of the central service, rendered in the text exposition format (version 0.0.4).

Counters live here (they reset when the process restarts, as Prometheus expects); gauges are read from
the service state and the edge fleet at scrape time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from central.edge_link.outcome import PushStatus
from central.service.access import AccessStats
from central.service.health import DegradedReason, Finding
from central.service.state import JobStatus, RunResult
from central.service.store import PushRecord, StoredPlan
from shared.edge_api import EdgeMode, EdgeTelemetry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Wall-clock seconds of one optimizer call: a 96-step day solves in well under a second.
OPTIMIZE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """A cumulative Prometheus histogram."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1


class Metrics:
    """Counters and histograms the service increments as things happen."""

    def __init__(self) -> None:
        self.uploads: dict[str, int] = {"accepted": 0, "refused": 0}
        self.optimizations: dict[tuple[str, str], int] = {}
        self.pushes: dict[tuple[str, str], int] = {}
        self.optimize_s = Histogram(OPTIMIZE_BUCKETS_S)
        self.superseded = 0
        self.http_errors: dict[tuple[str, str], int] = {}
        self.resets: dict[tuple[str, str], int] = {}

    def upload(self, accepted: bool) -> None:
        self.uploads["accepted" if accepted else "refused"] += 1

    def uploads_superseded(self, count: int) -> None:
        self.superseded += count

    def http_error(self, route: str, exception: str) -> None:
        key = (route, exception)
        self.http_errors[key] = self.http_errors.get(key, 0) + 1

    def reset(self, cabinet_id: str, result: str) -> None:
        key = (cabinet_id, result)
        self.resets[key] = self.resets.get(key, 0) + 1

    def run(self, result: RunResult) -> None:
        outcome = "skipped" if result.skipped else ("ok" if result.ok else "failed")
        key = (result.trigger, outcome)
        self.optimizations[key] = self.optimizations.get(key, 0) + 1
        if result.plan is not None:
            self.optimize_s.observe(result.optimize_wall_s)

    def push(self, records: Mapping[str, PushRecord]) -> None:
        for record in records.values():
            key = (record.cabinet_id, record.status.value)
            self.pushes[key] = self.pushes.get(key, 0) + 1


@dataclass(frozen=True)
class Snapshot:
    """What the gauges show, taken at scrape time."""

    plan: StoredPlan | None
    push: Mapping[str, PushRecord]
    connected: Mapping[str, bool]
    telemetry: Mapping[str, EdgeTelemetry | None]
    jobs: Mapping[str, JobStatus]
    cabinet_ids: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    access: AccessStats | None = None


def render(metrics: Metrics, snapshot: Snapshot) -> str:
    """The metrics page."""
    out = _Writer()
    _render_status(out, snapshot)
    uploads = out.family("ems_central_uploads_total", "counter", "Day-ahead uploads by result.")
    for result, count in sorted(metrics.uploads.items()):
        uploads.add({"result": result}, count)
    superseded = out.family(
        "ems_central_uploads_superseded_total",
        "counter",
        "Accepted uploads superseded by a newer one before their optimization started.",
    )
    superseded.add({}, metrics.superseded)

    runs = out.family(
        "ems_central_optimizations_total", "counter", "Optimization runs by trigger and result."
    )
    for (trigger, result), count in sorted(metrics.optimizations.items()):
        runs.add({"trigger": trigger, "result": result}, count)

    hist = metrics.optimize_s
    optimize = out.family(
        "ems_central_optimize_seconds",
        "histogram",
        "Wall-clock time of one optimizer call (model build and solve) [s].",
    )
    for bound, count in zip(hist.buckets, hist.counts, strict=True):
        optimize.add({"le": _number(bound)}, count, "_bucket")
    optimize.add({"le": "+Inf"}, hist.count, "_bucket")
    optimize.add({}, hist.total, "_sum")
    optimize.add({}, hist.count, "_count")

    solve = out.family("ems_central_plan_solve_seconds", "gauge", "Solver time of the active plan [s].")
    objective = out.family(
        "ems_central_plan_objective_total", "gauge", "Objective total of the active plan [currency]."
    )
    violations = out.family("ems_central_plan_violations", "gauge", "Violations named in the active plan.")
    created = out.family(
        "ems_central_plan_created_timestamp_seconds", "gauge", "Creation time of the active plan [s]."
    )
    if snapshot.plan is not None:
        plan = snapshot.plan.plan
        solve.add({}, plan.solver.solve_s)
        objective.add({}, plan.objective.total)
        violations.add({}, len(plan.violations))
        created.add({}, plan.created_at.timestamp())

    pushes = out.family("ems_central_push_total", "counter", "Plan pushes per edge by outcome.")
    for (cabinet_id, status), count in sorted(metrics.pushes.items()):
        pushes.add({"cabinet": cabinet_id, "status": status}, count)
    duration = out.family(
        "ems_central_push_duration_ms", "gauge", "Duration of the latest push per edge [ms]."
    )
    accepted = out.family(
        "ems_central_push_accepted", "gauge", "1 when the latest push to the edge was accepted."
    )
    for cabinet_id, record in sorted(snapshot.push.items()):
        duration.add({"cabinet": cabinet_id}, record.duration_ms)
        accepted.add({"cabinet": cabinet_id}, int(record.status is PushStatus.ACCEPTED))

    connected = out.family(
        "ems_central_edge_connected", "gauge", "1 when the OPC UA session to the edge is up."
    )
    soc = out.family("ems_central_edge_soc_pct", "gauge", "State of charge reported by the edge [%].")
    power = out.family(
        "ems_central_edge_active_power_kw", "gauge", "Active power reported by the edge [kW], + discharge."
    )
    mode = out.family("ems_central_edge_mode", "gauge", "1 for the edge's current mode.")
    interlock = out.family(
        "ems_central_edge_interlock_active", "gauge", "1 when the edge reports an active interlock."
    )
    for cabinet_id in snapshot.cabinet_ids:
        labels = {"cabinet": cabinet_id}
        connected.add(labels, int(snapshot.connected.get(cabinet_id, False)))
        telemetry = snapshot.telemetry.get(cabinet_id)
        if telemetry is None:
            continue
        soc.add(labels, telemetry.soc_pct)
        power.add(labels, telemetry.active_power_kw)
        interlock.add(labels, int(telemetry.interlock_active))
        for edge_mode in EdgeMode:
            mode.add({**labels, "mode": edge_mode.value}, int(telemetry.mode == edge_mode))

    resets = out.family(
        "ems_central_interlock_resets_total",
        "counter",
        "Interlock resets asked through the API, by cabinet and result (accepted, refused, unreachable).",
    )
    for (cabinet_id, result), count in sorted(metrics.resets.items()):
        resets.add({"cabinet": cabinet_id, "result": result}, count)
    errors = out.family(
        "ems_central_http_unhandled_errors_total",
        "counter",
        "Requests that ended in an unexpected exception (answered 500 with the reason), by route.",
    )
    for (route, exception), count in sorted(metrics.http_errors.items()):
        errors.add({"route": route, "exception": exception}, count)

    job_runs = out.family("ems_central_job_runs_total", "counter", "Runs of each scheduled job.")
    job_failures = out.family(
        "ems_central_job_failures_total", "counter", "Failed runs of each scheduled job."
    )
    for job_name, job in sorted(snapshot.jobs.items()):
        job_runs.add({"job": job_name}, job.runs)
        job_failures.add({"job": job_name}, job.failures)
    if snapshot.access is not None:
        _render_access(out, snapshot.access)
    return out.text()


def _render_status(out: _Writer, snapshot: Snapshot) -> None:
    degraded = out.family(
        "ems_central_degraded", "gauge", "1 when the service is degraded (see ems_central_degraded_reason)."
    )
    degraded.add({}, int(bool(snapshot.findings)))
    reasons = out.family(
        "ems_central_degraded_reason",
        "gauge",
        "How many findings of each reason make the service degraded now (0 for reasons that do not apply).",
    )
    for reason in DegradedReason:
        reasons.add({"reason": reason.value}, sum(1 for f in snapshot.findings if f.reason is reason))


def _render_access(out: _Writer, stats: AccessStats) -> None:
    limiter = stats.limiter
    denied = out.family(
        "ems_central_auth_denied_total",
        "counter",
        "Requests refused access, by reason (missing_token, invalid_token, forbidden, rate_limited).",
    )
    for reason, count in sorted(stats.denied.items()):
        denied.add({"reason": reason.value}, count)
    rows = (
        ("ems_central_auth_failures_total", "counter", "Failed authentications (invalid tokens or cookies).",
         limiter.failures_total),
        ("ems_central_auth_blocks_total", "counter", "Client addresses blocked by the failure limiter.",
         limiter.blocks_total),
        ("ems_central_auth_blocked_clients", "gauge", "Client addresses blocked now (answered 429).",
         limiter.blocked_clients),
        ("ems_central_auth_tracked_clients", "gauge", "Client addresses in the failure limiter's table.",
         limiter.tracked_clients),
        ("ems_central_auth_evicted_clients_total", "counter",
         "Client addresses dropped from the full failure limiter table.", limiter.evicted_total),
        ("ems_central_auth_hash_verifications_total", "counter",
         "scrypt verifications of API tokens (cache misses).", stats.hash_verifications_total),
        ("ems_central_api_tokens", "gauge", "Named API tokens configured.", stats.tokens),
        ("ems_central_audit_records_total", "counter", "Audit records written.", stats.audit_written_total),
        ("ems_central_audit_failures_total", "counter", "Audit records that could not be written.",
         stats.audit_failures_total),
    )  # fmt: skip
    for name, kind, help_text, value in rows:
        out.family(name, kind, help_text).add({}, value)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def add(self, labels: Mapping[str, str], value: float, suffix: str = "") -> None:
        name = self.name + suffix
        if labels:
            body = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
            self.lines.append(f"{name}{{{body}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")


class _Writer:
    """Keeps each family's lines together, as the exposition format requires."""

    def __init__(self) -> None:
        self._families: list[_Family] = []

    def family(self, name: str, kind: str, help_text: str) -> _Family:
        family = _Family(name, kind, help_text)
        self._families.append(family)
        return family

    def text(self) -> str:
        return "\n".join(line for family in self._families for line in family.lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
