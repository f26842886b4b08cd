"""Limit the threads of numpy's BLAS (OpenBLAS) while a solve runs.

The block interior point method's dense steps (the Schur complement products and its inverse) are small
BLAS calls. OpenBLAS starts a thread per core for each; on the shared 2-core machine of a central (edges,
the service, HiGHS) those threads mostly wait for each other: measured, one iteration at 20 x 96 took 0.4 s
with the default threads under load and 0.026 s with one. Like ``threadpoolctl``, this calls OpenBLAS's own
``*_set_num_threads`` in the library numpy loaded; where that library cannot be found (not Linux, another
BLAS) it does nothing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy  # noqa: F401  (loads the BLAS library this module looks for)

_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)
_lock = threading.Lock()


@dataclass(frozen=True)
class _OpenBlas:
    set_threads: ctypes._CFuncPtr  # type: ignore[name-defined]
    get_threads: ctypes._CFuncPtr  # type: ignore[name-defined]


def _loaded_openblas() -> _OpenBlas | None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    paths = {
        line.split()[-1]
        for line in maps.read_text(encoding="utf-8", errors="replace").splitlines()
        if "openblas" in line.lower() and ".so" in line
    }
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if hasattr(library, set_name) and hasattr(library, get_name):
                return _OpenBlas(getattr(library, set_name), getattr(library, get_name))
    return None


_openblas: _OpenBlas | None = None
_looked = False


def _library() -> _OpenBlas | None:
    global _openblas, _looked
    if not _looked:
        _openblas = _loaded_openblas()
        _looked = True
    return _openblas


@contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Run the body with OpenBLAS limited to ``count`` threads, then restore the previous number."""
    with _lock:
        library = _library()
        previous = int(library.get_threads()) if library is not None else 0
        if library is not None:
            library.set_threads(int(count))
    try:
        yield
    finally:
        if library is not None:
            with _lock:
                library.set_threads(previous)
