"""At most one log line per interval for a message that can repeat every cycle (the rest go to DEBUG)."""

from __future__ import annotations

import logging
import time


class LogLimit:
    """Logs at ``level`` at most once per ``every_s`` (monotonic); in between at DEBUG, counted, and the
    next line says how many were not shown."""

    def __init__(self, logger: logging.Logger, level: int, every_s: float = 10.0) -> None:
        self._logger = logger
        self._level = level
        self._every_s = every_s
        self._last_s: float | None = None
        self._suppressed = 0

    def log(self, message: str, *, exc_info: bool = False) -> None:
        now_s = time.monotonic()
        if self._last_s is not None and now_s - self._last_s < self._every_s:
            self._suppressed += 1
            self._logger.debug(message, exc_info=exc_info)
            return
        more = f" ({self._suppressed} more since the last such line)" if self._suppressed else ""
        self._logger.log(self._level, message + more, exc_info=exc_info)
        self._last_s, self._suppressed = now_s, 0
