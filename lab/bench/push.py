"""``ems bench push --edges 20 [--json]``: the OPC UA link under load, on this machine, over loopback.

N edge servers (SignAndEncrypt, real users and trust lists, the in-memory edge controller) run in
``--workers`` processes (several edges each), the central's fleet in this one, like edges and central on
their own machines. Measured:

* connect: from entering the fleet until every edge has a session (``connect_s``), and the central's CPU
  for it per edge;
* push: from "plan ready" to every edge's acknowledgement (``EdgeFleet.push_plan``), over ``--rounds``;
* telemetry: from a value changing in an edge controller to the central seeing it (subscription), over
  ``--telemetry-s`` seconds of changes on every edge. Both processes stamp with ``time.monotonic`` (one
  system-wide clock on Linux and macOS).
* the central's cost per edge: resident memory per session (RSS growth over the connect / N), CPU per
  telemetry update (CPU of the telemetry phase minus the idle baseline, over the updates received), the
  idle CPU per edge and second (watchdog probes, keep-alives, re-sync checks) and CPU per pushed schedule.

Targets on a 2-core machine: push p99 <= 300 ms for 20 edges, telemetry p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lab.loopback import loopback_site_toml

if TYPE_CHECKING:
    from lab.bench.push_edges import Change, EdgeHosts

_T = TypeVar("_T")

PUSH_P99_TARGET_MS = 300.0
TELEMETRY_P99_TARGET_MS = 200.0
MAX_EDGES = 1000


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="OPC UA plan push and telemetry latency with N secure edges on loopback",
        description="Start N edge OPC UA servers (SignAndEncrypt) in worker processes and the central's "
        "fleet here; measure connect-all time, plan push time to all edges, telemetry latency (p50/p99) "
        "and the central's cost per edge (CPU per telemetry update, memory per session). See docs/opcua.md.",
    )
    parser.add_argument("--edges", type=int, default=20, help="number of edge servers (default 20)")
    parser.add_argument("--rounds", type=int, default=50, help="plan pushes to measure (default 50)")
    parser.add_argument(
        "--telemetry-s", type=float, default=5.0, help="seconds of telemetry changes to measure (default 5)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes hosting the edge servers (default 0: one per 50 edges, at most 8)",
    )
    parser.add_argument(
        "--idle-s",
        type=float,
        default=3.0,
        help="seconds of idle link to measure the baseline CPU (default 3)",
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

    if not 1 <= args.edges <= MAX_EDGES:
        raise InputError("--edges", [Problem("", f"must be 1..{MAX_EDGES}, got {args.edges}")])
    if not 0 <= args.workers <= 64:
        raise InputError("--workers", [Problem("", f"must be 0..64 (0: automatic), got {args.workers}")])
    if not 0.5 <= args.idle_s <= 600.0:
        raise InputError("--idle-s", [Problem("", f"must be 0.5..600, got {args.idle_s}")])
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
    from lab.bench.push_edges import EdgeHosts

    with tempfile.TemporaryDirectory(prefix="ems-bench-push-") as tmp:
        directory = Path(tmp)
        site_path, pki_dir, password, policy = _prepare(directory, args.edges, args.policy)
        workers = args.workers or _default_workers(args.edges)
        cabinet_ids = [f"cab-{index}" for index in range(1, args.edges + 1)]
        _progress(f"starting {args.edges} edge servers in {workers} worker process(es)…")
        try:
            async with EdgeHosts(site_path, pki_dir, cabinet_ids, workers) as hosts:
                return await _measure(args, site_path, pki_dir, password, policy, hosts, workers)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


def _default_workers(edges: int) -> int:
    """One worker process per 50 edges, at most 8."""
    return min(8, max(1, -(-edges // 50)))


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
    args: argparse.Namespace,
    site_path: Path,
    pki_dir: Path,
    password: str,
    policy: str,
    hosts: EdgeHosts,
    workers: int,
) -> int:
    from central.edge_link import EdgeFleet, PushStatus
    from shared.clock import RealClock
    from shared.site import load_site

    site = load_site(site_path)
    _progress(f"{args.edges} edge servers up in {hosts.startup_s:.1f} s; connecting the central…")
    seen: dict[tuple[str, float], float] = {}
    updates = 0

    def on_telemetry(cabinet_id: str, telemetry: Any) -> None:
        nonlocal updates
        updates += 1
        seen.setdefault((cabinet_id, telemetry.soc_pct), time.monotonic())

    clock = RealClock()
    rss_before_mb = _rss_mb()
    async with EdgeFleet(
        site, clock, site.opcua.central_username, password, pki_dir, on_telemetry=on_telemetry
    ) as fleet:
        started, started_cpu = time.perf_counter(), time.process_time()
        connect_timeout_s = 60.0 + 1.0 * args.edges
        if not await fleet.wait_connected(connect_timeout_s):
            down = [c for c, ok in fleet.connected().items() if not ok]
            errors = fleet.last_errors()
            print(
                f"error: {len(down)} edges not connected after {connect_timeout_s:g} s: "
                f"{', '.join(down[:5])} ({errors[down[0]]})",
                file=sys.stderr,
            )
            return 1
        connect_s = time.perf_counter() - started
        connect_cpu_s = time.process_time() - started_cpu
        await asyncio.sleep(1.0)  # let the first publishes and the first re-syncs settle
        rss_connected_mb = _rss_mb()
        _progress(
            f"connected to {args.edges} edges in {connect_s:.1f} s ({policy}); pushing {args.rounds} plans…"
        )
        push_ms: list[float] = []
        failures = 0
        failure_reasons: dict[str, int] = {}
        cpu_push_s = 0.0
        for round_index in range(args.rounds):
            plan = _plan(site, clock.now(), round_index)
            began, began_cpu = time.perf_counter(), time.process_time()
            outcomes = await fleet.push_plan(plan)
            push_ms.append((time.perf_counter() - began) * 1000.0)
            cpu_push_s += time.process_time() - began_cpu
            for outcome in outcomes.values():
                if outcome.status is not PushStatus.ACCEPTED:
                    failures += 1
                    reason = f"{outcome.status.value}: {outcome.message}"
                    failure_reasons[reason] = failure_reasons.get(reason, 0) + 1
            await asyncio.sleep(0.02)
        _progress(f"measuring the central's idle CPU for {args.idle_s:g} s…")
        _, idle_cpu_s, idle_s = await _cpu_while(asyncio.sleep(args.idle_s))
        _progress(f"measuring telemetry latency for {args.telemetry_s:g} s…")
        updates_before = updates
        changes, changes_cpu_s, changes_s = await _cpu_while(_changes_settled(hosts, args.telemetry_s))
        telemetry_updates = updates - updates_before
        connected_all = all(fleet.connected().values())
    latencies_ms, lost = _latencies(changes, seen)
    idle_cpu_per_edge_s = idle_cpu_s / idle_s / args.edges
    telemetry_cpu_s = max(0.0, changes_cpu_s - idle_cpu_per_edge_s * args.edges * changes_s)
    central = {
        "rss_per_session_mb": round((rss_connected_mb - rss_before_mb) / args.edges, 3),
        "rss_connected_mb": round(rss_connected_mb, 1),
        "cpu_ms_per_telemetry_update": (
            round(telemetry_cpu_s * 1000.0 / telemetry_updates, 3) if telemetry_updates else None
        ),
        "telemetry_updates": telemetry_updates,
        "idle_cpu_ms_per_edge_s": round(idle_cpu_per_edge_s * 1000.0, 3),
        "connect_cpu_ms_per_edge": round(connect_cpu_s * 1000.0 / args.edges, 2),
        "push_cpu_ms_per_edge": round(cpu_push_s * 1000.0 / (args.rounds * args.edges), 3),
    }
    result = {
        "benchmark": "push",
        "edges": args.edges,
        "workers": workers,
        "rounds": args.rounds,
        "policy": policy,
        "mode": "SignAndEncrypt",
        "startup_s": round(hosts.startup_s, 2),
        "connect_s": round(connect_s, 2),
        "push_ms": _summary(push_ms),
        "push_failures": failures,
        "push_failure_reasons": dict(sorted(failure_reasons.items(), key=lambda item: -item[1])[:5]),
        "telemetry_ms": _summary(latencies_ms),
        "telemetry_samples": len(latencies_ms),
        "telemetry_lost": lost,
        "stayed_connected": connected_all,
        "central": central,
        "load_average_1m": round(os.getloadavg()[0], 2),
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


async def _changes_settled(hosts: EdgeHosts, duration_s: float) -> list[Change]:
    changes = await hosts.change_telemetry(duration_s)
    await asyncio.sleep(1.0)  # let the last changes arrive
    return changes


async def _cpu_while(work: Coroutine[Any, Any, _T]) -> tuple[_T, float, float]:
    """``work``'s result, this process's CPU seconds (all threads) and the wall seconds while it ran."""
    began, began_cpu = time.perf_counter(), time.process_time()
    result = await work
    return result, time.process_time() - began_cpu, time.perf_counter() - began


def _rss_mb() -> float:
    """This process's resident memory (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


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
    central = result["central"]
    print(
        f"connect all edges:  {result['connect_s']} s, {central['connect_cpu_ms_per_edge']} ms CPU per edge"
        f"  ({result['workers']} edge processes)"
    )
    print(
        f"central per edge:   {central['rss_per_session_mb']} MB RSS per session,"
        f" {central['cpu_ms_per_telemetry_update']} ms CPU per telemetry update,"
        f" {central['idle_cpu_ms_per_edge_s']} ms CPU per edge and second idle,"
        f" {central['push_cpu_ms_per_edge']} ms CPU per pushed schedule"
    )
    print(f"targets met: {'yes' if result['targets_met'] else 'NO'}")


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
