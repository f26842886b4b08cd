"""The two methods of the ``Cabinet`` object: argument declarations and decoding (docs/interfaces.md: edge
OPC UA server).

``WriteSchedule(ScheduleId: String, Start: DateTime, IntervalSeconds: UInt32, SetpointsKw: Double[])`` and
``ResetInterlock()`` both return ``(Accepted: Boolean, Message: String)``. Arguments of the wrong type or
number are refused with a message, like any other bad schedule; nothing reaches the controller then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from asyncua import ua

from shared.edge_api import Decision, EdgeControl
from shared.opcua.common import MAX_SCHEDULE_ID_CHARS
from shared.opcua.ua_types import numeric_node_id
from shared.schedule import MAX_SCHEDULE_STEPS, CabinetSchedule

_log = logging.getLogger(__name__)

_UINT32_MAX = 2**32 - 1


def _argument(name: str, vtype: ua.VariantType, description: str, *, array: bool = False) -> ua.Argument:
    argument = ua.Argument()
    argument.Name = name
    argument.DataType = numeric_node_id(vtype.value)
    argument.ValueRank = ua.ValueRank.OneDimension if array else ua.ValueRank.Scalar
    argument.ArrayDimensions = [0] if array else []
    argument.Description = ua.LocalizedText(description)
    return argument


WRITE_SCHEDULE_INPUTS = [
    _argument("ScheduleId", ua.VariantType.String, "identifier of the schedule (plan id / cabinet id)"),
    _argument("Start", ua.VariantType.DateTime, "start of the first interval (UTC)"),
    _argument("IntervalSeconds", ua.VariantType.UInt32, "length of every interval [s]"),
    _argument("SetpointsKw", ua.VariantType.Double, "setpoint per interval [kW], + discharge", array=True),
]
RESULT_OUTPUTS = [
    _argument("Accepted", ua.VariantType.Boolean, "true when the request was carried out"),
    _argument("Message", ua.VariantType.String, "what was done, or why it was refused"),
]


class ArgumentError(ValueError):
    """Method arguments that do not match the declaration."""


def decode_write_schedule(arguments: Sequence[ua.Variant]) -> CabinetSchedule:
    """The schedule the arguments describe; :class:`ArgumentError` naming the bad argument otherwise.

    Only the shape is checked here; limits, NaN, emptiness and time are the controller's checks.
    """
    if len(arguments) != len(WRITE_SCHEDULE_INPUTS):
        raise ArgumentError(f"WriteSchedule takes 4 arguments, got {len(arguments)}")
    schedule_id = _scalar(arguments[0], "ScheduleId", ua.VariantType.String)
    start = _scalar(arguments[1], "Start", ua.VariantType.DateTime)
    interval_s = _scalar(arguments[2], "IntervalSeconds", ua.VariantType.UInt32)
    setpoints = arguments[3]
    if not isinstance(schedule_id, str):
        raise ArgumentError("ScheduleId must be a String")
    if len(schedule_id) > MAX_SCHEDULE_ID_CHARS:
        raise ArgumentError(f"ScheduleId has {len(schedule_id)} characters; at most {MAX_SCHEDULE_ID_CHARS}")
    if not isinstance(start, datetime):
        raise ArgumentError("Start must be a DateTime")
    if isinstance(interval_s, bool) or not isinstance(interval_s, int) or not 0 <= interval_s <= _UINT32_MAX:
        raise ArgumentError("IntervalSeconds must be a UInt32")
    if setpoints.VariantType != ua.VariantType.Double or not (setpoints.is_array or setpoints.Value is None):
        raise ArgumentError(f"SetpointsKw must be a Double array, got {_type_name(setpoints)}")
    values = list(setpoints.Value or [])
    if len(values) > MAX_SCHEDULE_STEPS:
        raise ArgumentError(f"SetpointsKw has {len(values)} values; at most {MAX_SCHEDULE_STEPS}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise ArgumentError("SetpointsKw must hold numbers only")
    return CabinetSchedule(
        schedule_id=schedule_id,
        start=start,
        interval_s=interval_s,
        setpoints_kw=tuple(float(v) for v in values),
    )


def _scalar(variant: ua.Variant, name: str, expected: ua.VariantType) -> object:
    if not isinstance(variant, ua.Variant) or variant.VariantType != expected or variant.is_array:
        got = _type_name(variant) if isinstance(variant, ua.Variant) else type(variant).__name__
        raise ArgumentError(f"{name} must be a {expected.name}, got {got}")
    return variant.Value


def _type_name(variant: ua.Variant) -> str:
    return f"{variant.VariantType.name}{'[]' if variant.is_array else ''}"


def result(decision: Decision) -> list[ua.Variant]:
    return [
        ua.Variant(decision.accepted, ua.VariantType.Boolean),
        ua.Variant(decision.message, ua.VariantType.String),
    ]


def call_write_schedule(control: EdgeControl, arguments: Sequence[ua.Variant]) -> Decision:
    """Decode and submit; every failure becomes a refusal with its reason (never an exception)."""
    try:
        schedule = decode_write_schedule(arguments)
    except ArgumentError as exc:
        return Decision(False, str(exc))
    try:
        decision = control.submit_schedule(schedule)
    except Exception as exc:  # the controller's bug must not become a silent acceptance
        _log.exception("controller failed on schedule %s", schedule.schedule_id)
        return Decision(False, f"edge error, schedule not taken: {exc}")
    _log.info(
        "WriteSchedule %r (%d setpoints): %s: %s",
        schedule.schedule_id,
        len(schedule.setpoints_kw),
        "accepted" if decision.accepted else "refused",
        decision.message,
    )
    return decision


def call_reset_interlock(control: EdgeControl, arguments: Sequence[ua.Variant]) -> Decision:
    if arguments:
        return Decision(False, f"ResetInterlock takes no arguments, got {len(arguments)}")
    try:
        decision = control.reset_interlock()
    except Exception as exc:
        _log.exception("controller failed on ResetInterlock")
        return Decision(False, f"edge error, interlock not reset: {exc}")
    _log.info("ResetInterlock: %s: %s", "accepted" if decision.accepted else "refused", decision.message)
    return decision
