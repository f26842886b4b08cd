"""The central's persistent link to one edge: reconnect with backoff, push, retry, live telemetry.

A background task keeps one session open. While the edge is unreachable it retries with exponential
backoff (with jitter, so a fleet does not reconnect in lockstep); every attempt starts with a plain TCP
connect, and only an edge that accepts it gets a secure handshake, through the fleet's
:class:`~central.edge_link.pacing.ConnectGate` (see :mod:`central.edge_link.pacing`). The latest
schedule is remembered: when the edge comes back, or every ``push_retry_s`` while it is connected, the
schedule is pushed again unless the edge refused it or already runs it (its ``ScheduleId`` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from central.edge_link.outcome import PushOutcome, PushStatus
from central.edge_link.pacing import Backoff, ConnectGate, LinkPacing
from central.edge_link.session import ClientSecurity, EdgeSession, LinkError
from shared.clock import Clock
from shared.edge_api import Decision, EdgeTelemetry
from shared.opcua.ua_types import StatusCodes
from shared.schedule import CabinetSchedule
from shared.site import CabinetConfig, OpcUaSettings

_log = logging.getLogger(__name__)

# Answers that mean "the edge is there and said no" rather than "the edge could not be reached".
_DENIED = frozenset(
    {
        StatusCodes.BadUserAccessDenied,
        StatusCodes.BadNotExecutable,
        StatusCodes.BadArgumentsMissing,
        StatusCodes.BadTooManyArguments,
        StatusCodes.BadInvalidArgument,
        StatusCodes.BadTypeMismatch,
        StatusCodes.BadMethodInvalid,
        StatusCodes.BadNodeIdUnknown,
    }
)


class EdgeUnreachableError(Exception):
    """The edge could not be asked: no session, no answer in time, or the connection failed."""


class EdgeLink:
    """Link to one cabinet's edge. :meth:`run` is the background task; the rest is called by the fleet."""

    def __init__(
        self,
        site_name: str,
        cabinet: CabinetConfig,
        settings: OpcUaSettings,
        security: ClientSecurity,
        clock: Clock,
        *,
        on_telemetry: Callable[[str, EdgeTelemetry], None] | None = None,
        on_outcome: Callable[[PushOutcome], None] | None = None,
        pacing: LinkPacing | None = None,
        gate: ConnectGate | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``pacing`` and ``gate`` are the fleet's (default: a fleet of one); ``rng`` draws the backoff
        jitter (default: a fresh, unseeded one)."""
        self.cabinet_id = cabinet.id
        self._endpoint = cabinet.opcua_endpoint
        self._site_name = site_name
        self._settings = settings
        self._security = security
        self._clock = clock
        self._on_telemetry = on_telemetry
        self._on_outcome = on_outcome
        self._pacing = pacing or LinkPacing.for_fleet(settings, 1)
        self._gate = gate or ConnectGate(self._pacing.connect_concurrency)
        self._backoff = Backoff(
            self._pacing.reconnect_min_s,
            self._pacing.reconnect_max_s,
            rng or random.Random(),  # nosec B311  # backoff jitter, not security
        )
        self._session: EdgeSession | None = None
        self._desired: CabinetSchedule | None = None
        self._last_outcome: PushOutcome | None = None
        self._last_error = "not connected yet"
        self._lock = asyncio.Lock()
        self._connected_event = asyncio.Event()
        self._tried = asyncio.Event()  # the first connection attempt has ended (either way)

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.lost.is_set()

    @property
    def telemetry(self) -> EdgeTelemetry | None:
        session = self._session
        return session.telemetry if session is not None and not session.lost.is_set() else None

    @property
    def last_outcome(self) -> PushOutcome | None:
        return self._last_outcome

    @property
    def last_error(self) -> str:
        return self._last_error

    async def wait_tried(self) -> None:
        """Until the first connection attempt since the start has ended: connected, or failed."""
        await self._tried.wait()

    async def wait_connected(self) -> None:
        await self._connected_event.wait()

    async def run(self) -> None:
        """Keep a session open until cancelled."""
        while True:
            try:
                session = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # Python 3.11's wait_for can turn a cancel into the connect error: stop anyway.
                    raise asyncio.CancelledError from exc
                self._unreachable(_describe(exc), self._backoff.current_s)
                self._tried.set()
                await asyncio.sleep(self._backoff.next_s())
                continue
            self._backoff.reset()
            try:
                await self._serve(session)
            except Exception:  # a bug here must not end the link for good
                _log.exception("edge %s: link failed; reconnecting", self.cabinet_id)
            finally:
                self._session = None
                self._connected_event.clear()
                await session.close()
            self._last_error = f"connection lost: {session.lost_reason}"
            _log.warning("edge %s: %s; reconnecting", self.cabinet_id, self._last_error)

    async def _open(self) -> EdgeSession:
        """One connection attempt: a TCP probe (cheap, outside the gate), then the secure session."""
        await _probe_tcp(self._endpoint, self._settings.request_timeout_s)
        async with self._gate:
            return await EdgeSession.open(
                self._endpoint,
                self._site_name,
                self.cabinet_id,
                self._security,
                request_timeout_s=self._settings.request_timeout_s,
                publishing_interval_ms=self._pacing.publishing_interval_ms,
                watchdog_s=self._pacing.watchdog_s,
                on_change=self._telemetry_changed,
            )

    async def _serve(self, session: EdgeSession) -> None:
        self._session = session
        self._connected_event.set()
        self._last_error = ""
        self._tried.set()
        _log.info("edge %s: connected to %s", self.cabinet_id, self._endpoint)
        await self._resync(session)
        while not session.lost.is_set():
            try:
                await asyncio.wait_for(session.lost.wait(), self._settings.push_retry_s)
            except TimeoutError:
                await self._resync(session)

    def _unreachable(self, reason: str, delay_s: float) -> None:
        if reason != self._last_error:
            _log.warning(
                "edge %s: unreachable: %s (retrying, up to every %.1f s)", self.cabinet_id, reason, delay_s
            )
        self._last_error = reason

    def _telemetry_changed(self, telemetry: EdgeTelemetry | None) -> None:
        if telemetry is not None and self._on_telemetry is not None:
            try:
                self._on_telemetry(self.cabinet_id, telemetry)
            except Exception:
                _log.exception("on_telemetry callback failed")

    async def push(self, schedule: CabinetSchedule, timeout_s: float) -> PushOutcome:
        """Make ``schedule`` the one this edge should run and push it now if connected."""
        self._desired = schedule
        started = time.perf_counter()
        session = self._session
        if session is None or session.lost.is_set():
            reason = self._last_error or "not connected"
            return self._record(schedule, PushStatus.UNREACHABLE, f"not connected: {reason}", started)
        return await self._push_on(session, schedule, timeout_s, started)

    async def _resync(self, session: EdgeSession) -> None:
        """Push the remembered schedule again if the edge may not have it."""
        schedule = self._desired
        if schedule is None or schedule.end <= self._clock.now():
            return
        last = self._last_outcome
        if last is not None and last.schedule_id == schedule.schedule_id:
            if last.status is PushStatus.REFUSED:
                return  # the edge said why; the same schedule would be refused again
            running = session.telemetry
            if (
                last.status is PushStatus.ACCEPTED
                and running is not None
                and running.schedule_id == schedule.schedule_id
            ):
                return
        outcome = await self._push_on(
            session, schedule, self._settings.request_timeout_s, time.perf_counter()
        )
        log = _log.info if outcome.status is PushStatus.ACCEPTED else _log.warning
        log(
            "edge %s: pushed %s again: %s%s",
            self.cabinet_id,
            schedule.schedule_id,
            outcome.status.value,
            f": {outcome.message}" if outcome.message else "",
        )

    async def _push_on(
        self, session: EdgeSession, schedule: CabinetSchedule, timeout_s: float, started: float
    ) -> PushOutcome:
        try:
            async with asyncio.timeout(timeout_s):
                async with self._lock:
                    decision = await session.write_schedule(schedule)
        except TimeoutError:
            return self._record(
                schedule, PushStatus.UNREACHABLE, f"no answer within {timeout_s:g} s", started
            )
        except UaStatusCodeError as exc:
            status = PushStatus.REFUSED if exc.code in _DENIED else PushStatus.UNREACHABLE
            return self._record(schedule, status, f"edge answered {_describe(exc)}", started)
        except (OSError, ConnectionError, UaError, LinkError) as exc:
            return self._record(schedule, PushStatus.UNREACHABLE, _describe(exc), started)
        except Exception as exc:  # never let one edge's surprise take the other edges' outcomes down
            _log.exception("edge %s: push of %s failed", self.cabinet_id, schedule.schedule_id)
            return self._record(schedule, PushStatus.UNREACHABLE, f"push failed: {_describe(exc)}", started)
        status = PushStatus.ACCEPTED if decision.accepted else PushStatus.REFUSED
        return self._record(schedule, status, decision.message, started)

    async def reset_interlock(self, timeout_s: float) -> Decision:
        """The edge's answer to ``ResetInterlock`` (accepted, or refused with its reason, also when the
        central's OPC UA user may not call methods). :class:`EdgeUnreachableError` when the edge cannot
        be asked: not connected, no answer within ``timeout_s``, or the connection failed."""
        session = self._session
        if session is None or session.lost.is_set():
            raise EdgeUnreachableError(f"edge {self.cabinet_id} is not connected: {self._last_error}")
        try:
            async with asyncio.timeout(timeout_s):
                async with self._lock:
                    return await session.reset_interlock()
        except TimeoutError:
            raise EdgeUnreachableError(f"edge {self.cabinet_id}: no answer within {timeout_s:g} s") from None
        except UaStatusCodeError as exc:
            if exc.code in _DENIED:
                return Decision(False, f"edge {self.cabinet_id} answered {_describe(exc)}")
            raise EdgeUnreachableError(f"edge {self.cabinet_id}: {_describe(exc)}") from None
        except (OSError, ConnectionError, UaError, LinkError) as exc:
            raise EdgeUnreachableError(f"edge {self.cabinet_id}: {_describe(exc)}") from None

    def _record(
        self, schedule: CabinetSchedule, status: PushStatus, message: str, started: float
    ) -> PushOutcome:
        outcome = PushOutcome(
            cabinet_id=self.cabinet_id,
            status=status,
            message=message,
            at=self._clock.now(),
            duration_ms=(time.perf_counter() - started) * 1000.0,
            schedule_id=schedule.schedule_id,
        )
        self._last_outcome = outcome
        # One line per push round is the planner's; a re-push logs its own line (_resync).
        _log.debug(
            "edge %s: schedule %s %s: %s", self.cabinet_id, schedule.schedule_id, status.value, message
        )
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:
                _log.exception("on_outcome callback failed")
        return outcome


async def _probe_tcp(endpoint: str, timeout_s: float) -> None:
    """Open and close a TCP connection to the endpoint's host and port; ``OSError`` or ``TimeoutError``
    when the edge does not accept one. Costs no crypto, so an edge that is down is cheap to retry."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "localhost", parts.port or 4840
    async with asyncio.timeout(timeout_s):
        _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, LinkError):
        return text or type(exc).__name__
    if isinstance(exc, UaStatusCodeError):
        return (
            f"{type(exc).__name__} ({text})" if text and type(exc).__name__ not in text else text or repr(exc)
        )
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
