"""What became of a schedule pushed to one edge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class PushStatus(StrEnum):
    """``accepted`` by the edge, ``refused`` by it (with its reason), or ``unreachable`` (no answer)."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class PushOutcome:
    """One push to one edge: status, the edge's message or the failure, when (EMS clock) and how long."""

    cabinet_id: str
    status: PushStatus
    message: str
    at: datetime  # when the outcome was known [UTC, EMS clock]
    duration_ms: float  # from the start of the push to the outcome [ms, wall time]
    schedule_id: str = ""
