"""The campaign's fault proxies on an event loop of their own, in their own thread.

The campaign's main loop does heavy work at times (OPC UA handshakes of its observer sessions, parsing the
simulator's status, evaluating invariants). Proxies on that loop would delay Modbus answers by that much,
and an edge with a 50 ms Modbus timeout would see a late packet the campaign never meant to inject. On
their own loop they forward at once whatever the main loop does; the campaign drives them through
:meth:`ProxyThread.act`, which runs a function on the proxy in the proxies' thread and returns its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from lab.faultproxy import FaultProxy
from lab.soak.sites import Link
from shared.site import parse_host_port

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0


class ProxyThread:
    """Every link's :class:`FaultProxy`, served by one event loop in a daemon thread."""

    def __init__(self, links: Sequence[Link]) -> None:
        self._links = list(links)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="soak-proxies", daemon=True)
        self._proxies: dict[str, FaultProxy] = {}

    @property
    def names(self) -> list[str]:
        return [link.name for link in self._links]

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(CALL_TIMEOUT_S)

    async def _start(self) -> None:
        for link in self._links:
            host, port = parse_host_port(link.upstream)
            proxy = FaultProxy(link.name, host, port, listen_port=link.listen_port)
            await proxy.start()
            self._proxies[link.name] = proxy

    def act(self, name: str, action: Callable[[FaultProxy], T]) -> T:
        """Run ``action(proxy)`` in the proxies' thread; its result."""
        proxy = self._proxies[name]

        async def call() -> T:
            return action(proxy)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(CALL_TIMEOUT_S)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop_all() -> None:
            for proxy in self._proxies.values():
                await proxy.stop()

        try:
            asyncio.run_coroutine_threadsafe(stop_all(), self._loop).result(CALL_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
            self._loop.close()
