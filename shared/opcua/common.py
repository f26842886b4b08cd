"""The edge address space of docs/interfaces.md: edge OPC UA server, shared by the edge server and the
central client.

Names, the namespace URI, the endpoint path and the application URIs live here, as does the mapping between
:class:`shared.edge_api.EdgeTelemetry` and the variable values, so both ends agree by construction.
This module does not import asyncua: variable types are named by their OPC UA built-in type name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from shared.edge_api import EdgeMode, EdgeTelemetry

NAMESPACE_URI = "urn:hybrid-ems:edge"
ENDPOINT_PATH = "/ems/edge"
CABINET_OBJECT = "Cabinet"
WRITE_SCHEDULE = "WriteSchedule"
RESET_INTERLOCK = "ResetInterlock"

# OPC UA DateTime "null" (1601-01-01T00:00:00Z): ScheduleValidUntil when no schedule is active.
OPCUA_NULL_DATETIME = datetime(1601, 1, 1, tzinfo=UTC)
MAX_SCHEDULE_ID_CHARS = 256


@dataclass(frozen=True)
class VariableSpec:
    """One read-only variable of the ``Cabinet`` object: its browse name and OPC UA built-in type."""

    name: str
    ua_type: str  # "String", "Double", "Boolean" or "DateTime"
    field: str  # the EdgeTelemetry attribute it mirrors


CABINET_VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec("CabinetId", "String", "cabinet_id"),
    VariableSpec("SocPct", "Double", "soc_pct"),
    VariableSpec("ActivePowerKw", "Double", "active_power_kw"),
    VariableSpec("SetpointKw", "Double", "setpoint_kw"),
    VariableSpec("ChargeLimitKw", "Double", "charge_limit_kw"),
    VariableSpec("DischargeLimitKw", "Double", "discharge_limit_kw"),
    VariableSpec("Mode", "String", "mode"),
    VariableSpec("ScheduleId", "String", "schedule_id"),
    VariableSpec("ScheduleValidUntil", "DateTime", "schedule_valid_until"),
    VariableSpec("InterlockActive", "Boolean", "interlock_active"),
    VariableSpec("InterlockReason", "String", "interlock_reason"),
    VariableSpec("CycleTimeP99Ms", "Double", "cycle_time_p99_ms"),
)
VARIABLE_NAMES: tuple[str, ...] = tuple(spec.name for spec in CABINET_VARIABLES)


def edge_application_uri(site_name: str, cabinet_id: str) -> str:
    """Application URI of a cabinet's edge server; it is the URI in the edge certificate."""
    return f"urn:hybrid-ems:{quote(site_name, safe='')}:edge:{quote(cabinet_id, safe='')}"


def central_application_uri(site_name: str) -> str:
    """Application URI of the central's OPC UA client; it is the URI in the central certificate."""
    return f"urn:hybrid-ems:{quote(site_name, safe='')}:central"


def endpoint_host(endpoint: str) -> str:
    """The host part of ``opc.tcp://HOST:PORT/path``."""
    return urlsplit(endpoint).hostname or ""


def endpoint_path_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` is not ``opc.tcp://HOST:PORT/ems/edge``, or None."""
    path = urlsplit(endpoint).path.rstrip("/")
    if path != ENDPOINT_PATH:
        return f"endpoint {endpoint!r} must have the path {ENDPOINT_PATH} (docs/interfaces.md), not {path!r}"
    return None


def telemetry_values(telemetry: EdgeTelemetry) -> dict[str, object]:
    """The value of every ``Cabinet`` variable for a telemetry snapshot (DateTime null for no schedule)."""
    values: dict[str, object] = {}
    for spec in CABINET_VARIABLES:
        value = getattr(telemetry, spec.field)
        if spec.name == "Mode":
            value = str(EdgeMode(value).value)
        elif spec.name == "ScheduleValidUntil" and value is None:
            value = OPCUA_NULL_DATETIME
        elif spec.ua_type == "Double":
            value = float(value)
        values[spec.name] = value
    return values


def telemetry_from_values(values: Mapping[str, object], expected_cabinet_id: str) -> EdgeTelemetry:
    """Rebuild an :class:`EdgeTelemetry` from variable values; ``ValueError`` names what is wrong.

    A missing variable, a wrong type, a non-finite number, an unknown mode or another cabinet's id is an
    error: the central must not plan with telemetry it cannot trust.
    """
    missing = [name for name in VARIABLE_NAMES if name not in values]
    if missing:
        raise ValueError(f"missing variables: {', '.join(missing)}")
    fields: dict[str, object] = {}
    for spec in CABINET_VARIABLES:
        fields[spec.field] = _checked(spec, values[spec.name])
    if fields["cabinet_id"] != expected_cabinet_id:
        raise ValueError(f"edge reports CabinetId {fields['cabinet_id']!r}, expected {expected_cabinet_id!r}")
    valid_until = fields["schedule_valid_until"]
    if isinstance(valid_until, datetime) and valid_until <= OPCUA_NULL_DATETIME:
        fields["schedule_valid_until"] = None
    return EdgeTelemetry(**fields)  # type: ignore[arg-type]


def _checked(spec: VariableSpec, value: object) -> object:
    if spec.ua_type == "Double":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{spec.name} = {value!r} is not a finite number")
        return float(value)
    if spec.ua_type == "Boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{spec.name} = {value!r} is not a Boolean")
        return value
    if spec.ua_type == "DateTime":
        if not isinstance(value, datetime):
            raise ValueError(f"{spec.name} = {value!r} is not a DateTime")
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError(f"{spec.name} = {value!r} is not a String")
    if spec.name == "Mode":
        try:
            return EdgeMode(value)
        except ValueError:
            known = ", ".join(mode.value for mode in EdgeMode)
            raise ValueError(f"Mode = {value!r} is not one of {known}") from None
    return value
