"""The scenario checks: what each scenario must show, evaluated on the run's samples and records.

Every check is a named pass/fail with a one-line detail, written into ``summary.json`` (``checks``); the
demo exits non-zero when one fails, and the tests assert on them and on the raw numbers behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lab.demo.records import OFFLINE, RunRecord, Sample
from lab.demo.scenarios import ActionKind, TimedAction

TRANSIENT_MODES = frozenset({OFFLINE, "starting"})
REACTION_CYCLES_MAX = 2.0  # the interlock acts within 2 control cycles ...
REACTION_POLL_ALLOWANCE = 1.0  # ... plus one poll period of the measurement itself
RECOVERY_SAMPLES_MAX = 10  # after a reset the cabinet is back in schedule within this many samples
OBSERVATION_LAG_WALL_S = 0.5  # edge telemetry reaches the demo's OPC UA session within this [wall s]


def observation_grace_s(sample_period_s: float, speed: float) -> float:
    """Simulated time after an event before its effect must show in the samples [s]: the edge's telemetry
    update, the OPC UA publishing interval and one sample, at least two sample periods."""
    return max(2.0 * sample_period_s, OBSERVATION_LAG_WALL_S * speed)


IMPORT_OVER_LIMIT_RUN_MAX = 1  # a single sample over the limit is a transient; two in a row are not


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collapsed_modes(
    samples: Sequence[Sample], cabinet_id: str, ignore: frozenset[str] = TRANSIENT_MODES
) -> list[str]:
    """The cabinet's modes in order, consecutive repeats merged, transient modes left out."""
    sequence: list[str] = []
    for sample in samples:
        mode = sample.cabinets[cabinet_id].mode
        if mode in ignore:
            continue
        if not sequence or sequence[-1] != mode:
            sequence.append(mode)
    return sequence


def _is_subsequence(needle: Sequence[str], haystack: Sequence[str]) -> bool:
    position = 0
    for item in haystack:
        if position < len(needle) and item == needle[position]:
            position += 1
    return position == len(needle)


def grid_checks(
    samples: Sequence[Sample], import_limit_kw: float, export_limit_kw: float, tolerance_kw: float
) -> list[Check]:
    """Import and export stay within the PoC limits (one sample over is tolerated as a transient)."""
    checks = []
    for name, limit_kw, sign in (("import", import_limit_kw, 1.0), ("export", export_limit_kw, -1.0)):
        run = longest = 0
        worst_kw = 0.0
        for sample in samples:
            value = None if sample.grid_kw is None else sign * sample.grid_kw
            over = value is not None and value > limit_kw + tolerance_kw
            run = run + 1 if over else 0
            longest = max(longest, run)
            if value is not None:
                worst_kw = max(worst_kw, value)
        checks.append(
            Check(
                f"grid {name} within the PoC limit",
                longest <= IMPORT_OVER_LIMIT_RUN_MAX,
                f"peak {name} {worst_kw:.1f} kW, limit {limit_kw:g} kW; longest run over the limit: "
                f"{longest} sample(s), at most {IMPORT_OVER_LIMIT_RUN_MAX} allowed",
            )
        )
    return checks


def never_tripped(samples: Sequence[Sample], cabinet_ids: Sequence[str]) -> Check:
    tripped = sorted({c for s in samples for c in cabinet_ids if s.cabinets[c].mode == "tripped"})
    return Check(
        "no cabinet tripped",
        not tripped,
        "no edge was ever in mode tripped" if not tripped else f"tripped: {', '.join(tripped)}",
    )


def mostly_in_schedule(samples: Sequence[Sample], cabinet_ids: Sequence[str], min_share: float) -> Check:
    shares = {}
    for cabinet_id in cabinet_ids:
        known = [s for s in samples if s.cabinets[cabinet_id].mode not in TRANSIENT_MODES]
        in_schedule = sum(1 for s in known if s.cabinets[cabinet_id].mode == "schedule")
        shares[cabinet_id] = in_schedule / len(samples) if samples else 0.0
    worst = min(shares.values()) if shares else 0.0
    detail = ", ".join(f"{c} {100 * v:.0f} %" for c, v in shares.items())
    return Check(
        f"every cabinet in schedule mode >= {100 * min_share:.0f} % of the window",
        worst >= min_share,
        f"share of samples in schedule mode: {detail}",
    )


def _first_at(timeline: Sequence[TimedAction], kind: ActionKind) -> TimedAction | None:
    return next((a for a in timeline if a.kind == kind), None)


def central_outage_checks(
    samples: Sequence[Sample],
    cabinet_ids: Sequence[str],
    schedule_end_s: float,
    timeline: Sequence[TimedAction],
    grace_s: float,
) -> list[Check]:
    """Edges: schedule, then fallback when the schedule ends, then schedule again after the restart."""
    checks = [never_tripped(samples, cabinet_ids)]
    kill = _first_at(timeline, ActionKind.KILL_CENTRAL)
    restart = _first_at(timeline, ActionKind.START_CENTRAL)
    for cabinet_id in cabinet_ids:
        sequence = collapsed_modes(samples, cabinet_id)
        checks.append(
            Check(
                f"{cabinet_id}: modes schedule -> fallback -> schedule",
                _is_subsequence(["schedule", "fallback", "schedule"], sequence) and "tripped" not in sequence,
                f"mode sequence {' -> '.join(sequence) or '(none)'}",
            )
        )
        if kill is not None:
            # While the central is down and the schedule still runs, the edge stays in schedule mode.
            held = [
                s.cabinets[cabinet_id].mode
                for s in samples
                if kill.at_s + grace_s <= s.at_s < schedule_end_s - grace_s
            ]
            checks.append(
                Check(
                    f"{cabinet_id}: keeps its schedule while the central is down",
                    bool(held) and all(m == "schedule" for m in held),
                    f"{len(held)} samples between the kill and the schedule's end: {_counts(held)}",
                )
            )
            after_end = [
                s.cabinets[cabinet_id].mode
                for s in samples
                if schedule_end_s + grace_s
                <= s.at_s
                < (restart.at_s if restart else schedule_end_s + 10 * grace_s)
            ]
            checks.append(
                Check(
                    f"{cabinet_id}: falls back when the schedule ends",
                    bool(after_end) and all(m == "fallback" for m in after_end),
                    f"{len(after_end)} samples after the schedule's end, before the restart: "
                    f"{_counts(after_end)}",
                )
            )
    return checks


def edge_restart_checks(
    samples: Sequence[Sample],
    cabinet_ids: Sequence[str],
    timeline: Sequence[TimedAction],
    restored_schedule_id: str | None,
    restore_detail: str,
) -> list[Check]:
    kill = _first_at(timeline, ActionKind.KILL_EDGE)
    start = _first_at(timeline, ActionKind.START_EDGE)
    if kill is None or start is None or kill.cabinet_id is None:
        return [Check("edge-restart timeline", False, "the scenario has no kill/start of an edge")]
    victim = kill.cabinet_id
    others = [c for c in cabinet_ids if c != victim]
    checks = [never_tripped(samples, cabinet_ids)]
    before = [s for s in samples if s.at_s < kill.at_s]
    schedule_before = next(
        (s.cabinets[victim].schedule_id for s in reversed(before) if s.cabinets[victim].mode == "schedule"),
        "",
    )
    after = [s for s in samples if s.at_s >= start.at_s]
    first_back = next((s for s in after if s.cabinets[victim].mode not in TRANSIENT_MODES), None)
    if first_back is None:
        detail = "the edge never answered after the restart"
    else:
        # The edge is a fresh process: its first answer comes after the interpreter and OPC UA start-up.
        waited_s = first_back.at_s - start.at_s
        detail = (
            f"first mode after the restart: {first_back.cabinets[victim].mode} "
            f"(schedule {first_back.cabinets[victim].schedule_id!r}), {waited_s / 60:.0f} simulated minutes "
            "after the restart command"
        )
    checks.append(
        Check(
            f"{victim}: in schedule mode as soon as it is back",
            first_back is not None and first_back.cabinets[victim].mode == "schedule",
            detail,
        )
    )
    checks.append(
        Check(
            f"{victim}: restored its schedule from its local store",
            restored_schedule_id is not None
            and (not schedule_before or restored_schedule_id == schedule_before),
            f"{restore_detail}; the last schedule seen before the kill: {schedule_before or '(none)'}",
        )
    )
    for cabinet_id in others:
        during = [s.cabinets[cabinet_id].mode for s in samples if kill.at_s <= s.at_s]
        checks.append(
            Check(
                f"{cabinet_id}: carries on in schedule mode",
                all(m == "schedule" for m in during),
                f"{len(during)} samples from the kill on: {_counts(during)}",
            )
        )
    return checks


def device_fault_checks(
    samples: Sequence[Sample],
    cabinet_ids: Sequence[str],
    timeline: Sequence[TimedAction],
    record: RunRecord,
    grace_s: float,
) -> list[Check]:
    inject = _first_at(timeline, ActionKind.INJECT_OVER_TEMPERATURE)
    reset = _first_at(timeline, ActionKind.RESET_INTERLOCK)
    if inject is None or reset is None or inject.cabinet_id is None:
        return [Check("device-fault timeline", False, "the scenario has no fault injection and reset")]
    victim = inject.cabinet_id
    checks: list[Check] = []
    reaction = next((r for r in record.fault_reactions if r.cabinet_id == victim), None)
    if reaction is None or reaction.reaction_ms is None:
        checks.append(
            Check(
                f"{victim}: interlock brings the device to 0 kW",
                False,
                "the device never reached 0 kW after the injection",
            )
        )
    else:
        allowed_ms = (
            REACTION_CYCLES_MAX * reaction.cycle_ms + REACTION_POLL_ALLOWANCE * reaction.poll_period_ms
        )
        checks.append(
            Check(
                f"{victim}: interlock trips within {REACTION_CYCLES_MAX:g} cycles",
                reaction.reaction_ms <= allowed_ms,
                f"safe state (0 W, DISCONNECT) at the device {reaction.reaction_ms:.0f} ms after injection "
                f"({reaction.reaction_cycles:.2f} cycles of {reaction.cycle_ms:g} ms; allowed "
                f"{allowed_ms:.0f} ms incl. one {reaction.poll_period_ms:g} ms poll)",
            )
        )
    during = [s.cabinets[victim].mode for s in samples if inject.at_s + grace_s <= s.at_s < reset.at_s]
    checks.append(
        Check(
            f"{victim}: tripped until the reset",
            bool(during) and all(m == "tripped" for m in during),
            f"{len(during)} samples between the injection and the reset: {_counts(during)}",
        )
    )
    after = [s for s in samples if s.at_s >= reset.at_s]
    back = next((i for i, s in enumerate(after) if s.cabinets[victim].mode == "schedule"), None)
    checks.append(
        Check(
            f"{victim}: back in schedule mode after the reset",
            back is not None and back <= RECOVERY_SAMPLES_MAX,
            "never back in schedule mode" if back is None else f"{back} samples after the reset",
        )
    )
    for cabinet_id in cabinet_ids:
        if cabinet_id == victim:
            continue
        modes = [s.cabinets[cabinet_id].mode for s in samples if s.at_s >= inject.at_s]
        checks.append(
            Check(
                f"{cabinet_id}: carries on in schedule mode",
                all(m == "schedule" for m in modes),
                f"{len(modes)} samples from the injection on: {_counts(modes)}",
            )
        )
    return checks


def _counts(modes: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for mode in modes:
        counts[mode] = counts.get(mode, 0) + 1
    return ", ".join(f"{m} x{n}" for m, n in counts.items()) or "none"
