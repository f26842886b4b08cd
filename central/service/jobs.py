"""The service's work: optimization runs and the APScheduler jobs that trigger them on the shared clock.

:class:`Planner` does one run at a time (an ``asyncio.Lock``): optimize the rest of the active upload
from the current interval, store the plan, push it to every edge, record the outcomes. Pushes of the
re-push job take the same lock, so an older plan can never overtake a newer one on its way to an edge.

:class:`CentralJobs` owns the ``AsyncIOScheduler``. Periods in simulated time use
:class:`ClockIntervalTrigger`, which fires on multiples of the period on the injected clock (at speed 480,
re-optimizing every 15 simulated minutes means every 1.875 wall seconds, on the quarter hours of the
simulated day). A job's failure is logged and kept in its :class:`~central.service.state.JobStatus`;
it never stops the scheduler or the service.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from central.service.interfaces import Fleet, Optimizer, PushOutcomeLike, live_setpoints_kw
from central.service.metrics import Metrics
from central.service.state import RunResult, ServiceState, SocChoice
from central.service.store import PushRecord, Store, StoredPlan, TelemetrySample
from shared.clock import Clock
from shared.dayahead import DayAhead
from shared.edge_api import EdgeTelemetry
from shared.plan import Plan, PlanStatus
from shared.site import SiteConfig
from shared.timeutil import format_utc

log = logging.getLogger(__name__)

DEFAULT_SOC_PCT = 50.0
# A job fired on an interval boundary may read the clock a hair before it (float round-off); such a run
# belongs to the interval that is starting.
BOUNDARY_TOLERANCE = timedelta(milliseconds=1)
# Extra wall time beyond push_timeout_s before a push round is given up as a whole.
PUSH_GUARD_S = 5.0
PRUNE_EVERY_S = 3600.0  # simulated
PUSH_SYNC_EVERY_S = 1.0  # wall: cheap (in memory), and writes only what changed

TRIGGER_UPLOAD = "upload"
TRIGGER_SCHEDULE = "schedule"
TRIGGER_MANUAL = "manual"


# ---------------------------------------------------------------------------------------- pure helpers


def horizon_start_index(dayahead: DayAhead, now: datetime) -> int | None:
    """First interval of a rolling re-optimization at ``now``: the current one, 0 before the upload
    starts, None once it is over."""
    if now < dayahead.start:
        return 0
    return dayahead.index_at(now + BOUNDARY_TOLERANCE)


def resolve_initial_soc(
    site: SiteConfig,
    dayahead: DayAhead,
    first_index: int,
    first_of_upload: bool,
    telemetry: Mapping[str, EdgeTelemetry | None],
    connected: Mapping[str, bool],
) -> dict[str, SocChoice]:
    """The initial SoC [%] of every cabinet for a run, with its source, in this order:

    1. the upload's ``initial_soc_pct``, on the first optimization of that upload when the horizon starts
       at the upload's start;
    2. live telemetry of a connected edge;
    3. the upload's ``initial_soc_pct`` while the horizon still starts at the upload's start (better than
       a blind guess when the edge is not reachable);
    4. 50 %.
    """
    at_upload_start = first_index == 0
    choices: dict[str, SocChoice] = {}
    for cabinet in site.cabinets:
        uploaded = dayahead.initial_soc_pct.get(cabinet.id)
        live = telemetry.get(cabinet.id)
        live_soc = live.soc_pct if live is not None and connected.get(cabinet.id, False) else None
        if live_soc is not None and not (math.isfinite(live_soc) and 0.0 <= live_soc <= 100.0):
            live_soc = None
        if uploaded is not None and at_upload_start and first_of_upload:
            choices[cabinet.id] = SocChoice(uploaded, "upload")
        elif live_soc is not None:
            choices[cabinet.id] = SocChoice(live_soc, "telemetry")
        elif uploaded is not None and at_upload_start:
            choices[cabinet.id] = SocChoice(uploaded, "upload")
        else:
            choices[cabinet.id] = SocChoice(DEFAULT_SOC_PCT, "default")
    return choices


def promised_final_soc(
    site: SiteConfig, upload_id: str, dayahead: DayAhead, active: StoredPlan | None
) -> dict[str, float]:
    """End-of-horizon SoC [%] the active plan of the same upload promised, for cabinets whose site entry
    has no ``soc_final_min_pct``.

    The LP's default terminal SoC is the horizon's initial SoC; in a rolling re-optimization that is the
    live SoC, so without this each re-plan could lower the day's end target a little more. Re-plans of
    one upload therefore keep the end SoC of the plan they replace (the first plan's end SoC is at least
    the initial SoC of the upload).
    """
    if active is None or active.upload_id != upload_id or active.plan.end != dayahead.end:
        return {}
    if active.plan.status is PlanStatus.FAILED:
        return {}
    return {
        cabinet.id: active.plan.cabinets[cabinet.id].soc_pct[-1]
        for cabinet in site.cabinets
        if cabinet.soc_final_min_pct is None
        and cabinet.id in active.plan.cabinets
        and active.plan.cabinets[cabinet.id].soc_pct
    }


def new_plan_id(now: datetime) -> str:
    return f"plan-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def describe_soc(choices: Mapping[str, SocChoice]) -> str:
    return ", ".join(f"{cab} {c.soc_pct:.1f} % ({c.source})" for cab, c in choices.items())


# --------------------------------------------------------------------------------------------- planner


class Planner:
    """Optimization runs and pushes, one at a time."""

    def __init__(
        self,
        *,
        site: SiteConfig,
        clock: Clock,
        store: Store,
        state: ServiceState,
        metrics: Metrics,
        fleet: Fleet,
        optimizer: Optimizer,
    ) -> None:
        self._site = site
        self._clock = clock
        self._store = store
        self._state = state
        self._metrics = metrics
        self._fleet = fleet
        self._optimizer = optimizer
        self._time_limit_s = site.central.solver_time_limit_s
        self._push_timeout_s = site.central.push_timeout_s
        self._lock = asyncio.Lock()

    async def run(self, trigger: str) -> RunResult:
        """Optimize the rest of the active upload, store the plan and push it. Never raises for a
        solver or edge failure: the result says what went wrong."""
        async with self._lock:
            started = self._clock.now()
            try:
                result = await self._run_locked(trigger, started)
            except Exception as exc:
                log.exception("optimization run (%s) failed", trigger)
                result = RunResult(trigger, False, f"run failed: {_reason(exc)}", started, self._clock.now())
        self._state.set_last_run(result)
        self._metrics.run(result)
        return result

    async def _run_locked(self, trigger: str, started: datetime) -> RunResult:
        upload = self._state.upload
        if upload is None:
            message = "no day-ahead upload yet: POST one to /api/v1/day-ahead"
            return RunResult(trigger, True, message, started, self._clock.now(), skipped=True)
        dayahead = upload.dayahead
        first_index = horizon_start_index(dayahead, started)
        if first_index is None:
            message = (
                f"the active upload {upload.upload_id} ended at {format_utc(dayahead.end)};"
                " the edges run their fallback until a new day-ahead is uploaded"
            )
            return RunResult(trigger, False, message, started, self._clock.now(), skipped=True)

        first_of_upload = not await asyncio.to_thread(self._store.has_usable_plan_for, upload.upload_id)
        soc = resolve_initial_soc(
            self._site,
            dayahead,
            first_index,
            first_of_upload,
            self._fleet.telemetry(),
            self._fleet.connected(),
        )
        soc_pct = {cabinet_id: choice.soc_pct for cabinet_id, choice in soc.items()}
        final_soc_pct = promised_final_soc(self._site, upload.upload_id, dayahead, self._state.plan)
        horizon = dayahead.tail(first_index, soc_pct)
        plan_id = new_plan_id(started)
        log.info(
            "optimizing (%s) %s: %d intervals from %s; initial SoC %s",
            trigger,
            plan_id,
            horizon.steps,
            format_utc(horizon.start),
            describe_soc(soc),
        )
        wall_start_s = time.perf_counter()
        plan = await asyncio.to_thread(
            self._optimizer,
            self._site,
            horizon,
            time_limit_s=self._time_limit_s,
            initial_soc_pct=soc_pct,
            plan_id=plan_id,
            created_at=started,
            final_soc_min_pct=final_soc_pct,
            previous_plan=self._state.plan.plan if self._state.plan is not None else None,
            current_setpoint_kw=live_setpoints_kw(self._fleet.telemetry(), self._fleet.connected()),
        )
        optimize_wall_s = time.perf_counter() - wall_start_s
        stored = await asyncio.to_thread(
            self._store.add_plan, plan, upload.upload_id, trigger, self._clock.now()
        )
        if plan.status is PlanStatus.FAILED:
            reason = plan.solver.message or "no solution"
            message = f"optimizer failed for {plan_id}: {reason}; the edges keep the last plan"
            log.error("%s", message)
            return RunResult(
                trigger,
                False,
                message,
                started,
                self._clock.now(),
                stored,
                {},
                soc,
                optimize_wall_s=optimize_wall_s,
            )
        if plan.violations:
            log.warning("plan %s has violations: %s", plan_id, "; ".join(plan.violations))
        self._state.set_plan(stored)
        outcomes = await self._push(plan)
        refused = {cab: r for cab, r in outcomes.items() if r.status != "accepted"}
        message = (
            f"plan {plan_id} ({plan.status.value}, objective {plan.objective.total:.2f}, "
            f"optimize {optimize_wall_s:.2f} s) pushed: "
            f"{len(outcomes) - len(refused)}/{len(outcomes)} accepted"
        )
        if refused:
            message += "; " + "; ".join(
                f"{cab} {r.status}: {r.message}" for cab, r in sorted(refused.items())
            )
            log.warning("%s", message)
        else:
            log.info("%s", message)
        return RunResult(
            trigger,
            True,
            message,
            started,
            self._clock.now(),
            stored,
            outcomes,
            soc,
            optimize_wall_s=optimize_wall_s,
        )

    async def resume(self) -> tuple[bool, str]:
        """After a restart: hand the restored plan to the fleet, which keeps pushing it to every edge that
        does not run it yet (the edge link re-pushes when an edge (re)connects)."""
        async with self._lock:
            stored = self._state.plan
            if stored is None:
                return True, "no stored plan to resume"
            if stored.plan.end <= self._clock.now():
                return True, f"the stored plan {stored.plan.plan_id} is over; waiting for a new upload"
            records = await self._push(stored.plan)
        accepted = sum(1 for r in records.values() if r.status == "accepted")
        return True, (
            f"resumed plan {stored.plan.plan_id}: {accepted}/{len(records)} edges accepted so far;"
            " the others get it when they connect"
        )

    async def sync_outcomes(self) -> tuple[bool, str]:
        """Record push outcomes the fleet got on its own (re-pushes after an edge reconnected).

        Without the run lock (a long solve must not hold it up); ``_record`` drops what is known already.
        """
        stored = self._state.plan
        if stored is None:
            return True, "no plan"
        plan = stored.plan
        latest = {
            cabinet_id: _record(plan.plan_id, answer)
            for cabinet_id, answer in self._fleet.last_outcomes().items()
            # Only outcomes of this plan's schedules, not an older plan's.
            if cabinet_id in plan.cabinets and answer.schedule_id == plan.schedule_for(cabinet_id).schedule_id
        }
        await self._record(latest)
        missing = [
            cab
            for cab in self._site.cabinet_ids
            if (r := self._state.push_outcomes().get(cab)) is None
            or r.plan_id != plan.plan_id
            or r.status != "accepted"
        ]
        # Not a job failure: /healthz names the edges without the active plan.
        if missing:
            return True, f"plan {plan.plan_id} not accepted by {', '.join(missing)} yet"
        return True, f"every edge accepted plan {plan.plan_id}"

    async def _push(self, plan: Plan) -> dict[str, PushRecord]:
        """Push to every edge; an edge that fails is recorded, never raised."""
        try:
            answers = await asyncio.wait_for(
                self._fleet.push_plan(plan), timeout=self._push_timeout_s + PUSH_GUARD_S
            )
            failure = "no outcome reported"
        except Exception as exc:
            log.exception("push of %s failed", plan.plan_id)
            answers = {}
            failure = f"push failed: {_reason(exc)}"
        now = self._clock.now()
        records: dict[str, PushRecord] = {}
        for cabinet_id in self._site.cabinet_ids:
            answer = answers.get(cabinet_id)
            if answer is None:
                records[cabinet_id] = PushRecord(plan.plan_id, cabinet_id, "unreachable", failure, now, 0.0)
            else:
                records[cabinet_id] = _record(plan.plan_id, answer)
        await self._record(records)
        return records

    async def _record(self, records: Mapping[str, PushRecord]) -> None:
        """Show and store outcomes that are not known yet."""
        # No await between reading and updating the state: an outcome is recorded once, even when the
        # push-sync job sees it at the same time as the run that pushed.
        known = self._state.push_outcomes()
        fresh = {cab: record for cab, record in records.items() if known.get(cab) != record}
        if not fresh:
            return
        # The push happened: show it even if storing it fails below (the job then fails loudly).
        self._state.record_push(fresh.values())
        self._metrics.push(fresh)
        await asyncio.to_thread(self._store.add_push_outcomes, list(fresh.values()))


def _record(plan_id: str, answer: PushOutcomeLike) -> PushRecord:
    return PushRecord(
        plan_id, answer.cabinet_id, str(answer.status), answer.message, answer.at, float(answer.duration_ms)
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -------------------------------------------------------------------------------------------- triggers


class ClockIntervalTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at every multiple of ``period_s`` of the clock's (simulated) Unix time.

    APScheduler waits in wall time; the wall time of the next boundary follows from the clock's speed.
    Works for any clock whose time runs at ``clock.speed`` x wall time (real and simulated clocks).
    """

    __slots__ = ("_clock", "_period_s")

    def __init__(self, clock: Clock, period_s: float) -> None:
        if not period_s > 0:
            raise ValueError(f"period must be > 0 s, got {period_s}")
        self._clock = clock
        self._period_s = float(period_s)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        wall_now_s = time.time()
        sim_now_s = self._clock.time_s()
        # Simulated time at the scheduler's ``now`` (slightly in the past of the clock read above).
        sim_at_s = sim_now_s - (wall_now_s - now.timestamp()) * self._clock.speed
        # A ``now`` that is a boundary up to round-off (datetimes have whole microseconds of wall time)
        # counts as that boundary: fire at the next one.
        tolerance_s = BOUNDARY_TOLERANCE.total_seconds() + 1e-5 * self._clock.speed
        boundary_s = (math.floor((sim_at_s + tolerance_s) / self._period_s) + 1) * self._period_s
        fire = datetime.fromtimestamp(wall_now_s + (boundary_s - sim_now_s) / self._clock.speed, UTC)
        period_wall = timedelta(seconds=self._period_s / self._clock.speed)
        if previous_fire_time is not None and fire - previous_fire_time < period_wall / 2:
            fire = previous_fire_time + period_wall
        return fire

    def __str__(self) -> str:
        return f"every {self._period_s:g} s of clock time"

    def __repr__(self) -> str:
        return f"<ClockIntervalTrigger period_s={self._period_s}>"


# ------------------------------------------------------------------------------------------------ jobs

JOB_REOPTIMIZE = "reoptimize"
JOB_OPTIMIZE_NOW = "optimize-now"
JOB_TELEMETRY = "telemetry-sample"
JOB_RESUME = "resume"
JOB_PUSH_SYNC = "push-sync"
JOB_PRUNE = "telemetry-prune"


class CentralJobs:
    """The scheduler and its jobs."""

    def __init__(
        self,
        *,
        site: SiteConfig,
        clock: Clock,
        planner: Planner,
        store: Store,
        state: ServiceState,
        fleet: Fleet,
    ) -> None:
        self._site = site
        self._clock = clock
        self._planner = planner
        self._store = store
        self._state = state
        self._fleet = fleet
        self._sequence = itertools.count(1)
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            # A late job still runs (once): the service may be busy, and a skipped re-optimization would
            # leave the edges on an older plan until the next period.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        central = self._site.central
        self._scheduler.add_job(
            self._reoptimize,
            ClockIntervalTrigger(self._clock, central.reoptimize_every_minutes * 60.0),
            id=JOB_REOPTIMIZE,
            name="re-optimize the rolling horizon",
        )
        self._scheduler.add_job(
            self._sample_telemetry,
            ClockIntervalTrigger(self._clock, central.telemetry_sample_every_s),
            id=JOB_TELEMETRY,
            name="store edge telemetry samples",
        )
        self._scheduler.add_job(
            self._sync_outcomes,
            IntervalTrigger(seconds=PUSH_SYNC_EVERY_S, timezone=UTC),
            id=JOB_PUSH_SYNC,
            name="record push outcomes of the fleet's own re-pushes",
        )
        if self._state.plan is not None:
            self._scheduler.add_job(self._resume, id=JOB_RESUME, name="push the restored plan")
        self._scheduler.add_job(
            self._prune_telemetry,
            ClockIntervalTrigger(self._clock, PRUNE_EVERY_S),
            id=JOB_PRUNE,
            name="delete old telemetry samples",
        )
        self._scheduler.start()

    async def shutdown(self) -> None:
        """Stop the scheduler; running jobs are cancelled."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            # AsyncIOScheduler shuts down from a loop callback: let it run.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    def request_run(self, trigger: str) -> asyncio.Future[RunResult]:
        """Run an optimization at once (as a scheduler job); the future gets its result."""
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._scheduler.add_job(
            self._optimize_now,
            args=(trigger, future),
            id=f"{JOB_OPTIMIZE_NOW}-{next(self._sequence)}",
            name=f"optimize now ({trigger})",
        )
        return future

    def next_run_times(self) -> dict[str, datetime | None]:
        """Wall-clock time of each periodic job's next run."""
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    # --------------------------------------------------------------------------------------------- jobs

    async def _reoptimize(self) -> None:
        await self._guarded(JOB_REOPTIMIZE, self._reoptimize_once)

    async def _reoptimize_once(self) -> tuple[bool, str]:
        # A run fails when no plan was made. An edge that did not take the plan is shown live in /healthz
        # instead: it may still get the plan from the fleet's re-push, and then the problem is gone.
        result = await self._planner.run(TRIGGER_SCHEDULE)
        return result.ok, result.message

    async def _optimize_now(self, trigger: str, future: asyncio.Future[RunResult]) -> None:
        async def once() -> tuple[bool, str]:
            result = await self._planner.run(trigger)
            if not future.done():
                future.set_result(result)
            return result.ok, result.message

        try:
            await self._guarded(JOB_OPTIMIZE_NOW, once)
        finally:
            if not future.done():
                future.cancel()

    async def _sample_telemetry(self) -> None:
        await self._guarded(JOB_TELEMETRY, self._sample_once)

    async def _sample_once(self) -> tuple[bool, str]:
        now = self._clock.now()
        telemetry = self._fleet.telemetry()
        samples = [
            TelemetrySample(
                at=now,
                cabinet_id=cabinet_id,
                soc_pct=t.soc_pct,
                active_power_kw=t.active_power_kw,
                setpoint_kw=t.setpoint_kw,
                mode=t.mode.value,
                schedule_id=t.schedule_id,
                interlock_active=t.interlock_active,
                interlock_reason=t.interlock_reason,
            )
            for cabinet_id, t in telemetry.items()
            if t is not None
        ]
        count = await asyncio.to_thread(self._store.add_telemetry_samples, samples)
        return True, f"{count} of {len(self._site.cabinets)} edges sampled"

    async def _resume(self) -> None:
        await self._guarded(JOB_RESUME, self._planner.resume)

    async def _sync_outcomes(self) -> None:
        await self._guarded(JOB_PUSH_SYNC, self._planner.sync_outcomes)

    async def _prune_telemetry(self) -> None:
        async def once() -> tuple[bool, str]:
            retention = timedelta(days=self._site.central.telemetry_retention_days)
            deleted = await asyncio.to_thread(self._store.prune_telemetry, self._clock.now() - retention)
            return True, f"{deleted} samples older than {retention.days} days deleted"

        await self._guarded(JOB_PRUNE, once)

    async def _guarded(self, name: str, work: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        """Run one job: record its status, log and swallow its failure (the service goes on)."""
        self._state.job_started(name, self._clock.now())
        try:
            ok, message = await work()
        except asyncio.CancelledError:
            self._state.job_finished(name, self._clock.now(), False, "cancelled (service stopping)")
            raise
        except Exception as exc:
            log.exception("job %s failed", name)
            ok, message = False, f"failed: {_reason(exc)}"
        self._state.job_finished(name, self._clock.now(), ok, message)
        if not ok:
            log.warning("job %s: %s", name, message)
