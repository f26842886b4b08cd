"""The demo's parts on their own: site copy, TOML writer, options, cost evaluation, checks, report, plots."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.service.interfaces import dispatch_optimizer
from lab.demo.checks import central_outage_checks, grid_checks, never_tripped
from lab.demo.costs import evaluate_costs, interval_averages, plan_intervals
from lab.demo.options import resolve_options, truncate
from lab.demo.processes import ChildFailedError, ProcessSupervisor
from lab.demo.records import OFFLINE, CabinetSample, RunRecord, Sample, TimelineEvent
from lab.demo.report import ReportInputs, build_summary, energy_summary, held_durations_s, mode_summary
from lab.demo.scenarios import CENTRAL_OUTAGE, SCENARIOS, ActionKind, timeline
from lab.demo.sitecopy import DemoPaths, PortPicker, rewrite_site
from lab.demo.tomlwrite import dumps
from shared.dayahead import load_dayahead
from shared.site import load_site

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = REPO / "examples" / "site.toml"
EXAMPLE_DAYAHEAD = REPO / "examples" / "day-ahead.json"
START_S = datetime(2026, 11, 24, tzinfo=UTC).timestamp()

# ------------------------------------------------------------------------------------------ TOML writer

keys = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))
tables = st.dictionaries(keys, values, max_size=5)


@settings(max_examples=60, deadline=None)
@given(top=tables, table=tables, array=st.lists(tables.filter(bool), min_size=1, max_size=3))
def test_toml_writer_round_trips(
    top: dict[str, Any], table: dict[str, Any], array: list[dict[str, Any]]
) -> None:
    document = {**{f"top_{k}": v for k, v in top.items()}, "section": table, "rows": array}
    assert tomllib.loads(dumps(document)) == document


def test_toml_writer_refuses_what_toml_cannot_hold() -> None:
    with pytest.raises(TypeError, match="non-finite"):
        dumps({"x": float("nan")})
    with pytest.raises(TypeError, match="cannot write"):
        dumps({"x": object()})


# --------------------------------------------------------------------------------------------- site copy


def test_site_copy_moves_every_address_and_directory(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path / "out")
    paths.create()
    original = load_site(EXAMPLE_SITE)
    copy = rewrite_site(
        EXAMPLE_SITE, paths, EXAMPLE_DAYAHEAD, PortPicker(), {"edge": {"revert_timeout_s": 480.0}}
    )
    addresses = [copy.site.meter_modbus_address, copy.central.http_address, copy.sim.control_address]
    addresses += [c.modbus_address for c in copy.cabinets]
    addresses += [f"127.0.0.1:{c.opcua_host_port[1]}" for c in copy.cabinets]
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert len(set(addresses)) == len(addresses)
    assert not set(addresses) & {original.site.meter_modbus_address, original.central.http_address}
    for path in (copy.edge.state_dir, copy.central.database_path, copy.opcua.pki_dir):
        assert Path(path).is_absolute() and Path(path).is_relative_to(paths.out_dir.resolve())
    assert copy.sim.profile == str(EXAMPLE_DAYAHEAD.resolve())
    assert copy.edge.revert_timeout_s == 480.0
    # Everything else is the user's site.
    assert copy.site.grid_import_limit_kw == original.site.grid_import_limit_kw
    assert [c.model_dump(exclude={"modbus_address", "opcua_endpoint"}) for c in copy.cabinets] == [
        c.model_dump(exclude={"modbus_address", "opcua_endpoint"}) for c in original.cabinets
    ]


def test_a_bad_site_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE_SITE.read_text().replace("capacity_kwh = 200.0", "capacity_kwh = -1.0", 1))
    paths = DemoPaths(tmp_path / "out")
    with pytest.raises(ValueError, match=r"cabinets\[0\].capacity_kwh"):
        rewrite_site(bad, paths, EXAMPLE_DAYAHEAD, PortPicker())
    assert not paths.site_file.exists()


# ----------------------------------------------------------------------------------------------- options


def test_options_default_to_the_whole_day_in_about_three_minutes(tmp_path: Path) -> None:
    options = resolve_options(EXAMPLE_SITE, EXAMPLE_DAYAHEAD, None, None, "normal", tmp_path / "out")
    assert options.dayahead.steps == 96
    assert options.speed == pytest.approx(480.0)
    assert options.out_dir.is_absolute()  # the children run there
    short = resolve_options(EXAMPLE_SITE, EXAMPLE_DAYAHEAD, 1.1, 600.0, "normal", tmp_path / "out")
    assert short.dayahead.steps == 5  # whole intervals, rounded up
    assert short.dayahead.start == options.dayahead.start
    assert short.dayahead.load_kw == options.dayahead.load_kw[:5]


def test_scenario_timelines_fall_inside_the_window() -> None:
    site = load_site(EXAMPLE_SITE)
    for scenario in SCENARIOS.values():
        for action in timeline(scenario, START_S, 7200.0, site.cabinet_ids):
            assert START_S < action.at_s < START_S + 7200.0
            assert action.at_s % 60 == 0
    kinds = [a.kind for a in timeline(CENTRAL_OUTAGE, START_S, 7200.0, site.cabinet_ids)]
    assert kinds == [ActionKind.KILL_CENTRAL, ActionKind.START_CENTRAL, ActionKind.UPLOAD]


# ----------------------------------------------------------------------------------------------- costs


def test_costs_of_a_plan_equal_the_optimizers_objective() -> None:
    site = load_site(EXAMPLE_SITE)
    dayahead = load_dayahead(EXAMPLE_DAYAHEAD)
    plan = dispatch_optimizer(
        site,
        dayahead,
        time_limit_s=30.0,
        initial_soc_pct=dict(dayahead.initial_soc_pct),
        plan_id="test",
        created_at=datetime.now(UTC),
    )
    setpoints = {c: plan.cabinets[c].setpoint_kw for c in site.cabinet_ids}
    costs = evaluate_costs(
        site, dayahead, plan_intervals(dayahead, 0, plan.grid_kw, setpoints), plan.objective.penalties
    )
    objective = plan.objective
    assert costs.total == pytest.approx(objective.total, rel=1e-6)
    assert costs.energy_cost == pytest.approx(objective.energy_cost, rel=1e-6, abs=1e-6)
    assert costs.export_revenue == pytest.approx(objective.export_revenue, rel=1e-6, abs=1e-6)
    assert costs.cycle_cost == pytest.approx(objective.cycle_cost, rel=1e-6, abs=1e-6)
    assert costs.demand_charge == pytest.approx(objective.demand_charge, rel=1e-6, abs=1e-6)


def test_realised_intervals_split_import_and_export_and_skip_gaps() -> None:
    dayahead = truncate(load_dayahead(EXAMPLE_DAYAHEAD), 2)
    times = [START_S + 60.0, START_S + 120.0, START_S + 180.0, START_S + 960.0]
    grid: list[float | None] = [100.0, -50.0, None, 10.0]
    cabinet: list[float | None] = [-20.0, 40.0, 99.0, None]
    intervals = interval_averages(dayahead, times, grid, {"cab-1": cabinet})
    assert [i.index for i in intervals] == [0, 1]
    assert intervals[0].import_kw == pytest.approx(50.0)
    assert intervals[0].export_kw == pytest.approx(25.0)
    assert intervals[0].cabinet_throughput_kw["cab-1"] == pytest.approx((20 + 40 + 99) / 3)
    assert intervals[1].cabinet_throughput_kw["cab-1"] == 0.0


# ----------------------------------------------------------------------------------------- checks, report


def sample(minute: int, grid_kw: float, modes: dict[str, str], power_kw: float = 10.0) -> Sample:
    return Sample(
        at_s=START_S + 60.0 * minute,
        grid_kw=grid_kw,
        cabinets={
            cabinet_id: CabinetSample(
                power_kw=power_kw,
                soc_pct=50.0 + minute / 10,
                temperature_degc=25.0,
                mode=mode,
                schedule_id="s" if mode == "schedule" else "",
                setpoint_kw=power_kw,
                interlock_reason="",
                charged_ac_kwh=0.0,
                discharged_ac_kwh=power_kw * minute / 60.0,
            )
            for cabinet_id, mode in modes.items()
        },
    )


def test_one_sample_over_the_import_limit_is_a_transient_two_are_not() -> None:
    base = [sample(m, 100.0, {"cab-1": "schedule"}) for m in range(10)]
    one = [*base[:3], sample(3, 450.0, {"cab-1": "schedule"}), *base[4:]]
    two = [
        *base[:3],
        sample(3, 450.0, {"cab-1": "schedule"}),
        sample(4, 401.5, {"cab-1": "schedule"}),
        *base[5:],
    ]
    assert all(c.passed for c in grid_checks(one, 400.0, 300.0, 1.0))
    verdict = grid_checks(two, 400.0, 300.0, 1.0)[0]
    assert not verdict.passed and "2 sample(s)" in verdict.detail


def test_central_outage_checks_want_schedule_fallback_schedule_and_no_trip() -> None:
    site = load_site(EXAMPLE_SITE)
    actions = timeline(CENTRAL_OUTAGE, START_S, 7200.0, site.cabinet_ids)  # kill 30, restart 72 min
    end_s = START_S + 3600.0

    def run(mode_at: Any) -> list[bool]:
        samples = [sample(m, 100.0, {"cab-1": mode_at(m)}) for m in range(120)]
        return [c.passed for c in central_outage_checks(samples, ["cab-1"], end_s, actions, 120.0)]

    assert all(run(lambda m: "schedule" if m < 60 or m >= 75 else "fallback"))
    assert not all(run(lambda m: "schedule" if m < 60 or m >= 75 else "tripped"))
    assert not all(run(lambda m: "schedule" if m < 40 or m >= 75 else "fallback"))  # gave up too early
    assert not never_tripped([sample(0, 0.0, {"cab-1": "tripped"})], ["cab-1"]).passed


def test_modes_and_energy_in_the_summary() -> None:
    samples = [
        sample(m, 100.0, {"cab-1": "schedule" if m < 5 else OFFLINE}, power_kw=60.0) for m in range(10)
    ]
    durations = held_durations_s(samples, START_S + 600.0, 60.0)
    modes = mode_summary(samples, "cab-1", durations)
    assert modes["seconds"] == {"offline": 300.0, "schedule": 300.0}
    assert modes["sequence"] == ["schedule", "offline"]
    energy = energy_summary(samples, "cab-1", durations)
    assert energy["discharged_kwh"] == pytest.approx(9.0)  # counters: 60 kW x 9 minutes between samples
    assert energy["source"] == "device energy counters"


def test_report_and_plots_from_a_synthetic_run(tmp_path: Path) -> None:
    from lab.demo.plots import write_plots

    site = load_site(EXAMPLE_SITE)
    window = truncate(load_dayahead(EXAMPLE_DAYAHEAD), 8)
    modes = {c: "schedule" for c in site.cabinet_ids}
    record = RunRecord(samples=[sample(m, 100.0 + m, modes) for m in range(120)])
    record.events.append(TimelineEvent(START_S + 1800.0, "kill_central", None, "killed"))
    inputs = ReportInputs(site, window, None, "normal", 600.0, 60.0, record)
    summary = build_summary(inputs, [{"name": "x", "passed": True, "detail": ""}])
    assert summary["passed"] and summary["samples"] == 120 and summary["samples_expected"] == 120
    assert summary["grid"]["peak_import_kw"] == pytest.approx(219.0)
    assert "planned" not in summary["cost"] and summary["cost"]["realised"]["energy_cost"] > 0
    written = write_plots(inputs, tmp_path)
    assert [p.name for p in written] == ["prices.png", "power.png", "soc.png", "grid.png", "modes.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size < 150_000 for p in written)


# --------------------------------------------------------------------------------------------- processes


def test_a_child_that_dies_is_reported_with_its_last_log_line(tmp_path: Path) -> None:
    supervisor = ProcessSupervisor(tmp_path, REPO, {"PATH": "/usr/bin:/bin"})
    with pytest.raises(ChildFailedError, match=r"validate exited with code 2: .*cannot read"):
        supervisor.run("validate", ["validate", str(tmp_path / "missing.toml")], timeout_s=60.0)
    assert "cannot read" in (tmp_path / "validate.log").read_text()
    supervisor.start("again", ["validate", str(tmp_path / "missing.toml")])
    supervisor.children["again"].popen.wait(timeout=60.0)
    with pytest.raises(ChildFailedError, match="again exited unexpectedly"):
        supervisor.check_running(["again"])
    supervisor.stop_all()


def test_time_compression_shortens_the_comm_loss_recovery_in_wall_time(tmp_path: Path) -> None:
    import io

    from lab.demo.progress import ProgressDisplay
    from lab.demo.runner import COMM_RECOVERY_MAX_S, Demo

    options = resolve_options(EXAMPLE_SITE, EXAMPLE_DAYAHEAD, None, 480.0, "normal", tmp_path / "out")
    overrides = Demo(options, ProgressDisplay(io.StringIO()))._timing_overrides()["edge"]
    assert options.site.edge.comm_recovery_s == 3.0  # the site's own (default) value ...
    assert overrides["comm_recovery_s"] == COMM_RECOVERY_MAX_S == 0.5  # ... is 24 simulated minutes at 480x
    assert overrides["revert_timeout_s"] == 480.0


# ----------------------------------------------------------------------------------------- start-up


async def test_a_start_that_ends_after_the_day_began_is_repeated_with_a_longer_lead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy machine the processes may come up only after the simulated day began; the demo then
    starts them again (state forgotten) with a lead of at least 1.5 x the start-up it saw."""
    import io
    import time

    from lab.demo import runner
    from lab.demo.live import LateStartError
    from lab.demo.progress import ProgressDisplay

    leads: list[float] = []

    class SlowOnce:
        def __init__(self, setup: Any, *args: Any) -> None:
            self.setup = setup

        async def run(self) -> None:
            leads.append(float(self.setup.clock.spec().rsplit(":", 1)[1]) - time.time())
            if len(leads) == 1:
                raise LateStartError(40.0)

    options = resolve_options(EXAMPLE_SITE, EXAMPLE_DAYAHEAD, None, None, "normal", tmp_path / "out")
    demo = runner.Demo(options, ProgressDisplay(io.StringIO()))
    demo.paths.create()
    stale = demo.paths.edge_state_dir / "cab-1.sqlite3"
    stale.write_bytes(b"schedules of the failed start")
    monkeypatch.setattr(runner, "LiveRun", SlowOnce)
    site = load_site(EXAMPLE_SITE)
    await demo._run_live(site, None, None, "token", ProcessSupervisor(tmp_path, tmp_path, {}))  # type: ignore[arg-type]
    assert len(leads) == 2
    assert leads[1] >= 1.5 * 40.0 - 1.0
    assert not stale.exists()

    monkeypatch.setattr(runner, "STARTUP_ATTEMPTS", 1)
    leads.clear()
    with pytest.raises(runner.DemoFailedError, match="after the day had begun"):
        await demo._run_live(site, None, None, "token", ProcessSupervisor(tmp_path, tmp_path, {}))  # type: ignore[arg-type]
