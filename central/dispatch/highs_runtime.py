"""Running HiGHS: a quiet instance holding an LP, an optionally interruptible run, failure reasons."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import highspy
import numpy as np
from numpy.typing import NDArray

_POLL_S = 0.1  # how often the waiting thread looks for Ctrl-C while HiGHS runs
_banner_lock = threading.Lock()
_banner_shown = False


def new_highs(lp: highspy.HighsLp, integer_cols: NDArray[np.int64], options: dict[str, Any]) -> highspy.Highs:
    """A silent HiGHS instance holding ``lp`` with ``options`` set; raise RuntimeError on refusal."""
    highs = _quiet_highs()
    for name, value in options.items():
        if highs.setOptionValue(name, value) == highspy.HighsStatus.kError:
            raise RuntimeError(f"HiGHS refused option {name}={value!r}")
    if highs.passModel(lp) == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS refused the model")
    if integer_cols.size:
        kinds = np.full(integer_cols.size, int(highspy.HighsVarType.kInteger), dtype=np.uint8)
        highs.changeColsIntegrality(integer_cols.size, integer_cols.astype(np.int32), kinds)
    return highs


def suppress_banner() -> None:
    """Swallow HiGHS's copyright banner. The first HiGHS instance in a process prints it to stdout (fd 1,
    from C++) before any option can be set; that first instance is created here with fd 1 pointed at
    /dev/null, so ``ems optimize`` tables and ``--json`` lines stay clean."""
    global _banner_shown
    with _banner_lock:
        if _banner_shown:
            return
        sys.stdout.flush()
        saved_fd = os.dup(1)
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 1)
                highspy.Highs()  # type: ignore[no-untyped-call]
        finally:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
        _banner_shown = True


def _quiet_highs() -> highspy.Highs:
    suppress_banner()
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.silent()
    return highs


def run_highs(highs: highspy.Highs, *, interruptible: bool) -> highspy.HighsStatus:
    """Run HiGHS; with ``interruptible``, so that Ctrl-C (SIGINT in the main thread) stops it cleanly.

    ``highs.run()`` releases the GIL, so a plain run never blocks other Python threads (the central
    service's event loop). Interruptible runs need a Python callback at every simplex iteration, which must
    take the GIL: fine in a command-line process where the main thread only waits, but a busy Python thread
    elsewhere slows HiGHS down by orders of magnitude (measured: 0.55 s became 30 s). Hence opt-in.
    """
    if not interruptible:
        return highs.run()
    return _run_interruptibly(highs)


def _run_interruptibly(highs: highspy.Highs) -> highspy.HighsStatus:
    """``highs.run()`` in a worker thread while this thread waits for it or for Ctrl-C."""
    stop = threading.Event()
    done = threading.Event()
    outcome: list[highspy.HighsStatus] = []

    def interrupt_when_asked(event: Any) -> None:
        if stop.is_set():
            event.interrupt()

    for callback in (highs.cbSimplexInterrupt, highs.cbIpmInterrupt, highs.cbMipInterrupt):
        callback.subscribe(interrupt_when_asked)

    def work() -> None:
        try:
            outcome.append(highs.run())
        finally:
            done.set()

    worker = threading.Thread(target=work, name="highs-solve", daemon=True)
    worker.start()
    try:
        while not done.wait(_POLL_S):
            pass
    except KeyboardInterrupt:
        stop.set()
        done.wait()
        raise
    worker.join()
    return outcome[0] if outcome else highspy.HighsStatus.kError


def describe_failure(highs: highspy.Highs, status: highspy.HighsModelStatus, time_limit_s: float) -> str:
    """A one-line reason why HiGHS gave no usable solution."""
    if status == highspy.HighsModelStatus.kTimeLimit:
        info = highs.getInfo()
        gap = f", MIP gap {info.mip_gap:.2%}" if info.mip_node_count > 0 else ""
        return f"HiGHS stopped at the time limit of {time_limit_s:g} s without a proven optimum{gap}"
    if status == highspy.HighsModelStatus.kInterrupt:
        return "HiGHS was interrupted"
    return f"HiGHS: {highs.modelStatusToString(status)}"
