"""The demo's scenarios: each a small timeline of actions at simulated times within the demo window.

Times are fractions of the demo window (so a 2-hour test and the 24-hour demo tell the same story), snapped
to whole simulated minutes. The runner performs each action when the shared simulated clock reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class ActionKind(StrEnum):
    KILL_CENTRAL = "kill_central"  # SIGKILL the central process (a crash, no clean shutdown)
    START_CENTRAL = "start_central"  # start it again on the same database
    UPLOAD = "upload"  # upload the day-ahead file for the rest of the window
    KILL_EDGE = "kill_edge"  # SIGKILL one edge process
    START_EDGE = "start_edge"  # start it again on the same state directory
    INJECT_OVER_TEMPERATURE = "inject_over_temperature"  # simulator: cabinet temperature above the limit
    CLEAR_FAULT = "clear_fault"  # simulator: the cabinet back to normal
    RESET_INTERLOCK = "reset_interlock"  # operator: ResetInterlock on the cabinet's edge


@dataclass(frozen=True)
class Action:
    """One step of a scenario: ``kind`` at ``at_fraction`` of the demo window, on ``cabinet_index``."""

    at_fraction: float
    kind: ActionKind
    cabinet_index: int | None = None  # index into the site's cabinets; negative counts from the end


@dataclass(frozen=True)
class Scenario:
    """A named timeline and what the operator should look for in the report."""

    name: str
    title: str
    look_for: str
    actions: tuple[Action, ...] = ()
    # Fraction of the window the first day-ahead upload covers (1.0: all of it). The central-outage
    # scenario uploads only the first part, so the edges' schedules run out while the central is down.
    first_upload_fraction: float = 1.0

    def cabinet_ids(self, site_cabinet_ids: Sequence[str]) -> dict[int, str]:
        """The cabinet id each action's ``cabinet_index`` means on this site."""
        resolved: dict[int, str] = {}
        for action in self.actions:
            if action.cabinet_index is not None:
                resolved[action.cabinet_index] = site_cabinet_ids[action.cabinet_index]
        return resolved


NORMAL = Scenario(
    name="normal",
    title="Normal day",
    look_for="Every cabinet follows the plan in schedule mode all day; actual power tracks the planned "
    "setpoints; grid import stays under the PoC limit; realised cost is close to planned cost.",
)

CENTRAL_OUTAGE = Scenario(
    name="central-outage",
    title="Central outage",
    look_for="The central process is killed at 25 % of the day. The edges keep running the schedule they "
    "hold (mode schedule) until it ends at 50 %, then fall back on their own (mode fallback, never "
    "tripped). The central is restarted at 60 % and the rest of the day-ahead is uploaded: the edges take "
    "the new plan and return to schedule mode.",
    actions=(
        Action(0.25, ActionKind.KILL_CENTRAL),
        Action(0.60, ActionKind.START_CENTRAL),
        Action(0.60, ActionKind.UPLOAD),
    ),
    first_upload_fraction=0.5,
)

EDGE_RESTART = Scenario(
    name="edge-restart",
    title="Edge restart",
    look_for="The last cabinet's edge is killed with SIGKILL at 35 % of the day and restarted at 45 %. "
    "While it is down the device reverts to 0 kW on its own (device-side revert timeout) and the central "
    "records the pushes as unreachable; after the restart the edge restores its schedule from its local "
    "SQLite store and is back in schedule mode at once. The other cabinets never notice.",
    actions=(
        Action(0.35, ActionKind.KILL_EDGE, -1),
        Action(0.45, ActionKind.START_EDGE, -1),
    ),
)

DEVICE_FAULT = Scenario(
    name="device-fault",
    title="Device fault",
    look_for="An over-temperature is injected into the first cabinet's simulated device at 30 % of the day. "
    "Its edge trips the interlock within 2 control cycles (power to 0 kW, mode tripped); the other "
    "cabinets carry on with their schedules. The fault clears at 40 %, an operator resets the interlock at "
    "45 %, and the cabinet returns to schedule mode.",
    actions=(
        Action(0.30, ActionKind.INJECT_OVER_TEMPERATURE, 0),
        Action(0.40, ActionKind.CLEAR_FAULT, 0),
        Action(0.45, ActionKind.RESET_INTERLOCK, 0),
    ),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (NORMAL, CENTRAL_OUTAGE, EDGE_RESTART, DEVICE_FAULT)}


@dataclass(frozen=True)
class TimedAction:
    """An action resolved onto the simulated timeline."""

    at_s: float  # simulated Unix time [s]
    kind: ActionKind
    cabinet_id: str | None


def timeline(
    scenario: Scenario, window_start_s: float, window_s: float, cabinet_ids: Sequence[str]
) -> list[TimedAction]:
    """The scenario's actions at simulated times (whole minutes) within ``[start, start + window_s)``."""
    resolved: list[TimedAction] = []
    for action in scenario.actions:
        offset_s = round(action.at_fraction * window_s / 60.0) * 60.0
        cabinet_id = None if action.cabinet_index is None else cabinet_ids[action.cabinet_index]
        resolved.append(TimedAction(window_start_s + offset_s, action.kind, cabinet_id))
    return sorted(resolved, key=lambda a: a.at_s)
