"""``ems bench push --edges 20 [--json]``: the OPC UA link under load, on this machine, over loopback.

N edge servers (SignAndEncrypt, real users and trust lists, the in-memory edge controller) run in a child
process, the central's fleet in this one, like edges and central on their own machines. Measured:

* push: from "plan ready" to every edge's acknowledgement (``EdgeFleet.push_plan``), over ``--rounds``;
* telemetry: from a value changing in an edge controller to the central seeing it (subscription), over
  ``--telemetry-s`` seconds of changes on every edge. Both processes stamp with ``time.monotonic`` (one
  system-wide clock on Linux and macOS).

Targets on a 2-core machine: push p99 <= 300 ms for 20 edges, telemetry p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lab.loopback import loopback_site_toml, opcua_node_cache_dir

PUSH_P99_TARGET_MS = 300.0
TELEMETRY_P99_TARGET_MS = 200.0
_READY_TIMEOUT_S = 300.0


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="OPC UA plan push and telemetry latency with N secure edges on loopback",
        description="Start N edge OPC UA servers (SignAndEncrypt) in a child process and the central's fleet "
        "here; measure plan push time to all edges and telemetry latency (p50/p99). See docs/opcua.md.",
    )
    parser.add_argument("--edges", type=int, default=20, help="number of edge servers (default 20)")
    parser.add_argument("--rounds", type=int, default=50, help="plan pushes to measure (default 50)")
    parser.add_argument(
        "--telemetry-s", type=float, default=5.0, help="seconds of telemetry changes to measure (default 5)"
    )
    parser.add_argument(
        "--policy",
        default=None,
        help="security policy the central uses (default: the first of [opcua] security_policies)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.errors import InputError, Problem
    from shared.site import OPCUA_SECURITY_POLICIES

    if not 1 <= args.edges <= 200:
        raise InputError("--edges", [Problem("", f"must be 1..200, got {args.edges}")])
    if not 1 <= args.rounds <= 10_000:
        raise InputError("--rounds", [Problem("", f"must be 1..10000, got {args.rounds}")])
    if not 0.5 <= args.telemetry_s <= 600.0:
        raise InputError("--telemetry-s", [Problem("", f"must be 0.5..600, got {args.telemetry_s}")])
    if args.policy is not None and args.policy not in OPCUA_SECURITY_POLICIES:
        known = ", ".join(OPCUA_SECURITY_POLICIES)
        raise InputError("--policy", [Problem("", f"unknown policy {args.policy!r}; known: {known}")])
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # reconnect chatter is not the result
    logging.getLogger("central.edge_link").setLevel(logging.ERROR)
    return _run_until_signal(_bench(args))


def _run_until_signal(main: Any) -> int:
    async def runner() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            result: int = await main
            return result
        except asyncio.CancelledError:
            print("stopped", file=sys.stderr)
            return 130

    return asyncio.run(runner())


async def _bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ems-bench-push-") as tmp:
        directory = Path(tmp)
        site_path, pki_dir, password, policy = _prepare(directory, args.edges, args.policy)
        _progress(f"starting {args.edges} edge servers in a child process (about 1.5 s each)…")
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        child = context.Process(
            target=_edge_host,
            args=(str(site_path), str(pki_dir), child_end),
            name="ems-bench-edges",
            daemon=True,
        )
        child.start()
        child_end.close()
        try:
            return await _measure(args, site_path, pki_dir, password, policy, parent_end)
        finally:
            with contextlib.suppress(OSError, BrokenPipeError):
                parent_end.send(("stop",))
            await asyncio.to_thread(child.join, 15.0)
            if child.is_alive():
                child.terminate()
                child.join(5.0)


def _prepare(directory: Path, edges: int, policy: str | None) -> tuple[Path, Path, str, str]:
    from shared.opcua.pki import pki_layout, users_path
    from shared.opcua.provision import ensure_site_pki
    from shared.opcua.users import Role, UserEntry, Users, hash_password, write_users
    from shared.site import OPCUA_SECURITY_POLICIES, load_site

    chosen = policy or OPCUA_SECURITY_POLICIES[0]
    policies = [chosen] + [p for p in OPCUA_SECURITY_POLICIES if p != chosen]
    site_path = directory / "site.toml"
    site_path.write_text(_site_toml(edges, policies), encoding="utf-8")
    site = load_site(site_path)
    pki_dir = directory / "pki"
    _progress(f"creating keys and certificates for {edges} edges and the central…")
    layout = pki_layout(site, pki_dir)
    ensure_site_pki(site, layout, central_hosts=["localhost", socket.gethostname()])
    password = secrets.token_urlsafe(18)
    entry = UserEntry(site.opcua.central_username, Role.OPERATOR, hash_password(password))
    write_users(users_path(site, layout), Users((entry,)))
    return site_path, pki_dir, password, chosen


def _site_toml(edges: int, policies: list[str]) -> str:
    extra = f"[opcua]\nsecurity_policies = {json.dumps(policies)}\n"
    return loopback_site_toml(
        edges, name="bench-push", grid_import_limit_kw=10000.0, grid_export_limit_kw=10000.0, extra=extra
    )


async def _measure(
    args: argparse.Namespace, site_path: Path, pki_dir: Path, password: str, policy: str, pipe: Connection
) -> int:
    from central.edge_link import EdgeFleet, PushStatus
    from shared.clock import RealClock
    from shared.site import load_site

    site = load_site(site_path)
    message = await _receive(pipe, _READY_TIMEOUT_S)
    if message[0] != "ready":
        print(f"error: edge servers did not start: {message[1]}", file=sys.stderr)
        return 1
    startup_s = float(message[1])
    _progress(f"{args.edges} edge servers up in {startup_s:.1f} s; connecting the central…")
    seen: dict[tuple[str, float], float] = {}

    def on_telemetry(cabinet_id: str, telemetry: Any) -> None:
        seen.setdefault((cabinet_id, telemetry.soc_pct), time.monotonic())

    clock = RealClock()
    async with EdgeFleet(
        site, clock, site.opcua.central_username, password, pki_dir, on_telemetry=on_telemetry
    ) as fleet:
        started = time.perf_counter()
        if not await fleet.wait_connected(60.0):
            down = [c for c, ok in fleet.connected().items() if not ok]
            errors = fleet.last_errors()
            print(
                f"error: edges not connected after 60 s: {', '.join(down)} ({errors[down[0]]})",
                file=sys.stderr,
            )
            return 1
        connect_s = time.perf_counter() - started
        _progress(
            f"connected to {args.edges} edges in {connect_s:.1f} s ({policy}); pushing {args.rounds} plans…"
        )
        push_ms: list[float] = []
        failures = 0
        for round_index in range(args.rounds):
            plan = _plan(site, clock.now(), round_index)
            began = time.perf_counter()
            outcomes = await fleet.push_plan(plan)
            push_ms.append((time.perf_counter() - began) * 1000.0)
            failures += sum(1 for o in outcomes.values() if o.status is not PushStatus.ACCEPTED)
            await asyncio.sleep(0.02)
        _progress(f"measuring telemetry latency for {args.telemetry_s:g} s…")
        pipe.send(("telemetry", args.telemetry_s))
        reply = await _receive(pipe, args.telemetry_s + 60.0)
        changes: list[tuple[str, float, float]] = reply[1]
        await asyncio.sleep(1.0)  # let the last changes arrive
    latencies_ms, lost = _latencies(changes, seen)
    result = {
        "benchmark": "push",
        "edges": args.edges,
        "rounds": args.rounds,
        "policy": policy,
        "mode": "SignAndEncrypt",
        "startup_s": round(startup_s, 2),
        "connect_s": round(connect_s, 2),
        "push_ms": _summary(push_ms),
        "push_failures": failures,
        "telemetry_ms": _summary(latencies_ms),
        "telemetry_samples": len(latencies_ms),
        "telemetry_lost": lost,
        "targets": {"push_p99_ms": PUSH_P99_TARGET_MS, "telemetry_p99_ms": TELEMETRY_P99_TARGET_MS},
    }
    push_p99 = _summary(push_ms)["p99"]
    telemetry_p99 = _summary(latencies_ms)["p99"]
    result["targets_met"] = bool(
        failures == 0
        and lost == 0
        and push_p99 is not None
        and push_p99 <= PUSH_P99_TARGET_MS
        and telemetry_p99 is not None
        and telemetry_p99 <= TELEMETRY_P99_TARGET_MS
    )
    _report(result)
    if args.json:
        print(json.dumps(result))
    return 0 if failures == 0 else 1


def _plan(site: Any, now: Any, round_index: int) -> Any:
    from shared.plan import Plan

    steps = 96
    start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    rng = random.Random(round_index)
    cabinets = {
        c.id: {
            "setpoint_kw": [
                round(rng.uniform(-c.charge_limit_kw, c.discharge_limit_kw), 3) for _ in range(steps)
            ],
            "soc_pct": [50.0] * steps,
        }
        for c in site.cabinets
    }
    return Plan.model_validate(
        {
            "plan_id": f"bench-{round_index}",
            "created_at": now,
            "start": start,
            "interval_minutes": 15,
            "status": "optimal",
            "objective": {},
            "grid_kw": [0.0] * steps,
            "pv_used_kw": [0.0] * steps,
            "cabinets": cabinets,
            "solver": {"backend": "bench"},
        }
    )


def _latencies(
    changes: list[tuple[str, float, float]], seen: dict[tuple[str, float], float]
) -> tuple[list[float], int]:
    latencies, lost = [], 0
    for cabinet_id, value, changed_at in changes:
        seen_at = seen.get((cabinet_id, value))
        if seen_at is None:
            lost += 1
        else:
            latencies.append((seen_at - changed_at) * 1000.0)
    return latencies, lost


def _summary(samples_ms: list[float]) -> dict[str, float | None]:
    import numpy

    if not samples_ms:
        return {"p50": None, "p99": None, "max": None}
    values = numpy.asarray(samples_ms)
    return {
        "p50": round(float(numpy.percentile(values, 50)), 2),
        "p99": round(float(numpy.percentile(values, 99)), 2),
        "max": round(float(values.max()), 2),
    }


def _report(result: dict[str, Any]) -> None:
    push, telemetry = result["push_ms"], result["telemetry_ms"]
    print(f"edges {result['edges']} ({result['mode']}, {result['policy']}), {result['rounds']} pushes")
    print(
        f"push to all edges:  p50 {push['p50']} ms  p99 {push['p99']} ms  max {push['max']} ms"
        f"  (target p99 <= {PUSH_P99_TARGET_MS:g} ms; failures {result['push_failures']})"
    )
    print(
        f"telemetry latency:  p50 {telemetry['p50']} ms  p99 {telemetry['p99']} ms  max {telemetry['max']} ms"
        f"  (target p99 <= {TELEMETRY_P99_TARGET_MS:g} ms; {result['telemetry_samples']} samples,"
        f" {result['telemetry_lost']} lost)"
    )
    print(f"targets met: {'yes' if result['targets_met'] else 'NO'}")


async def _receive(pipe: Connection, timeout_s: float) -> Any:
    ready = await asyncio.to_thread(pipe.poll, timeout_s)
    if not ready:
        raise TimeoutError(f"no answer from the edge process within {timeout_s:g} s")
    return pipe.recv()


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the child process: all edge servers ---------------------------------------------------------


def _edge_host(site_path: str, pki_dir: str, pipe: Connection) -> None:
    """Child process: run every edge server until told to stop (Ctrl-C is the parent's to handle)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.ERROR)
    try:
        asyncio.run(_edge_host_main(Path(site_path), Path(pki_dir), pipe))
    except Exception as exc:  # report, do not hang the parent
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


async def _edge_host_main(site_path: Path, pki_dir: Path, pipe: Connection) -> None:
    from edge.opcua import EdgeOpcUaServer
    from lab.memory_edge import InMemoryEdgeControl
    from shared.clock import RealClock
    from shared.site import load_site

    site = load_site(site_path)
    clock = RealClock()
    controls = {c.id: InMemoryEdgeControl(c, clock) for c in site.cabinets}
    servers: list[EdgeOpcUaServer] = []
    started = time.perf_counter()
    try:
        for cabinet in site.cabinets:
            server = EdgeOpcUaServer(
                site, cabinet.id, controls[cabinet.id], clock, pki_dir, opcua_node_cache_dir()
            )
            await server.start()
            servers.append(server)
        pipe.send(("ready", time.perf_counter() - started))
        while True:
            message = await asyncio.to_thread(pipe.recv)
            if message[0] == "telemetry":
                pipe.send(("changes", await _change_telemetry(controls, float(message[1]))))
            else:
                break
    finally:
        await asyncio.gather(*(server.stop() for server in servers), return_exceptions=True)


async def _change_telemetry(controls: dict[str, Any], duration_s: float) -> list[tuple[str, float, float]]:
    """Change every edge's SoC to a fresh value at random moments (about 2-3 per second per edge)."""
    changes: list[tuple[str, float, float]] = []
    rng = random.Random(7)
    counter = 0
    last_change = dict.fromkeys(controls, 0.0)
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        for cabinet_id, control in controls.items():
            # At random moments, but never two changes of one edge within an update period, so every
            # change is published and can be matched.
            if rng.random() < 0.5 or time.monotonic() - last_change[cabinet_id] < 0.3:
                continue
            counter += 1
            value = 10.0 + (counter % 800_000) / 10_000.0  # unique within a run
            control.set_soc_pct(value)
            last_change[cabinet_id] = time.monotonic()
            changes.append((cabinet_id, value, last_change[cabinet_id]))
        await asyncio.sleep(rng.uniform(0.02, 0.08))
    return changes
