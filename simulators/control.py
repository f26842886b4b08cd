"""The fault-injection control interface: one JSON object per line over TCP (``[sim] control_address``).

Each request line gets one response line. Requests::

    {"cmd": "set", "device": "cab-1", "fault": "delay", "value": 200}
    {"cmd": "clear", "device": "cab-1", "fault": "delay"}      # "fault": "all" clears every fault
    {"cmd": "set_soc", "device": "cab-1", "value": 40.0}       # the cabinet's SoC jumps to 40 %
    {"cmd": "status"}                                           # state and faults of every device
    {"cmd": "stats"}                                            # requests served, physics punctuality
    {"cmd": "ping"}

Responses are ``{"ok": true, ...}`` or ``{"ok": false, "error": "one line"}``. ``device`` is a cabinet id or
``"meter"``. From a shell: ``echo '{"cmd": "status"}' | nc 127.0.0.1 15099``; from Python:
:func:`control_request`. Bind it to loopback: anyone who reaches it can make the devices misbehave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from simulators.faults import CommFaults

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024


class ControlError(Exception):
    """The simulator refused a control request, or could not be reached."""


class _Device(Protocol):
    @property
    def faults(self) -> CommFaults: ...


class ControlTarget(Protocol):
    def device(self, name: str) -> _Device: ...

    def status(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...


class ControlServer:
    """Serves :func:`handle_request` for every line on ``host:port``."""

    def __init__(self, target: ControlTarget, host: str, port: int) -> None:
        self._target = target
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_LINE_BYTES, reuse_address=True
            )
        except OSError as exc:
            raise OSError(
                f"control interface: cannot listen on {self.address}: {exc.strerror or exc}"
            ) from None

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(
                        _encode({"ok": False, "error": f"request longer than {MAX_LINE_BYTES} bytes"})
                    )
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(_encode(handle_request(self._target, line)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


def handle_request(target: ControlTarget, line: bytes | str) -> dict[str, Any]:
    """Answer one request line; never raises for bad input (the answer says what is wrong)."""
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": f"not a JSON object: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "a request must be a JSON object with a 'cmd'"}
    try:
        return _dispatch(target, request)
    except (ValueError, KeyError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return {"ok": False, "error": str(message)}


def _dispatch(target: ControlTarget, request: Mapping[str, Any]) -> dict[str, Any]:
    command = request.get("cmd")
    if command == "ping":
        return {"ok": True}
    if command == "status":
        return {"ok": True, **target.status()}
    if command == "stats":
        return {"ok": True, **target.stats()}
    if command == "set_soc":
        return _set_soc(target, request)
    if command not in ("set", "clear"):
        raise ValueError(f"unknown cmd {command!r} (known: set, clear, set_soc, status, stats, ping)")
    device_name = request.get("device")
    fault = request.get("fault")
    if not isinstance(device_name, str) or not isinstance(fault, str):
        raise ValueError("'set' and 'clear' need 'device' and 'fault' strings")
    faults = target.device(device_name).faults
    if command == "set":
        value = request.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float | str)):
            raise ValueError(f"'value' must be a number or a string, got {value!r}")
        faults.set(fault, value)
    elif fault == "all":
        faults.clear_all()
    else:
        faults.clear(fault)
    log.info("control: %s %s %s -> active %s", command, device_name, fault, faults.active)
    return {"ok": True, "device": device_name, "faults": faults.active}


def _set_soc(target: ControlTarget, request: Mapping[str, Any]) -> dict[str, Any]:
    device_name, value = request.get("device"), request.get("value")
    if not isinstance(device_name, str):
        raise ValueError("'set_soc' needs a 'device' string")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'set_soc' needs a numeric 'value' (SoC %), got {value!r}")
    setter = getattr(target.device(device_name), "set_soc_pct", None)
    if setter is None:
        raise ValueError(f"device {device_name!r} has no state of charge")
    setter(float(value))
    log.info("control: set_soc %s %.1f %%", device_name, value)
    return {"ok": True, "device": device_name, "soc_pct": float(value)}


def _encode(response: Mapping[str, Any]) -> bytes:
    return (json.dumps(response, default=str) + "\n").encode()


async def control_request(address: str, request: Mapping[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to a running simulator at ``host:port``; raise :class:`ControlError` on refusal."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host.strip("[]"), int(port), limit=4 * MAX_LINE_BYTES
            )
            try:
                writer.write(_encode(request))
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"no simulator control interface at {address}: {exc}") from None
    try:
        response = json.loads(line)
    except json.JSONDecodeError:
        raise ControlError(f"{address} answered something that is not JSON: {line[:80]!r}") from None
    if not isinstance(response, dict) or not response.get("ok"):
        error = response.get("error") if isinstance(response, dict) else response
        raise ControlError(f"simulator refused: {error}")
    return response
