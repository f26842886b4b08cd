"""End-to-end: ``ems demo`` runs each scenario with the real processes and its report shows the guarantee.

Each test runs the real command (``python -m ems.cli demo``) for 2 simulated hours at 720x (about
25-30 s of wall time: certificates, the processes' start-up lead, 10 s of day, the report) and checks
``summary.json`` on its raw numbers, not only on the demo's own verdict.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ems.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
HOURS = "2"
SPEED = "720"
RUN_TIMEOUT_S = 150.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("prices.png", "power.png", "soc.png", "grid.png", "modes.png")
TRANSIENT = {"offline", "starting"}


def run_demo(out: Path, scenario: str, *extra: str) -> tuple[int, str, dict[str, Any]]:
    command = [sys.executable, "-m", "ems", "demo", "--hours", HOURS, "--speed", SPEED]
    command += ["--scenario", scenario, "--out", str(out), *extra]
    env = {k: v for k, v in os.environ.items() if k != "EMS_CLOCK"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return result.returncode, output, summary


def no_children_left(out: Path) -> list[str]:
    """Command lines of processes still running with this demo's output directory in them."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(out) in cmdline:
            left.append(cmdline)
    return left


def modes(summary: dict[str, Any], cabinet_id: str) -> list[str]:
    sequence: list[str] = summary["modes"][cabinet_id]["sequence"]
    collapsed: list[str] = []
    for mode in sequence:
        if mode not in TRANSIENT and (not collapsed or collapsed[-1] != mode):
            collapsed.append(mode)
    return collapsed


def check_common(out: Path, code: int, output: str, summary: dict[str, Any]) -> None:
    failed = [c for c in summary.get("checks", []) if not c["passed"]]
    assert code == 0, f"exit {code}; failed checks {failed}\n{output[-3000:]}"
    assert summary["passed"] is True
    assert not no_children_left(out), "the demo left processes running"
    # Sampled every simulated minute over the window; a late start may cost a few samples, not many.
    assert summary["samples"] >= 0.75 * summary["samples_expected"]
    grid = summary["grid"]
    assert grid["longest_run_above_import_limit_samples"] <= 1
    assert grid["longest_run_above_export_limit_samples"] <= 1
    assert 0 < grid["peak_import_kw"] < grid["import_limit_kw"] + 50
    cost = summary["cost"]
    assert cost["plan_status"] == "optimal"
    # The report prices the plan with the same terms as the optimizer's objective.
    assert cost["planned"]["total"] == pytest.approx(cost["plan_objective"]["total"], rel=1e-6, abs=1e-3)
    assert cost["realised"]["energy_cost"] > 0
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and 5_000 < len(data) < 150_000, name
    for logs in ("sim.log", "central.log", "edge-cab-1.log"):
        lines = (out / "logs" / logs).read_text().splitlines()
        assert lines, logs
        # Library chatter (asyncua logs every subscription notification at INFO) stays out of the logs.
        chatter = re.compile(r" INFO (asyncua|pymodbus|uvicorn|apscheduler)")
        assert not [line for line in lines if chatter.search(line)], logs
    assert (out / "samples.csv").read_text().count("\n") == summary["samples"] + 1


def test_normal(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output, summary = run_demo(out, "normal")
    check_common(out, code, output, summary)
    for cabinet_id, entry in summary["modes"].items():
        seconds = entry["seconds"]
        assert "tripped" not in seconds, cabinet_id
        assert seconds.get("schedule", 0.0) >= 0.9 * sum(seconds.values()), (cabinet_id, seconds)
    assert all(p["accepted"] >= 1 and p["refused"] == 0 for p in summary["pushes"].values())
    assert summary["interlock_trips"] == []
    energy = summary["energy"]
    assert sum(e["charged_kwh"] + e["discharged_kwh"] for e in energy.values()) > 0


def test_central_outage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output, summary = run_demo(out, "central-outage")
    check_common(out, code, output, summary)
    for cabinet_id in summary["modes"]:
        assert modes(summary, cabinet_id) == ["schedule", "fallback", "schedule"], summary["modes"][
            cabinet_id
        ]
        assert "tripped" not in summary["modes"][cabinet_id]["seconds"]
    kinds = [e["kind"] for e in summary["events"]]
    assert (
        kinds.index("kill_central")
        < kinds.index("start_central")
        < len(kinds) - 1 - kinds[::-1].index("upload")
    )
    # The central's pushes survive its restart in its database: before the kill and after the restart.
    assert all(p["accepted"] >= 2 for p in summary["pushes"].values())


def test_edge_restart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output, summary = run_demo(out, "edge-restart")
    check_common(out, code, output, summary)
    victim = next(e["cabinet_id"] for e in summary["events"] if e["kind"] == "kill_edge")
    assert summary["modes"][victim]["seconds"].get("offline", 0.0) > 0
    assert modes(summary, victim) == ["schedule"]
    others = [c for c in summary["modes"] if c != victim]
    assert all(modes(summary, c) == ["schedule"] for c in others)
    restored = [c for c in summary["checks"] if "restored its schedule from its local store" in c["name"]]
    assert restored and restored[0]["passed"] and "restored schedule plan-" in restored[0]["detail"]


def test_device_fault(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output, summary = run_demo(out, "device-fault")
    check_common(out, code, output, summary)
    [trip] = summary["interlock_trips"]
    victim = trip["cabinet_id"]
    assert trip["reaction_ms"] is not None
    assert trip["reaction_ms"] <= 2 * trip["cycle_ms"] + trip["poll_period_ms"]
    assert any("temperature" in e["message"] for e in trip["edge_log"] if e["kind"] == "trip")
    assert modes(summary, victim) == ["schedule", "tripped", "schedule"]
    assert all(modes(summary, c) == ["schedule"] for c in summary["modes"] if c != victim)
    reset = next(e for e in summary["events"] if e["kind"] == "reset_interlock")
    assert "accepted" in reset["detail"]


def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "ems",
        "demo",
        "--hours",
        HOURS,
        "--speed",
        SPEED,
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60.0
        # Wait until the long-running children exist, then ask the demo to stop.
        while time.monotonic() < deadline and not (out / "logs" / "sim.log").exists():
            time.sleep(0.1)
        time.sleep(1.0)
        assert no_children_left(out), "the demo should have started its children by now"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, output
    assert "SIGTERM: stopping every process" in output
    time.sleep(0.2)
    assert not no_children_left(out), "processes survived the demo's SIGTERM"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hours", "0"], "--hours"),
        (["--hours", "25"], "at most the day-ahead's 24 h"),
        (["--speed", "0.5"], "--speed"),
        (["--site", "no-such-site.toml"], "no-such-site.toml"),
        (["--day-ahead", "no-such-day.json"], "no-such-day.json"),
    ],
)
def test_bad_arguments_exit_2_without_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    code = cli_main(["demo", "--out", str(out), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_scenario_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli_main(["demo", "--out", str(tmp_path / "out"), "--scenario", "meteor"])
    assert raised.value.code == 2
    assert "invalid choice: 'meteor'" in capsys.readouterr().err


def test_foreign_output_directory_is_not_touched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert cli_main(["demo", "--out", str(out)]) == 2
    assert "not empty and not a previous demo's output" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
