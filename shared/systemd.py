"""The systemd service protocol (``sd_notify``), without a dependency: readiness, status and watchdog.

Under a unit with ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a Unix datagram socket, ``@`` for the
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). A process that
does not send ``WATCHDOG=1`` within that time is killed and restarted (``Restart=``). Outside systemd every
method is a no-op, so the commands run the same by hand, in tests and in the demo.

Only send ``WATCHDOG=1`` for proof of progress (the edge: its control loop completed cycles since the last
ping), never from a timer alone, or a hung loop would be kept alive.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Messages to the service manager; inert when the process was not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self.watchdog_interval_s = _watchdog_interval_s(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str = "") -> None:
        """The service is up (``Type=notify`` units are 'active' from here)."""
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        """One line shown by ``systemctl status``."""
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Proof of life: the process made progress since the last call."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:  # the manager went away: nothing to tell, never a reason to stop
            log.debug("sd_notify %r failed: %s", message.split("=", 1)[0], exc)


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """How often to ping: half of ``WATCHDOG_USEC`` (systemd's advice), None without a watchdog."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000.0
