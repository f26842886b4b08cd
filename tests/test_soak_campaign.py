"""A short real campaign (2 simulated hours): the real processes, proxies and faults, replayed from a file.

The file holds one of the important kinds each (an edge and the central killed, a battery fault, an OPC UA
partition with an upload during it, a Modbus blackhole, a device delay, a SoC jump and a derating), so the
run exercises every invariant; it is also the ``--replay-from`` path end to end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.soak.invariants import NAMES
from lab.soak.schedule import CampaignSchedule, FaultKind, FaultSpec

REPO = Path(__file__).resolve().parents[1]
FAULTS = (
    FaultSpec(600.0, FaultKind.OVER_TEMPERATURE, "cab-1", 900.0, 70.0),
    FaultSpec(900.0, FaultKind.LINK_PARTITION, "opcua:cab-2", 900.0, None, "upload-during-partition"),
    FaultSpec(960.0, FaultKind.REUPLOAD, "central", 0.0, 42, "upload-during-partition"),
    FaultSpec(1500.0, FaultKind.KILL_EDGE, "cab-3", 600.0),
    FaultSpec(2400.0, FaultKind.KILL_CENTRAL, "central", 900.0),
    FaultSpec(2700.0, FaultKind.LINK_BLACKHOLE, "modbus:cab-2", 300.0),
    FaultSpec(3000.0, FaultKind.DELAY, "cab-1", 300.0, 200.0),
    FaultSpec(3600.0, FaultKind.SOC_CHANGE, "cab-3", 0.0, 60.0),
    FaultSpec(3900.0, FaultKind.LIMIT_DERATE, "cab-2", 1200.0, 50.0),
    FaultSpec(4200.0, FaultKind.STATE_FAULT, "cab-2", 600.0),
)


def test_two_hour_campaign_end_to_end(tmp_path: Path) -> None:
    schedule = CampaignSchedule(5, 2 / 24, ("cab-1", "cab-2", "cab-3"), FAULTS)
    replay = tmp_path / "replay.json"
    replay.write_text(schedule.to_json({"speed": 360.0}), encoding="utf-8")
    # The example site with HTTPS for the central's API: the campaign talks to it over TLS, verified
    # against the PKI `ems certs` makes for the campaign.
    site = tmp_path / "site.toml"
    example = (REPO / "examples" / "site.toml").read_text(encoding="utf-8")
    site.write_text(
        example.replace("# tls_cert_file", "tls_cert_file").replace("# tls_key_file", "tls_key_file")
    )
    out = tmp_path / "out"
    args = ["soak", "--replay-from", str(replay), "--out", str(out), "--json", "--site", str(site)]
    result = subprocess.run(
        [sys.executable, "-m", "ems", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(line) == {"passed", "days", "seed", "faults_injected", "invariants", "wall_s"}
    assert set(line["invariants"]) == set(NAMES)
    assert line["seed"] == 5 and line["faults_injected"] == 9  # the re-upload is an event
    summary = json.loads((out / "summary.json").read_text())
    failed = {k: v["detail"] for k, v in line["invariants"].items() if not v["passed"]}
    assert line["passed"], f"{failed}\n{result.stderr[-3000:]}"
    assert result.returncode == 0
    assert (out / "timeline.png").stat().st_size > 10_000
    by_kind = {f["kind"]: f for f in summary["faults"]}
    battery = by_kind["over_temperature"]
    assert battery["reaction_ms"] is not None or battery["not_timed_because"], battery
    assert any("killed with SIGKILL" in a for a in by_kind["kill_central"]["actions"])
    assert any("integrity" in a and a.endswith("ok") for a in by_kind["kill_edge"]["actions"])
    assert any(u["http_status"] == 201 for u in summary["uploads"])  # over HTTPS
    assert "tls_cert_file" in (out / "site-central.toml").read_text(encoding="utf-8")
    assert summary["kills"] == 2 and summary["crashes"] == []
    assert all(v["end"] is not None for v in summary["resources"].values())


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "ems", "soak", "--days", "1", "--seed", "1", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120.0
        for line in process.stdout:
            if "all processes up" in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not children_of(out), children_of(out)


def children_of(out: Path) -> list[str]:
    """Processes whose command line names the campaign's output directory (its children do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(out) in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found
