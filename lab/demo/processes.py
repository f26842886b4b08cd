"""Child processes of the demo: the real ``ems`` commands, each in its own process group.

Every child is ``python -m ems.cli ...`` of this same interpreter, started in a new session (its own
process group, so a signal reaches the command and anything it spawned, and a Ctrl-C in the terminal
reaches only the demo, which then stops the children in order). Each child's stdout and stderr go to
``LOGS/<name>.log``; a restart appends to the same file under a marker line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STOP_TIMEOUT_S = 5.0  # wall time a child gets after SIGTERM before it is killed
LOG_TAIL_LINES = 8


class ChildFailedError(RuntimeError):
    """A child exited while it should be running, or a one-shot command failed."""


@dataclass
class Child:
    """One running (or finished) child process."""

    name: str
    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started_wall_s: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None


def ems_argv(args: Sequence[str]) -> tuple[str, ...]:
    """The command line of ``ems ARGS`` with this interpreter (works without the console script)."""
    return (sys.executable, "-m", "ems", *args)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (for one-line failure reasons and the report)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class ProcessSupervisor:
    """Starts, signals and stops the demo's children; knows which ones must be running."""

    def __init__(self, logs_dir: Path, cwd: Path, env: Mapping[str, str]) -> None:
        self._logs_dir = logs_dir
        self._cwd = cwd
        self._env = dict(env)
        self._children: dict[str, Child] = {}

    @property
    def children(self) -> Mapping[str, Child]:
        return self._children

    def log_path(self, name: str) -> Path:
        return self._logs_dir / f"{name}.log"

    def start(self, name: str, args: Sequence[str]) -> Child:
        """Start ``ems ARGS`` as child ``name``; refuse when one of that name is still running."""
        previous = self._children.get(name)
        if previous is not None and previous.running():
            raise ChildFailedError(f"{name} is already running (pid {previous.pid})")
        if previous is not None:
            previous.log_file.close()
        argv = ems_argv(args)
        log_path = self.log_path(name)
        log_file = log_path.open("ab")
        log_file.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log_file.flush()
        popen = subprocess.Popen(
            argv,
            cwd=self._cwd,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = Child(name, argv, popen, log_path, log_file, time.monotonic())
        self._children[name] = child
        return child

    def run(self, name: str, args: Sequence[str], timeout_s: float) -> None:
        """Run a one-shot ``ems ARGS`` to completion; raise with its log tail when it fails."""
        child = self.start(name, args)
        try:
            code = child.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.kill(name)
            raise ChildFailedError(
                f"{name} did not finish within {timeout_s:g} s (log: {child.log_path})"
            ) from exc
        if code != 0:
            raise ChildFailedError(
                f"{name} exited with code {code}: {_last_line(child.log_path)} (log: {child.log_path})"
            )

    def running(self, name: str) -> bool:
        child = self._children.get(name)
        return child is not None and child.running()

    def check_running(self, names: Sequence[str]) -> None:
        """Raise :class:`ChildFailedError` naming the first of ``names`` that has exited."""
        for name in names:
            child = self._children.get(name)
            if child is None:
                raise ChildFailedError(f"{name} was never started")
            code = child.popen.poll()
            if code is not None:
                raise ChildFailedError(
                    f"{name} exited unexpectedly with code {code}: {_last_line(child.log_path)} "
                    f"(log: {child.log_path})"
                )

    def kill(self, name: str) -> None:
        """SIGKILL child ``name``'s process group (a crash) and reap it."""
        child = self._children.get(name)
        if child is None or not child.running():
            return
        _signal_group(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=STOP_TIMEOUT_S)
        self._note(child, "killed with SIGKILL")

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM child ``name``'s process group, and SIGKILL it when it has not exited in time."""
        child = self._children.get(name)
        if child is None or not child.running():
            return
        _signal_group(child, signal.SIGTERM)
        try:
            child.popen.wait(timeout=timeout_s)
            self._note(child, f"stopped (exit code {child.popen.returncode})")
        except subprocess.TimeoutExpired:
            self.kill(name)

    def stop_all(self, stages: Sequence[Sequence[str]] = ()) -> None:
        """Stop every running child, stage by stage: those named in the first stage, then the next, ...,
        then any not named. A stage's children get SIGTERM together and at most ``STOP_TIMEOUT_S`` to exit
        (then SIGKILL), so the central stops before the edges (no pushes to dying edges) and the edges
        before the simulators (their last 0 W write still reaches the device).
        """
        named = [name for stage in stages for name in stage]
        batches = [[n for n in stage if n in self._children] for stage in stages]
        batches.append([n for n in self._children if n not in named])
        for batch in batches:
            running = [self._children[n] for n in batch if self._children[n].running()]
            for child in running:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for child in running:
                try:
                    child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                    self._note(child, f"stopped (exit code {child.popen.returncode})")
                except subprocess.TimeoutExpired:
                    self.kill(child.name)
        for child in self._children.values():
            with contextlib.suppress(OSError):
                child.log_file.close()

    def _note(self, child: Child, what: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            child.log_file.write(f"==== {time.strftime('%H:%M:%S')} {what}\n".encode())
            child.log_file.flush()


def _signal_group(child: Child, sig: signal.Signals) -> None:
    # The child leads its own session, so its pid is the process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def _last_line(path: Path) -> str:
    for line in reversed(log_tail(path, 40).splitlines()):
        text = line.strip()
        if text and not text.startswith("===="):
            return text
    return "(no output)"
