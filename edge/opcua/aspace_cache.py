"""A cache of OPC UA's standard address space on disk, so an edge starts in a fraction of a second.

Every OPC UA server carries the standard nodes (about 40,000 of them). asyncua builds them from generated
code at each start: 3-4 s of CPU and about 50 MB of memory on an edge PC, for nodes a client rarely reads.
asyncua can instead serve them from a ``shelve`` file, loading a node only when a client touches it. The
first start builds the file in the edge's state directory (named after the asyncua and Python versions, so
an upgrade builds a new one); later starts load it in about 0.1 s and keep about 2 MB resident.

The file is written under a temporary name and published by creating its marker file last, so several
edges sharing a state directory never load a half-written cache. The cache is read-only while in use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path

log = logging.getLogger(__name__)

# The files dbm.dumb (shelve's fallback back end) writes for a base name; other back ends write one of them.
_SUFFIXES = ("", ".dat", ".dir", ".bak", ".db", ".pag")


def shelf_base(cache_dir: Path) -> Path:
    """The cache's base path for this asyncua and Python (asyncua checks ``base.is_file()``)."""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_dir / f"opcua-standard-nodes-asyncua-{version('asyncua')}-{python}"


class AddressSpaceCache:
    """Where :meth:`asyncua.Server.init` loads the standard nodes from, or builds them into."""

    def __init__(self, cache_dir: Path | None) -> None:
        self._final = shelf_base(cache_dir) if cache_dir is not None else None
        self._building: Path | None = None

    def init_path(self) -> Path | None:
        """The path to hand to ``Server.init``: the published cache (load it), a temporary base name (asyncua
        builds the nodes in memory and writes them there), or None without a usable directory."""
        if self._final is None:
            return None
        if self._final.is_file():
            return self._final
        try:
            self._final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "no OPC UA node cache in %s (%s): every start builds the nodes", self._final.parent, exc
            )
            return None
        self._building = self._final.with_name(f"{self._final.name}.{os.getpid()}.tmp")
        return self._building

    def publish(self) -> None:
        """After ``Server.init``: move a freshly written cache into place; the marker file comes last."""
        building, self._building = self._building, None
        if building is None or self._final is None:
            return
        try:
            for suffix in _SUFFIXES:
                part = Path(str(building) + suffix)
                if part.exists():
                    part.replace(Path(str(self._final) + suffix))
            self._final.touch()  # the marker asyncua looks for (dbm.dumb writes only .dat/.dir)
            log.info("cached the OPC UA standard nodes in %s for faster starts", self._final)
        except OSError as exc:
            log.warning("could not keep the OPC UA node cache in %s: %s", self._final.parent, exc)
        finally:
            for suffix in _SUFFIXES:
                with contextlib.suppress(OSError):
                    Path(str(building) + suffix).unlink()
