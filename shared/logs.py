"""Logging set-up of the ``ems`` processes: one format, one place to decide what operators see.

INFO is for operators: uploads, plans, push rounds, trips, resets, connections. The libraries underneath
(asyncua, pymodbus, uvicorn, APScheduler, httpx, ...) log routine chatter at INFO, such as asyncua's
"Publish callback" line for every subscription notification (about 70 MB a day on a central); their
records below WARNING are dropped unless ``-v``, and with ``-v`` they appear as DEBUG. Their warnings and
errors always appear.

``--log-file PATH`` writes the log to a file that rotates by size (``--log-max-mb``, ``--log-backups``)
instead of stderr; what a command prints itself (status lines, one-line errors) stays on stdout/stderr.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.errors import InputError, Problem

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers of the libraries whose INFO is chatter (their children included).
LIBRARY_LOGGERS = (
    "asyncua",
    "pymodbus",
    "uvicorn",
    "apscheduler",
    "httpx",
    "httpcore",
    "matplotlib",
    "PIL",
    "pyomo",
    "sunspec2",
)
DEFAULT_LOG_MAX_MB = 10.0
_INSTALLED: list[logging.Handler] = []  # the handler configure_logging added (replaced on a second call)
DEFAULT_LOG_BACKUPS = 5


@dataclass(frozen=True)
class LogOptions:
    """How a command logs: ``verbose`` (DEBUG, library chatter included) and an optional rotating file."""

    verbose: bool = False
    file: Path | None = None
    max_mb: float = DEFAULT_LOG_MAX_MB
    backups: int = DEFAULT_LOG_BACKUPS

    def __post_init__(self) -> None:
        if not self.max_mb > 0:
            raise InputError("--log-max-mb", [Problem("", f"must be > 0, got {self.max_mb:g}")])
        if self.backups < 1:
            raise InputError("--log-backups", [Problem("", f"must be >= 1, got {self.backups}")])

    @property
    def max_bytes(self) -> int:
        return max(1, int(self.max_mb * 1024 * 1024))


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``-v`` and the log file options (on the ``ems`` root parser: ``ems --log-file F central ...``)."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, library chatter included"
    )
    parser.add_argument(
        "--log-file", type=Path, metavar="PATH", help="log to this file, rotated by size, instead of stderr"
    )
    parser.add_argument(
        "--log-max-mb",
        type=float,
        default=DEFAULT_LOG_MAX_MB,
        metavar="MB",
        help=f"rotate the log file at this size [MiB] (default {DEFAULT_LOG_MAX_MB:g})",
    )
    parser.add_argument(
        "--log-backups",
        type=int,
        default=DEFAULT_LOG_BACKUPS,
        metavar="N",
        help=f"rotated log files kept: PATH.1 ... PATH.N (default {DEFAULT_LOG_BACKUPS})",
    )


def log_options(args: argparse.Namespace) -> LogOptions:
    """The :class:`LogOptions` of parsed ``ems`` arguments; InputError naming a bad option."""
    return LogOptions(
        verbose=bool(getattr(args, "verbose", False)),
        file=getattr(args, "log_file", None),
        max_mb=getattr(args, "log_max_mb", DEFAULT_LOG_MAX_MB),
        backups=getattr(args, "log_backups", DEFAULT_LOG_BACKUPS),
    )


def configure_logging(options: LogOptions) -> None:
    """Root logging for a command: INFO (DEBUG with ``verbose``) to stderr or a rotating file.

    Like :func:`logging.basicConfig`, it leaves alone a process whose logging someone else has set up (a
    test harness or an application embedding ``ems``), unless a log file is asked for.
    """
    root = logging.getLogger()
    foreign = [h for h in root.handlers if h not in _INSTALLED]
    if foreign and options.file is None:
        return
    handler = _handler(options)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(LibraryChatterFilter())
    while _INSTALLED:
        old = _INSTALLED.pop()
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    _INSTALLED.append(handler)
    root.setLevel(logging.DEBUG if options.verbose else logging.INFO)
    for name in LIBRARY_LOGGERS:
        # Without -v the libraries do not even build their INFO records (cheap on a 10 ms control loop).
        logging.getLogger(name).setLevel(logging.NOTSET if options.verbose else logging.WARNING)


def _handler(options: LogOptions) -> logging.Handler:
    if options.file is None:
        return logging.StreamHandler(sys.stderr)
    try:
        options.file.parent.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(
            options.file, maxBytes=options.max_bytes, backupCount=options.backups, encoding="utf-8"
        )
    except OSError as exc:
        problem = Problem("", f"cannot open {options.file}: {exc.strerror or exc}")
        raise InputError("--log-file", [problem]) from None


def is_library(name: str) -> bool:
    """Whether logger ``name`` belongs to one of :data:`LIBRARY_LOGGERS`."""
    return any(name == lib or name.startswith(lib + ".") for lib in LIBRARY_LOGGERS)


class LibraryChatterFilter(logging.Filter):
    """Shows a library's records below WARNING as DEBUG (they only pass with ``-v``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and is_library(record.name):
            record.levelno = logging.DEBUG
            record.levelname = logging.getLevelName(logging.DEBUG)
        return True
