"""Reading what the edges and the central left in their SQLite files (queries only, after they stopped).

The edge's event log (``STATE_DIR/CABINET_ID.sqlite3``: docs/edge.md) holds its trips, resets, mode
changes and restored schedules, read with the edge's own reader (kinds and subjects, never message text);
the central's database (``[central] database_path``, table
``push_outcomes``: docs/central.md) every push outcome, across restarts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from edge.persistence import MAX_EVENTS_KEPT, Event, read_events
from lab.demo.records import PushCounts


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    # A plain connection, not mode=ro: a WAL file left by a killed process must be recovered on open.
    connection = sqlite3.connect(path, timeout=5.0)
    try:
        yield connection
    finally:
        connection.close()


def edge_events(state_dir: Path, cabinet_id: str) -> list[Event]:
    """An edge's event log in order; empty when its file is missing or unreadable."""
    try:
        return read_events(state_dir / f"{cabinet_id}.sqlite3", limit=MAX_EVENTS_KEPT)
    except (OSError, sqlite3.Error):
        return []


def push_counts(database: Path, cabinet_ids: Sequence[str]) -> dict[str, PushCounts]:
    """Push outcomes per cabinet from the central's database (zero counts when it is missing)."""
    counts = {cabinet_id: PushCounts() for cabinet_id in cabinet_ids}
    if not database.is_file():
        return counts
    try:
        with _read_only(database) as db:
            rows = db.execute(
                "SELECT cabinet_id, status, COUNT(*) FROM push_outcomes GROUP BY cabinet_id, status"
            ).fetchall()
    except sqlite3.Error:
        return counts
    for cabinet_id, status, count in rows:
        entry = counts.setdefault(str(cabinet_id), PushCounts())
        if status == "accepted":
            entry.accepted += int(count)
        elif status == "refused":
            entry.refused += int(count)
        else:
            entry.unreachable += int(count)
    return counts
