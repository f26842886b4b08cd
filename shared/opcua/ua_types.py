"""Typed constructors for asyncua values (asyncua annotates with its own int/str/datetime subclasses)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from asyncua import ua
from asyncua.ua import uatypes
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

__all__ = ["ObjectIds", "StatusCodes", "node_id", "numeric_node_id", "status", "ua_datetime"]


def node_id(identifier: str, namespace: int) -> ua.NodeId:
    """A string NodeId ``ns=namespace;s=identifier``."""
    return ua.NodeId(cast(uatypes.String, identifier), cast(uatypes.Int16, namespace))


def numeric_node_id(identifier: int, namespace: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(uatypes.Int32, identifier), cast(uatypes.Int16, namespace))


def status(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast(uatypes.UInt32, code))


def ua_datetime(value: datetime) -> uatypes.DateTime:
    return cast(uatypes.DateTime, value)
