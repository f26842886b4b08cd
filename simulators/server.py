"""Modbus TCP servers for the simulated devices, on pymodbus's current server API.

Each device gets a :class:`pymodbus.server.ModbusTcpServer` over a :class:`pymodbus.simulator.SimDevice`
(the datastore pymodbus 3.16 recommends in place of the deprecated ``ModbusServerContext`` /
``ModbusDeviceContext`` / ``ModbusSequentialDataBlock``). The SimDevice's ``action`` hook serves reads from
the device's register image and hands writes to the device, which accepts or refuses them.

The per-connection request handler is pymodbus's own, with one change: each request is captured when it
arrives and answered by its own task, in arrival order. pymodbus's stock handler reads the request back
from the connection after awaiting the datastore, so a late answer (the ``delay`` fault) would go out with
the next request's transaction id, which no real device does. The same task is where the communication
faults act: ``no_response`` drops the request, ``delay`` waits, ``modbus_exception`` answers with an
exception before the datastore is touched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.faults import CommFaults
from simulators.registers import RegisterImage

log = logging.getLogger(__name__)

# Read holding, read input, write single, write multiple, read/write multiple registers.
SUPPORTED_FUNCTION_CODES = frozenset({3, 4, 6, 16, 23})


class ServedDevice(Protocol):
    """What a server needs from a simulated device."""

    id: str
    unit_id: int
    image: RegisterImage

    @property
    def faults(self) -> CommFaults: ...

    def read_registers(self, address: int, count: int) -> list[int]: ...

    def write_registers(self, address: int, values: list[int]) -> int | None: ...


class DeviceServer:
    """One device on one TCP address. ``start`` listens; ``stop`` closes the listener and every connection."""

    def __init__(self, device: ServedDevice, host: str, port: int) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.requests = 0  # requests received (answered or not)
        self._server: _TcpServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        device = self.device

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if set_values is None:
                offset = address - start_address
                registers[offset : offset + count] = device.read_registers(address, count)
                return None
            code = device.write_registers(address, [int(v) for v in set_values])
            return None if code is None else ExcCodes(code)

        image = device.image
        simdevice = SimDevice(
            id=device.unit_id,
            simdata=[SimData(image.base_address, values=list(image.registers), datatype=DataType.REGISTERS)],
            action=action,
        )
        server = _TcpServer(self, simdevice, (self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise OSError(
                f"{device.id}: cannot listen on {self.address} (in use or not a local address)"
            ) from None
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0)  # let the closed transports run their callbacks


class _TcpServer(ModbusTcpServer):
    def __init__(self, owner: DeviceServer, simdevice: SimDevice, address: tuple[str, int]) -> None:
        super().__init__(simdevice, address=address)
        self.owner = owner

    def callback_new_connection(self) -> _RequestHandler:
        return _RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _RequestHandler(ServerRequestHandler):
    """A connection: answers its requests in order, each as captured on arrival."""

    def __init__(self, owner: _TcpServer, *args: Any) -> None:
        super().__init__(owner, *args)  # type: ignore[no-untyped-call]
        self._owner: DeviceServer = owner.owner
        self._last_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def handle_later(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        self._owner.requests += 1
        task = asyncio.get_running_loop().create_task(self._answer(pdu, addr, self._last_task))
        self._last_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def callback_disconnected(self, exc: Exception | None) -> None:
        for task in list(self._tasks):
            task.cancel()
        super().callback_disconnected(exc)

    async def _answer(self, pdu: ModbusPDU, addr: Any, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # answers leave in request order, as from a real device
        response = await self._respond(pdu)
        if response is None or self.transport is None:
            return
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]

    async def _respond(self, pdu: ModbusPDU) -> ModbusPDU | None:
        device = self._owner.device
        faults = device.faults
        function_code = int(pdu.function_code)
        if not faults.responding:
            return None
        if pdu.dev_id != device.unit_id:
            return ExceptionResponse(function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        delay_s = faults.delay_s
        if delay_s > 0.0:
            await asyncio.sleep(delay_s)
            if not faults.responding:
                return None
        code = faults.exception_code
        if code is not None:
            return ExceptionResponse(function_code, ExcCodes(code))
        if function_code not in SUPPORTED_FUNCTION_CODES:
            return ExceptionResponse(function_code, ExcCodes.ILLEGAL_FUNCTION)
        try:
            response: ModbusPDU = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except Exception:  # a bug in the device model must not kill the connection; report it
            log.exception("%s: request %s failed", device.id, pdu)
            return ExceptionResponse(function_code, ExcCodes.DEVICE_FAILURE)
        return response
