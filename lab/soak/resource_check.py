"""Invariant ``resource_growth``: processes, threads, file descriptors and memory stay bounded."""

from __future__ import annotations

from collections.abc import Sequence

from lab.soak.records import ResourceSample
from lab.soak.verdict import RESOURCE_GROWTH, Bounds, InvariantResult, listed

CAMPAIGN_PROCESS = "soak"  # the campaign itself in the resource samples


def _growth_problems(series: Sequence[ResourceSample], bounds: Bounds) -> list[str]:
    first_wall = series[0].wall_s
    judged = [s for s in series if s.wall_s >= first_wall + bounds.warmup_wall_s]
    if len(judged) < 2 or judged[-1].wall_s - judged[0].wall_s < bounds.min_span_wall_s:
        return []
    base, last = judged[0], judged[-1]
    name = f"{base.process} (pid {base.pid})"
    problems = []
    rss_allowed_kb = max(bounds.rss_growth_mb * 1024.0, bounds.rss_growth_rel * base.rss_kb)
    peak_rss = max(s.rss_kb for s in judged)
    if peak_rss - base.rss_kb > rss_allowed_kb:
        problems.append(f"{name} RSS {base.rss_kb / 1024:.0f} -> {peak_rss / 1024:.0f} MB")
    if max(s.threads for s in judged) - base.threads > bounds.threads_growth:
        problems.append(f"{name} threads {base.threads} -> {max(s.threads for s in judged)}")
    # The campaign's own process hosts the fault proxies (two sockets per proxied connection, held open
    # by a blackhole or a latency until they end) and its observer's reconnects, so its peak follows the
    # faults in progress; its file descriptors are judged at its last sample, when every fault has ended
    # (a leak stays). Every other process: the peak.
    fds = last.fds if last.process == CAMPAIGN_PROCESS else max(s.fds for s in judged)
    if fds - base.fds > bounds.fds_growth:
        problems.append(f"{name} fds {base.fds} -> {fds}")
    if last.process != CAMPAIGN_PROCESS and max(s.group_processes for s in judged) > 1:
        problems.append(f"{name} has {max(s.group_processes for s in judged)} processes in its group")
    return problems


def resource_growth(
    resources: Sequence[ResourceSample], leftover: Sequence[str], bounds: Bounds
) -> InvariantResult:
    """No process, thread, file-descriptor or memory growth beyond the bounds, nothing left running."""
    by_incarnation: dict[tuple[str, int], list[ResourceSample]] = {}
    for sample in resources:
        by_incarnation.setdefault((sample.process, sample.pid), []).append(sample)
    problems: list[str] = []
    judged = 0
    for series in by_incarnation.values():
        found = _growth_problems(series, bounds)
        problems += found
        judged += 1
    if leftover:
        problems.append("still running after the stop: " + ", ".join(leftover))
    detail = (
        f"{judged} process incarnation(s) sampled; bounds RSS +max({bounds.rss_growth_mb:g} MB, "
        f"{100 * bounds.rss_growth_rel:g} %), threads +{bounds.threads_growth}, fds +{bounds.fds_growth} "
        f"after a {bounds.warmup_wall_s:g} s warm-up"
    )
    if resources:
        detail += "; RSS first -> last sample: " + rss_first_last(resources)
    if problems:
        detail += "; " + listed(problems)
    return InvariantResult(RESOURCE_GROWTH, not problems, detail)


def rss_first_last(resources: Sequence[ResourceSample]) -> str:
    """Per process (all its incarnations): RSS at its first sample and at its last, and how many ran."""
    first: dict[str, ResourceSample] = {}
    last: dict[str, ResourceSample] = {}
    pids: dict[str, set[int]] = {}
    for sample in sorted(resources, key=lambda s: s.wall_s):
        first.setdefault(sample.process, sample)
        last[sample.process] = sample
        pids.setdefault(sample.process, set()).add(sample.pid)
    return ", ".join(
        f"{name} {first[name].rss_kb / 1024:.0f} -> {last[name].rss_kb / 1024:.0f} MB"
        + (f" ({len(pids[name])} runs)" if len(pids[name]) > 1 else "")
        for name in first
    )
