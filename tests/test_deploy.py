"""Deployment by role: the systemd units, the sd_notify watchdog and what a role's install contains."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from ems.cli import build_parser
from lab.bench.footprint import install_role
from shared.systemd import SystemdNotifier
from tests.support import write_site

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
VENV_EMS = Path(sys.executable).parent / "ems"
# What an edge PC must not carry (the central's solver and web stack, the lab's plotting).
NOT_ON_AN_EDGE = ("pyomo", "highspy", "numpy", "fastapi", "uvicorn", "apscheduler", "matplotlib")


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path)
    return parser


def test_both_units_exist() -> None:
    assert [u.name for u in UNITS] == ["ems-central.service", "ems-edge@.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_every_execstart_parses_as_an_ems_command(unit: Path) -> None:
    command = shlex.split(_unit(unit)["Service"]["ExecStart"].replace("%i", "cab-1"))
    assert command[0].endswith("/bin/ems")
    args = build_parser().parse_args(command[1:])
    assert args.command in ("central", "edge")
    assert args.site == Path("/etc/hybrid-ems/site.toml")


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened_and_watched(unit: Path) -> None:
    service = _unit(unit)["Service"]
    assert service["Type"] == "notify"
    assert service["User"] == "ems"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["StateDirectory"].startswith("hybrid-ems")
    assert service["Restart"] == "always"
    assert float(service["WatchdogSec"]) > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(unit: Path, tmp_path: Path) -> None:
    # The unit as installed, with this venv's `ems` in place of /opt/hybrid-ems/venv/bin/ems.
    text = unit.read_text(encoding="utf-8").replace("/opt/hybrid-ems/venv/bin/ems", str(VENV_EMS))
    name = unit.name.replace("@.", "@cab-1.")
    (tmp_path / name).write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in done.stderr.splitlines() if name in line or "Unknown" in line]
    assert done.returncode == 0 and not problems, done.stderr


# ------------------------------------------------------------------------------------------ sd_notify


@contextlib.contextmanager
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()


def _messages(sock: socket.socket, seconds: float) -> list[str]:
    out: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            out.append(sock.recv(4096).decode())
    return out


def test_notifier_is_inert_outside_systemd() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    notifier.ready("x")  # no socket: nothing happens, nothing raises
    assert SystemdNotifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert SystemdNotifier({"WATCHDOG_USEC": "4000000"}).watchdog_interval_s == 2.0


def test_edge_watchdog_is_fed_only_while_the_loop_cycles(tmp_path: Path) -> None:
    from edge.cli_edge import _supervise

    class StuckLoop:  # a controller whose control loop makes no cycle
        cabinet_id = "cab-1"
        timing = SimpleNamespace(cycles=7)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        await _supervise(StuckLoop(), stop)

    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            asyncio.run(run())
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        messages = _messages(sock, 0.3)
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" not in messages  # no progress, no ping: systemd would restart the process
    assert messages[-1] == "STOPPING=1"


def test_real_edge_process_reports_ready_and_feeds_the_watchdog(tmp_path: Path) -> None:
    site_path, _ = write_site(tmp_path, cabinets=1, extra=f'[edge]\nstate_dir = "{tmp_path}"\n')
    with notify_socket(tmp_path) as sock:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        env.pop("WATCHDOG_PID", None)
        command = [VENV_EMS, "edge", "--site", site_path, "--cabinet", "cab-1", "--no-opcua"]
        process = subprocess.Popen(
            [str(c) for c in command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            messages = _messages(sock, 6.0)
            process.send_signal(signal.SIGSTOP)  # a stalled process sends nothing
            _messages(sock, 0.3)  # what was in flight
            stalled = _messages(sock, 1.0)
            process.send_signal(signal.SIGCONT)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert any(m.startswith("READY=1") for m in messages), messages
    assert messages.count("WATCHDOG=1") >= 3, messages
    assert "WATCHDOG=1" not in stalled


# ------------------------------------------------------------------------------------------ extras


def test_edge_extra_installs_no_central_package_and_gates_other_roles(tmp_path: Path) -> None:
    """A fresh `pip install ".[edge]"`: the edge and the simulators run, the central's packages are absent,
    and a central command exits 2 naming the extra to install."""
    venv = tmp_path / "venv"
    install_role(venv, "edge")
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert {"asyncua", "pymodbus", "pysunspec2"} <= installed
    assert not installed & set(NOT_ON_AN_EDGE)
    ems = str(venv / "bin" / "ems")
    for command in (["edge", "--help"], ["sim", "--help"], ["certs", "--help"], ["validate", "--help"]):
        assert subprocess.run([ems, *command], capture_output=True, timeout=60).returncode == 0, command
    refused = subprocess.run([ems, "optimize", "--site", "x"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "install hybrid-ems[central]" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    demo = subprocess.run([ems, "demo"], capture_output=True, text=True, timeout=60)
    assert demo.returncode == 2 and "install hybrid-ems[lab]" in demo.stderr
