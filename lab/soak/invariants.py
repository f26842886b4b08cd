"""The campaign's invariants: pure functions of what was recorded, each a named pass/fail with one line.

Each function takes the record (samples, faults, uploads, ...) and the :class:`Bounds` and returns an
:class:`InvariantResult`; the campaign evaluates them while it runs (a violation is reported as soon as
it shows) and once more at the end. docs/soak.md states every bound and why.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lab.demo.records import Sample
from lab.soak.records import (
    CentralState,
    FaultRun,
    IntegrityCheck,
    PlanInfo,
    ProcessSpan,
    PushInfo,
    ResourceSample,
    UploadAttempt,
)
from lab.soak.schedule import BATTERY_FAULTS, EVENTS, FaultKind

POC_LIMITS = "poc_limits"
DEVICE_FAULT_SAFE_STATE = "device_fault_safe_state"
NO_STALE_SCHEDULE = "no_stale_schedule"
LATEST_PLAN_AFTER_HEAL = "latest_plan_after_heal"
UPLOADS_PLANNED = "uploads_planned"
DATABASE_INTEGRITY = "database_integrity"
RESOURCE_GROWTH = "resource_growth"
COST_VS_PLAN = "cost_vs_plan"
NAMES = (
    POC_LIMITS,
    DEVICE_FAULT_SAFE_STATE,
    NO_STALE_SCHEDULE,
    LATEST_PLAN_AFTER_HEAL,
    UPLOADS_PLANNED,
    DATABASE_INTEGRITY,
    RESOURCE_GROWTH,
    COST_VS_PLAN,
)
MAX_LISTED = 3  # violations named in a detail line


@dataclass(frozen=True)
class Bounds:
    """Every bound the invariants apply (simulated seconds unless the name says wall or ms)."""

    import_limit_kw: float
    export_limit_kw: float
    limit_tolerance_kw: float  # meter resolution: within this of a limit is "at" it
    poc_reaction_s: float  # longest time over a PoC limit
    reaction_ms: float  # device fault -> safe state at the device [wall ms] (2 control cycles)
    probe_poll_ms: float  # added when the reaction was timed by polling instead of at the device
    observation_grace_s: float  # an edge's change shows in the samples within this
    heal_bound_s: float  # partition healed -> the edge runs the latest plan
    fault_settle_s: float  # after a fault, this long still counts as its window (cost)
    cost_rel: float  # realised within this share of the planned cost's magnitude ...
    cost_abs_per_interval: float  # ... plus this much per clean interval [currency]
    rss_growth_mb: float  # per process incarnation, after the warm-up ...
    rss_growth_rel: float  # ... or this share of its RSS after the warm-up, whichever is larger
    threads_growth: int
    fds_growth: int
    warmup_wall_s: float  # resources are compared from this long after a process started
    min_span_wall_s: float  # incarnations shorter than this (after the warm-up) are not judged


@dataclass(frozen=True)
class InvariantResult:
    name: str
    passed: bool
    detail: str
    first_violation_s: float | None = None  # simulated time of the first violation (for the replay)

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "detail": self.detail}


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return shown + more


# ----------------------------------------------------------------------------------------- PoC limits


def poc_limits(samples: Sequence[Sample], bounds: Bounds) -> InvariantResult:
    """Import and export stay within the PoC limits, or return within ``poc_reaction_s``."""
    peak_import = peak_export = 0.0
    longest_s = 0.0
    runs: list[tuple[float, float]] = []
    run_start: float | None = None
    for sample in samples:
        grid = sample.grid_kw
        if grid is None:
            continue  # the simulator did not answer: neither starts nor ends a run
        peak_import, peak_export = max(peak_import, grid), max(peak_export, -grid)
        over = (
            grid > bounds.import_limit_kw + bounds.limit_tolerance_kw
            or -grid > bounds.export_limit_kw + bounds.limit_tolerance_kw
        )
        if over and run_start is None:
            run_start = sample.at_s
        elif not over and run_start is not None:
            runs.append((run_start, sample.at_s))
            run_start = None
    if run_start is not None and samples:
        runs.append((run_start, samples[-1].at_s))
    violations = [(s, e) for s, e in runs if e - s > bounds.poc_reaction_s]
    longest_s = max((e - s for s, e in runs), default=0.0)
    detail = (
        f"peak import {peak_import:.1f} kW (limit {bounds.import_limit_kw:g}), "
        f"peak export {peak_export:.1f} kW (limit {bounds.export_limit_kw:g}); "
        f"{len(runs)} excursion(s) over limit + "
        f"{bounds.limit_tolerance_kw:g} kW, longest {longest_s:.0f} s, allowed {bounds.poc_reaction_s:.0f} s"
    )
    return InvariantResult(POC_LIMITS, not violations, detail, violations[0][0] if violations else None)


# ----------------------------------------------------------------------------------------- device faults


def _allowed_ms(fault: FaultRun, bounds: Bounds) -> float:
    return bounds.reaction_ms + (0.0 if fault.reaction_at_device else bounds.probe_poll_ms)


def device_fault_safe_state(faults: Sequence[FaultRun], bounds: Bounds) -> InvariantResult:
    """Every battery fault the edge could act on reaches 0 W + DISCONNECT at the device within the bound."""
    battery = [f for f in faults if f.spec.kind in BATTERY_FAULTS]
    judged = [f for f in battery if not f.exempt]
    late = [f for f in judged if f.reaction_ms is None or f.reaction_ms > _allowed_ms(f, bounds)]
    measured = sorted(f.reaction_ms for f in judged if f.reaction_ms is not None)
    exempt: dict[str, int] = {}
    for fault in battery:
        if fault.exempt:
            exempt[fault.exempt] = exempt.get(fault.exempt, 0) + 1
    stats = (
        f"median {statistics.median(measured):.0f} ms, max {measured[-1]:.0f} ms"
        if measured
        else "none measured"
    )
    polled = sum(1 for f in judged if f.reaction_ms is not None and not f.reaction_at_device)
    detail = (
        f"{len(judged)} battery fault(s) judged at the device ({stats}; allowed {bounds.reaction_ms:.0f} ms"
        + (f", {polled} timed by polling: + {bounds.probe_poll_ms:g} ms" if polled else "")
        + ")"
    )
    if exempt:
        detail += "; not judged: " + ", ".join(f"{n} x {why}" for why, n in sorted(exempt.items()))
    if late:
        detail += "; TOO LATE: " + _listed(
            [
                f"{f.spec.kind.value} {f.spec.target} at {f.started_at_s:.0f}: "
                + ("never" if f.reaction_ms is None else f"{f.reaction_ms:.0f} ms")
                for f in late
            ]
        )
    return InvariantResult(DEVICE_FAULT_SAFE_STATE, not late, detail, late[0].started_at_s if late else None)


# ----------------------------------------------------------------------------------------- schedules


def _plan_id(schedule_id: str) -> str:
    return schedule_id.rsplit("/", 1)[0]


class _Accepted:
    """Plans accepted by one cabinet, by the time the central knew, queried as 'newest covering t'."""

    def __init__(self, pushes: Iterable[PushInfo], plans: Mapping[str, PlanInfo], cabinet_id: str) -> None:
        self._events = sorted(
            (p.at_s, plans[p.plan_id])
            for p in pushes
            if p.cabinet_id == cabinet_id and p.status == "accepted" and p.plan_id in plans
        )
        self._position = 0
        self._seqs: list[int] = []
        self._by_seq: dict[int, PlanInfo] = {}

    def advance(self, until_s: float) -> None:
        while self._position < len(self._events) and self._events[self._position][0] <= until_s:
            plan = self._events[self._position][1]
            if plan.seq not in self._by_seq:
                bisect.insort(self._seqs, plan.seq)
                self._by_seq[plan.seq] = plan
            self._position += 1

    def newest_covering(self, at_s: float, started_by_s: float) -> PlanInfo | None:
        for seq in reversed(self._seqs):
            plan = self._by_seq[seq]
            if plan.start_s <= started_by_s and at_s < plan.end_s:
                return plan
        return None


def no_stale_schedule(
    samples: Sequence[Sample], central: CentralState, holds: Sequence[PlanInfo], bounds: Bounds
) -> InvariantResult:
    """No edge in schedule mode runs an ended schedule, or one replaced by a newer accepted plan."""
    plans = {p.plan_id: p for p in (*holds, *central.plans)}
    cabinet_ids = sorted({c for s in samples for c in s.cabinets})
    accepted = {c: _Accepted(central.pushes, plans, c) for c in cabinet_ids}
    grace = bounds.observation_grace_s
    checked = 0
    violations: list[tuple[float, str]] = []
    for sample in samples:
        t = sample.at_s
        for cabinet_id, cabinet in sample.cabinets.items():
            if cabinet.mode != "schedule" or not cabinet.schedule_id:
                continue
            checked += 1
            plan = plans.get(_plan_id(cabinet.schedule_id))
            if plan is None:
                violations.append((t, f"{cabinet_id} at {t:.0f} runs unknown schedule {cabinet.schedule_id}"))
                continue
            if t > plan.end_s + grace:
                violations.append(
                    (t, f"{cabinet_id} at {t:.0f} runs {cabinet.schedule_id}, ended {plan.end_s:.0f}")
                )
                continue
            tracker = accepted[cabinet_id]
            tracker.advance(t - grace)
            newest = tracker.newest_covering(t, t - grace)
            if newest is not None and newest.seq > plan.seq:
                violations.append(
                    (t, f"{cabinet_id} at {t:.0f} runs {cabinet.schedule_id}, superseded by {newest.plan_id}")
                )
    detail = f"{checked} cabinet samples in schedule mode checked (grace {grace:.0f} s)"
    if violations:
        detail += f"; {len(violations)} stale: " + _listed([v for _, v in violations])
    return InvariantResult(
        NO_STALE_SCHEDULE, not violations, detail, violations[0][0] if violations else None
    )


# ----------------------------------------------------------------------------------------- partitions


def _plan_seq(plans: Mapping[str, PlanInfo], schedule_id: str) -> int:
    """The central's order of the plan a schedule belongs to; -1 for none or an unknown one."""
    plan = plans.get(_plan_id(schedule_id)) if schedule_id else None
    return -1 if plan is None else plan.seq


def _down_during(spans: Sequence[ProcessSpan], process: str, start_s: float, end_s: float) -> bool:
    """True when ``process`` was not up for the whole of ``[start_s, end_s]``."""
    covering = [
        s
        for s in spans
        if s.process == process
        and s.started_at_s <= start_s
        and (s.ended_at_s is None or s.ended_at_s >= end_s)
    ]
    return not covering


def _heal_exemption(
    fault: FaultRun, faults: Sequence[FaultRun], spans: Sequence[ProcessSpan], window: tuple[float, float]
) -> str:
    cabinet_id = fault.spec.target.split(":", 1)[1]
    if _down_during(spans, "central", *window):
        return "central down"
    if _down_during(spans, f"edge-{cabinet_id}", *window):
        return "edge down"
    for other in faults:
        if other is fault or other.spec.target != fault.spec.target:
            continue
        other_end = other.ended_at_s if other.ended_at_s is not None else other.started_at_s
        if other.started_at_s <= window[1] and other_end >= window[0]:
            return "another fault on the link"
    return ""


def _convergence_delay(
    cabinet_id: str,
    latest: PlanInfo,
    healed_s: float,
    samples: Sequence[Sample],
    central: CentralState,
    plans: Mapping[str, PlanInfo],
) -> float | None:
    """Simulated seconds from the heal until the edge runs ``latest`` (or newer) or the central records it
    accepted; 0 when it had it before the heal; None when never."""
    accepted = [
        p.at_s
        for p in central.pushes
        if p.cabinet_id == cabinet_id
        and p.status == "accepted"
        and _plan_seq(plans, p.plan_id + "/") >= latest.seq
    ]
    if any(at_s <= healed_s for at_s in accepted):
        return 0.0
    ran = [
        s.at_s
        for s in samples
        if s.at_s >= healed_s
        and cabinet_id in s.cabinets
        and _plan_seq(plans, s.cabinets[cabinet_id].schedule_id) >= latest.seq
    ]
    moments = [*ran[:1], *(a for a in accepted if a >= healed_s)]
    return min(moments) - healed_s if moments else None


def latest_plan_after_heal(
    faults: Sequence[FaultRun],
    samples: Sequence[Sample],
    central: CentralState,
    spans: Sequence[ProcessSpan],
    bounds: Bounds,
) -> InvariantResult:
    """After an OPC UA partition or blackhole heals, the edge runs (or has accepted) the latest plan."""
    heals = [
        f
        for f in faults
        if f.spec.kind in (FaultKind.LINK_PARTITION, FaultKind.LINK_BLACKHOLE)
        and f.spec.target.startswith("opcua:")
        and f.ended_at_s is not None
    ]
    plans_by_id = {p.plan_id: p for p in central.plans}
    judged = 0
    exempt: dict[str, int] = {}
    violations: list[tuple[float, str]] = []
    delays: list[float] = []
    for fault in heals:
        healed_s = fault.ended_at_s if fault.ended_at_s is not None else fault.started_at_s
        window = (healed_s, healed_s + bounds.heal_bound_s)
        cabinet_id = fault.spec.target.split(":", 1)[1]
        why = _heal_exemption(fault, faults, spans, window)
        latest = max(
            (p for p in central.plans if p.stored_at_s <= healed_s and p.status != "failed"),
            key=lambda p: p.seq,
            default=None,
        )
        if not why and (latest is None or latest.end_s <= healed_s):
            why = "no plan to run"
        refused = any(
            p.cabinet_id == cabinet_id and p.plan_id == latest.plan_id and p.status == "refused"
            for p in central.pushes
            if latest is not None
        )
        if not why and refused:
            why = "the edge refused the plan"
        if why or latest is None:
            exempt[why] = exempt.get(why, 0) + 1
            continue
        judged += 1
        delay_s = _convergence_delay(cabinet_id, latest, healed_s, samples, central, plans_by_id)
        if delay_s is not None:
            delays.append(delay_s)
        if delay_s is None or delay_s > bounds.heal_bound_s:
            shown = "never" if delay_s is None else f"after {delay_s:.0f} s"
            violations.append(
                (
                    healed_s,
                    f"{cabinet_id}: {fault.spec.kind.value} healed at {healed_s:.0f}, "
                    f"{latest.plan_id} {shown}",
                )
            )
    detail = f"{judged} heal(s) judged, allowed {bounds.heal_bound_s:.0f} s"
    if delays:
        detail += f" (slowest {max(delays):.0f} s, median {statistics.median(delays):.0f} s)"
    if exempt:
        detail += "; not judged: " + ", ".join(f"{n} x {why}" for why, n in sorted(exempt.items()))
    if violations:
        detail += "; LATE: " + _listed([v for _, v in violations])
    return InvariantResult(
        LATEST_PLAN_AFTER_HEAL, not violations, detail, violations[0][0] if violations else None
    )


# ----------------------------------------------------------------------------------------- uploads


def uploads_planned(uploads: Sequence[UploadAttempt], central: CentralState) -> InvariantResult:
    """Every upload the central accepted (acknowledged or stored) is stored, with a plan or superseded."""
    planned = {p.upload_id for p in central.plans if p.status != "failed"}
    stored = set(central.upload_ids)
    problems: list[tuple[float, str]] = []
    acknowledged = [u for u in uploads if u.accepted and u.upload_id]
    for upload in acknowledged:
        if upload.upload_id not in stored:
            problems.append(
                (upload.at_s, f"{upload.upload_id} acknowledged at {upload.at_s:.0f}, not stored")
            )
    for upload_id in central.upload_ids:
        if upload_id not in planned and upload_id not in central.superseded_upload_ids:
            at_s = next((u.at_s for u in uploads if u.upload_id == upload_id), 0.0)
            problems.append((at_s, f"{upload_id} stored without a plan and not marked superseded"))
    unanswered = sum(1 for u in uploads if u.http_status is None)
    detail = (
        f"{len(acknowledged)} upload(s) acknowledged, {len(stored)} stored, {len(planned & stored)} planned, "
        f"{len(central.superseded_upload_ids)} superseded; {unanswered} attempt(s) without an answer"
    )
    if problems:
        problems.sort()
        detail += "; " + _listed([p for _, p in problems])
    return InvariantResult(UPLOADS_PLANNED, not problems, detail, problems[0][0] if problems else None)


# ----------------------------------------------------------------------------------------- databases


def database_integrity(checks: Sequence[IntegrityCheck], kills: int) -> InvariantResult:
    """``PRAGMA integrity_check`` is ok after every kill (and at the end)."""
    bad = [c for c in checks if c.result != "ok"]
    missing = max(0, kills - sum(1 for c in checks if c.process != "end"))
    detail = f"{len(checks)} check(s) after {kills} kill(s) and at the end"
    if bad:
        detail += "; FAILED: " + _listed([f"{c.process} at {c.at_s:.0f}: {c.result}" for c in bad])
    if missing:
        detail += f"; {missing} kill(s) without a check"
    first = bad[0].at_s if bad else None
    return InvariantResult(DATABASE_INTEGRITY, not bad and not missing, detail, first)


# ----------------------------------------------------------------------------------------- resources


def _growth_problems(series: Sequence[ResourceSample], bounds: Bounds) -> list[str]:
    first_wall = series[0].wall_s
    judged = [s for s in series if s.wall_s >= first_wall + bounds.warmup_wall_s]
    if len(judged) < 2 or judged[-1].wall_s - judged[0].wall_s < bounds.min_span_wall_s:
        return []
    base, last = judged[0], judged[-1]
    name = f"{base.process} (pid {base.pid})"
    problems = []
    rss_allowed_kb = max(bounds.rss_growth_mb * 1024.0, bounds.rss_growth_rel * base.rss_kb)
    peak_rss = max(s.rss_kb for s in judged)
    if peak_rss - base.rss_kb > rss_allowed_kb:
        problems.append(f"{name} RSS {base.rss_kb / 1024:.0f} -> {peak_rss / 1024:.0f} MB")
    if max(s.threads for s in judged) - base.threads > bounds.threads_growth:
        problems.append(f"{name} threads {base.threads} -> {max(s.threads for s in judged)}")
    if max(s.fds for s in judged) - base.fds > bounds.fds_growth:
        problems.append(f"{name} fds {base.fds} -> {max(s.fds for s in judged)}")
    if last.process != "soak" and max(s.group_processes for s in judged) > 1:
        problems.append(f"{name} has {max(s.group_processes for s in judged)} processes in its group")
    return problems


def resource_growth(
    resources: Sequence[ResourceSample], leftover: Sequence[str], bounds: Bounds
) -> InvariantResult:
    """No process, thread, file-descriptor or memory growth beyond the bounds, nothing left running."""
    by_incarnation: dict[tuple[str, int], list[ResourceSample]] = {}
    for sample in resources:
        by_incarnation.setdefault((sample.process, sample.pid), []).append(sample)
    problems: list[str] = []
    judged = 0
    for series in by_incarnation.values():
        found = _growth_problems(series, bounds)
        problems += found
        judged += 1
    if leftover:
        problems.append("still running after the stop: " + ", ".join(leftover))
    detail = (
        f"{judged} process incarnation(s) sampled; bounds RSS +max({bounds.rss_growth_mb:g} MB, "
        f"{100 * bounds.rss_growth_rel:g} %), threads +{bounds.threads_growth}, fds +{bounds.fds_growth} "
        f"after a {bounds.warmup_wall_s:g} s warm-up"
    )
    if problems:
        detail += "; " + _listed(problems)
    return InvariantResult(RESOURCE_GROWTH, not problems, detail)


# ----------------------------------------------------------------------------------------- cost


def fault_windows(faults: Sequence[FaultRun], settle_s: float, end_s: float) -> list[tuple[float, float]]:
    """Where faults act (from start to end + settle), merged; events (uploads) are not faults."""
    spans = sorted(
        (f.started_at_s, (f.ended_at_s if f.ended_at_s is not None else f.started_at_s) + settle_s)
        for f in faults
        if f.spec.kind not in EVENTS
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        end = min(end, end_s) if start <= end_s else end
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass
class _IntervalCost:
    planned: float = 0.0
    realised: float = 0.0
    samples: int = 0


def _sample_costs(
    sample: Sample, plans: Mapping[str, PlanInfo], central: CentralState
) -> tuple[float, float] | None:
    """(planned, realised) cost rate [currency/h] at one sample, or None when it cannot be priced."""
    if sample.grid_kw is None or not sample.cabinets:
        return None
    plan_ids = {_plan_id(c.schedule_id) for c in sample.cabinets.values()}
    if len(plan_ids) != 1 or any(c.mode != "schedule" for c in sample.cabinets.values()):
        return None
    plan = plans.get(plan_ids.pop())
    dayahead = central.dayaheads.get(plan.upload_id) if plan is not None else None
    if plan is None or dayahead is None:
        return None
    step = plan.index_at(sample.at_s)
    index = dayahead.index_at(datetime.fromtimestamp(sample.at_s, tz=UTC))
    if step is None or index is None or step >= len(plan.grid_kw):
        return None
    import_price = dayahead.import_price_per_kwh[index]
    export_price = dayahead.export_price_per_kwh[index]

    def rate(grid_kw: float) -> float:
        return import_price * max(grid_kw, 0.0) - export_price * max(-grid_kw, 0.0)

    return rate(plan.grid_kw[step]), rate(sample.grid_kw)


def cost_vs_plan(
    samples: Sequence[Sample],
    faults: Sequence[FaultRun],
    central: CentralState,
    sample_period_s: float,
    bounds: Bounds,
) -> InvariantResult:
    """Outside fault windows, the realised energy cost stays within the bound of what the plans promised.

    Each sample is priced twice with the prices of the upload its plan was made from: the grid power the
    running plan planned for that moment, and the grid power the meter measured. Samples where the
    cabinets do not all run one plan in schedule mode, or inside a fault window, are left out.
    """
    end_s = samples[-1].at_s if samples else 0.0
    windows = fault_windows(faults, bounds.fault_settle_s, end_s)
    starts = [w[0] for w in windows]
    plans = {p.plan_id: p for p in central.plans}
    intervals: dict[int, _IntervalCost] = {}
    for sample in samples:
        position = bisect.bisect_right(starts, sample.at_s) - 1
        if position >= 0 and windows[position][0] <= sample.at_s <= windows[position][1]:
            continue
        priced = _sample_costs(sample, plans, central)
        if priced is None:
            continue
        entry = intervals.setdefault(int(sample.at_s // 900), _IntervalCost())
        entry.planned += priced[0] * sample_period_s / 3600.0
        entry.realised += priced[1] * sample_period_s / 3600.0
        entry.samples += 1
    planned = sum(e.planned for e in intervals.values())
    realised = sum(e.realised for e in intervals.values())
    magnitude = sum(abs(e.planned) for e in intervals.values())
    allowed = bounds.cost_rel * magnitude + bounds.cost_abs_per_interval * len(intervals)
    passed = abs(realised - planned) <= allowed
    detail = (
        f"{len(intervals)} clean interval(s): planned energy cost {planned:.2f}, realised {realised:.2f}, "
        f"difference {realised - planned:+.2f}, allowed +/-{allowed:.2f} ({100 * bounds.cost_rel:g} % of "
        f"{magnitude:.2f} + {bounds.cost_abs_per_interval:g} per interval)"
    )
    return InvariantResult(COST_VS_PLAN, passed, detail)
