"""The APScheduler jobs of the service, on the shared clock.

:class:`CentralJobs` owns the ``AsyncIOScheduler``. Periods in simulated time use
:class:`ClockIntervalTrigger`, which fires on multiples of the period on the injected clock (at speed 480,
re-optimizing every 15 simulated minutes means every 1.875 wall seconds, on the quarter hours of the
simulated day). The ``reoptimize`` job asks the planning queue (:mod:`central.service.queue`) for a run
and waits for it. A job's failure is logged and kept in its :class:`~central.service.state.JobStatus`;
it never stops the scheduler or the service.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from central.service.interfaces import Fleet
from central.service.planner import BOUNDARY_TOLERANCE, Planner, reason
from central.service.queue import PlanQueue
from central.service.state import RunTrigger, ServiceState
from central.service.store import Store, TelemetrySample
from shared.clock import Clock
from shared.site import SiteConfig

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0  # simulated
PUSH_SYNC_EVERY_S = 1.0  # wall: cheap (in memory), and writes only what changed


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
JOB_TELEMETRY = "telemetry-sample"
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
        queue: PlanQueue,
        store: Store,
        state: ServiceState,
        fleet: Fleet,
    ) -> None:
        self._site = site
        self._clock = clock
        self._planner = planner
        self._queue = queue
        self._store = store
        self._state = state
        self._fleet = fleet
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

    def next_run_times(self) -> dict[str, datetime | None]:
        """Wall-clock time of each periodic job's next run."""
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    # --------------------------------------------------------------------------------------------- jobs

    async def _reoptimize(self) -> None:
        await self._guarded(JOB_REOPTIMIZE, self._reoptimize_once)

    async def _reoptimize_once(self) -> tuple[bool, str]:
        # A run fails when no plan was made. An edge that did not take the plan is shown live in the
        # status instead: it may still get the plan from the fleet's re-push, and then the problem is gone.
        result = await self._queue.request(RunTrigger.SCHEDULE)  # cancelled when the service stops
        return result.ok, result.message

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
            # Only a stopping service cancels a job. Ending the job here (rather than re-raising) keeps
            # APScheduler from logging the cancellation as an exception with a traceback.
            self._state.job_finished(name, self._clock.now(), False, "cancelled (service stopping)")
            log.debug("job %s cancelled: the service is stopping", name)
            return
        except Exception as exc:
            log.debug("job %s failed", name, exc_info=True)
            ok, message = False, f"failed: {reason(exc)}"
            log.warning("job %s %s", name, message)
        # A run that made no plan was logged by the planner already.
        self._state.job_finished(name, self._clock.now(), ok, message)
