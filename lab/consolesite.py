"""A whole throw-away site (simulators, edges, central service) running in a background thread, for the
console's browser tests and ``ems bench console``.

A browser driver (Selenium) blocks the thread that calls it, so the site cannot share that thread's event
loop: it runs its own loop in a thread. :meth:`ConsoleSite.call` runs a function on that loop (inject a
fault, read the service's state). Three named API tokens are made: operator, uploader and viewer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from central.service.app import CentralService, ServiceConfig
from central.service.tokens import ApiRole, add_token
from lab.localsite import LocalSite, prepare_security
from lab.loopback import free_port, loopback_site_toml
from shared.clock import SimulatedClock
from shared.site import SiteConfig, load_site

T = TypeVar("T")
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SiteTokens:
    operator: str
    uploader: str
    viewer: str


def console_site_toml(directory: Path, cabinets: int, reoptimize_every_minutes: float) -> str:
    extra = "\n".join(
        [
            "[edge]",
            "modbus_timeout_ms = 1000.0",
            "comm_timeout_ms = 3000.0",
            "reconnect_min_s = 0.05",
            "reconnect_max_s = 0.5",
            "",
            "[central]",
            f'http_address = "127.0.0.1:{free_port()}"',
            f'database_path = "{directory / "central.sqlite3"}"',
            f"reoptimize_every_minutes = {reoptimize_every_minutes}",
            "telemetry_sample_every_s = 300.0",
            "",
            "[opcua]",
            f'pki_dir = "{directory / "pki"}"',
            "request_timeout_s = 2.0",
            "reconnect_max_s = 0.5",
        ]
    )
    return loopback_site_toml(
        cabinets, name="console-site", grid_import_limit_kw=400.0, grid_export_limit_kw=300.0, extra=extra
    )


class ConsoleSite:
    """``with ConsoleSite(directory, cabinets=3) as site``: everything runs until the block ends."""

    def __init__(
        self,
        directory: Path,
        *,
        cabinets: int = 3,
        speed: float = 60.0,
        start: datetime | None = None,
        reoptimize_every_minutes: float = 1440.0,
        central_process: bool = False,
    ) -> None:
        """``central_process``: run the central as its own ``ems central`` process (its CPU is then
        measurable apart from the simulators and edges; :attr:`service` stays None)."""
        self.directory = directory
        path = directory / "site.toml"
        path.write_text(console_site_toml(directory, cabinets, reoptimize_every_minutes), encoding="utf-8")
        self.site_path = path
        self.site: SiteConfig = load_site(path)
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.day_start = day
        self.clock = SimulatedClock(start or day + timedelta(minutes=1), speed)
        self._password = prepare_security(self.site, directory / "pki")
        tokens_file = ServiceConfig.from_site(self.site, {}).tokens_file
        self.tokens = SiteTokens(
            operator=add_token(tokens_file, "console-operator", ApiRole.OPERATOR)[1],
            uploader=add_token(tokens_file, "console-uploader", ApiRole.UPLOADER)[1],
            viewer=add_token(tokens_file, "console-viewer", ApiRole.VIEWER)[1],
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._restart: asyncio.Event | None = None
        self._down_s = 1.0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.service: CentralService | None = None
        self.local: LocalSite | None = None
        self.central_process = central_process
        self.central_pid: int | None = None
        host, port = self.site.central.http_address.rsplit(":", 1)
        self._process_url = f"http://{host}:{port}"

    @property
    def url(self) -> str:
        if self.central_process:
            return self._process_url
        if self.service is None:
            raise RuntimeError("the site is not running")
        return self.service.url

    def __enter__(self) -> ConsoleSite:
        self._thread = threading.Thread(target=self._main, name="console-site", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the site did not start within {START_TIMEOUT_S} s")
        if self._error is not None:
            raise RuntimeError(f"the site did not start: {self._error}") from self._error
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(60.0)

    def call(self, function: Callable[[], T], timeout_s: float = 30.0) -> T:
        """Run ``function`` on the site's event loop and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the site is not running")

        async def run() -> T:
            return function()

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), loop)
        return future.result(timeout_s)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` on the site's event loop (a background task)."""
        if self._loop is None:
            raise RuntimeError("the site is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    def restart_central(self, down_s: float = 1.0) -> None:
        """Stop the central service, wait ``down_s`` and start it again on the same address (every
        console loses its stream); returns once it serves again."""
        loop, restart = self._loop, self._restart
        if loop is None or restart is None:
            raise RuntimeError("the site is not running")
        self._down_s = down_s
        self._ready.clear()
        loop.call_soon_threadsafe(restart.set)
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the central did not start again")

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._restart = asyncio.Event()
        env = {self.site.opcua.central_password_env: self._password}
        config = ServiceConfig.from_site(self.site, env)
        async with LocalSite(self.site, self.clock, self.directory) as local:
            self.local = local
            if self.central_process:
                await self._run_process(env)
                return
            while not self._stop.is_set():
                async with CentralService(self.site, self.clock, config) as service:
                    self.service = service
                    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S / 2
                    while not all(service.connected().values()):
                        if asyncio.get_running_loop().time() > deadline:
                            raise RuntimeError("the edges did not connect")
                        await asyncio.sleep(0.05)
                    self._ready.set()
                    stop = asyncio.create_task(self._stop.wait())
                    restart = asyncio.create_task(self._restart.wait())
                    await asyncio.wait({stop, restart}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    restart.cancel()
                self._restart.clear()
                if not self._stop.is_set():
                    await asyncio.sleep(self._down_s)

    async def _run_process(self, env: dict[str, str]) -> None:
        assert self._stop is not None
        command = [sys.executable, "-m", "ems", "central", "--site", str(self.site_path)]
        command += ["--clock", self.clock.spec()]
        log_file = (self.directory / "central.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **env}, stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
        self.central_pid = process.pid
        try:
            await self._wait_serving()
            self._ready.set()
            await self._stop.wait()
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 30.0)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            log_file.close()

    async def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S / 2
        async with httpx.AsyncClient(base_url=self._process_url, timeout=5.0) as client:
            while True:
                try:
                    answer = await client.get("/api/v1/cabinets")
                    if answer.status_code == 200 and all(c["connected"] for c in answer.json()):
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the central did not serve with every edge connected ({self.directory})"
                    )
                await asyncio.sleep(0.1)
