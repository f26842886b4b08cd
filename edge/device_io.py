"""Modbus TCP links to the cabinet's SunSpec device and the site meter (pymodbus async client).

The control loop never waits for a connection: a :class:`DeviceLink` connects (and re-connects, with
exponential backoff) in a background task, scans the SunSpec model chain, and only then offers itself to
the loop. Inside a cycle every request has a short timeout and is never retried; any failure closes the
connection (so a late answer can never be taken for the next request's) and hands it back to the
reconnect task.

Every request is timed on the monotonic clock. A request that failed more than one timeout after its
timeout expired failed because this process was not running (its timer fired that late), not because the
device was slow: the error says so (``edge_late``), and the comm-loss policy does not count it against the
device (docs/edge.md, "Communication loss").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.snapshot import (
    CabinetModels,
    CabinetReading,
    MeterModels,
    MeterReading,
    RegisterImage,
    Span,
    decode_cabinet,
    decode_meter,
    plan_spans,
)
from shared.sunspec.layout import (
    BASE_ADDRESS,
    END_MODEL_ID,
    SUNS_MARKER,
    ModelLayout,
    PointDef,
    device_layout,
    encode_value,
    symbol_value,
    unscale,
)

log = logging.getLogger(__name__)

UNIT_ID = 1  # docs/interfaces.md: Modbus devices: unit id 1
MAX_MODELS_IN_CHAIN = 64  # a device with more is refused rather than scanned forever


class DeviceError(Exception):
    """A request failed: timeout, connection lost or a Modbus exception response.

    ``connection_broken`` is False only for an exception response: the device answered, the link is fine.
    ``edge_late``: the failure was noticed more than one timeout after the request's timeout expired, so
    this edge's own loop was not running; it is no evidence against the device.
    """

    def __init__(self, message: str, *, connection_broken: bool = True, edge_late: bool = False) -> None:
        super().__init__(message)
        self.connection_broken = connection_broken
        self.edge_late = edge_late


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays [s]: ``min_s`` doubling up to ``max_s``."""

    min_s: float
    max_s: float

    def next(self, current_s: float) -> float:
        return self.min_s if current_s <= 0.0 else min(self.max_s, current_s * 2.0)


def _located(model_id: int, address: int, length: int) -> ModelLayout:
    """The layout of ``model_id`` found at ``address``; refuse a length that differs from its definition."""
    layout = device_layout([model_id], base_address=address - 2).model(model_id)
    if layout.length != length:
        raise DeviceError(
            f"model {model_id} at register {address} has length {length}, its definition {layout.length}"
        )
    return layout


class DeviceLink:
    """One Modbus TCP device, kept connected by a background task.

    ``models`` are the SunSpec model ids the edge needs; :meth:`scan` finds where the device holds them.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        models: Sequence[int],
        timeout_s: float,
        backoff: Backoff,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._wanted = tuple(models)
        self._timeout_s = timeout_s
        self._backoff = backoff
        self._client: AsyncModbusTcpClient | None = None
        self._models: dict[int, ModelLayout] = {}
        self._ready = False
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error = "not connected yet"
        self.lost_while_late = False  # the last loss was a request failed by this edge's own lateness
        self.connections = 0  # successful connects (incl. scans), for logs and tests

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._lost.set()
            self._task = asyncio.create_task(self._keep_connected(), name=f"edge-link-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        # Cancel until it ends: on Python 3.11 asyncio.wait_for (inside pymodbus' connect) can swallow a
        # cancellation that lands as the connection completes, and the task would wait for ever.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop("stopped")

    @property
    def ready(self) -> bool:
        """Connected and scanned: the loop may use it."""
        return self._ready

    @property
    def models(self) -> dict[int, ModelLayout]:
        return dict(self._models)

    def lose(self, reason: str, *, edge_late: bool = False) -> None:
        """Close the connection after a failed request; the background task reconnects."""
        if self._ready:
            log.warning("%s: connection dropped: %s", self.name, reason)
        self._drop(reason)
        self.lost_while_late = edge_late
        self._lost.set()

    def _drop(self, reason: str) -> None:
        self._ready = False
        self.last_error = reason
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _keep_connected(self) -> None:
        delay_s = 0.0
        while True:
            await self._lost.wait()
            try:
                await self._connect()
            except (TimeoutError, DeviceError, OSError, ModbusException) as exc:
                self._drop(str(exc) or type(exc).__name__)
                self.lost_while_late = isinstance(exc, DeviceError) and exc.edge_late
                delay_s = self._backoff.next(delay_s)
                log.debug("%s: connect failed (%s); retry in %.2f s", self.name, self.last_error, delay_s)
                await asyncio.sleep(delay_s)
                continue
            delay_s = 0.0
            self._lost.clear()
            self.lost_while_late = False
            self._ready = True
            self.connections += 1
            log.info("%s: connected to %s:%d", self.name, self._host, self._port)

    async def _connect(self) -> None:
        client = AsyncModbusTcpClient(
            self._host,
            port=self._port,
            timeout=self._timeout_s,
            retries=0,
            reconnect_delay=0,  # reconnection is ours, with our backoff, outside the cycle
        )
        self._client = client
        if not await client.connect():
            raise DeviceError(f"cannot connect to {self._host}:{self._port}")
        self._models = await self.scan()

    # ------------------------------------------------------------------ requests

    def _require_client(self) -> AsyncModbusTcpClient:
        if self._client is None:
            raise DeviceError(f"{self.name}: not connected ({self.last_error})")
        return self._client

    async def _request(self, what: str, call: Callable[[AsyncModbusTcpClient], Awaitable[Any]]) -> Any:
        """Send one request; any failure becomes a :class:`DeviceError` (timed on the monotonic clock)."""
        client = self._require_client()
        started_s = time.monotonic()
        try:
            response = await call(client)
        except (TimeoutError, ModbusException, OSError) as exc:
            overdue_s = time.monotonic() - started_s - self._timeout_s
            late = overdue_s > self._timeout_s
            note = (
                f" (noticed {overdue_s * 1000:.0f} ms after its timeout: the edge ran late)" if late else ""
            )
            raise DeviceError(f"{what}: {exc or type(exc).__name__}{note}", edge_late=late) from exc
        if response.isError():
            raise DeviceError(f"{what}: Modbus exception {response.exception_code}", connection_broken=False)
        return response

    async def read(self, address: int, count: int) -> list[int]:
        what = f"read {count} @ {address}"
        response = await self._request(
            what, lambda c: c.read_holding_registers(address, count=count, device_id=UNIT_ID)
        )
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceError(f"{what}: got {len(registers)} registers")
        return registers

    async def write(self, address: int, values: Sequence[int]) -> None:
        what = f"write {len(values)} @ {address}"
        if len(values) == 1:
            await self._request(what, lambda c: c.write_register(address, values[0], device_id=UNIT_ID))
        else:
            await self._request(what, lambda c: c.write_registers(address, list(values), device_id=UNIT_ID))

    async def write_point(self, point: PointDef, raw: int) -> None:
        await self.write(point.address, encode_value(point, raw))

    async def read_image(self, spans: Sequence[Span]) -> RegisterImage:
        blocks = [(span, await self.read(span.address, span.count)) for span in spans]
        return RegisterImage(blocks)

    async def scan(self) -> dict[int, ModelLayout]:
        """Walk the SunSpec model chain from ``SunS`` and locate the wanted models."""
        marker = await self.read(BASE_ADDRESS, 2)
        if tuple(marker) != SUNS_MARKER:
            raise DeviceError(f"no SunSpec marker 'SunS' at {BASE_ADDRESS} (read {marker})")
        found: dict[int, ModelLayout] = {}
        address = BASE_ADDRESS + 2
        for _ in range(MAX_MODELS_IN_CHAIN):
            model_id, length = await self.read(address, 2)
            if model_id == END_MODEL_ID:
                break
            if model_id in self._wanted and model_id not in found:
                found[model_id] = _located(model_id, address, length)
            address += 2 + length
        else:
            raise DeviceError(f"SunSpec model chain has no end marker within {MAX_MODELS_IN_CHAIN} models")
        missing = [m for m in self._wanted if m not in found]
        if missing:
            raise DeviceError(f"device lacks SunSpec model(s) {missing}")
        return found


# ---------------------------------------------------------------------------------- the two devices


class CabinetDevice:
    """The cabinet's PCS/BMS (models 1, 701, 704, 802): reads, setpoint, heartbeat, connect/disconnect."""

    def __init__(self, link: DeviceLink) -> None:
        self.link = link
        self._models: CabinetModels | None = None
        self._spans: tuple[Span, ...] = ()
        self._scanned_connection = -1

    def _layout(self) -> CabinetModels:
        if self._models is None or self._scanned_connection != self.link.connections:
            found = self.link.models
            self._models = CabinetModels(inverter=found[701], controls=found[704], battery=found[802])
            self._spans = plan_spans(self._models.read_points())
            self._scanned_connection = self.link.connections
        return self._models

    @property
    def spans(self) -> tuple[Span, ...]:
        self._layout()
        return self._spans

    async def read(self) -> CabinetReading:
        models = self._layout()
        image = await self.link.read_image(self._spans)
        return decode_cabinet(image, models)  # DeviceDataError: answered, but not trustworthy

    async def configure(self, revert_timeout_s: float, wset_sf: int) -> None:
        """Start a connection safely: WSet = 0 W, then WATTS setpoints and the device-side revert to 0 W
        after ``revert_timeout_s``.

        Written once per connection, before any setpoint: WSet = 0 W first, then WSetEna/WSetMod,
        WSetRvrt = 0 W, WSetEnaRvrt = ENABLED (hold 0 W after a revert), WSetRvrtTms (whole seconds, at
        least 1). WSet goes first because writing WSetRvrtTms ends a revert: a device that reverted after
        the previous connection was lost still holds that connection's last WSet, and would run it again
        until the loop's first setpoint lands (or, when the link fails again before that, until the next
        revert timeout) if WSet were not zeroed before.
        """
        ctl = self._layout().controls
        await self.link.write_point(ctl.point("WSet"), unscale(0.0, wset_sf))
        await self.link.write(
            ctl.point("WSetEna").address,
            encode_value(ctl.point("WSetEna"), symbol_value(704, "WSetEna", "ENABLED"))
            + encode_value(ctl.point("WSetMod"), symbol_value(704, "WSetMod", "WATTS")),
        )
        await self.link.write_point(ctl.point("WSetRvrt"), unscale(0.0, wset_sf))
        await self.link.write(
            ctl.point("WSetEnaRvrt").address,
            encode_value(ctl.point("WSetEnaRvrt"), symbol_value(704, "WSetEnaRvrt", "ENABLED"))
            + encode_value(ctl.point("WSetRvrtTms"), max(1, round(revert_timeout_s))),
        )

    async def write_setpoint(self, setpoint_kw: float, wset_sf: int) -> None:
        point = self._layout().controls.point("WSet")
        await self.link.write_point(point, unscale(setpoint_kw * 1000.0, wset_sf))

    async def write_heartbeat(self, counter: int) -> None:
        await self.link.write_point(self._layout().battery.point("CtrlHb"), counter & 0xFFFF)

    async def write_set_op(self, value: int) -> None:
        await self.link.write_point(self._layout().battery.point("SetOp"), value)


class MeterDevice:
    """The site meter at the point of connection (models 1, 203)."""

    def __init__(self, link: DeviceLink) -> None:
        self.link = link
        self._models: MeterModels | None = None
        self._spans: tuple[Span, ...] = ()
        self._scanned_connection = -1

    async def read(self) -> MeterReading:
        if self._models is None or self._scanned_connection != self.link.connections:
            self._models = MeterModels(meter=self.link.models[203])
            self._spans = plan_spans(self._models.read_points())
            self._scanned_connection = self.link.connections
        image = await self.link.read_image(self._spans)
        return decode_meter(image, self._models)
