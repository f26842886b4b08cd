"""The edge's database behind a thread of its own: no SQLite call ever runs in a control cycle or under
the controller's lock.

Work is queued and done in order by one thread that owns the connection. The control loop only posts
(events, the latch, schedule deletions) and never waits; :meth:`StoreWorker.call` waits for a result, for
the few callers that must (restoring at start, a schedule's acceptance, which is durable before
``WriteSchedule`` answers). A failed write is logged and the next one is tried: the log must never stop the
edge.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from edge.persistence import EdgeDatabase

T = TypeVar("T")

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000  # posts beyond this are dropped (a stuck disk must not eat the controller's memory)
DROP_LOG_EVERY_S = 10.0
CLOSE_TIMEOUT_S = 10.0

_Job = tuple[Callable[[EdgeDatabase], Any], Future[Any] | None, str]


class StoreWorker:
    """One edge database and the thread that writes it. ``start()`` opens it (errors surface there)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self._name = name
        self._queue: queue.Queue[_Job | None] = queue.Queue(QUEUE_LIMIT)
        self._db: EdgeDatabase | None = None
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._last_drop_log_s = -DROP_LOG_EVERY_S

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._db = EdgeDatabase(self.path)  # opened here: a bad path fails the caller, not the thread
        self._thread = threading.Thread(target=self._main, name=f"edge-store-{self._name}", daemon=True)
        self._thread.start()

    def post(self, job: Callable[[EdgeDatabase], object], what: str) -> None:
        """Queue a write; never blocks. Dropped (and counted in the log) when the queue is full."""
        if self._thread is None:
            log.debug("%s: store not running, dropped: %s", self._name, what)
            return
        try:
            self._queue.put_nowait((job, None, what))
        except queue.Full:
            self._dropped += 1
            now_s = time.monotonic()
            if now_s - self._last_drop_log_s >= DROP_LOG_EVERY_S:
                self._last_drop_log_s = now_s
                log.error(
                    "%s: local database is not keeping up; %d writes dropped", self._name, self._dropped
                )

    def call(self, job: Callable[[EdgeDatabase], T], what: str, timeout_s: float = 5.0) -> T:
        """Run ``job`` after everything queued before it and return its result (or raise its error)."""
        if self._thread is None:
            raise RuntimeError("edge is not running")
        future: Future[T] = Future()
        self._queue.put((job, future, what), timeout=timeout_s)
        return future.result(timeout_s)

    def close(self) -> None:
        """Write what is queued, then close the database."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        thread.join(CLOSE_TIMEOUT_S)
        if thread.is_alive():
            log.error("%s: local database writer did not finish in %g s", self._name, CLOSE_TIMEOUT_S)
            return
        self._fail_leftovers()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _fail_leftovers(self) -> None:
        """Jobs queued after the close (a schedule submitted while the edge stops) are refused, not lost."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1] is not None:
                item[1].set_exception(RuntimeError("edge is stopping"))

    def _main(self) -> None:
        db = self._db
        if db is None:  # pragma: no cover - start() opens it before the thread runs
            return
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, future, what = item
            if future is not None and not future.set_running_or_notify_cancel():
                continue
            try:
                result = job(db)
            except (sqlite3.Error, OSError, ValueError) as exc:
                if future is not None:
                    future.set_exception(exc)
                else:
                    log.warning("%s: local database write failed (%s): %s", self._name, what, exc)
            except Exception as exc:  # a bug: report it, keep the writer alive
                if future is not None:
                    future.set_exception(exc)
                log.exception("%s: local database job failed (%s)", self._name, what)
            else:
                if future is not None:
                    future.set_result(result)
