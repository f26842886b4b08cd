"""The campaign's invariants: pure functions of what was recorded, each a named pass/fail with one line.

Each function takes the record (samples, faults, uploads, ...) and the :class:`Bounds` and returns an
:class:`InvariantResult`; the campaign evaluates them while it runs (a violation is reported as soon as
it shows) and once more at the end. docs/soak.md states every bound and why. ``resource_growth`` and
``cost_vs_plan`` live in :mod:`lab.soak.resource_check` and :mod:`lab.soak.cost_check`.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Mapping, Sequence

from lab.demo.records import Sample
from lab.soak.cost_check import cost_vs_plan, fault_windows
from lab.soak.records import (
    CentralState,
    FaultRun,
    IntegrityCheck,
    PlanInfo,
    ProcessSpan,
    PushInfo,
    UploadAttempt,
)
from lab.soak.resource_check import resource_growth
from lab.soak.schedule import BATTERY_FAULTS, FaultKind
from lab.soak.verdict import (
    COST_VS_PLAN,
    DATABASE_INTEGRITY,
    DEVICE_FAULT_SAFE_STATE,
    LATEST_PLAN_AFTER_HEAL,
    NAMES,
    NO_STALE_SCHEDULE,
    POC_LIMITS,
    RESOURCE_GROWTH,
    UPLOADS_PLANNED,
    Bounds,
    InvariantResult,
    listed,
    plan_id_of,
)

__all__ = [
    "COST_VS_PLAN",
    "DATABASE_INTEGRITY",
    "DEVICE_FAULT_SAFE_STATE",
    "LATEST_PLAN_AFTER_HEAL",
    "NAMES",
    "NO_STALE_SCHEDULE",
    "POC_LIMITS",
    "RESOURCE_GROWTH",
    "UPLOADS_PLANNED",
    "Bounds",
    "InvariantResult",
    "cost_vs_plan",
    "database_integrity",
    "device_fault_safe_state",
    "fault_windows",
    "latest_plan_after_heal",
    "no_stale_schedule",
    "poc_limits",
    "resource_growth",
    "uploads_planned",
]


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
    battery = [f for f in faults if f.spec.kind in BATTERY_FAULTS and not f.probing]
    failed = [f for f in battery if f.failed]
    judged = [f for f in battery if not f.exempt and not f.failed]
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
    if failed:
        detail += "; NOT INJECTED: " + listed(
            [f"{f.spec.kind.value} {f.spec.target}: {f.failed}" for f in failed]
        )
    if late:
        detail += "; TOO LATE: " + listed(
            [
                f"{f.spec.kind.value} {f.spec.target} at {f.started_at_s:.0f}: "
                + ("never" if f.reaction_ms is None else f"{f.reaction_ms:.0f} ms")
                for f in late
            ]
        )
    first = min((f.started_at_s for f in (*late, *failed)), default=None)
    return InvariantResult(DEVICE_FAULT_SAFE_STATE, not late and not failed, detail, first)


# ----------------------------------------------------------------------------------------- schedules


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
    """No edge in schedule mode runs an ended schedule, or one replaced by a newer accepted plan; no edge
    runs its fallback while a plan it accepted covers the moment (it forgot a valid schedule)."""
    plans = {p.plan_id: p for p in (*holds, *central.plans)}
    cabinet_ids = sorted({c for s in samples for c in s.cabinets})
    accepted = {c: _Accepted(central.pushes, plans, c) for c in cabinet_ids}
    grace = bounds.observation_grace_s
    checked = 0
    violations: list[tuple[float, str]] = []
    for sample in samples:
        t = sample.at_s
        for cabinet_id, cabinet in sample.cabinets.items():
            if cabinet.mode == "fallback":
                checked += 1
                tracker = accepted[cabinet_id]
                tracker.advance(t - grace)
                held = tracker.newest_covering(t, t - grace)
                if held is not None and t < held.end_s - grace:
                    violations.append(
                        (t, f"{cabinet_id} at {t:.0f} runs its fallback; accepted {held.plan_id} covers it")
                    )
                continue
            if cabinet.mode != "schedule" or not cabinet.schedule_id:
                continue
            checked += 1
            plan = plans.get(plan_id_of(cabinet.schedule_id))
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
    detail = f"{checked} cabinet samples in schedule or fallback mode checked (grace {grace:.0f} s)"
    if violations:
        detail += f"; {len(violations)} stale: " + listed([v for _, v in violations])
    return InvariantResult(
        NO_STALE_SCHEDULE, not violations, detail, violations[0][0] if violations else None
    )


# ----------------------------------------------------------------------------------------- partitions


def _plan_seq(plans: Mapping[str, PlanInfo], schedule_id: str) -> int:
    """The central's order of the plan a schedule belongs to; -1 for none or an unknown one."""
    plan = plans.get(plan_id_of(schedule_id)) if schedule_id else None
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
    observed_until_s = samples[-1].at_s if samples else 0.0
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
        delay_s = _convergence_delay(cabinet_id, latest, healed_s, samples, central, plans_by_id)
        if delay_s is None and observed_until_s < window[1]:
            why = "campaign ended within the bound"  # not converged yet, but the bound has not run out
            exempt[why] = exempt.get(why, 0) + 1
            continue
        judged += 1
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
        detail += "; LATE: " + listed([v for _, v in violations])
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
        detail += "; " + listed([p for _, p in problems])
    return InvariantResult(UPLOADS_PLANNED, not problems, detail, problems[0][0] if problems else None)


# ----------------------------------------------------------------------------------------- databases


def database_integrity(checks: Sequence[IntegrityCheck], kills: int) -> InvariantResult:
    """``PRAGMA integrity_check`` is ok after every kill (and at the end)."""
    bad = [c for c in checks if c.result != "ok"]
    missing = max(0, kills - sum(1 for c in checks if c.process != "end"))
    detail = f"{len(checks)} check(s) after {kills} kill(s) and at the end"
    if bad:
        detail += "; FAILED: " + listed([f"{c.process} at {c.at_s:.0f}: {c.result}" for c in bad])
    if missing:
        detail += f"; {missing} kill(s) without a check"
    first = bad[0].at_s if bad else None
    return InvariantResult(DATABASE_INTEGRITY, not bad and not missing, detail, first)
