"""Starting and ending each kind of fault on the live system (processes, simulator, proxies, uploads)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from lab.demo.central_client import CentralError
from lab.demo.sampler import inject_fault_and_probe
from lab.demo.sim_client import SimControlError
from lab.faultproxy import FaultProxy
from lab.soak.dayaheads import day_dayahead, repriced
from lab.soak.monitor import integrity_check
from lab.soak.records import FaultRun, IntegrityCheck, UploadAttempt
from lab.soak.schedule import (
    BATTERY_FAULTS,
    DAY_S,
    DEVICE_COMM_FAULTS,
    LINK_FAULTS,
    FaultKind,
    FaultSpec,
)

if TYPE_CHECKING:
    from lab.soak.runner import Live

UPLOAD_RETRY_WALL_S = 1.0
# An edge process needs this long after its start before its control loop runs (interpreter, OPC UA
# server, first valid snapshot: measured up to 6 s on a loaded 2-core machine); its telemetry may still
# come from the session to the killed process meanwhile.
EDGE_START_WALL_S = 15.0  # a trading system retries a refused connection this often (wall time)
DERATE = "derate"


async def start_fault(live: Live, run: FaultRun) -> None:
    """Begin ``run``'s fault; notes what was done in ``run.actions``."""
    spec = run.spec
    kind, target = spec.kind, spec.target
    if kind is FaultKind.KILL_CENTRAL:
        await live.kill("central", run)
    elif kind is FaultKind.KILL_EDGE:
        await live.kill(f"edge-{target}", run)
    elif kind in BATTERY_FAULTS:
        await _battery_fault(live, run)
    elif kind in DEVICE_COMM_FAULTS or kind is FaultKind.LIMIT_DERATE:
        fault = DERATE if kind is FaultKind.LIMIT_DERATE else kind.value
        await live.sim.set_fault(target, fault, spec.value)
        run.note(f"simulator: {fault} on {target}" + ("" if spec.value is None else f" ({spec.value})"))
    elif kind is FaultKind.SOC_CHANGE:
        await live.sim.request({"cmd": "set_soc", "device": target, "value": spec.value})
        run.note(f"simulator: SoC of {target} set to {spec.value} %")
    elif kind in LINK_FAULTS:
        _link_fault(live, run)
    elif kind in (FaultKind.UPLOAD, FaultKind.REUPLOAD):
        live.spawn(upload(live, run))


async def end_fault(live: Live, run: FaultRun) -> None:
    """End ``run``'s fault (restart a killed process, clear a device fault, heal a link)."""
    spec = run.spec
    kind, target = spec.kind, spec.target
    if kind is FaultKind.KILL_CENTRAL:
        await live.restart("central", run)
    elif kind is FaultKind.KILL_EDGE:
        await live.restart(f"edge-{target}", run)
    elif kind in BATTERY_FAULTS or kind in DEVICE_COMM_FAULTS or kind is FaultKind.LIMIT_DERATE:
        fault = DERATE if kind is FaultKind.LIMIT_DERATE else kind.value
        await live.sim.clear_fault(target, fault)
        run.note(f"simulator: {fault} cleared on {target}")
    elif kind in LINK_FAULTS:
        live.links.act(target, lambda proxy: proxy.heal())
        run.note(f"link {target} healed")


def _link_fault(live: Live, run: FaultRun) -> None:
    spec = run.spec
    run.note(f"link {spec.target}: " + live.links.act(spec.target, lambda proxy: _impair(proxy, spec)))


def _impair(proxy: FaultProxy, spec: FaultSpec) -> str:
    """Apply ``spec`` to ``proxy`` (in the proxies' thread); what the link does now."""
    kind = spec.kind
    if kind is FaultKind.LINK_LATENCY:
        proxy.set_latency(float(spec.value or 0.0))
    elif kind is FaultKind.LINK_THROTTLE:
        proxy.set_throttle(float(spec.value or 1.0))
    elif kind is FaultKind.LINK_BLACKHOLE:
        proxy.blackhole()
    elif kind is FaultKind.LINK_PARTITION:
        proxy.partition()
    elif kind is FaultKind.LINK_RESET:
        return f"{proxy.reset_connections()} connection(s) reset"
    return proxy.describe()


def edge_cannot_act(live: Live, cabinet_id: str) -> str:
    """Why the cabinet's edge could not bring the device to the safe state now ("" when it could)."""
    if not live.supervisor.running(f"edge-{cabinet_id}"):
        return "edge down"
    telemetry = live.observer.telemetry(cabinet_id)
    if telemetry is None:
        return "edge not answering"
    if live.restarted_within(f"edge-{cabinet_id}", EDGE_START_WALL_S):
        return "edge starting"
    if telemetry.mode.value == "starting":
        return why_starting(telemetry.interlock_active, telemetry.interlock_reason)
    for other in live.active_faults():
        kind, target = other.spec.kind, other.spec.target
        if kind in DEVICE_COMM_FAULTS and target == cabinet_id:
            return "device not communicating"
        if kind in LINK_FAULTS and target == f"modbus:{cabinet_id}":
            return "Modbus link to the device faulted"
    return ""


def why_starting(interlock_active: bool, reason: str) -> str:
    """Why an edge in mode ``starting`` could not act ("" when it could). A communication-loss hold is
    ``starting`` too: while it holds (no valid data) it is excused whatever link its episode began with,
    since the reason names the first problem, not which links fail now (a meter hold under a loaded
    machine saw the device link drop too); once data is valid again (recovering) the edge reads its
    device and trips, and nothing is excused."""
    if not (interlock_active and reason.startswith("comm_loss")):
        return "edge starting"
    if "holding until valid data" in reason:
        return "edge holding: no valid data"
    return ""


async def _battery_fault(live: Live, run: FaultRun) -> None:
    """Inject and time the safe state at the device; a late or missing reaction is excused only when the
    edge was down or could not reach the device (a device or link fault the campaign injected)."""
    spec = run.spec
    if not live.supervisor.running(f"edge-{spec.target}"):
        run.exempt = "edge down"
        await live.sim.set_fault(spec.target, spec.kind.value, spec.value)
        run.note(f"simulator: {spec.kind.value} on {spec.target} ({spec.value}); not timed: edge down")
        return
    before = edge_cannot_act(live, spec.target)
    run.probing = True
    try:
        reaction = await inject_fault_and_probe(
            live.sim, live.clock, spec.target, spec.kind.value, spec.value, live.site.edge.cycle_ms
        )
    finally:
        run.probing = False
    run.reaction_ms = reaction.reaction_ms
    run.reaction_at_device = reaction.at_device
    shown = "never" if reaction.reaction_ms is None else f"{reaction.reaction_ms:.0f} ms"
    run.note(
        f"simulator: {spec.kind.value} on {spec.target} ({spec.value}); the edge's safe state reached the "
        f"device after {shown}"
    )
    late = reaction.reaction_ms is None or reaction.reaction_ms > 2 * live.site.edge.cycle_ms
    why = before or edge_cannot_act(live, spec.target)
    if late and why:
        run.exempt = why
        run.note(f"not judged: {why}")


async def upload(live: Live, run: FaultRun) -> None:
    """Send a day-ahead like a trading system: retry while the central does not answer."""
    spec = run.spec
    start_s = live.campaign_start_s
    if spec.kind is FaultKind.UPLOAD:
        day = (
            int(spec.value)
            if isinstance(spec.value, int | float)
            else int((run.started_at_s - start_s) // DAY_S) + 1
        )
        dayahead = day_dayahead(live.base_dayahead, day)
        live.latest_day = max(live.latest_day, day)
    else:
        day = live.latest_day
        seed = int(spec.value) if isinstance(spec.value, int | float) else 0
        dayahead = repriced(day_dayahead(live.base_dayahead, day), seed)
    body = dayahead.to_json().encode()
    while not live.stopping:
        at_s = live.clock.time_s()
        try:
            status, answer = await live.central.upload_answer(body)
        except CentralError as exc:
            live.record.uploads.append(
                UploadAttempt(at_s, spec.kind.value, day, None, None, None, str(exc)[:200])
            )
            run.note(f"upload of day {day}: no answer ({str(exc)[:80]}); retrying")
            if dayahead.end.timestamp() <= live.clock.time_s():
                return
            await asyncio.sleep(UPLOAD_RETRY_WALL_S)
            continue
        upload_id = (answer.get("upload") or {}).get("upload_id")
        plan_id = ((answer.get("run") or {}).get("plan") or {}).get("plan_id")
        message = str(answer.get("message") or answer.get("detail") or "")[:200]
        live.record.uploads.append(
            UploadAttempt(at_s, spec.kind.value, day, status, upload_id, plan_id, message)
        )
        run.note(f"upload of day {day}: HTTP {status}, upload {upload_id}, plan {plan_id}")
        return


async def check_database(live: Live, process: str, path_text: str) -> None:
    """``PRAGMA integrity_check`` of a killed process's database, in a worker thread."""
    result = await asyncio.to_thread(integrity_check, Path(path_text))
    live.record.integrity.append(IntegrityCheck(live.clock.time_s(), process, path_text, result))
    if result != "ok":
        live.display.message(f"integrity check of {path_text} after killing {process}: {result}")


async def clear_everything(live: Live) -> None:
    """Clear every simulator fault and heal every link (the campaign's end, or its failure)."""
    for name in live.links.names:
        live.links.act(name, lambda proxy: proxy.heal())
    for device in [*live.site.cabinet_ids, "meter"]:
        try:
            await live.sim.clear_fault(device, "all")
        except SimControlError:
            return
