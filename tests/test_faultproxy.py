"""The fault proxy on real TCP: an echo server behind it, a client in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from lab.faultproxy import FaultProxy, LinkState


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[asyncio.Server]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def proxied() -> AsyncIterator[FaultProxy]:
    async with echo_server() as server:
        port = server.sockets[0].getsockname()[1]
        async with FaultProxy("test", "127.0.0.1", port) as proxy:
            yield proxy


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_passes_traffic_both_ways() -> None:
    async with proxied() as proxy:
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"hello") == b"hello"
        big = bytes(range(256)) * 1000
        assert await round_trip(reader, writer, big) == big
        await close(writer)
        assert proxy.stats.accepted == 1
        assert proxy.stats.bytes_forwarded >= 2 * (5 + len(big))


async def test_latency_delays_each_direction_in_order() -> None:
    async with proxied() as proxy:
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"warm") == b"warm"
        proxy.set_latency(150.0)
        started = time.monotonic()
        for index in range(3):
            writer.write(f"m{index};".encode())
        await writer.drain()
        answer = await reader.readexactly(9)
        elapsed = time.monotonic() - started
        assert answer == b"m0;m1;m2;"
        assert elapsed >= 0.29  # 150 ms out and 150 ms back
        proxy.heal()
        started = time.monotonic()
        assert await round_trip(reader, writer, b"fast") == b"fast"
        assert time.monotonic() - started < 0.25
        await close(writer)


async def test_blackhole_swallows_then_resets_broken_connections() -> None:
    async with proxied() as proxy:
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"a") == b"a"
        proxy.blackhole()
        writer.write(b"lost")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(10)
        # A new connection is accepted but gets nothing either.
        reader2, writer2 = await connect(proxy)
        writer2.write(b"also lost")
        await writer2.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await reader2.read(10)
        assert proxy.stats.bytes_dropped >= len(b"lost") + len(b"also lost")
        proxy.heal()
        # Both had holes in their byte streams: reset, never silently resumed.
        for old in (reader, reader2):
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(2.0):
                    assert await old.read(10) == b""
        reader3, writer3 = await connect(proxy)
        assert await round_trip(reader3, writer3, b"back") == b"back"
        for w in (writer, writer2, writer3):
            await close(w)


async def test_partition_resets_open_and_new_connections_until_healed() -> None:
    async with proxied() as proxy:
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"x") == b"x"
        proxy.partition()
        assert proxy.state is LinkState.PARTITION
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(2.0):
                assert await reader.read(10) == b""
        reader2, writer2 = await connect(proxy)
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(2.0):
                writer2.write(b"y")
                await writer2.drain()
                assert await reader2.read(10) == b""
        assert proxy.stats.resets >= 2
        proxy.heal()
        reader3, writer3 = await connect(proxy)
        assert await round_trip(reader3, writer3, b"z") == b"z"
        for w in (writer, writer2, writer3):
            await close(w)


async def test_reset_is_one_shot() -> None:
    async with proxied() as proxy:
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"1") == b"1"
        assert proxy.reset_connections() == 1
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(2.0):
                assert await reader.read(10) == b""
        reader2, writer2 = await connect(proxy)
        assert await round_trip(reader2, writer2, b"2") == b"2"
        await close(writer)
        await close(writer2)


async def test_throttle_paces_bandwidth() -> None:
    async with proxied() as proxy:
        reader, writer = await connect(proxy)
        proxy.set_throttle(8000.0)
        payload = b"t" * 4000
        started = time.monotonic()
        assert await round_trip(reader, writer, payload) == payload
        elapsed = time.monotonic() - started
        # 4000 bytes at 8000 B/s take 0.5 s one way; the way back overlaps (the echo answers slice by slice).
        assert elapsed >= 0.5
        proxy.heal()
        started = time.monotonic()
        assert await round_trip(reader, writer, payload) == payload
        assert time.monotonic() - started < 0.3
        await close(writer)


async def test_unreachable_upstream_closes_the_client() -> None:
    async with echo_server() as server:
        port = server.sockets[0].getsockname()[1]
    async with FaultProxy("dead", "127.0.0.1", port) as proxy:
        reader, writer = await connect(proxy)
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(6.0):
                assert await reader.read(10) == b""
        assert proxy.stats.upstream_failures == 1
        await close(writer)


async def test_stop_resets_everything_and_frees_the_port() -> None:
    async with echo_server() as server:
        port = server.sockets[0].getsockname()[1]
        proxy = FaultProxy("stop", "127.0.0.1", port)
        await proxy.start()
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"s") == b"s"
        await proxy.stop()
        assert proxy.open_connections == 0
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(2.0):
                assert await reader.read(10) == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await close(writer)


def test_bad_arguments_are_refused() -> None:
    proxy = FaultProxy("args", "127.0.0.1", 1)
    with pytest.raises(ValueError, match="latency"):
        proxy.set_latency(-1.0)
    with pytest.raises(ValueError, match="throttle"):
        proxy.set_throttle(0.0)
    assert proxy.describe() == "pass"
