"""What the running service knows now: the active upload and plan, push outcomes, job health.

The store is the record; this is the in-memory view the API and the jobs read, rebuilt from the store
at start (:meth:`ServiceState.restore`), so a restarted service resumes with the latest upload and plan.
Only the event loop thread touches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from central.service.store import PushRecord, Store, StoredPlan, StoredUpload, UploadPlanning


class RunTrigger(StrEnum):
    """Why an optimization run happened (stored with its plan, ``X-Plan-Trigger``)."""

    UPLOAD = "upload"  # a day-ahead upload (also its recovery after a restart)
    SCHEDULE = "schedule"  # the ``reoptimize`` job
    MANUAL = "manual"  # ``POST /api/v1/optimize``


class SocSource(StrEnum):
    """Where a run's initial SoC of a cabinet came from."""

    UPLOAD = "upload"
    TELEMETRY = "telemetry"
    DEFAULT = "default"


@dataclass(frozen=True)
class SocChoice:
    """The initial SoC a run used for one cabinet and where it came from."""

    soc_pct: float
    source: SocSource


@dataclass(frozen=True)
class RunResult:
    """Outcome of one optimization run (optimize, store, push)."""

    trigger: RunTrigger
    ok: bool
    message: str
    started_at: datetime  # simulated clock
    finished_at: datetime
    plan: StoredPlan | None = None
    outcomes: Mapping[str, PushRecord] = field(default_factory=dict)
    initial_soc: Mapping[str, SocChoice] = field(default_factory=dict)
    skipped: bool = False  # nothing to optimize (no upload, or the upload is over)
    optimize_wall_s: float = 0.0  # optimizer call, wall-clock [s]
    upload_id: str | None = None  # the upload the run optimized


@dataclass(frozen=True)
class UploadOutcome:
    """What became of one accepted upload in the planning queue: its own run, or why there was none."""

    upload_id: str
    planning: UploadPlanning
    run: RunResult | None = None  # None when superseded before its run started
    superseded_by: str | None = None


@dataclass
class JobStatus:
    """Health of one scheduled job; its failures are shown here and in /healthz, never fatal."""

    name: str
    runs: int = 0
    failures: int = 0
    running: bool = False
    last_started_at: datetime | None = None  # simulated clock
    last_finished_at: datetime | None = None
    last_ok: bool | None = None
    last_message: str = ""


class StateObserver(Protocol):
    """Told of every change of the state (the console's event hub); called on the event loop, quick."""

    def upload_set(self, upload: StoredUpload) -> None: ...

    def upload_superseded(self, upload_id: str, superseded_by: str | None) -> None: ...

    def plan_set(self, plan: StoredPlan) -> None: ...

    def run_finished(self, result: RunResult) -> None: ...

    def pushes_recorded(self, records: list[PushRecord]) -> None: ...


class ServiceState:
    """The in-memory view of the service."""

    def __init__(self) -> None:
        self.observer: StateObserver | None = None
        self.upload: StoredUpload | None = None
        self.plan: StoredPlan | None = None
        self.last_run: RunResult | None = None
        self._push: dict[str, PushRecord] = {}
        self._jobs: dict[str, JobStatus] = {}

    def restore(self, store: Store) -> None:
        """Load the latest upload, plan and push outcomes from the store."""
        self.upload = store.latest_upload()
        self.plan = store.latest_plan()
        self._push = store.latest_push_outcomes()

    # ------------------------------------------------------------------------------------------ updates

    def set_upload(self, upload: StoredUpload) -> None:
        self.upload = upload
        if self.observer is not None:
            self.observer.upload_set(upload)

    def upload_superseded(self, upload_id: str, superseded_by: str | None) -> None:
        if self.observer is not None:
            self.observer.upload_superseded(upload_id, superseded_by)

    def set_plan(self, plan: StoredPlan) -> None:
        self.plan = plan
        if self.observer is not None:
            self.observer.plan_set(plan)

    def set_last_run(self, result: RunResult) -> None:
        self.last_run = result
        if self.observer is not None:
            self.observer.run_finished(result)

    def record_push(self, records: Iterable[PushRecord]) -> None:
        recorded = list(records)
        for record in recorded:
            self._push[record.cabinet_id] = record
        if self.observer is not None:
            self.observer.pushes_recorded(recorded)

    def job_started(self, name: str, at: datetime) -> None:
        job = self._jobs.setdefault(name, JobStatus(name))
        job.running = True
        job.last_started_at = at

    def job_finished(self, name: str, at: datetime, ok: bool, message: str) -> None:
        job = self._jobs.setdefault(name, JobStatus(name))
        job.running = False
        job.runs += 1
        job.failures += 0 if ok else 1
        job.last_finished_at = at
        job.last_ok = ok
        job.last_message = message

    # -------------------------------------------------------------------------------------------- reads

    def push_outcomes(self) -> dict[str, PushRecord]:
        """The newest push outcome per cabinet."""
        return dict(self._push)

    def jobs(self) -> dict[str, JobStatus]:
        return {name: JobStatus(**vars(job)) for name, job in sorted(self._jobs.items())}
