"""The campaign report: the invariants, summary.json, timeline.png and, on failure, replay.json."""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.demo.records import Sample
from lab.soak import invariants
from lab.soak.records import CentralState, FaultRun, SoakRecord
from lab.soak.schedule import CampaignSchedule

if TYPE_CHECKING:
    from lab.soak.campaign import SoakOptions

REPLAY_MARGIN_S = 3600.0  # a replay runs this long past the first violation


def evaluate(
    record: SoakRecord, central: CentralState, bounds: invariants.Bounds, period_s: float
) -> list[invariants.InvariantResult]:
    spans = list(record.spans)
    return [
        invariants.poc_limits(record.samples, bounds),
        invariants.device_fault_safe_state(record.faults, bounds),
        invariants.no_stale_schedule(record.samples, central, record.holds, bounds),
        invariants.latest_plan_after_heal(record.faults, record.samples, central, spans, bounds),
        invariants.uploads_planned(record.uploads, central),
        invariants.database_integrity(record.integrity, record.kills),
        invariants.resource_growth(record.resources, [*record.leftover_processes, *record.crashes], bounds),
        invariants.cost_vs_plan(record.samples, record.faults, central, period_s, bounds),
    ]


def utc(at_s: float) -> str:
    return datetime.fromtimestamp(round(at_s, 3), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _affected(run: FaultRun, cabinet_ids: Sequence[str]) -> list[str]:
    name = run.spec.target.split(":", 1)[1] if ":" in run.spec.target else run.spec.target
    return [name] if name in cabinet_ids else list(cabinet_ids)


def _modes_during(
    samples: Sequence[Sample], times: Sequence[float], cabinet_id: str, start: float, end: float
) -> str:
    sequence: list[str] = []
    for sample in samples[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]:
        cabinet = sample.cabinets.get(cabinet_id)
        if cabinet is None:
            continue
        mode = cabinet.mode + (
            f" ({cabinet.interlock_reason.split(':')[0]})" if cabinet.interlock_reason else ""
        )
        if not sequence or sequence[-1] != mode:
            sequence.append(mode)
    return " -> ".join(sequence[:8]) + (" -> ..." if len(sequence) > 8 else "")


def fault_details(record: SoakRecord, cabinet_ids: Sequence[str], grace_s: float) -> list[dict[str, Any]]:
    """Per fault: kind, target, start, end, value and what the campaign and the system did."""
    times = [s.at_s for s in record.samples]
    details = []
    for run in sorted(record.faults, key=lambda r: r.started_at_s):
        end = run.ended_at_s if run.ended_at_s is not None else run.started_at_s
        modes = {
            c: _modes_during(record.samples, times, c, run.started_at_s, end + grace_s)
            for c in _affected(run, cabinet_ids)
        }
        details.append(
            {
                "kind": run.spec.kind.value,
                "target": run.spec.target,
                "value": run.spec.value,
                "group": run.spec.group,
                "start": utc(run.started_at_s),
                "end": utc(run.ended_at_s) if run.ended_at_s is not None else None,
                "reaction_ms": None if run.reaction_ms is None else round(run.reaction_ms, 1),
                "reaction_timed_at_device": run.reaction_at_device,
                "not_timed_because": run.exempt or None,
                "failed": run.failed or None,
                "actions": run.actions,
                "modes": modes,
            }
        )
    return details


def _resources(record: SoakRecord) -> dict[str, Any]:
    """RSS, threads and fds of each process incarnation at its first and last sample."""
    result: dict[str, Any] = {}
    for sample in record.resources:
        key = f"{sample.process} (pid {sample.pid})"
        entry = result.setdefault(key, {"start": None, "end": None})
        shown = {
            "wall_s": round(sample.wall_s, 1),
            "rss_mb": round(sample.rss_kb / 1024, 1),
            "threads": sample.threads,
            "fds": sample.fds,
        }
        if entry["start"] is None:
            entry["start"] = shown
        entry["end"] = shown
    return result


def write_report(
    options: SoakOptions,
    record: SoakRecord,
    central: CentralState,
    bounds: invariants.Bounds,
    period_s: float,
    start_s: float,
) -> dict[str, Any]:
    """Evaluate, write ``summary.json`` (and ``replay.json`` on failure) and the plot; the summary."""
    results = evaluate(record, central, bounds, period_s)
    passed = all(r.passed for r in results)
    schedule = options.schedule
    faults = [r for r in record.faults if r.spec.is_fault]
    summary: dict[str, Any] = {
        "passed": passed,
        "days": schedule.days,
        "seed": schedule.seed,
        "faults_injected": len(faults),
        "invariants": {r.name: r.as_dict() for r in results},
        "wall_s": round(record.wall_time_s, 1),
        "speed": options.speed,
        "sample_period_s": period_s,
        "startup_wall_s": round(record.startup_wall_s, 1),
        "samples": len(record.samples),
        "replayed_from": str(options.replayed_from) if options.replayed_from else None,
        "bounds": {k: v for k, v in bounds.__dict__.items()},
        "faults_by_kind": _by_kind(faults),
        "uploads": [u.__dict__ for u in record.uploads],
        "resets": [r.__dict__ for r in record.resets],
        "kills": record.kills,
        "integrity_checks": len(record.integrity),
        "crashes": record.crashes,
        "resources": _resources(record),
        "plans": len(central.plans),
        "faults": fault_details(record, options.site.cabinet_ids, bounds.observation_grace_s),
    }
    out = options.out_dir
    if not passed:
        first = min((r.first_violation_s for r in results if r.first_violation_s is not None), default=None)
        summary["replay"] = str(
            write_replay(out / "replay.json", schedule, results, first, start_s, options.speed)
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    from lab.soak.plot import write_timeline

    write_timeline(out / "timeline.png", record, options.site.cabinet_ids, start_s)
    return summary


def _by_kind(faults: Sequence[FaultRun]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in faults:
        counts[run.spec.kind.value] = counts.get(run.spec.kind.value, 0) + 1
    return dict(sorted(counts.items()))


def write_replay(
    path: Path,
    schedule: CampaignSchedule,
    results: Sequence[invariants.InvariantResult],
    first_violation_s: float | None,
    start_s: float,
    speed: float,
) -> Path:
    """The seed and the exact faults up to an hour past the first violation (all of them when unknown)."""
    cut = (
        schedule
        if first_violation_s is None
        else schedule.until(first_violation_s - start_s + REPLAY_MARGIN_S)
    )
    failed = {r.name: r.detail for r in results if not r.passed}
    path.write_text(cut.to_json({"speed": speed, "failed": failed}), encoding="utf-8")
    return path
