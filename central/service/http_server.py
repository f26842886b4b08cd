"""The HTTP server of the service: the listening socket (bound first, so a busy port stops the start
before anything else happens) and uvicorn embedded in the service's event loop, with TLS when configured."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from contextlib import AsyncExitStack

import uvicorn
from fastapi import FastAPI

HTTP_SHUTDOWN_TIMEOUT_S = 2  # requests in flight get this long when the service stops


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handling: the ``ems central`` process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """Bind the HTTP socket here, so a busy port is a clear error rather than uvicorn's sys.exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"HTTP address {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


async def serve_http(
    app: FastAPI, sock: socket.socket, stack: AsyncExitStack, tls: ssl.SSLContext | None
) -> None:
    """Serve ``app`` on ``sock`` (over TLS with ``tls``, a context of :mod:`shared.tls`) until ``stack``
    closes; returns once the server accepts requests."""
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=HTTP_SHUTDOWN_TIMEOUT_S,
        proxy_headers=False,  # the limiter and the audit trail key on the TCP peer, never a header
        server_header=False,
    )
    config.load()
    config.ssl = tls  # TLS 1.2+ context of shared.tls (uvicorn's own cannot set a minimum version)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="central-http")

    async def stop() -> None:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=HTTP_SHUTDOWN_TIMEOUT_S + 3.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()

    stack.push_async_callback(stop)
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the HTTP server stopped during start")
        await asyncio.sleep(0.01)
