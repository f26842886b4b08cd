"""Logging set-up of the ``ems`` processes: one format, one place to decide what operators see."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(*, verbose: bool = False) -> None:
    """Root logging for a command: DEBUG with ``verbose``, else INFO."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
