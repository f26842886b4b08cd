"""One optimization run: the rolling horizon of an upload, its initial SoC, the optimizer, store, push.

:class:`Planner` does one run at a time (an ``asyncio.Lock``): optimize the rest of an upload from the
current interval, store the plan, push it to every edge, record the outcomes. Pushes of the restored plan
and the recording of the edge link's own re-pushes take or respect the same order, so an older plan can
never overtake a newer one on its way to an edge. What to run and when is the planning queue's job
(:mod:`central.service.queue`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta

from central.dispatch.inputs import DEFAULT_INITIAL_SOC_PCT
from central.dispatch.optimizer import new_plan_id
from central.edge_link.outcome import PushStatus
from central.service.interfaces import Fleet, Optimizer, PushOutcomeLike, live_setpoints_kw
from central.service.metrics import Metrics
from central.service.state import RunResult, RunTrigger, ServiceState, SocChoice, SocSource
from central.service.store import PushRecord, Store, StoredPlan, StoredUpload, UploadPlanning
from shared.clock import Clock
from shared.dayahead import DayAhead
from shared.edge_api import EdgeTelemetry
from shared.plan import Plan, PlanStatus
from shared.site import SiteConfig
from shared.timeutil import format_utc

log = logging.getLogger(__name__)

# A job fired on an interval boundary may read the clock a hair before it (float round-off); such a run
# belongs to the interval that is starting.
BOUNDARY_TOLERANCE = timedelta(milliseconds=1)
# Extra wall time beyond push_timeout_s before a push round is given up as a whole.
PUSH_GUARD_S = 5.0


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
    4. the optimizer's default (50 %).
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
            choices[cabinet.id] = SocChoice(uploaded, SocSource.UPLOAD)
        elif live_soc is not None:
            choices[cabinet.id] = SocChoice(live_soc, SocSource.TELEMETRY)
        elif uploaded is not None and at_upload_start:
            choices[cabinet.id] = SocChoice(uploaded, SocSource.UPLOAD)
        else:
            choices[cabinet.id] = SocChoice(DEFAULT_INITIAL_SOC_PCT, SocSource.DEFAULT)
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


def describe_soc(choices: Mapping[str, SocChoice]) -> str:
    return ", ".join(f"{cab} {c.soc_pct:.1f} % ({c.source.value})" for cab, c in choices.items())


def reason(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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

    async def run(self, trigger: RunTrigger, upload: StoredUpload | None = None) -> RunResult:
        """Optimize the rest of ``upload`` (default: the active upload), store the plan and push it.
        Never raises for a solver or edge failure: the result says what went wrong."""
        async with self._lock:
            started = self._clock.now()
            target = upload if upload is not None else self._state.upload
            upload_id = None if target is None else target.upload_id
            try:
                result = await self._run_locked(trigger, target, started)
            except Exception as exc:
                log.debug("optimization run (%s) failed", trigger.value, exc_info=True)
                log.error("optimization run (%s) of %s failed: %s", trigger.value, upload_id, reason(exc))
                message = f"run failed: {reason(exc)}"
                result = RunResult(trigger, False, message, started, self._clock.now(), upload_id=upload_id)
                if upload_id is not None:
                    await asyncio.to_thread(self._store.set_planning, upload_id, UploadPlanning.FAILED)
        self._state.set_last_run(result)
        self._metrics.run(result)
        return result

    async def _run_locked(
        self, trigger: RunTrigger, upload: StoredUpload | None, started: datetime
    ) -> RunResult:
        if upload is None:
            message = "no day-ahead upload yet: POST one to /api/v1/day-ahead"
            return RunResult(trigger, True, message, started, self._clock.now(), skipped=True)
        dayahead = upload.dayahead
        first_index = horizon_start_index(dayahead, started)
        if first_index is None:
            message = (
                f"the upload {upload.upload_id} ended at {format_utc(dayahead.end)};"
                " the edges run their fallback until a new day-ahead is uploaded"
            )
            await asyncio.to_thread(self._store.set_planning, upload.upload_id, UploadPlanning.EXPIRED)
            log.warning("%s", message)
            return RunResult(
                trigger, False, message, started, self._clock.now(), skipped=True, upload_id=upload.upload_id
            )

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
        plan_id = new_plan_id(horizon.start)
        log.debug(
            "optimizing (%s) %s of %s: %d intervals from %s; initial SoC %s",
            trigger.value,
            plan_id,
            upload.upload_id,
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
            self._store.add_plan, plan, upload.upload_id, trigger.value, self._clock.now()
        )
        if plan.status is PlanStatus.FAILED:
            cause = plan.solver.message or "no solution"
            message = (
                f"optimizer failed for {plan_id} of {upload.upload_id} ({trigger.value}): {cause};"
                " the edges keep the last plan"
            )
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
                upload_id=upload.upload_id,
            )
        self._state.set_plan(stored)
        outcomes = await self._push(plan)
        message = _describe_run(plan, upload.upload_id, trigger, optimize_wall_s, outcomes)
        log.log(logging.WARNING if plan.violations or _refused(outcomes) else logging.INFO, "%s", message)
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
            upload_id=upload.upload_id,
        )

    async def resume(self) -> str:
        """Hand the newest stored plan to the fleet, which keeps pushing it to every edge that does not
        run it yet (the edge link re-pushes when an edge (re)connects)."""
        async with self._lock:
            stored = self._state.plan
            if stored is None:
                return "no stored plan to resume"
            if stored.plan.end <= self._clock.now():
                return f"the stored plan {stored.plan.plan_id} is over; waiting for a new upload"
            records = await self._push(stored.plan)
        accepted = sum(1 for r in records.values() if r.status is PushStatus.ACCEPTED)
        message = (
            f"resumed plan {stored.plan.plan_id} of upload {stored.upload_id}: {accepted}/{len(records)}"
            " edges accepted so far; the others get it when they connect"
        )
        log.info("%s", message)
        return message

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
            or r.status is not PushStatus.ACCEPTED
        ]
        # Not a job failure: the status endpoint names the edges without the active plan.
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
            log.debug("push of %s failed", plan.plan_id, exc_info=True)
            log.error("push of %s failed: %s", plan.plan_id, reason(exc))
            answers = {}
            failure = f"push failed: {reason(exc)}"
        now = self._clock.now()
        records: dict[str, PushRecord] = {}
        for cabinet_id in self._site.cabinet_ids:
            answer = answers.get(cabinet_id)
            if answer is None:
                records[cabinet_id] = PushRecord(
                    plan.plan_id, cabinet_id, PushStatus.UNREACHABLE, failure, now, 0.0
                )
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
        plan_id, answer.cabinet_id, answer.status, answer.message, answer.at, float(answer.duration_ms)
    )


def _refused(outcomes: Mapping[str, PushRecord]) -> dict[str, PushRecord]:
    return {cab: r for cab, r in outcomes.items() if r.status is not PushStatus.ACCEPTED}


def _describe_run(
    plan: Plan,
    upload_id: str,
    trigger: RunTrigger,
    optimize_wall_s: float,
    outcomes: Mapping[str, PushRecord],
) -> str:
    """The one log line (and API message) of a run that made a plan: the plan and its push round."""
    refused = _refused(outcomes)
    message = (
        f"plan {plan.plan_id} of {upload_id} ({trigger.value}; {plan.status.value}, objective "
        f"{plan.objective.total:.2f}, optimize {optimize_wall_s:.2f} s) pushed: "
        f"{len(outcomes) - len(refused)}/{len(outcomes)} accepted"
    )
    if plan.violations:
        message += "; violations: " + "; ".join(plan.violations)
    if refused:
        message += "; " + "; ".join(
            f"{cab} {r.status.value}: {r.message}" for cab, r in sorted(refused.items())
        )
    return message
