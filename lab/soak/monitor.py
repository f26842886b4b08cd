"""What the campaign reads behind the processes' backs: /proc, SQLite files after a kill, the central's DB."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from lab.soak.records import CentralState, PlanInfo, PushInfo, ResourceSample
from shared.dayahead import DayAhead, parse_dayahead_json
from shared.errors import InputError


def _proc_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS kB, Threads) of a live process, None when it is gone."""
    rss = threads = None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return (rss or 0, threads or 0)


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def process_groups() -> dict[int, int]:
    """Number of live processes per process group id."""
    counts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != "Z":
            pgrp = int(fields[2])
            counts[pgrp] = counts.get(pgrp, 0) + 1
    return counts


def sample_resources(processes: Mapping[str, int], wall_s: float) -> list[ResourceSample]:
    """RSS, threads, open file descriptors and process-group size of every named live process."""
    groups = process_groups()
    samples = []
    for name, pid in processes.items():
        status = _proc_status(pid)
        if status is None:
            continue
        samples.append(
            ResourceSample(wall_s, name, pid, status[0], status[1], _fd_count(pid), groups.get(pid, 0))
        )
    return samples


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    # A plain connection (not mode=ro): the WAL a killed process left behind is recovered on open.
    connection = sqlite3.connect(path, timeout=10.0)
    try:
        yield connection
    finally:
        connection.close()


def integrity_check(path: Path) -> str:
    """``ok``, or what ``PRAGMA integrity_check`` (or opening the file) said; a missing file is ``ok``."""
    if not path.exists():
        return "ok"
    try:
        with _connect(path) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        return f"cannot check: {exc}"
    messages = [str(row[0]) for row in rows]
    return "ok" if messages == ["ok"] else "; ".join(messages)[:300]


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _plan_series(plan_json: str) -> tuple[tuple[float, ...], dict[str, tuple[float, ...]], float]:
    document = json.loads(plan_json)
    cabinets = {c: tuple(float(v) for v in p["setpoint_kw"]) for c, p in document.get("cabinets", {}).items()}
    return (
        tuple(float(v) for v in document.get("grid_kw", [])),
        cabinets,
        float(document["interval_minutes"]) * 60,
    )


def read_central_state(path: Path, with_series: bool) -> CentralState:
    """Uploads, plans and push outcomes from the central's database (empty when it does not exist yet).

    ``with_series`` also reads every plan's grid power and setpoints and every upload's day-ahead (the
    cost invariant needs them; the checks while running do not).
    """
    if not path.exists():
        return CentralState()
    with _connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "plans" not in tables:
            return CentralState()
        upload_columns = {row[1] for row in db.execute("PRAGMA table_info(uploads)")}
        superseded: frozenset[str] = frozenset()
        if "superseded_by" in upload_columns:
            superseded = frozenset(
                str(r[0]) for r in db.execute("SELECT upload_id FROM uploads WHERE superseded_by IS NOT NULL")
            )
        uploads = db.execute("SELECT upload_id, dayahead_json FROM uploads ORDER BY seq").fetchall()
        plan_rows = db.execute(
            "SELECT seq, plan_id, upload_id, status, start, steps, stored_at, plan_json"
            " FROM plans ORDER BY seq"
        ).fetchall()
        push_rows = db.execute(
            "SELECT plan_id, cabinet_id, status, at FROM push_outcomes ORDER BY seq"
        ).fetchall()
    plans = []
    for seq, plan_id, upload_id, status, start, steps, stored_at, plan_json in plan_rows:
        grid, setpoints, interval_s = _plan_series(plan_json)
        start_s = _seconds(start)
        plans.append(
            PlanInfo(
                int(seq),
                str(plan_id),
                str(upload_id),
                str(status),
                start_s,
                start_s + int(steps) * interval_s,
                interval_s,
                _seconds(stored_at),
                grid if with_series else (),
                setpoints if with_series else {},
            )
        )
    dayaheads: dict[str, DayAhead] = {}
    if with_series:
        for upload_id, dayahead_json in uploads:
            with contextlib.suppress(InputError, ValueError):
                dayaheads[str(upload_id)] = parse_dayahead_json(dayahead_json)
    return CentralState(
        tuple(str(u[0]) for u in uploads),
        superseded,
        tuple(plans),
        tuple(PushInfo(str(p), str(c), str(s), _seconds(a)) for p, c, s, a in push_rows),
        dayaheads,
    )
