"""``ems bench console``: the operator console's first render, its live latency and the central's CPU.

A throw-away site (simulators and edges in this process, the central as its own ``ems central`` process,
everything on loopback) with a day-ahead plan, and a real headless Chromium (Debian's ``chromium`` and
``chromium-driver`` through Selenium, from the ``[dev]`` extra):

- **first render**: from navigation start to the page showing every cabinet's card from the stream's
  snapshot and the day chart with the plan (the page's ``performance`` marks ``ems:snapshot-rendered``
  and ``ems:day-rendered``); the first load is a warm-up.
- **live latency**: a task on the site's event loop polls every edge controller's telemetry every 2 ms and
  notes when each cabinet's shown SoC or power (one decimal) first takes a value; a ``MutationObserver`` in
  the page notes when a card first shows it. Latency = DOM time - edge time, for every value seen on both
  sides (values the 250 ms coalescing skipped are not counted). Same machine, same wall clock.
- **central CPU**: user + system CPU of the central's process over a window with no console open and
  with N consoles (browser tabs) open, in % of one core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from lab.consolesite import ConsoleSite

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

OBSERVER_JS = """
window.__emsSeen = [];
const seen = new Set();
const box = document.getElementById('cabinets');
function scan() {
  const now = Date.now();
  for (const card of box.querySelectorAll('.card')) {
    const id = card.dataset.cabinet;
    const m = /SoC ([0-9.]+) %/.exec(card.textContent);
    const p = /P (-?[0-9.]+) kW/.exec(card.textContent);
    for (const [field, match] of [['soc', m], ['power', p]]) {
      if (!match) continue;
      const key = id + '|' + field + '|' + match[1];
      if (!seen.has(key)) { seen.add(key); window.__emsSeen.push([id, field, match[1], now]); }
    }
  }
}
new MutationObserver(scan).observe(box, {subtree: true, childList: true, characterData: true});
scan();
"""


@dataclass(frozen=True)
class ConsoleBenchResult:
    cabinets: int
    consoles: int
    speed: float
    first_render_ms: list[float]
    median_first_render_ms: float
    latency_samples: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    cpu_idle_pct: float  # the central with no console open [% of one core]
    cpu_with_consoles_pct: float
    cpu_added_pct: float
    targets_met: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _browser(chromium: str, chromedriver: str) -> Any:
    try:
        from selenium import webdriver
    except ImportError as exc:  # pragma: no cover - the [dev] extra has it
        raise RuntimeError("this benchmark needs selenium: pip install -e '.[dev]'") from exc
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_pct(pid: int, window_s: float) -> float:
    before, started = _cpu_s(pid), time.monotonic()
    time.sleep(window_s)
    return 100.0 * (_cpu_s(pid) - before) / (time.monotonic() - started)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _upload(site: ConsoleSite) -> None:
    body = json.loads((Path(__file__).resolve().parents[2] / "examples" / "day-ahead.json").read_text())
    body["start"] = site.day_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    body.pop("initial_soc_pct", None)
    headers = {"Authorization": f"Bearer {site.tokens.operator}", "Content-Type": "application/json"}
    answer = httpx.post(
        f"{site.url}/api/v1/day-ahead", content=json.dumps(body), headers=headers, timeout=120
    )
    if answer.status_code != 201:
        raise RuntimeError(f"upload answered HTTP {answer.status_code}: {answer.text[:300]}")


def _open(driver: Any, site: ConsoleSite) -> float:
    """Load the console; return the first render [ms from navigation start]."""
    driver.get(f"{site.url}/")
    driver.execute_script("sessionStorage.setItem('hybrid-ems-token', arguments[0])", site.tokens.viewer)
    driver.get(f"{site.url}/")
    script = (
        "const a = performance.getEntriesByName('ems:snapshot-rendered');"
        "const b = performance.getEntriesByName('ems:day-rendered');"
        "return a.length && b.length ? Math.max(a[0].startTime, b[0].startTime) : null;"
    )
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value is not None:
            return float(value)
        time.sleep(0.05)
    raise RuntimeError("the console did not render within 30 s")


def _latencies(site: ConsoleSite, driver: Any, window_s: float) -> list[float]:
    local = site.local
    if local is None:
        raise RuntimeError("the site is not running")
    first_seen: dict[tuple[str, str, str], float] = {}

    async def poll(until: float) -> None:
        import asyncio

        while time.time() < until:
            now_ms = time.time() * 1000.0
            for cabinet_id, edge in local.edges.items():
                t = edge.telemetry()
                if t is None:
                    continue
                for field, value in (("soc", t.soc_pct), ("power", t.active_power_kw)):
                    first_seen.setdefault((cabinet_id, field, f"{value:.1f}"), now_ms)
            await asyncio.sleep(0.002)

    driver.execute_script(OBSERVER_JS)
    started_ms = time.time() * 1000.0
    site.submit(poll(time.time() + window_s)).result(window_s + 30.0)
    seen = driver.execute_script("return window.__emsSeen")
    latencies = []
    for cabinet_id, field, text, dom_ms in seen:
        edge_ms = first_seen.get((cabinet_id, field, text))
        if edge_ms is None or edge_ms < started_ms or dom_ms < started_ms:
            continue  # shown before the window, or a value the poll missed
        latencies.append(float(dom_ms) - edge_ms)
    return latencies


def run_console_bench(
    *,
    cabinets: int,
    consoles: int,
    renders: int,
    window_s: float,
    speed: float,
    progress: Callable[[str], None],
    chromium: str = CHROMIUM,
    chromedriver: str = CHROMEDRIVER,
) -> ConsoleBenchResult:
    with tempfile.TemporaryDirectory(prefix="ems-bench-console-") as temp:
        progress(f"site with {cabinets} cabinets (the central in its own process): starting")
        with ConsoleSite(Path(temp), cabinets=cabinets, speed=speed, central_process=True) as site:
            assert site.central_pid is not None
            progress("uploading the example day-ahead")
            _upload(site)
            progress(f"central CPU with no console open ({window_s:g} s)")
            cpu_idle = _cpu_pct(site.central_pid, window_s)
            driver = _browser(chromium, chromedriver)
            try:
                renders_ms = []
                for index in range(renders + 1):
                    value = _open(driver, site)
                    label = "warm-up" if index == 0 else f"load {index}/{renders}"
                    progress(f"{label}: first render {value:.0f} ms")
                    if index > 0:
                        renders_ms.append(value)
                progress(f"live latency, edge telemetry -> DOM ({window_s:g} s)")
                latencies = _latencies(site, driver, window_s)
                if not latencies:
                    raise RuntimeError("no telemetry change reached the page")
                for _ in range(consoles - 1):
                    driver.switch_to.new_window("tab")
                    _open(driver, site)
                progress(f"central CPU with {consoles} consoles open ({window_s:g} s)")
                cpu_open = _cpu_pct(site.central_pid, window_s)
            finally:
                driver.quit()
    p99 = _percentile(latencies, 0.99)
    median_render = statistics.median(renders_ms)
    added = cpu_open - cpu_idle
    return ConsoleBenchResult(
        cabinets=cabinets,
        consoles=consoles,
        speed=speed,
        first_render_ms=renders_ms,
        median_first_render_ms=median_render,
        latency_samples=len(latencies),
        latency_p50_ms=_percentile(latencies, 0.5),
        latency_p99_ms=p99,
        latency_max_ms=max(latencies),
        cpu_idle_pct=cpu_idle,
        cpu_with_consoles_pct=cpu_open,
        cpu_added_pct=added,
        targets_met=median_render <= 1000.0 and p99 <= 1000.0 and added <= 5.0,
    )


# ------------------------------------------------------------------------------------------- benchmark


def register_bench(bench_subparsers: Any) -> None:
    parser = bench_subparsers.add_parser(
        "console",
        help="operator console: first render, live latency, central CPU with consoles open",
        description="Start a throw-away site (simulators and edges in this process, the central as its own "
        "process) with a plan, open the console in headless Chromium and measure the first render, the "
        "latency from an edge's telemetry change to the page, and the central's CPU with N consoles open. "
        "Targets: first render <= 1 s, latency p99 <= 1 s, <= 5 %% of one core added by the consoles; "
        "exits 1 when one is missed. See docs/console.md.",
    )
    parser.add_argument("--cabinets", type=int, default=20, help="cabinets/edges (default 20)")
    parser.add_argument("--consoles", type=int, default=5, help="consoles open for the CPU (default 5)")
    parser.add_argument("--renders", type=int, default=5, help="measured page loads (default 5)")
    parser.add_argument(
        "--window-s", type=float, default=20.0, help="latency and CPU windows [s] (default 20)"
    )
    parser.add_argument("--speed", type=float, default=60.0, help="simulated clock speed (default 60)")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"browser binary (default {CHROMIUM})")
    parser.add_argument("--chromedriver", default=CHROMEDRIVER, help=f"driver (default {CHROMEDRIVER})")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    if not 1 <= args.cabinets <= 50 or not 1 <= args.consoles <= 20 or not 1 <= args.renders <= 100:
        print("error: --cabinets must be 1-50, --consoles 1-20 and --renders 1-100", file=sys.stderr)
        return 2
    if not 2.0 <= args.window_s <= 600.0 or not 1.0 <= args.speed <= 10_000.0:
        print("error: --window-s must be 2-600 and --speed 1-10000", file=sys.stderr)
        return 2
    for name, path in (("--chromium", args.chromium), ("--chromedriver", args.chromedriver)):
        if shutil.which(path) is None:
            print(
                f"error: {name}: {path} not found (apt-get install chromium chromium-driver)", file=sys.stderr
            )
            return 2
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_console_bench(
            cabinets=args.cabinets,
            consoles=args.consoles,
            renders=args.renders,
            window_s=args.window_s,
            speed=args.speed,
            progress=progress,
            chromium=args.chromium,
            chromedriver=args.chromedriver,
        )
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verdict = "met" if result.targets_met else "MISSED"
    print(
        f"console with {result.cabinets} cabinets: first render median "
        f"{result.median_first_render_ms:.0f} ms; "
        f"edge -> page p50 {result.latency_p50_ms:.0f} ms, p99 {result.latency_p99_ms:.0f} ms "
        f"({result.latency_samples} changes); central CPU {result.cpu_idle_pct:.1f} % of a core without a "
        f"console, {result.cpu_with_consoles_pct:.1f} % with {result.consoles} "
        f"(+{result.cpu_added_pct:.1f} %); targets {verdict}"
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    return 0 if result.targets_met else 1
