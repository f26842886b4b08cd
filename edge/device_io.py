"""Modbus TCP links to the cabinet's SunSpec device and the site meter (pymodbus async client).

The control loop never waits for a connection: a :class:`DeviceLink` connects (and re-connects, with
exponential backoff) in a background task, scans the SunSpec model chain, and only then offers itself to
the loop. Inside a cycle every request has a short timeout and is never retried; any failure closes the
connection (so a late answer can never be taken for the next request's) and hands it back to the
reconnect task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

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
    """

    def __init__(self, message: str, *, connection_broken: bool = True) -> None:
        super().__init__(message)
        self.connection_broken = connection_broken


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
        self.connections = 0  # successful connects (incl. scans), for logs and tests

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._lost.set()
            self._task = asyncio.create_task(self._keep_connected(), name=f"edge-link-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop("stopped")

    @property
    def ready(self) -> bool:
        """Connected and scanned: the loop may use it."""
        return self._ready

    @property
    def models(self) -> dict[int, ModelLayout]:
        return dict(self._models)

    def lose(self, reason: str) -> None:
        """Close the connection after a failed request; the background task reconnects."""
        if self._ready:
            log.warning("%s: connection dropped: %s", self.name, reason)
        self._drop(reason)
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
                delay_s = self._backoff.next(delay_s)
                log.debug("%s: connect failed (%s); retry in %.2f s", self.name, self.last_error, delay_s)
                await asyncio.sleep(delay_s)
                continue
            delay_s = 0.0
            self._lost.clear()
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

    async def read(self, address: int, count: int) -> list[int]:
        client = self._require_client()
        try:
            response = await client.read_holding_registers(address, count=count, device_id=UNIT_ID)
        except (TimeoutError, ModbusException, OSError) as exc:
            raise DeviceError(f"read {count} @ {address}: {exc or type(exc).__name__}") from exc
        if response.isError():
            raise DeviceError(
                f"read {count} @ {address}: Modbus exception {response.exception_code}",
                connection_broken=False,
            )
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceError(f"read {count} @ {address}: got {len(registers)} registers")
        return registers

    async def write(self, address: int, values: Sequence[int]) -> None:
        client = self._require_client()
        try:
            if len(values) == 1:
                response = await client.write_register(address, values[0], device_id=UNIT_ID)
            else:
                response = await client.write_registers(address, list(values), device_id=UNIT_ID)
        except (TimeoutError, ModbusException, OSError) as exc:
            raise DeviceError(f"write {len(values)} @ {address}: {exc or type(exc).__name__}") from exc
        if response.isError():
            raise DeviceError(
                f"write {len(values)} @ {address}: Modbus exception {response.exception_code}",
                connection_broken=False,
            )

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
        """Enable WATTS setpoints and the device-side revert to 0 W after ``revert_timeout_s``.

        Written once per connection, before any setpoint: WSetEna/WSetMod, WSetRvrt = 0 W,
        WSetEnaRvrt = ENABLED (hold 0 W after a revert), WSetRvrtTms (whole seconds, at least 1).
        WSet itself is not touched here: the first setpoint the loop writes is already the right one.
        """
        ctl = self._layout().controls
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
