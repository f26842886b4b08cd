"""The edge side of ``ems bench push``: K worker processes, each hosting its share of the N edge servers.

Each worker runs real asyncua edge servers (SignAndEncrypt, the site's users and trust lists) with an
:class:`~lab.memory_edge.InMemoryEdgeControl` behind each, on its own event loop, like edges on their own
machines. The parent talks to every worker over a pipe: ``ready`` (with the start-up time), then on request
a telemetry phase whose changes (cabinet, value, ``time.monotonic`` stamp) are sent back, then ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import random
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from lab.loopback import opcua_node_cache_dir

_READY_TIMEOUT_S = 600.0
Change = tuple[str, float, float]  # cabinet id, new SoC, time.monotonic() of the change


@dataclass
class _Worker:
    process: BaseProcess
    pipe: Connection


class EdgeHosts:
    """``async with EdgeHosts(site_path, pki_dir, cabinet_ids, workers) as hosts``: all edges up, or
    :class:`RuntimeError` naming why not. Cabinets are dealt round-robin to the workers."""

    def __init__(self, site_path: Path, pki_dir: Path, cabinet_ids: list[str], workers: int) -> None:
        self._site_path = site_path
        self._pki_dir = pki_dir
        self._shares = [cabinet_ids[index::workers] for index in range(workers)]
        self._workers: list[_Worker] = []
        self.startup_s = 0.0

    async def __aenter__(self) -> EdgeHosts:
        context = multiprocessing.get_context("spawn")
        started = time.perf_counter()
        for index, share in enumerate(self._shares):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_edge_host,
                args=(str(self._site_path), str(self._pki_dir), share, child_end),
                name=f"ems-bench-edges-{index + 1}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self._workers.append(_Worker(process, parent_end))
        try:
            answers = await asyncio.gather(*(_receive(w.pipe, _READY_TIMEOUT_S) for w in self._workers))
        except BaseException:
            await self._stop()
            raise
        failed = [answer[1] for answer in answers if answer[0] != "ready"]
        if failed:
            await self._stop()
            raise RuntimeError(f"edge servers did not start: {failed[0]}")
        self.startup_s = time.perf_counter() - started
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._stop()

    async def change_telemetry(self, duration_s: float) -> list[Change]:
        """Every worker changes its edges' SoC at random moments for ``duration_s``; all the changes."""
        for worker in self._workers:
            worker.pipe.send(("telemetry", duration_s))
        replies = await asyncio.gather(*(_receive(w.pipe, duration_s + 120.0) for w in self._workers))
        return [change for reply in replies for change in reply[1]]

    async def _stop(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                worker.pipe.send(("stop",))
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, 20.0)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(5.0)
        self._workers = []


async def _receive(pipe: Connection, timeout_s: float) -> Any:
    """The next message from a worker; polls in short slices so a cancel (Ctrl-C, SIGTERM) stops at once."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(pipe.poll, 0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from an edge process within {timeout_s:g} s")
    return pipe.recv()


def _edge_host(site_path: str, pki_dir: str, cabinet_ids: list[str], pipe: Connection) -> None:
    """Worker process: run its edge servers until told to stop (Ctrl-C is the parent's to handle)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.ERROR)
    try:
        asyncio.run(_edge_host_main(Path(site_path), Path(pki_dir), cabinet_ids, pipe))
    except Exception as exc:  # report, do not hang the parent
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


async def _edge_host_main(site_path: Path, pki_dir: Path, cabinet_ids: list[str], pipe: Connection) -> None:
    from edge.opcua import EdgeOpcUaServer
    from lab.memory_edge import InMemoryEdgeControl
    from shared.clock import RealClock
    from shared.site import load_site

    site = load_site(site_path)
    clock = RealClock()
    mine = [c for c in site.cabinets if c.id in set(cabinet_ids)]
    controls = {c.id: InMemoryEdgeControl(c, clock) for c in mine}
    servers: list[EdgeOpcUaServer] = []
    started = time.perf_counter()
    try:
        for cabinet in mine:
            server = EdgeOpcUaServer(
                site, cabinet.id, controls[cabinet.id], clock, pki_dir, opcua_node_cache_dir()
            )
            await server.start()
            servers.append(server)
        pipe.send(("ready", time.perf_counter() - started))
        while True:
            message = await asyncio.to_thread(pipe.recv)
            if message[0] == "telemetry":
                pipe.send(("changes", await _change_telemetry(controls, float(message[1]))))
            else:
                break
    finally:
        await asyncio.gather(*(server.stop() for server in servers), return_exceptions=True)


async def _change_telemetry(controls: dict[str, Any], duration_s: float) -> list[Change]:
    """Change every edge's SoC to a fresh value at random moments (about 2-3 per second per edge)."""
    changes: list[Change] = []
    rng = random.Random(7)  # nosec B311  # test data, not security
    counter = 0
    last_change = dict.fromkeys(controls, 0.0)
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        for cabinet_id, control in controls.items():
            # At random moments, but never two changes of one edge within an update period, so every
            # change is published and can be matched.
            if rng.random() < 0.5 or time.monotonic() - last_change[cabinet_id] < 0.3:
                continue
            counter += 1
            value = 10.0 + (counter % 800_000) / 10_000.0  # unique per cabinet within a run
            control.set_soc_pct(value)
            last_change[cabinet_id] = time.monotonic()
            changes.append((cabinet_id, value, last_change[cabinet_id]))
        await asyncio.sleep(rng.uniform(0.02, 0.08))
    return changes
