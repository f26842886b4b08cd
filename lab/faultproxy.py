"""A TCP proxy on loopback that impairs one link on command: latency, blackhole, resets, throttle, partition.

``ems soak`` puts one :class:`FaultProxy` on every link it wants to break (central -> each edge's OPC UA
server, each edge -> its cabinet device and the site meter over Modbus TCP) and drives them from its own
event loop. Everything is real sockets: the peers see exactly what a broken network would show them.

Impairments (several at once where that makes sense; :meth:`FaultProxy.heal` clears them all):

- **latency** (``set_latency(ms)``): every chunk is forwarded ``ms`` later than it arrived, per direction,
  in order (like a long path, not a reordering one).
- **throttle** (``set_throttle(bytes_per_s)``): each direction of each connection is paced to that rate.
- **blackhole** (``blackhole()``): connections are accepted and kept open, but nothing is forwarded in
  either direction; what arrives is read and dropped (the peer's writes succeed, its requests go
  unanswered until it times out). A connection that lost data has a hole in its byte stream and can never
  be valid again: at ``heal()`` it is reset (RST), and new connections work.
- **partition** (``partition()``): every open connection is reset and new ones are reset as soon as they
  are accepted (the peer sees "connection reset"), until ``heal()``.
- **reset** (``reset_connections()``): a one-shot RST of every open connection; new ones pass.

A connection whose upstream cannot be reached is closed at once, as the upstream's refusal would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
THROTTLE_SLICE_BYTES = 1024  # a throttled chunk is sent in slices this big, so the pace stays even
CONNECT_TIMEOUT_S = 5.0

# The writer of the other side of a connection (None while it has none).
_WriterRef = Callable[[], asyncio.StreamWriter | None]


class LinkState(StrEnum):
    """What the link does with traffic (latency and throttle apply on top of ``pass``)."""

    PASS = "pass"
    BLACKHOLE = "blackhole"
    PARTITION = "partition"


@dataclass
class ProxyStats:
    """Counters since the proxy started."""

    accepted: int = 0  # connections accepted from the client side
    upstream_failures: int = 0  # accepted, but the upstream could not be reached
    resets: int = 0  # connections reset by a fault (reset, partition, healed blackhole)
    bytes_forwarded: int = 0
    bytes_dropped: int = 0  # read and dropped by a blackhole


@dataclass(eq=False)
class _Connection:
    """One client connection and (unless blackholed from the start) its upstream."""

    client_writer: asyncio.StreamWriter
    upstream_writer: asyncio.StreamWriter | None = None
    holed: bool = False  # data was dropped: the byte stream is broken for good
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        """Close both sides with RST (SO_LINGER 0), not a graceful FIN."""
        for writer in (self.client_writer, self.upstream_writer):
            if writer is None:
                continue
            _abort(writer)
        for task in self.tasks:
            task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forwards ``listen_host:listen_port`` to ``upstream_host:upstream_port`` and impairs it on command.

    ``listen_port`` 0 picks a free port (see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self,
        name: str,
        upstream_host: str,
        upstream_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.name = name
        self.upstream = (upstream_host, upstream_port)
        self._listen = (listen_host, listen_port)
        self.state = LinkState.PASS
        self.latency_ms = 0.0
        self.throttle_bytes_per_s: float | None = None
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        host, port = self._listen
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        sockets = self._server.sockets
        self._listen = (host, int(sockets[0].getsockname()[1]))

    async def stop(self) -> None:
        """Stop listening and reset every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection.reset()
        self._connections.clear()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    @property
    def port(self) -> int:
        return self._listen[1]

    @property
    def address(self) -> str:
        """``host:port`` the clients connect to."""
        return f"{self._listen[0]}:{self._listen[1]}"

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # ----------------------------------------------------------------------------------- impairments

    def set_latency(self, latency_ms: float) -> None:
        if not latency_ms >= 0.0:
            raise ValueError(f"latency must be >= 0 ms, got {latency_ms}")
        self.latency_ms = float(latency_ms)

    def set_throttle(self, bytes_per_s: float | None) -> None:
        if bytes_per_s is not None and not bytes_per_s > 0.0:
            raise ValueError(f"throttle must be > 0 bytes/s, got {bytes_per_s}")
        self.throttle_bytes_per_s = None if bytes_per_s is None else float(bytes_per_s)

    def blackhole(self) -> None:
        self.state = LinkState.BLACKHOLE

    def partition(self) -> None:
        self.state = LinkState.PARTITION
        self.reset_connections()

    def reset_connections(self) -> int:
        """Reset every open connection now; the number reset."""
        connections = list(self._connections)
        for connection in connections:
            self._reset(connection)
        return len(connections)

    def heal(self) -> None:
        """Back to a clean link: no latency, no throttle, forwarding again; holed connections are reset."""
        self.state = LinkState.PASS
        self.latency_ms = 0.0
        self.throttle_bytes_per_s = None
        for connection in [c for c in self._connections if c.holed]:
            self._reset(connection)

    def describe(self) -> str:
        parts = [self.state.value]
        if self.latency_ms:
            parts.append(f"latency {self.latency_ms:g} ms")
        if self.throttle_bytes_per_s is not None:
            parts.append(f"throttle {self.throttle_bytes_per_s:g} B/s")
        return ", ".join(parts)

    # ----------------------------------------------------------------------------------- forwarding

    def _reset(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self.stats.resets += 1
        connection.reset()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self.stats.accepted += 1
        connection = _Connection(client_writer)
        try:
            if self.state is LinkState.PARTITION:
                self.stats.resets += 1
                connection.reset()
                return
            self._connections.add(connection)
            upstream_reader: asyncio.StreamReader | None = None
            if self.state is LinkState.BLACKHOLE:
                connection.holed = True
            else:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        upstream_reader, connection.upstream_writer = await asyncio.open_connection(
                            *self.upstream
                        )
                except (OSError, TimeoutError):
                    self.stats.upstream_failures += 1
                    return
            await self._pump_both(connection, client_reader, upstream_reader)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(connection)
            connection.reset()
            if task is not None:
                self._handlers.discard(task)

    async def _pump_both(
        self,
        connection: _Connection,
        client_reader: asyncio.StreamReader,
        upstream_reader: asyncio.StreamReader | None,
    ) -> None:
        pipes = [
            asyncio.create_task(self._pipe(connection, client_reader, lambda: connection.upstream_writer))
        ]
        if upstream_reader is not None:
            pipes.append(
                asyncio.create_task(self._pipe(connection, upstream_reader, lambda: connection.client_writer))
            )
        connection.tasks = pipes
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        target: _WriterRef,
    ) -> None:
        """Copy one direction: read, drop (blackhole) or queue with its due time; a sender writes in order."""
        loop = asyncio.get_running_loop()
        queue: deque[tuple[float, bytes]] = deque()
        ready = asyncio.Event()
        sender = asyncio.create_task(self._send(queue, ready, target))
        try:
            while True:
                try:
                    data = await reader.read(READ_CHUNK_BYTES)
                except OSError:
                    return
                if not data or sender.done():
                    return
                if self.state is not LinkState.PASS or connection.holed:
                    connection.holed = True
                    self.stats.bytes_dropped += len(data)
                    continue
                queue.append((loop.time() + self.latency_ms / 1000.0, data))
                ready.set()
        finally:
            # Let what is already queued go out (a FIN after the data), unless the link is being torn down.
            if not sender.done() and queue and not connection.holed:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(self.latency_ms / 1000.0 + 1.0):
                        for _ in range(100_000):  # bounded by the timeout above
                            if not queue or sender.done():
                                break
                            await asyncio.sleep(0.005)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send(
        self, queue: deque[tuple[float, bytes]], ready: asyncio.Event, target: _WriterRef
    ) -> None:
        loop = asyncio.get_running_loop()
        next_free = 0.0
        while True:
            while not queue:
                ready.clear()
                await ready.wait()
            due, data = queue[0]
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer = target()
            if writer is None:
                return
            rate = self.throttle_bytes_per_s
            slices = [data] if rate is None else _slices(data, THROTTLE_SLICE_BYTES)
            for piece in slices:
                if rate is not None:
                    next_free = max(next_free, loop.time()) + len(piece) / rate
                    await asyncio.sleep(max(0.0, next_free - loop.time()))
                try:
                    writer.write(piece)
                    await writer.drain()
                except (OSError, RuntimeError):
                    return
                self.stats.bytes_forwarded += len(piece)
            queue.popleft()


def _slices(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
