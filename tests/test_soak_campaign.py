"""A short real campaign (2 simulated hours): the real processes, proxies and faults, replayed from a file.

The file holds one of the important kinds each (an edge and the central killed, a battery fault, an OPC UA
partition with an upload during it, a Modbus blackhole, a device delay, a SoC jump and a derating), so the
run exercises every invariant; it is also the ``--replay-from`` path end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "ems", "soak", "--replay-from", str(replay), "--out", str(out), "--json"],
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
    assert any(u["http_status"] == 201 for u in summary["uploads"])
    assert summary["kills"] == 2 and summary["crashes"] == []
    assert all(v["end"] is not None for v in summary["resources"].values())
