"""``ems bench sim``: can one simulator process serve N cabinets at R Modbus requests per second each?

Each run starts the simulator (``python -m simulators``, the same as ``ems sim``) as a child process for a
generated site of N cabinets (free loopback ports, a simulated clock), then drives every cabinet from this
process with one Modbus TCP connection at a fixed rate, cycling through the edge's request mix: read model
802 whole, read 701 ``W`` to ``TmpCab``, write 704 ``WSetEna``/``WSetMod``/``WSet``, write 802 ``CtrlHb``.
The cabinets' phases are spread over one period, as independent edges are. A simulator that falls behind
shows as an achieved rate below the target and a backlog (how late the last request started) that is still
there at the end; single late requests, the latency and the physics task's lag are reported alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.loopback import free_port, loopback_site_toml
from shared.site import load_site
from shared.sunspec.layout import CABINET_MODELS, device_layout, symbol_value
from simulators.control import control_request

READY_TIMEOUT_S = 30.0
FINAL_BACKLOG_LIMIT_MS = 100.0


@dataclass(frozen=True)
class BenchSettings:
    cabinets: int = 10
    rate_hz: float = 100.0
    duration_s: float = 10.0
    runs: int = 3
    speed: float = 100.0

    def __post_init__(self) -> None:
        if not 1 <= self.cabinets <= 200:
            raise ValueError(f"--cabinets must be 1-200, got {self.cabinets}")
        if not 0.0 < self.rate_hz <= 2000.0:
            raise ValueError(f"--rate-hz must be > 0 and <= 2000, got {self.rate_hz}")
        if not 0.5 <= self.duration_s <= 600.0:
            raise ValueError(f"--duration-s must be 0.5-600, got {self.duration_s}")
        if not 1 <= self.runs <= 20:
            raise ValueError(f"--runs must be 1-20, got {self.runs}")
        if not 0.0 < self.speed <= 10_000.0:
            raise ValueError(f"--speed must be > 0 and <= 10000, got {self.speed}")


@dataclass(frozen=True)
class _CabinetLoad:
    completed: int
    errors: int
    late_starts: int  # requests that started more than one period after they were due
    final_backlog_s: float  # how late the last request started: grows without bound when falling behind
    elapsed_s: float
    latencies_s: list[float]


def run_sim_benchmark(settings: BenchSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    """Run the benchmark; return the medians, each run's numbers and whether the target was met."""
    progress(
        f"bench sim: {settings.cabinets} cabinets x {settings.rate_hz:g} req/s, {settings.duration_s:g} s, "
        f"{settings.runs} runs (one simulator process, clock speed {settings.speed:g}x)"
    )
    runs: list[dict[str, Any]] = []
    for index in range(settings.runs):
        result = _one_run(settings)
        runs.append(result)
        progress(
            f"  run {index + 1}: {result['requests_per_s']:.0f} req/s total, slowest cabinet "
            f"{result['min_cabinet_rate_hz']:.1f} req/s, latency p50 {result['latency_p50_ms']:.2f} ms "
            f"p99 {result['latency_p99_ms']:.2f} ms, late starts {result['late_starts']}, final backlog "
            f"{result['final_backlog_ms']:.1f} ms, errors "
            f"{result['errors']}, simulator CPU {result['sim_cpu_pct']:.0f} %, physics lag p99 "
            f"{result['step_lag_p99_ms']:.2f} ms"
        )
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    median = {key: statistics.median(run[key] for run in runs) for key in keys}
    # Keeping up: every cabinet got its rate, nothing failed, and no backlog built up by the end (single
    # late requests on a shared machine are reported, but a simulator that falls behind builds a backlog).
    ok = (
        median["min_cabinet_rate_hz"] >= 0.99 * settings.rate_hz
        and median["errors"] == 0
        and median["final_backlog_ms"] < FINAL_BACKLOG_LIMIT_MS
    )
    progress(
        f"median: {median['requests_per_s']:.0f} req/s total, slowest cabinet "
        f"{median['min_cabinet_rate_hz']:.1f} req/s, latency p99 {median['latency_p99_ms']:.2f} ms, "
        f"simulator CPU {median['sim_cpu_pct']:.0f} % -> {'keeps up' if ok else 'FALLS BEHIND'}"
    )
    return {
        "benchmark": "sim",
        "cabinets": settings.cabinets,
        "rate_hz": settings.rate_hz,
        "duration_s": settings.duration_s,
        "runs": settings.runs,
        "speed": settings.speed,
        "median": median,
        "each_run": runs,
        "keeps_up": ok,
    }


def _one_run(settings: BenchSettings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ems-bench-sim-") as tmp:
        site_path, cabinet_ports, control_address = _write_site(Path(tmp), settings.cabinets)
        command = [
            sys.executable,
            "-m",
            "simulators",
            "--site",
            str(site_path),
            "--clock",
            f"sim:2026-11-24T00:00:00Z:{settings.speed:g}",
            "--progress-every-s",
            "0",
        ]
        log_path = Path(tmp) / "sim.log"
        with log_path.open("w", encoding="utf-8") as log_file:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            _wait_ready(child, log_path)
            cpu_before_s = _cpu_s(child.pid)
            wall_before_s = time.perf_counter()
            loads = asyncio.run(_drive_all(cabinet_ports, settings))
            cpu_s = _cpu_s(child.pid) - cpu_before_s
            wall_s = time.perf_counter() - wall_before_s
            stats = asyncio.run(control_request(control_address, {"cmd": "stats"}))
        finally:
            _stop(child)
    latencies = sorted(lat for load in loads for lat in load.latencies_s)
    completed = sum(load.completed for load in loads)
    return {
        "requests_per_s": completed / max(load.elapsed_s for load in loads),
        "min_cabinet_rate_hz": min(load.completed / load.elapsed_s for load in loads),
        "latency_p50_ms": 1000.0 * _quantile(latencies, 0.50),
        "latency_p99_ms": 1000.0 * _quantile(latencies, 0.99),
        "latency_max_ms": 1000.0 * (latencies[-1] if latencies else 0.0),
        "late_starts": sum(load.late_starts for load in loads),
        "final_backlog_ms": 1000.0 * max(load.final_backlog_s for load in loads),
        "errors": sum(load.errors for load in loads),
        "sim_cpu_pct": 100.0 * cpu_s / wall_s,
        "step_lag_p99_ms": float(stats["step_lag_p99_ms"]),
        "step_lag_max_ms": float(stats["step_lag_max_ms"]),
        "step_late_ticks": int(stats["step_late_ticks"]),
        "step_ticks": int(stats["step_ticks"]),
    }


async def _drive_all(ports: list[int], settings: BenchSettings) -> list[_CabinetLoad]:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5  # every connection is open before the first due time
    # Edges are not synchronised: spread the cabinets' phases over one period.
    phase_s = 1.0 / settings.rate_hz / len(ports)
    drives = (_drive(port, settings, start + index * phase_s) for index, port in enumerate(ports))
    return list(await asyncio.gather(*drives))


class _LeanModbusClient:
    """A minimal Modbus TCP client (MBAP framing, one request at a time).

    The load generator must cost far less than the server it measures: on a 2-core machine a full client
    library at 1000 requests/s would measure its own overhead as much as the simulator's.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._transaction = 0

    @classmethod
    async def connect(cls, port: int) -> _LeanModbusClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, pdu: bytes, timeout_s: float = 2.0) -> bytes:
        """Send one PDU to unit 1; return the response PDU; raise ``_ModbusError`` on an exception."""
        self._transaction = (self._transaction + 1) & 0xFFFF
        self._writer.write(struct.pack(">HHHB", self._transaction, 0, len(pdu) + 1, 1) + pdu)
        async with asyncio.timeout(timeout_s):
            header = await self._reader.readexactly(7)
            transaction, _, length, _ = struct.unpack(">HHHB", header)
            body = await self._reader.readexactly(length - 1)
        if transaction != self._transaction:
            raise _ModbusError(f"transaction {transaction}, expected {self._transaction}")
        if body[0] & 0x80:
            raise _ModbusError(f"exception {body[1]}")
        return body

    async def read(self, address: int, count: int) -> list[int]:
        body = await self.request(struct.pack(">BHH", 3, address, count))
        return list(struct.unpack(f">{count}H", body[2 : 2 + 2 * count]))

    async def write(self, address: int, values: list[int]) -> None:
        count = len(values)
        await self.request(struct.pack(f">BHHB{count}H", 16, address, count, 2 * count, *values))

    async def write_one(self, address: int, value: int) -> None:
        await self.request(struct.pack(">BHH", 6, address, value))

    def close(self) -> None:
        self._writer.close()


class _ModbusError(Exception):
    pass


async def _drive(port: int, settings: BenchSettings, start: float) -> _CabinetLoad:
    layout = device_layout(CABINET_MODELS)
    read_802 = (layout.model(802).address, layout.model(802).length + 2)
    w_address = layout.point(701, "W").address
    read_701 = (w_address, layout.point(701, "TmpCab").address - w_address + 1)
    wset_ena = layout.point(704, "WSetEna").address
    wset_sf = layout.point(704, "WSet_SF").address
    heartbeat = layout.point(802, "CtrlHb").address
    enabled = symbol_value(704, "WSetEna", "ENABLED")
    watts = symbol_value(704, "WSetMod", "WATTS")
    loop = asyncio.get_running_loop()
    client = await _LeanModbusClient.connect(port)
    try:
        sf_raw = (await client.read(wset_sf, 1))[0]
        sf = sf_raw - 0x10000 if sf_raw >= 0x8000 else sf_raw
        period_s = 1.0 / settings.rate_hz
        total = round(settings.rate_hz * settings.duration_s)
        latencies: list[float] = []
        errors = late = 0
        backlog_s = 0.0
        for k in range(total):
            due = start + k * period_s
            wait_s = due - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            begin = loop.time()
            backlog_s = begin - due
            if backlog_s > period_s:
                late += 1
            try:
                kind = k % 4
                if kind == 0:
                    await client.read(*read_802)
                elif kind == 1:
                    await client.read(*read_701)
                elif kind == 2:
                    setpoint_w = 50_000.0 if (k // 400) % 2 == 0 else -50_000.0  # flips every 4 s
                    raw = round(setpoint_w / 10.0**sf) & 0xFFFFFFFF
                    await client.write(wset_ena, [enabled, watts, raw >> 16, raw & 0xFFFF])
                else:
                    await client.write_one(heartbeat, k & 0xFFFF)
            except (_ModbusError, TimeoutError):
                errors += 1
            latencies.append(loop.time() - begin)
        return _CabinetLoad(total - errors, errors, late, backlog_s, loop.time() - start, latencies)
    finally:
        client.close()


def _write_site(directory: Path, cabinets: int) -> tuple[Path, list[int], str]:
    control_address = f"127.0.0.1:{free_port()}"
    text = loopback_site_toml(
        cabinets,
        name="bench-sim",
        grid_import_limit_kw=5000.0,
        grid_export_limit_kw=5000.0,
        extra=f'[sim]\ncontrol_address = "{control_address}"\n',
    )
    path = directory / "site.toml"
    path.write_text(text, encoding="utf-8")
    ports = [cabinet.modbus_host_port[1] for cabinet in load_site(path).cabinets]
    return path, ports, control_address


def _wait_ready(child: subprocess.Popen[str], log_path: Path) -> None:
    """Block until the child prints its ready line (read by a thread: a pipe has no timeout of its own)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        stdout = child.stdout
        for line in stdout if stdout is not None else ():
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=pump, name="bench-sim-stdout", daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (remaining_s := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining_s)
        except queue.Empty:
            break
        if "ready" in line:
            return
        if not line:
            child.wait(timeout=5.0)
            error = log_path.read_text(encoding="utf-8", errors="replace").strip()[-500:]
            raise RuntimeError(f"the simulator exited with {child.returncode}: {error}")
    raise RuntimeError(f"the simulator was not ready within {READY_TIMEOUT_S:g} s")


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# ------------------------------------------------------------------------------------------ ems bench sim


def register_bench(bench_subparsers: Any) -> None:
    parser = bench_subparsers.add_parser(
        "sim",
        help="Modbus throughput of one simulator process",
        description="Start one `ems sim` process for a site of N cabinets and drive every cabinet at a fixed "
        "request rate (the edge's read/write mix) from this process; report the achieved rate, latency, "
        "how punctual the physics stayed and the simulator's CPU use. Median over several runs.",
    )
    parser.add_argument("--cabinets", type=int, default=10, help="cabinets in the site (default 10)")
    parser.add_argument("--rate-hz", type=float, default=100.0, help="requests per second per cabinet (100)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="wall seconds of load per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    parser.add_argument("--speed", type=float, default=100.0, help="simulated clock speed (100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    try:
        settings = BenchSettings(
            cabinets=args.cabinets,
            rate_hz=args.rate_hz,
            duration_s=args.duration_s,
            runs=args.runs,
            speed=args.speed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_sim_benchmark(settings, progress=lambda line: print(line, flush=True))
    if args.json:
        print(json.dumps(result))
    return 0
