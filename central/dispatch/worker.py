"""Run a certified solve in a worker process with a wall-time limit; always return a plan.

``solve_in_worker(inputs, options)`` starts a process (``spawn``: safe in a service with threads), runs
:func:`~central.dispatch.certified.solve_certified` there, and waits. The worker reports every better result
(at most every ``progress_interval_s``) and its final one; the caller's thread only waits on a pipe, so the
service's event loop, HTTP and OPC UA stay responsive and the solve cannot block them with the GIL.

Whatever happens, the caller gets a :class:`~central.dispatch.certified.CertifiedResult` by
``time_limit_s + grace_s`` (plus the process start-up, about a second):

- the worker finishes in time: its result;
- the time limit passes: the worker is asked to stop after its current iteration and has ``grace_s`` to
  send its best result; if it does not, it is terminated and the best result it reported is used;
- the worker dies or reports nothing usable: every cabinet idle with the site completed optimally (always
  feasible) and the trivial lower bound, computed here (``StopReason.WORKER_FAILED``).

Ctrl-C in the caller (``KeyboardInterrupt`` while waiting) terminates the worker and propagates.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from central.dispatch.certified import (
    CertifiedOptions,
    CertifiedResult,
    StopReason,
    idle_result,
    solve_certified,
)
from central.dispatch.inputs import DispatchInputs

log = logging.getLogger(__name__)

POLL_S = 0.05


@dataclass(frozen=True)
class WorkerOptions:
    """``grace_s``: how long a worker asked to stop may take to answer [s]; ``progress_interval_s``: the
    least time between two progress reports [s]."""

    grace_s: float = 3.0
    progress_interval_s: float = 1.0


Target = Callable[[Connection, DispatchInputs, CertifiedOptions, float, float], None]


def solve_in_worker(
    inputs: DispatchInputs,
    options: CertifiedOptions | None = None,
    worker: WorkerOptions | None = None,
    *,
    target: Target | None = None,
) -> CertifiedResult:
    """The certified result of ``inputs``, solved in a worker process (module docstring).

    ``target`` replaces the worker's entry point (tests); it must be importable by name.
    """
    opts = options if options is not None else CertifiedOptions()
    settings = worker if worker is not None else WorkerOptions()
    started_s = time.perf_counter()
    deadline_wall = time.time() + opts.time_limit_s
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe(duplex=True)
    process = context.Process(
        target=target or _worker_main,
        args=(there, inputs, opts, deadline_wall, settings.progress_interval_s),
        name="dispatch-worker",
        daemon=True,
    )
    try:
        process.start()
        there.close()
        latest = _collect(here, process, started_s + opts.time_limit_s, settings.grace_s)
    except BaseException:
        _end(process)
        raise
    finally:
        here.close()
        there.close()
    _end(process)
    if latest is None:
        log.warning("dispatch worker gave no result; planning every cabinet idle")
        fallback = idle_result(inputs)
        return replace(fallback, stop=StopReason.WORKER_FAILED, elapsed_s=time.perf_counter() - started_s)
    return latest


def _collect(
    connection: Connection, process: Any, deadline_s: float, grace_s: float
) -> CertifiedResult | None:
    """Read reports until the final one, or until the deadline plus grace; the best report seen."""
    latest: CertifiedResult | None = None
    stop_sent = False
    while True:
        now = time.perf_counter()
        if now >= deadline_s and not stop_sent:
            _send(connection, "stop")
            stop_sent = True
        if now >= deadline_s + grace_s:
            log.warning("dispatch worker did not answer within %.1f s of its time limit; ending it", grace_s)
            return latest
        if connection.poll(POLL_S):
            try:
                kind, payload = connection.recv()
            except (EOFError, OSError):
                return latest
            if kind == "error":
                log.error("dispatch worker failed: %s", payload)
                return latest
            if isinstance(payload, CertifiedResult):
                latest = payload
            if kind == "done":
                return latest
        elif not process.is_alive() and not connection.poll(0):
            return latest


def _send(connection: Connection, message: str) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):  # the worker is gone: nothing to stop
        connection.send(message)


def _end(process: Any) -> None:
    if process.pid is None:  # never started
        return
    if process.is_alive():
        process.terminate()
        process.join(1.0)
    if process.is_alive():
        process.kill()
    process.join(1.0)


def _worker_main(
    connection: Connection,
    inputs: DispatchInputs,
    options: CertifiedOptions,
    deadline_wall: float,
    progress_interval_s: float,
) -> None:
    """The worker process: solve, report progress, answer a stop request. Ctrl-C is the parent's to handle
    (it ends the worker), so the worker ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    send_lock = threading.Lock()

    def listen() -> None:
        try:
            while connection.recv() != "stop":
                pass
        except (EOFError, OSError):
            pass
        stop.set()

    threading.Thread(target=listen, name="dispatch-worker-stop", daemon=True).start()
    last_report = [0.0]

    def report(result: CertifiedResult) -> None:
        now = time.perf_counter()
        if now - last_report[0] >= progress_interval_s:
            last_report[0] = now
            with send_lock:
                connection.send(("progress", result))

    remaining_s = max(deadline_wall - time.time(), 0.05)
    try:
        result = solve_certified(
            inputs, replace(options, time_limit_s=remaining_s), on_progress=report, stop=stop
        )
        with send_lock:
            connection.send(("done", result))
    except Exception as exc:  # reported to the parent, which falls back to the idle plan
        with send_lock:
            connection.send(("error", f"{type(exc).__name__}: {exc} (pid {os.getpid()})"))
