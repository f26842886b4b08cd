"""Collects the realised day: the devices' true state (simulator) and the edges' modes (OPC UA).

A sample is taken at every multiple of the sampling period of simulated time (every simulated minute by
default). The fault probe measures an interlock's reaction much finer: it polls the simulator every few
wall-clock milliseconds from the moment a fault is injected until the edge's safe-state command (0 W and
DISCONNECT) reaches the device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from lab.demo.edge_observer import EdgeObserver
from lab.demo.records import OFFLINE, CabinetSample, FaultReaction, Sample
from lab.demo.sim_client import CabinetTruth, SimControlClient, SimControlError, SiteTruth, parse_status
from shared.clock import Clock

PROBE_POLL_MS = 10.0  # wall-clock period of the fault probe
PROBE_TIMEOUT_S = 5.0  # wall-clock seconds the probe waits for the safe state
DEFAULT_SAMPLE_PERIOD_S = 60.0
ZERO_POWER_KW = 0.5  # |AC power| at or below this counts as 0 W (the PCS settles exponentially)
MIN_SAMPLE_WALL_S = 0.08  # never sample faster than this in wall time (CPU is shared with the system)


def sample_period_s(speed: float) -> float:
    """Simulated seconds between samples: one minute, or more at speeds where that is under 100 ms wall."""
    period_s = DEFAULT_SAMPLE_PERIOD_S
    while period_s / speed < MIN_SAMPLE_WALL_S:
        period_s += DEFAULT_SAMPLE_PERIOD_S
    return period_s


class Sampler:
    """Takes :class:`Sample` s from the simulator and the edge observer."""

    def __init__(
        self, sim: SimControlClient, observer: EdgeObserver, cabinet_ids: Sequence[str], clock: Clock
    ) -> None:
        self._sim = sim
        self._observer = observer
        self._cabinet_ids = list(cabinet_ids)
        self._clock = clock

    async def sample(self) -> Sample:
        """The site now; a device the simulator cannot report and an edge that does not answer are gaps."""
        try:
            truth: SiteTruth | None = await self._sim.truth()
        except SimControlError:
            truth = None
        at_s = truth.time_s if truth is not None else self._clock.time_s()
        cabinets: dict[str, CabinetSample] = {}
        for cabinet_id in self._cabinet_ids:
            device = truth.cabinets.get(cabinet_id) if truth is not None else None
            edge = self._observer.telemetry(cabinet_id)
            cabinets[cabinet_id] = CabinetSample(
                power_kw=None if device is None else device.power_kw,
                soc_pct=None if device is None else device.soc_pct,
                temperature_degc=None if device is None else device.temperature_degc,
                mode=OFFLINE if edge is None else edge.mode.value,
                schedule_id="" if edge is None else edge.schedule_id,
                setpoint_kw=None if edge is None else edge.setpoint_kw,
                interlock_reason="" if edge is None else edge.interlock_reason,
                charged_ac_kwh=None if device is None else device.charged_ac_kwh,
                discharged_ac_kwh=None if device is None else device.discharged_ac_kwh,
            )
        return Sample(at_s=at_s, grid_kw=None if truth is None else truth.grid_kw, cabinets=cabinets)


def _safe_state_reached(before: CabinetTruth | None, now: CabinetTruth) -> bool:
    """The edge's trip has reached the device: DISCONNECT, or a non-zero setpoint replaced by 0 W."""
    if not now.connected:
        return True
    return before is not None and abs(before.setpoint_kw) > 1e-3 and abs(now.setpoint_kw) <= 1e-3


async def inject_and_probe(
    sim: SimControlClient, clock: Clock, cabinet_id: str, temperature_degc: float, cycle_ms: float
) -> FaultReaction:
    """Inject an over-temperature on ``cabinet_id`` and time the interlock's reaction at the device."""
    return await inject_fault_and_probe(
        sim, clock, cabinet_id, "over_temperature", temperature_degc, cycle_ms
    )


async def inject_fault_and_probe(
    sim: SimControlClient,
    clock: Clock,
    cabinet_id: str,
    fault: str,
    value: float | str | None,
    cycle_ms: float,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> FaultReaction:
    """Inject simulator fault ``fault`` on ``cabinet_id`` and time the edge's safe state at the device."""
    try:
        before = (await sim.truth()).cabinets.get(cabinet_id)
    except SimControlError:
        before = None
    injected_at_s = clock.time_s()
    started = time.perf_counter()
    await sim.set_fault(cabinet_id, fault, value)
    reaction_ms: float | None = None
    zero_power_ms: float | None = None
    at_device = False
    deadline = started + timeout_s
    while time.perf_counter() < deadline and (reaction_ms is None or zero_power_ms is None):
        try:
            answer = await sim.request({"cmd": "status"})
            now: CabinetTruth | None = parse_status(answer).cabinets[cabinet_id]
            device_ms = device_reaction_ms(answer, cabinet_id, fault)
        except (SimControlError, KeyError, TypeError, ValueError):
            now, device_ms = None, None
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if device_ms is not None and reaction_ms is None:
            reaction_ms, at_device = device_ms, True
        elif now is not None and reaction_ms is None and _safe_state_reached(before, now):
            reaction_ms = elapsed_ms  # a simulator without timing: measured at this poll
        if now is not None and zero_power_ms is None and abs(now.power_kw) <= ZERO_POWER_KW:
            zero_power_ms = elapsed_ms
        await asyncio.sleep(PROBE_POLL_MS / 1000.0)
    return FaultReaction(
        cabinet_id=cabinet_id,
        injected_at_s=injected_at_s,
        power_before_kw=None if before is None else before.power_kw,
        reaction_ms=reaction_ms,
        zero_power_ms=zero_power_ms,
        poll_period_ms=PROBE_POLL_MS,
        cycle_ms=cycle_ms,
        at_device=at_device,
    )


def device_reaction_ms(status: dict[str, Any], cabinet_id: str, fault: str) -> float | None:
    """From the simulator's own clock: fault set -> first safe-state command (DISCONNECT, or WSet 0 after a
    non-zero setpoint) the device received after it; 0 when the device was already disconnected by its
    controller; None while there is none (or no timing reported)."""
    timing = status["devices"][cabinet_id].get("timing")
    if not isinstance(timing, dict):
        return None
    set_at = timing.get("fault_set_mono_s", {}).get(fault)
    if not isinstance(set_at, float | int):
        return None
    disconnected_at = timing.get("disconnect_mono_s")
    if (
        timing.get("setop_disconnected")
        and isinstance(disconnected_at, float | int)
        and disconnected_at <= set_at
    ):
        return 0.0  # the controller had already disconnected the device: it was in the safe state
    commands = [disconnected_at, timing.get("zero_setpoint_mono_s")]
    after = [t for t in commands if isinstance(t, float | int) and t >= set_at]
    return (min(after) - set_at) * 1000.0 if after else None
