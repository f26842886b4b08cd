"""``ems bench footprint --role edge|central``: what one role costs on its machine.

For ``--role edge`` it starts a simulator (``ems sim``) and one real ``ems edge`` process with its OPC UA
server on loopback, for each ``--cycle-ms``; for ``--role central`` a simulator, one edge per cabinet and
the real ``ems central`` process, and uploads the example day once. Only the role's own process is measured:

- start to ready: from spawning the process to its systemd readiness message (``READY=1`` on a
  ``NOTIFY_SOCKET`` this benchmark listens on; the edge sends it once its control loop runs, the central
  once it serves HTTP);
- RSS (``VmRSS``) after ``--warmup-s`` and at the end, and the peak (``VmHWM``);
- idle CPU: the process's CPU time (user + system, ``/proc/PID/stat``) over ``--seconds`` of steady state,
  as a percentage of one core.

With ``--venv`` it also creates a fresh virtual environment with only the role's extra
(``pip install ".[ROLE]"``) and reports its size on disk. Medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lab.loopback import free_port, loopback_site_toml

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
PASSWORD_ENV = "EMS_OPCUA_PASSWORD"


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "footprint",
        help="memory, CPU and start time of one role's process (and its install size)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--role", choices=("edge", "central"), default="edge", help="role (default edge)")
    parser.add_argument(
        "--cycle-ms",
        type=float,
        action="append",
        help="edge control cycle [ms], repeatable (default: 100 and 10)",
    )
    parser.add_argument("--cabinets", type=int, default=3, help="cabinets of the central's site (3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measurement window [s] (20)")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="wait after ready before measuring (5)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    parser.add_argument("--venv", action="store_true", help="also measure a fresh install of the role")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from shared.errors import InputError, Problem

    if not 1 <= args.runs <= 20 or not 1.0 <= args.seconds <= 600.0 or not 0 <= args.warmup_s <= 600.0:
        raise InputError(
            "ems bench footprint", [Problem("", "--runs 1-20, --seconds 1-600, --warmup-s 0-600")]
        )
    if not 1 <= args.cabinets <= 50:
        raise InputError("--cabinets", [Problem("", f"must be 1-50, got {args.cabinets}")])
    cycles = args.cycle_ms or [100.0, 10.0]
    if any(not 1.0 <= c <= 10_000.0 for c in cycles):
        raise InputError("--cycle-ms", [Problem("", "must be within 1-10000 ms")])
    result: dict[str, Any] = {"role": args.role, "cpu_count": os.cpu_count(), "load_before": os.getloadavg()}
    if args.role == "edge":
        with tempfile.TemporaryDirectory(prefix="ems-footprint-state-") as state:
            # The first start builds the OPC UA node cache in the state directory; the runs measure starts
            # with the cache, as every start after the first on a real edge.
            first = _edge_run(cycles[0], 0.0, 0.0, Path(state))
            result["first_start_to_ready_s"] = round(first["start_to_ready_s"], 3)
            result["cycles"] = {
                f"{c:g}": _median_runs(
                    [_edge_run(c, args.seconds, args.warmup_s, Path(state)) for _ in range(args.runs)]
                )
                for c in cycles
            }
    else:
        runs = [_central_run(args.cabinets, args.seconds, args.warmup_s) for _ in range(args.runs)]
        result["central"] = _median_runs(runs)
    if args.venv:
        print(f"installing a fresh venv with hybrid-ems[{args.role}] ...", flush=True)
        result["venv_mb"] = round(venv_size_mb(args.role), 1)
    result["load_after"] = os.getloadavg()
    _print_human(result)
    if args.json:
        print(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------ runs


def _edge_run(cycle_ms: float, seconds: float, warmup_s: float, state_dir: Path) -> dict[str, float]:
    print(f"edge at {cycle_ms:g} ms cycle ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="ems-footprint-") as tmp:
        directory = Path(tmp)
        site = _site(directory, 1, f'[edge]\ncycle_ms = {cycle_ms}\nstate_dir = "{state_dir}"\n')
        env = _env(directory)
        _run(["certs", "--site", str(site)], env)
        with _process(["sim", "--site", str(site)], env, directory, "sim"):
            time.sleep(1.0)
            args = ["edge", "--site", str(site), "--cabinet", "cab-1"]
            with _notified(directory) as notify, _process(args, env | notify.env, directory, "edge") as edge:
                ready_s = notify.wait_ready(edge)
                return _measure(edge, ready_s, seconds, warmup_s)


def _central_run(cabinets: int, seconds: float, warmup_s: float) -> dict[str, float]:
    print(f"central with {cabinets} edges ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="ems-footprint-") as tmp:
        directory = Path(tmp)
        port = free_port()
        extra = (
            f'[edge]\nstate_dir = "{directory / "state"}"\n'
            f'[central]\nhttp_address = "127.0.0.1:{port}"\n'
            f'database_path = "{directory / "central.sqlite3"}"\n'
        )
        site = _site(directory, cabinets, extra)
        env = _env(directory)
        _run(["certs", "--site", str(site)], env)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_process(["sim", "--site", str(site)], env, directory, "sim"))
            for index in range(1, cabinets + 1):
                args = ["edge", "--site", str(site), "--cabinet", f"cab-{index}"]
                stack.enter_context(_process(args, env, directory, f"edge-{index}"))
            notify = stack.enter_context(_notified(directory))
            central = stack.enter_context(
                _process(["central", "--site", str(site)], env | notify.env, directory, "central")
            )
            ready_s = notify.wait_ready(central)
            day = _example_day_from_now(directory)
            _run(["upload", str(day), "--url", f"http://127.0.0.1:{port}"], env, check=False)
            return _measure(central, ready_s, seconds, warmup_s)


def _measure(
    process: subprocess.Popen[bytes], ready_s: float, seconds: float, warmup_s: float
) -> dict[str, float]:
    time.sleep(warmup_s)
    rss_start = _status_kb(process.pid, "VmRSS") / 1024.0
    cpu0, wall0 = _cpu_s(process.pid), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = _cpu_s(process.pid), time.monotonic()
    if process.poll() is not None:
        raise RuntimeError(f"the measured process ended early (exit {process.returncode})")
    return {
        "start_to_ready_s": ready_s,
        "rss_mb_after_start": rss_start,
        "rss_mb_end": _status_kb(process.pid, "VmRSS") / 1024.0,
        "rss_mb_peak": _status_kb(process.pid, "VmHWM") / 1024.0,
        "idle_cpu_pct": 100.0 * (cpu1 - cpu0) / (wall1 - wall0),
    }


def _median_runs(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


# ------------------------------------------------------------------------------------------ plumbing


class _Notify:
    def __init__(self, sock: socket.socket, path: Path) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": str(path)}
        self.started = time.monotonic()

    def wait_ready(self, process: subprocess.Popen[bytes]) -> float:
        deadline = self.started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the process ended before it was ready (exit {process.returncode})")
            with contextlib.suppress(TimeoutError):
                if self.sock.recv(4096).startswith(b"READY=1"):
                    return time.monotonic() - self.started
        raise RuntimeError(f"not ready within {READY_TIMEOUT_S:g} s")


@contextlib.contextmanager
def _notified(directory: Path) -> Iterator[_Notify]:
    path = directory / f"notify-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.1)
        yield _Notify(sock, path)


@contextlib.contextmanager
def _process(
    args: list[str], env: dict[str, str], directory: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    log = (directory / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ems", *args], env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _run(args: list[str], env: dict[str, str], check: bool = True) -> None:
    done = subprocess.run([sys.executable, "-m", "ems", *args], env=env, capture_output=True, timeout=300)
    if check and done.returncode != 0:
        raise RuntimeError(f"ems {args[0]} failed: {done.stderr.decode(errors='replace').strip()}")


def _site(directory: Path, cabinets: int, extra: str) -> Path:
    pki = directory / "pki"
    toml = loopback_site_toml(cabinets, name="footprint", extra=f'[opcua]\npki_dir = "{pki}"\n' + extra)
    path = directory / "site.toml"
    path.write_text(toml, encoding="utf-8")
    return path


def _env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env[PASSWORD_ENV] = secrets.token_urlsafe(18)
    env["EMS_CENTRAL_URL"] = ""
    return env


def _example_day_from_now(directory: Path) -> Path:
    """The example day-ahead, moved to start at the current quarter hour (the central refuses the past)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from shared.dayahead import load_dayahead

    day = load_dayahead(ROOT / "examples" / "day-ahead.json")
    now = datetime.now(UTC)
    start = now.replace(minute=now.minute - now.minute % day.interval_minutes, second=0, microsecond=0)
    path = directory / "day.json"
    path.write_text(replace(day, start=start).to_json(), encoding="utf-8")
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


PACKAGES = ("shared", "central", "edge", "simulators", "lab", "ems")


def install_role(venv: Path, role: str) -> None:
    """A fresh venv at ``venv`` with ``hybrid-ems[role]`` installed as a user would (not editable), built
    from a copy of the sources so that the checkout gets no build/ or egg-info litter."""
    source = venv.parent / "hybrid-ems-source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{source}[{role}]"], check=True, timeout=900, cwd=venv.parent)


def venv_size_mb(role: str) -> float:
    """Size on disk of a fresh venv with only ``hybrid-ems[role]`` installed."""
    with tempfile.TemporaryDirectory(prefix="ems-venv-") as tmp:
        venv = Path(tmp) / "venv"
        install_role(venv, role)
        total = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
        return total / 1e6


def _print_human(result: dict[str, Any]) -> None:
    if "first_start_to_ready_s" in result:
        first = result["first_start_to_ready_s"]
        print(f"edge first start (builds the OPC UA node cache): ready in {first:.2f} s")
    rows = result.get("cycles", {}) if result["role"] == "edge" else {"central": result["central"]}
    for label, figures in rows.items():
        name = f"edge at {label} ms" if result["role"] == "edge" else "central"
        print(
            f"{name}: ready in {figures['start_to_ready_s']:.2f} s, "
            f"RSS {figures['rss_mb_after_start']:.0f} MB "
            f"after start, {figures['rss_mb_end']:.0f} MB at the end (peak {figures['rss_mb_peak']:.0f}), "
            f"idle CPU {figures['idle_cpu_pct']:.1f} % of one core"
        )
    if "venv_mb" in result:
        print(f"fresh venv with hybrid-ems[{result['role']}]: {result['venv_mb']:.0f} MB")
