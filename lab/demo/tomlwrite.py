"""A small TOML writer for the tables a site file holds (no third-party writer is a dependency).

Handles what :func:`tomllib.loads` returns for a site file: tables of scalars (str, bool, int, float),
arrays of scalars, and arrays of tables (``[[cabinets]]``). Anything else is refused with ``TypeError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def dumps(document: Mapping[str, Any]) -> str:
    """Render ``document`` as TOML text that :func:`tomllib.loads` reads back equal."""
    lines: list[str] = []
    top_scalars = {k: v for k, v in document.items() if not _is_table(v) and not _is_table_array(v)}
    for key, value in top_scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in document.items():
        if _is_table(value):
            lines += ["", f"[{_key(key)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
        elif _is_table_array(value):
            for table in value:
                lines += ["", f"[[{_key(key)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot write the non-finite number {value!r}")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are valid TOML basic-string escapes; TOML also forbids a raw DEL, which JSON keeps.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007F")
    if isinstance(value, list):
        if any(_is_table(v) for v in value):
            raise TypeError("an array mixing tables and values cannot be written")
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")
