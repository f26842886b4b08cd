"""The in-process event hub of the central: every state change the console shows, as numbered events.

Publishers (all on the event loop, never blocking): edge telemetry (coalesced: at most one ``telemetry``
event per cabinet every ``coalesce_s``), cabinet state changes (``cabinet_state``: schedule / fallback /
holding / tripped / starting / offline, published at once), edge connects and disconnects, uploads, plans
(with trigger and status), planning runs, superseded uploads, push outcomes and interlock resets.

The hub keeps the newest ``buffer_size`` events in a ring buffer with monotonically increasing ids (a
stream resumes after ``Last-Event-ID`` from it) and hands every event to each subscriber's bounded queue;
a subscriber that falls behind loses its queue and is told to start again from a fresh snapshot, so a
slow client never makes the central's memory grow. Events other than ``telemetry`` are also handed to
``record`` (the events history, :mod:`central.service.event_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.clock import Clock
from shared.edge_api import EdgeMode, EdgeTelemetry
from shared.timeutil import format_utc

log = logging.getLogger(__name__)

DEFAULT_BUFFER_SIZE = 2000
DEFAULT_QUEUE_SIZE = 500
DEFAULT_COALESCE_S = 0.25


class EventKind(StrEnum):
    """The ``type`` of an event on the stream and in the history."""

    SNAPSHOT = "snapshot"  # stream only: the whole state, first on every (re)connection
    TELEMETRY = "telemetry"  # stream only: a cabinet's live values (coalesced)
    CABINET_STATE = "cabinet_state"  # a cabinet's state changed (mode, hold, trip, offline)
    EDGE_CONNECTED = "edge_connected"
    EDGE_DISCONNECTED = "edge_disconnected"
    UPLOAD = "upload"  # a day-ahead upload was accepted
    UPLOAD_SUPERSEDED = "upload_superseded"  # a newer upload arrived before its optimization started
    PLAN = "plan"  # a plan was stored and became the active one
    RUN = "run"  # a planning run ended (trigger, ok, message)
    PUSH = "push"  # the outcome of pushing a schedule to one edge
    RESET = "reset"  # an interlock reset was asked; the edge's answer


LIVE_ONLY = frozenset({EventKind.SNAPSHOT, EventKind.TELEMETRY})


class CabinetState(StrEnum):
    """What the console shows for a cabinet, from its connection and telemetry."""

    STARTING = "starting"
    SCHEDULE = "schedule"
    FALLBACK = "fallback"
    HOLDING = "holding"  # an interlock holds it at 0 kW; it resumes by itself
    TRIPPED = "tripped"  # latched; needs a reset once the cause is gone
    OFFLINE = "offline"  # the central has no session to its edge


def cabinet_state(connected: bool, telemetry: EdgeTelemetry | None) -> CabinetState:
    if not connected or telemetry is None:
        return CabinetState.OFFLINE
    if telemetry.mode is EdgeMode.TRIPPED:
        return CabinetState.TRIPPED
    if telemetry.interlock_active:
        return CabinetState.HOLDING
    return CabinetState(telemetry.mode.value)


def telemetry_fields(t: EdgeTelemetry) -> dict[str, Any]:
    return {
        "soc_pct": round(t.soc_pct, 3),
        "active_power_kw": round(t.active_power_kw, 3),
        "setpoint_kw": round(t.setpoint_kw, 3),
        "charge_limit_kw": round(t.charge_limit_kw, 3),
        "discharge_limit_kw": round(t.discharge_limit_kw, 3),
        "mode": t.mode.value,
        "schedule_id": t.schedule_id,
        "interlock_active": t.interlock_active,
        "interlock_reason": t.interlock_reason,
        "cycle_time_p99_ms": round(t.cycle_time_p99_ms, 3),
    }


@dataclass(frozen=True)
class Event:
    """One event: ``seq`` increases by one per event of this hub; ``at`` is the EMS clock."""

    seq: int
    kind: EventKind
    at: datetime
    cabinet_id: str | None
    data: Mapping[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "id": self.seq,
            "type": self.kind.value,
            "at": format_utc(self.at),
            "cabinet_id": self.cabinet_id,
            **self.data,
        }


@dataclass(eq=False)
class Subscriber:
    """One stream's bounded queue. When it is full, it is emptied and gets a ``snapshot`` marker: the
    stream then sends a fresh snapshot instead of the events it missed."""

    queue: asyncio.Queue[Event]
    overflows: int = 0
    last_sent_s: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Resume:
    """What a reconnecting stream gets: the events after its id, or None (it needs a snapshot)."""

    events: tuple[Event, ...] | None


class EventHub:
    """Numbered events, a ring buffer and the subscribers' bounded queues."""

    def __init__(
        self,
        clock: Clock,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        coalesce_s: float = DEFAULT_COALESCE_S,
        record: Callable[[Event], None] | None = None,
    ) -> None:
        self.clock = clock
        self.boot = secrets.token_hex(4)  # a stream id from another run of the service is not resumed
        self.queue_size = queue_size
        self.coalesce_s = coalesce_s
        self._record = record
        self._seq = 0
        self._buffer: deque[Event] = deque(maxlen=buffer_size)
        self._subscribers: set[Subscriber] = set()
        self._pending: dict[str, EdgeTelemetry] = {}
        self._states: dict[str, CabinetState] = {}
        self._connected: dict[str, bool] = {}
        self._connected_source: Callable[[], Mapping[str, bool]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.published_total = 0
        self.overflows_total = 0

    # ------------------------------------------------------------------------------------ life cycle

    def start(self, connected: Callable[[], Mapping[str, bool]]) -> None:
        """Start the coalescing tick (telemetry flush and connection watch)."""
        self._connected_source = connected
        self._task = asyncio.create_task(self._tick(), name="event-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.coalesce_s)
            try:
                self.flush()
            except Exception:  # a bug here must not end the live view for good
                log.exception("event hub: flush failed")

    def flush(self) -> None:
        """Publish pending telemetry and connection changes (called by the tick)."""
        source = self._connected_source
        if source is not None:
            for cabinet_id, now_connected in source().items():
                before = self._connected.get(cabinet_id)
                if before == now_connected:
                    continue
                self._connected[cabinet_id] = now_connected
                if before is None and not now_connected:
                    continue  # not connected yet at start: not an event
                kind = EventKind.EDGE_CONNECTED if now_connected else EventKind.EDGE_DISCONNECTED
                self.publish(kind, {}, cabinet_id)
                if not now_connected:
                    self._pending.pop(cabinet_id, None)
                    self._set_state(cabinet_id, CabinetState.OFFLINE, None)
        pending, self._pending = self._pending, {}
        for cabinet_id, telemetry in pending.items():
            self.publish(EventKind.TELEMETRY, telemetry_fields(telemetry), cabinet_id)

    # ------------------------------------------------------------------------------------- publishers

    def on_telemetry(self, cabinet_id: str, telemetry: EdgeTelemetry) -> None:
        """The edge link's callback: a state change is published at once, values at the next tick."""
        self._pending[cabinet_id] = telemetry
        self._set_state(cabinet_id, cabinet_state(True, telemetry), telemetry)

    def _set_state(self, cabinet_id: str, state: CabinetState, telemetry: EdgeTelemetry | None) -> None:
        before = self._states.get(cabinet_id)
        if before is state:
            return
        self._states[cabinet_id] = state
        data: dict[str, Any] = {
            "state": state.value,
            "previous": None if before is None else before.value,
            "interlock_reason": "" if telemetry is None else telemetry.interlock_reason,
        }
        if telemetry is not None:
            data["telemetry"] = telemetry_fields(telemetry)
            self._pending.pop(cabinet_id, None)  # the state event carries the values
        self.publish(EventKind.CABINET_STATE, data, cabinet_id)

    def publish(self, kind: EventKind, data: Mapping[str, Any], cabinet_id: str | None = None) -> Event:
        self._seq += 1
        event = Event(self._seq, kind, self.clock.now(), cabinet_id, dict(data))
        self._buffer.append(event)
        self.published_total += 1
        for subscriber in self._subscribers:
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                _drain(subscriber.queue)
                subscriber.queue.put_nowait(Event(0, EventKind.SNAPSHOT, event.at, None, {}))
                subscriber.overflows += 1
                self.overflows_total += 1
        if self._record is not None and kind not in LIVE_ONLY:
            self._record(event)
        return event

    # ------------------------------------------------------------------------------------ subscribers

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(asyncio.Queue(maxsize=self.queue_size))
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def last_seq(self) -> int:
        return self._seq

    def stream_id(self, seq: int) -> str:
        """The SSE ``id`` of event ``seq``: ``<boot>-<seq>``."""
        return f"{self.boot}-{seq}"

    def resume(self, last_event_id: str | None) -> Resume:
        """The buffered events after ``last_event_id``, or ``Resume(None)`` when a snapshot is needed
        (no id, an id of another run of the service, or one that fell out of the buffer)."""
        if not last_event_id:
            return Resume(None)
        boot, _, seq_text = last_event_id.strip().rpartition("-")
        if boot != self.boot or not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 18):
            return Resume(None)
        seq = int(seq_text)
        if seq > self._seq:
            return Resume(None)
        oldest = self._buffer[0].seq if self._buffer else self._seq + 1
        if seq < oldest - 1:
            return Resume(None)
        return Resume(tuple(e for e in self._buffer if e.seq > seq))

    def states(self) -> dict[str, CabinetState]:
        return dict(self._states)


def _drain(queue: asyncio.Queue[Event]) -> None:
    while True:
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            return
