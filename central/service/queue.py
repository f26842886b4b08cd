"""The planning queue: durable upload intents, coalesced, worked off by one task.

An accepted upload is stored ``pending`` in the transaction that stores it (:class:`Store`), so the intent
"optimize it" survives a crash. One worker task optimizes, in this order:

1. the newest ``pending`` upload; every older ``pending`` upload is marked ``superseded`` by it in the
   same transaction (a burst of uploads costs one optimization, of the newest);
2. else, if re-optimizations were requested (the ``reoptimize`` job, ``POST /api/v1/optimize``), one run
   of the active upload for all of them.

Every request is answered by the first run that starts after it. A waiting upload request gets its *own*
upload's run, or ``superseded`` with the upload that replaced it; never another upload's plan.

At start the worker first recovers: the active upload is queued again if it has no usable plan (a
``failed`` one is retried once per start), the queue is drained (after the edges had one chance to
connect, so the run sees live SoC), and only if that made no plan is the newest stored plan handed to the
edges again (``resume``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from central.service.interfaces import Fleet
from central.service.metrics import Metrics
from central.service.planner import Planner, reason
from central.service.state import RunResult, RunTrigger, ServiceState, UploadOutcome
from central.service.store import Claim, Store, StoredUpload, UploadPlanning
from shared.clock import Clock

log = logging.getLogger(__name__)

JOB_PLANNING = "planning"  # the worker's runs, shown with the scheduled jobs


class PlanQueue:
    """The one worker that runs optimizations, and the futures of those who wait for them."""

    def __init__(
        self,
        *,
        planner: Planner,
        store: Store,
        state: ServiceState,
        metrics: Metrics,
        fleet: Fleet,
        clock: Clock,
        first_contact_wait_s: float,
    ) -> None:
        self._planner = planner
        self._store = store
        self._state = state
        self._metrics = metrics
        self._fleet = fleet
        self._clock = clock
        self._first_contact_wait_s = first_contact_wait_s
        self._wake = asyncio.Event()
        self._upload_waiters: dict[str, list[asyncio.Future[UploadOutcome]]] = {}
        self._requests: list[tuple[RunTrigger, asyncio.Future[RunResult]]] = []
        self._task: asyncio.Task[None] | None = None
        self.recovery = "starting"  # what the start-up does or did, for the status endpoint

    # ------------------------------------------------------------------------------------- life cycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="central-plan-queue")

    async def stop(self) -> None:
        """Cancel the worker (a solve in its worker thread ends on its own) and every waiter."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiters in self._upload_waiters.values():
            for waiter in waiters:
                waiter.cancel()
        for _, request in self._requests:
            request.cancel()
        self._upload_waiters.clear()
        self._requests.clear()

    # --------------------------------------------------------------------------------------- requests

    def expect_upload(self, upload_id: str) -> asyncio.Future[UploadOutcome]:
        """A future for what becomes of ``upload_id``. Register it *before* the upload is stored, so the
        worker cannot take the upload before anyone listens; :meth:`upload_stored` then wakes it."""
        future: asyncio.Future[UploadOutcome] = asyncio.get_running_loop().create_future()
        self._upload_waiters.setdefault(upload_id, []).append(future)
        return future

    def forget_upload(self, upload_id: str) -> None:
        """The upload was not stored after all."""
        for future in self._upload_waiters.pop(upload_id, []):
            future.cancel()

    def upload_stored(self) -> None:
        self._wake.set()

    def request(self, trigger: RunTrigger) -> asyncio.Future[RunResult]:
        """A re-optimization of the active upload; the future gets the first run that starts after now."""
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._requests.append((trigger, future))
        self._wake.set()
        return future

    # ----------------------------------------------------------------------------------------- worker

    async def _work(self) -> None:
        try:
            await self._recover()
        except Exception as exc:  # the queue must keep working: a later upload is planned anyway
            log.debug("start-up recovery failed", exc_info=True)
            log.error("start-up recovery failed: %s", reason(exc))
            self.recovery = f"failed: {reason(exc)}"
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except Exception as exc:  # a store failure: retried at the next wake-up
                log.debug("planning queue failed", exc_info=True)
                log.error("planning queue failed: %s", reason(exc))
                self._state.job_finished(JOB_PLANNING, self._clock.now(), False, f"failed: {reason(exc)}")

    async def _recover(self) -> None:
        restored = self._state.plan
        active = self._state.upload
        live = active is not None and active.dayahead.end > self._clock.now()
        if (
            live
            and active is not None
            and not await asyncio.to_thread(self._store.has_usable_plan_for, active.upload_id)
        ):
            record = await asyncio.to_thread(self._store.upload_record, active.upload_id)
            if record is not None and record.planning is UploadPlanning.FAILED:
                await asyncio.to_thread(self._store.set_planning, active.upload_id, UploadPlanning.PENDING)
            self.recovery = f"optimizing the active upload {active.upload_id} first: it has no plan yet"
            log.info("the active upload %s has no plan yet: optimizing it first", active.upload_id)
            await self._await_first_contact()
        await self._drain()
        if self._state.plan is not restored:
            self.recovery = "optimized the active upload at start"
            return
        self.recovery = await self._planner.resume()

    async def _await_first_contact(self) -> None:
        """Until every edge was tried once (connected or refused), at most ``first_contact_wait_s``, so
        the recovery run can use live SoC."""
        await self._fleet.wait_first_contact(self._first_contact_wait_s)

    async def _drain(self) -> None:
        while True:
            claim = await asyncio.to_thread(self._store.claim_newest_pending)
            self._supersede(claim)
            requests, self._requests = self._requests, []
            if claim.upload_id is not None:
                upload = await asyncio.to_thread(self._store.upload, claim.upload_id)
                if upload is None:  # cannot happen: the claim read it in the same database
                    raise RuntimeError(f"claimed upload {claim.upload_id} is not in the database")
                result = await self._run(RunTrigger.UPLOAD, upload)
            elif requests:
                manual = any(trigger is RunTrigger.MANUAL for trigger, _ in requests)
                result = await self._run(RunTrigger.MANUAL if manual else RunTrigger.SCHEDULE, None)
            else:
                return
            for _, future in requests:
                if not future.done():
                    future.set_result(result)
            self._answer_upload(result)

    async def _run(self, trigger: RunTrigger, upload: StoredUpload | None) -> RunResult:
        self._state.job_started(JOB_PLANNING, self._clock.now())
        try:
            result = await self._planner.run(trigger, upload)
        except asyncio.CancelledError:
            self._state.job_finished(JOB_PLANNING, self._clock.now(), False, "cancelled (service stopping)")
            raise
        self._state.job_finished(JOB_PLANNING, self._clock.now(), result.ok, result.message)
        return result

    def _supersede(self, claim: Claim) -> None:
        self._metrics.uploads_superseded(len(claim.superseded))
        for old in claim.superseded:
            log.info("upload %s superseded by %s before its optimization started", old, claim.upload_id)
            outcome = UploadOutcome(old, UploadPlanning.SUPERSEDED, None, claim.upload_id)
            self._state.upload_superseded(old, claim.upload_id)
            for future in self._upload_waiters.pop(old, []):
                if not future.done():
                    future.set_result(outcome)

    def _answer_upload(self, result: RunResult) -> None:
        if result.upload_id is None:
            return
        futures = self._upload_waiters.pop(result.upload_id, [])
        if not futures:
            return
        if result.plan is not None and result.ok:
            planning = UploadPlanning.PLANNED
        elif result.skipped:
            planning = UploadPlanning.EXPIRED
        else:
            planning = UploadPlanning.FAILED
        outcome = UploadOutcome(result.upload_id, planning, result)
        for future in futures:
            if not future.done():
                future.set_result(outcome)
