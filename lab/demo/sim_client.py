"""The demo's client of the simulators' control interface (docs/simulators.md): JSON lines over TCP.

One persistent connection (the sampler and the fault-reaction probe ask many times a second); it is
reopened after an error. Requests are serialised with a lock: one line out, one line back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from shared.site import parse_host_port

REQUEST_TIMEOUT_S = 3.0
MAX_LINE_BYTES = 1024 * 1024


class SimControlError(RuntimeError):
    """The simulator refused a request or could not be reached."""


@dataclass(frozen=True)
class CabinetTruth:
    """A simulated cabinet's true state (what a real plant would only know from its own devices)."""

    power_kw: float  # AC power, + discharge
    soc_pct: float
    temperature_degc: float
    setpoint_kw: float  # WSet as last written by the edge
    connected: bool  # AC contactor closed (SetOp CONNECT, no fault)
    charged_ac_kwh: float
    discharged_ac_kwh: float


@dataclass(frozen=True)
class SiteTruth:
    """Every simulated device at one simulated instant."""

    time_s: float  # simulated Unix time of the meter's reading [s]
    grid_kw: float  # site meter, + import
    cabinets: dict[str, CabinetTruth]


class SimControlClient:
    """Talks to ``ems sim``'s control interface at ``host:port``."""

    def __init__(self, address: str) -> None:
        self._host, self._port = parse_host_port(address)
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def aclose(self) -> None:
        await self._drop()

    async def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request; the answer, or :class:`SimControlError` with the reason."""
        async with self._lock:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    if self._writer is None or self._reader is None:
                        self._reader, self._writer = await asyncio.open_connection(
                            self._host, self._port, limit=MAX_LINE_BYTES
                        )
                    self._writer.write((json.dumps(payload) + "\n").encode())
                    await self._writer.drain()
                    line = await self._reader.readline()
                if not line:
                    raise ConnectionError("connection closed")
            except (OSError, TimeoutError, ValueError) as exc:
                await self._drop()
                raise SimControlError(
                    f"simulator control at {self._host}:{self._port}: {exc or type(exc).__name__}"
                ) from None
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            raise SimControlError(f"simulator answered something that is not JSON: {line[:80]!r}") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise SimControlError(f"simulator refused {payload.get('cmd')}: {error}")
        return answer

    async def ping(self) -> bool:
        try:
            await self.request({"cmd": "ping"})
        except SimControlError:
            return False
        return True

    async def truth(self) -> SiteTruth:
        """The state of every device now."""
        answer = await self.request({"cmd": "status"})
        try:
            return parse_status(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise SimControlError(f"unexpected status answer from the simulator: {exc}") from None

    async def set_fault(self, device: str, fault: str, value: float | str | None = None) -> None:
        await self.request({"cmd": "set", "device": device, "fault": fault, "value": value})

    async def clear_fault(self, device: str, fault: str) -> None:
        await self.request({"cmd": "clear", "device": device, "fault": fault})

    async def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def parse_status(answer: dict[str, Any]) -> SiteTruth:
    """A :class:`SiteTruth` from the ``status`` answer (``devices.<id>.state``)."""
    devices = answer["devices"]
    meter = devices["meter"]["state"]
    cabinets: dict[str, CabinetTruth] = {}
    for name, device in devices.items():
        if device.get("kind") != "cabinet":
            continue
        state = device["state"]
        cabinets[name] = CabinetTruth(
            power_kw=float(state["active_power_kw"]),
            soc_pct=float(state["soc_pct"]),
            temperature_degc=float(state["temperature_degc"]),
            setpoint_kw=float(state["setpoint_kw"]),
            connected=bool(state["connected"]),
            charged_ac_kwh=float(state["charged_ac_kwh"]),
            discharged_ac_kwh=float(state["discharged_ac_kwh"]),
        )
    return SiteTruth(time_s=float(meter["time_s"]), grid_kw=float(meter["power_kw"]), cabinets=cabinets)
