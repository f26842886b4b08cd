"""Each invariant checker on synthetic timelines: one that holds and one that violates it."""

from __future__ import annotations

from lab.demo.records import CabinetSample, Sample
from lab.soak import invariants
from lab.soak.actions import why_starting
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
from lab.soak.schedule import FaultKind, FaultSpec
from shared.dayahead import parse_dayahead_json

T0 = 1_795_000_000.0  # a quarter hour boundary (simulated Unix s)
BOUNDS = invariants.Bounds(
    import_limit_kw=400.0,
    export_limit_kw=300.0,
    limit_tolerance_kw=1.0,
    poc_reaction_s=300.0,
    reaction_ms=200.0,
    probe_poll_ms=10.0,
    observation_grace_s=120.0,
    heal_bound_s=900.0,
    fault_settle_s=900.0,
    cost_rel=0.05,
    cost_abs_per_interval=0.5,
    rss_growth_mb=50.0,
    rss_growth_rel=0.3,
    threads_growth=4,
    fds_growth=16,
    warmup_wall_s=30.0,
    min_span_wall_s=60.0,
)


def cab(mode: str = "schedule", schedule_id: str = "p1/cab-1", power_kw: float = 0.0) -> CabinetSample:
    return CabinetSample(
        power_kw=power_kw,
        soc_pct=50.0,
        temperature_degc=25.0,
        mode=mode,
        schedule_id=schedule_id,
        setpoint_kw=power_kw,
        interlock_reason="",
    )


def samples(grid_kw: list[float], **cabinet: object) -> list[Sample]:
    return [Sample(T0 + 60.0 * i, g, {"cab-1": cab(**cabinet)}) for i, g in enumerate(grid_kw)]  # type: ignore[arg-type]


def plan(seq: int, plan_id: str, start: float, hours: float = 24.0, grid: float = 100.0) -> PlanInfo:
    steps = int(hours * 4)
    return PlanInfo(
        seq, plan_id, "u1", "optimal", start, start + steps * 900.0, 900.0, start, (grid,) * steps
    )


def run(kind: FaultKind, target: str, start: float, end: float | None, **kw: object) -> FaultRun:
    return FaultRun(
        FaultSpec(start - T0, kind, target, 0.0 if end is None else end - start), start, end, **kw
    )  # type: ignore[arg-type]


def test_poc_limits() -> None:
    ok = invariants.poc_limits(samples([390.0, 405.0, 399.0, -290.0]), BOUNDS)
    assert ok.passed, ok.detail  # one excursion of 60 s, allowed 300 s
    bad = invariants.poc_limits(samples([100.0] + [450.0] * 7 + [100.0]), BOUNDS)
    assert not bad.passed and bad.first_violation_s == T0 + 60.0
    export = invariants.poc_limits(samples([-350.0] * 10), BOUNDS)
    assert not export.passed and "peak export 350.0" in export.detail


def test_device_fault_safe_state() -> None:
    fast = run(FaultKind.OVER_TEMPERATURE, "cab-1", T0, T0 + 600, reaction_ms=120.0, reaction_at_device=True)
    polled = run(FaultKind.OVER_TEMPERATURE, "cab-1", T0, T0 + 600, reaction_ms=205.0)  # + one poll: ok
    exempt = run(FaultKind.STATE_FAULT, "cab-1", T0, T0 + 600, exempt="edge down")
    assert invariants.device_fault_safe_state([fast, polled, exempt], BOUNDS).passed
    at_device = run(
        FaultKind.OVER_TEMPERATURE, "cab-1", T0, T0 + 600, reaction_ms=205.0, reaction_at_device=True
    )
    assert not invariants.device_fault_safe_state([at_device], BOUNDS).passed
    slow = run(FaultKind.ALARM_BIT, "cab-2", T0 + 10, T0 + 600, reaction_ms=450.0)
    never = run(FaultKind.CELL_OVER_VOLTAGE, "cab-3", T0 + 20, T0 + 600)
    result = invariants.device_fault_safe_state([fast, slow, never], BOUNDS)
    assert not result.passed and "450 ms" in result.detail and "never" in result.detail
    assert result.first_violation_s == T0 + 10
    not_injected = run(FaultKind.ALARM_BIT, "cab-1", T0, T0 + 600, failed="simulator refused set")
    result = invariants.device_fault_safe_state([fast, not_injected], BOUNDS)
    assert not result.passed and "NOT INJECTED" in result.detail
    # A fault whose probe still runs (a live check meanwhile) has no reaction yet: not judged until done.
    probing = run(FaultKind.ALARM_BIT, "cab-2", T0, None, probing=True)
    assert invariants.device_fault_safe_state([fast, probing], BOUNDS).passed


def central_with(*plans: PlanInfo, pushes: tuple[PushInfo, ...] = ()) -> CentralState:
    return CentralState(("u1",), frozenset(), plans, pushes)


def test_no_stale_schedule() -> None:
    p1, p2 = plan(1, "p1", T0), plan(2, "p2", T0 + 900)
    pushes = (PushInfo("p1", "cab-1", "accepted", T0), PushInfo("p2", "cab-1", "accepted", T0 + 600))
    central = central_with(p1, p2, pushes=pushes)
    # Runs p1 until p2 starts (+ the observation grace), then p2: fine.
    timeline = [
        Sample(T0 + 60.0 * i, 100.0, {"cab-1": cab(schedule_id="p1/cab-1" if i < 17 else "p2/cab-1")})
        for i in range(40)
    ]
    assert invariants.no_stale_schedule(timeline, central, [], BOUNDS).passed
    superseded = [Sample(T0 + 60.0 * i, 100.0, {"cab-1": cab(schedule_id="p1/cab-1")}) for i in range(40)]
    result = invariants.no_stale_schedule(superseded, central, [], BOUNDS)
    assert not result.passed and "superseded by p2" in result.detail
    short = plan(1, "p1", T0, hours=0.25)
    expired = [Sample(T0 + 60.0 * i, 100.0, {"cab-1": cab(schedule_id="p1/cab-1")}) for i in range(30)]
    result = invariants.no_stale_schedule(expired, central_with(short), [], BOUNDS)
    assert not result.passed and "ended" in result.detail
    unknown = invariants.no_stale_schedule(samples([1.0], schedule_id="x/cab-1"), central, [], BOUNDS)
    assert not unknown.passed and "unknown" in unknown.detail
    # Tripped samples are not "running a schedule".
    assert invariants.no_stale_schedule(
        samples([1.0] * 30, mode="tripped"), central_with(short), [], BOUNDS
    ).passed
    # The fallback while an accepted plan covers the moment: the edge forgot a valid schedule.
    forgot = [
        Sample(
            T0 + 60.0 * i,
            100.0,
            {"cab-1": cab(mode="fallback" if i > 20 else "schedule", schedule_id="p2/cab-1")},
        )
        for i in range(40)
    ]
    result = invariants.no_stale_schedule(forgot, central, [], BOUNDS)
    assert not result.passed and "runs its fallback; accepted p2 covers it" in result.detail
    # ... but not before the plan was accepted (+ the grace), nor after the last plan ended.
    before = [Sample(T0 + 60.0 * i, 100.0, {"cab-1": cab(mode="fallback")}) for i in range(2)]
    assert invariants.no_stale_schedule(before, central, [], BOUNDS).passed
    ended = central_with(short, pushes=(PushInfo("p1", "cab-1", "accepted", T0),))
    after_end = [Sample(T0 + 1200.0 + 60.0 * i, 100.0, {"cab-1": cab(mode="fallback")}) for i in range(10)]
    assert invariants.no_stale_schedule(after_end, ended, [], BOUNDS).passed


def test_latest_plan_after_heal() -> None:
    p1, p2 = plan(1, "p1", T0), plan(2, "p2", T0 + 300)
    spans = [ProcessSpan("central", T0 - 100, None), ProcessSpan("edge-cab-1", T0 - 100, None)]
    partition = run(FaultKind.LINK_PARTITION, "opcua:cab-1", T0 + 100, T0 + 1200)
    after = [
        Sample(T0 + 60.0 * i, 100.0, {"cab-1": cab(schedule_id="p1/cab-1" if i < 25 else "p2/cab-1")})
        for i in range(60)
    ]
    central = central_with(p1, p2, pushes=(PushInfo("p2", "cab-1", "unreachable", T0 + 300),))
    assert invariants.latest_plan_after_heal([partition], after, central, spans, BOUNDS).passed
    stuck = [Sample(T0 + 60.0 * i, 100.0, {"cab-1": cab(schedule_id="p1/cab-1")}) for i in range(60)]
    result = invariants.latest_plan_after_heal([partition], stuck, central, spans, BOUNDS)
    assert not result.passed and "p2" in result.detail
    # The central down after the heal: nothing can be pushed, not judged.
    down = [ProcessSpan("central", T0 - 100, T0 + 1000), ProcessSpan("edge-cab-1", T0 - 100, None)]
    exempt = invariants.latest_plan_after_heal([partition], stuck, central, down, BOUNDS)
    assert exempt.passed and "central down" in exempt.detail
    # The campaign ended before the bound ran out: not converged yet is not late yet.
    short = stuck[:30]  # until T0 + 1740, the bound runs until T0 + 2100
    cut = invariants.latest_plan_after_heal([partition], short, central, spans, BOUNDS)
    assert cut.passed and "1 x campaign ended within the bound" in cut.detail
    # ... but a convergence seen in that time is judged.
    converged = [*stuck[:25], *after[25:30]]
    assert (
        "1 heal(s) judged"
        in invariants.latest_plan_after_heal([partition], converged, central, spans, BOUNDS).detail
    )


def test_uploads_planned() -> None:
    ok = UploadAttempt(T0, "upload", 1, 201, "u1", "p1", "")
    central = central_with(plan(1, "p1", T0))
    assert invariants.uploads_planned([ok], central).passed
    lost = UploadAttempt(T0, "upload", 1, 202, "u9", None, "")
    result = invariants.uploads_planned([ok, lost], central)
    assert not result.passed and "u9" in result.detail
    unplanned = CentralState(("u1", "u2"), frozenset(), (plan(1, "p1", T0),), ())
    assert not invariants.uploads_planned([ok], unplanned).passed
    superseded = CentralState(("u1", "u2"), frozenset({"u2"}), (plan(1, "p1", T0),), ())
    assert invariants.uploads_planned([ok], superseded).passed


def test_database_integrity() -> None:
    checks = [IntegrityCheck(T0, "central", "c.sqlite3", "ok"), IntegrityCheck(T0, "end", "c.sqlite3", "ok")]
    assert invariants.database_integrity(checks, kills=1).passed
    assert not invariants.database_integrity(checks, kills=2).passed  # a kill without a check
    corrupt = [*checks, IntegrityCheck(T0 + 5, "edge-cab-1", "e.sqlite3", "*** in database main ***")]
    assert not invariants.database_integrity(corrupt, kills=2).passed


def test_resource_growth() -> None:
    steady = [ResourceSample(float(t), "central", 10, 100_000 + t, 8, 30, 1) for t in range(0, 300, 10)]
    assert invariants.resource_growth(steady, [], BOUNDS).passed
    leaking = [
        ResourceSample(float(t), "edge-cab-1", 11, 80_000 + 1000 * t, 8, 30, 1) for t in range(0, 300, 10)
    ]
    result = invariants.resource_growth(leaking, [], BOUNDS)
    assert not result.passed and "edge-cab-1 (pid 11) RSS 107 -> 361 MB" in result.detail
    # The detail gives every process's RSS at its first and its last sample, over its incarnations.
    restarted = [ResourceSample(400.0, "central", 14, 204_800, 8, 30, 1)]
    summary = invariants.resource_growth([*steady, *restarted, *leaking], [], BOUNDS).detail
    assert "RSS first -> last sample: central 98 -> 200 MB (2 runs), edge-cab-1 78 -> 361 MB" in summary
    fds = [ResourceSample(float(t), "sim", 12, 50_000, 4, 20 + t, 1) for t in range(0, 300, 10)]
    assert "fds" in invariants.resource_growth(fds, [], BOUNDS).detail
    # The campaign's own process (the proxies' connections during a blackhole): judged at its last sample.
    peak = [
        ResourceSample(float(t), "soak", 15, 50_000, 4, 72 if t == 150 else 40, 1) for t in range(0, 300, 10)
    ]
    assert invariants.resource_growth(peak, [], BOUNDS).passed
    leak = [ResourceSample(float(t), "soak", 15, 50_000, 4, 40 + t // 5, 1) for t in range(0, 300, 10)]
    assert "soak (pid 15) fds" in invariants.resource_growth(leak, [], BOUNDS).detail
    assert not invariants.resource_growth(steady, ["sim (pid 12)"], BOUNDS).passed
    short = [ResourceSample(float(t), "edge-cab-2", 13, 10_000 * (t + 1), 4, 20, 1) for t in range(0, 50, 10)]
    assert invariants.resource_growth(short, [], BOUNDS).passed  # too short to judge


def test_cost_vs_plan() -> None:
    dayahead = parse_dayahead_json(
        '{"start": "2026-11-18T08:00:00Z", "interval_minutes": 15, "import_price_per_kwh": '
        + str([0.2] * 96)
        + ', "load_kw": '
        + str([100.0] * 96)
        + "}"
    )
    start = dayahead.start.timestamp()
    central = CentralState(("u1",), frozenset(), (plan(1, "p1", start, grid=100.0),), (), {"u1": dayahead})

    def timeline(grid_kw: float) -> list[Sample]:
        return [Sample(start + 60.0 * i, grid_kw, {"cab-1": cab()}) for i in range(240)]

    assert invariants.cost_vs_plan(timeline(101.0), [], central, 60.0, BOUNDS).passed
    far = invariants.cost_vs_plan(timeline(200.0), [], central, 60.0, BOUNDS)
    assert not far.passed
    # The same deviation inside a fault window does not count.
    fault = run(FaultKind.KILL_EDGE, "cab-1", start, start + 240 * 60.0)
    assert invariants.cost_vs_plan(timeline(200.0), [fault], central, 60.0, BOUNDS).passed


def test_a_comm_loss_hold_excuses_a_late_safe_state_only_while_data_is_missing() -> None:
    holding = "comm_loss (not latched; holding until valid data): no valid data for 305 ms (limit 300 ms): "
    recovering = "comm_loss (not latched; data valid again, resumes after 0.5 s of valid data): "
    assert why_starting(False, "") == "edge starting"  # before the loop's first valid data
    assert why_starting(True, holding + "device: no answer") == "edge holding: no valid data"
    # The episode's reason names its first problem only: the device link may fail now too.
    assert why_starting(True, holding + "meter: no answer") == "edge holding: no valid data"
    # Once data is valid again the edge reads its device and must trip in time.
    assert why_starting(True, recovering + "device: no answer") == ""
