"""``ems optimize`` and ``ems bench dispatch``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ems.cli import main
from lab.bench.dispatch import bench_site
from shared.plan import DispatchMethod, Plan, PlanStatus

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_optimize_prints_the_table_and_writes_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    code = main(
        [
            "optimize",
            "--site",
            str(EXAMPLES / "site.toml"),
            "--day-ahead",
            str(EXAMPLES / "day-ahead.json"),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "status: optimal" in printed and "backend: highspy" in printed
    for row in (
        "energy_cost",
        "export_revenue",
        "cycle_cost",
        "demand_charge",
        "imbalance_cost",
        "penalties",
    ):
        assert row in printed
    assert "cab-3" in printed and "violations: none" in printed
    plan = Plan.from_json(out.read_text(encoding="utf-8"))
    assert plan.status is PlanStatus.OPTIMAL
    assert set(plan.cabinets) == {"cab-1", "cab-2", "cab-3"} and plan.steps == 96
    assert f"{plan.objective.total:.2f}" in printed
    assert "Running HiGHS" not in printed


def test_optimize_pyomo_backend_gives_the_same_total(tmp_path: Path) -> None:
    totals = []
    for backend in ("highspy", "pyomo"):
        out = tmp_path / f"{backend}.json"
        args = [
            "optimize",
            "--site",
            str(EXAMPLES / "site.toml"),
            "--day-ahead",
            str(EXAMPLES / "day-ahead.json"),
        ]
        assert main([*args, "--out", str(out), "--backend", backend]) == 0
        plan = Plan.from_json(out.read_text(encoding="utf-8"))
        assert plan.solver.backend == backend
        totals.append(plan.objective.total)
    assert totals[0] == pytest.approx(totals[1], rel=1e-6)


def test_optimize_refuses_a_bad_day_ahead(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "day.json"
    data = json.loads((EXAMPLES / "day-ahead.json").read_text(encoding="utf-8"))
    data["initial_soc_pct"] = {"cab-9": 50.0}
    bad.write_text(json.dumps(data), encoding="utf-8")
    code = main(["optimize", "--site", str(EXAMPLES / "site.toml"), "--day-ahead", str(bad)])
    assert code == 2
    assert "initial_soc_pct.cab-9: unknown cabinet" in capsys.readouterr().err


def test_optimize_failed_solve_exits_1_and_still_writes_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    args = [
        "optimize",
        "--site",
        str(EXAMPLES / "site.toml"),
        "--day-ahead",
        str(EXAMPLES / "day-ahead.json"),
    ]
    assert main([*args, "--out", str(out), "--time-limit-s", "1e-5", "--method", "exact"]) == 1
    assert "status: failed" in capsys.readouterr().out
    assert Plan.from_json(out.read_text(encoding="utf-8")).status is PlanStatus.FAILED


def test_optimize_refuses_a_bad_time_limit(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "optimize",
        "--site",
        str(EXAMPLES / "site.toml"),
        "--day-ahead",
        str(EXAMPLES / "day-ahead.json"),
    ]
    assert main([*args, "--time-limit-s", "-1"]) == 2
    assert "must be a positive number" in capsys.readouterr().err


def test_bench_dispatch_json_is_the_last_line() -> None:
    # A real subprocess: the JSON must be the last stdout line, with no solver banner anywhere.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ems",
            "bench",
            "dispatch",
            "--cabinets",
            "3",
            "--steps",
            "8",
            "--repeat",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = completed.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["cabinets"] == 3 and report["steps"] == 8 and report["repeat"] == 2
    assert report["status"] == "optimal"
    for key in ("build_s", "solve_s", "total_s", "raw_solve_s"):
        assert report[key] > 0
    assert report["objective"] == pytest.approx(report["raw_objective"], rel=1e-6)
    assert report["smoothing"] is True and report["stage2_s"] > 0 and report["stage2_ratio"] > 0
    assert report["total_variation_kw"] > 0
    assert report["cost_optimum"] == pytest.approx(report["objective"], rel=1e-6)
    assert "Running HiGHS" not in completed.stdout
    assert "run 2/2" in completed.stderr


def test_bench_dispatch_without_smoothing_reports_the_first_vertex(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["bench", "dispatch", "--cabinets", "4", "--steps", "24", "--repeat", "1", "--no-raw", "--json"]
    assert main(args) == 0
    smooth = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*args, "--no-smoothing"]) == 0
    rough = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rough["smoothing"] is False and rough["stage2_s"] == 0 and rough["stage2_ratio"] == 0
    assert smooth["objective"] == pytest.approx(rough["objective"], rel=1e-6)
    assert smooth["total_variation_kw"] < rough["total_variation_kw"]


def test_bench_dispatch_refuses_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "dispatch", "--cabinets", "0", "--steps", "96"]) == 2
    assert "--cabinets: must be 1-10000, got 0" in capsys.readouterr().err


def _write_site_toml(site: Any, path: Path) -> None:
    """A site file from a SiteConfig (flat [site] and [[cabinets]] keys only)."""

    def value(item: object) -> str:
        return f'"{item}"' if isinstance(item, str) else repr(item)

    lines = ["[site]"]
    lines += [f"{k} = {value(v)}" for k, v in site.site.model_dump(exclude_none=True).items()]
    for cabinet in site.cabinets:
        lines += ["", "[[cabinets]]"]
        lines += [f"{k} = {value(v)}" for k, v in cabinet.model_dump(exclude_none=True).items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_optimize_stops_on_sigterm(tmp_path: Path) -> None:
    # 300 cabinets take seconds to solve; SIGTERM right after the progress line must stop HiGHS and exit 130.
    site, day = bench_site(300, 96)
    _write_site_toml(site, tmp_path / "site.toml")
    (tmp_path / "day.json").write_text(day.to_json(), encoding="utf-8")
    command = [sys.executable, "-m", "ems", "optimize", "--site", str(tmp_path / "site.toml")]
    process = subprocess.Popen(
        [
            *command,
            "--day-ahead",
            str(tmp_path / "day.json"),
            "--out",
            str(tmp_path / "plan.json"),
            "--method",
            "exact",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert "optimizing 300 cabinets" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "interrupted" in err
    assert not (tmp_path / "plan.json").exists()


def test_optimize_over_its_time_limit_writes_the_best_feasible_plan_with_its_gap(tmp_path: Path) -> None:
    # 300 x 96 is block_ipm's size for auto; 0.3 s is far too short to reach the gap target, and the plan
    # must still come: feasible, with its certified bound and gap.
    site, day = bench_site(300, 96)
    _write_site_toml(site, tmp_path / "site.toml")
    (tmp_path / "day.json").write_text(day.to_json(), encoding="utf-8")
    out = tmp_path / "plan.json"
    files = ["--site", str(tmp_path / "site.toml"), "--day-ahead", str(tmp_path / "day.json")]
    completed = subprocess.run(
        [sys.executable, "-m", "ems", "optimize", *files, "--out", str(out), "--time-limit-s", "0.3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode in (0, 3), completed.stderr
    assert "method: block_ipm" in completed.stdout and "gap:" in completed.stdout
    plan = Plan.from_json(out.read_text(encoding="utf-8"))
    assert plan.status is not PlanStatus.FAILED and plan.solver.method is DispatchMethod.BLOCK_IPM
    assert plan.solver.lower_bound is not None and plan.solver.gap_pct is not None
    assert plan.solver.lower_bound <= plan.objective.total and plan.solver.gap_pct > 0
    for cabinet in site.cabinets:
        series = plan.cabinets[cabinet.id]
        assert len(series.setpoint_kw) == day.steps and len(series.soc_pct) == day.steps
        assert min(series.setpoint_kw) >= -cabinet.charge_limit_kw - 1e-6
        assert max(series.setpoint_kw) <= cabinet.discharge_limit_kw + 1e-6
        lowest = min(cabinet.soc_min_pct, day.initial_soc_pct.get(cabinet.id, 50.0))
        highest = max(cabinet.soc_max_pct, day.initial_soc_pct.get(cabinet.id, 50.0))
        assert lowest - 1e-6 <= min(series.soc_pct) and max(series.soc_pct) <= highest + 1e-6


def test_optimize_prints_plausibility_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((EXAMPLES / "day-ahead.json").read_text(encoding="utf-8"))
    data["load_kw"] = [value * 1000.0 for value in data["load_kw"]]  # W where kW is meant
    day = tmp_path / "day.json"
    day.write_text(json.dumps(data), encoding="utf-8")
    main(["optimize", "--site", str(EXAMPLES / "site.toml"), "--day-ahead", str(day)])
    err = capsys.readouterr().err
    assert f"warning: {day}: load_kw" in err


def _example_args(*more: str) -> list[str]:
    return [
        "optimize",
        "--site",
        str(EXAMPLES / "site.toml"),
        "--day-ahead",
        str(EXAMPLES / "day-ahead.json"),
        *more,
    ]


def test_optimize_prints_the_plan_quality_and_follows_a_previous_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rough_path, smooth_path = tmp_path / "rough.json", tmp_path / "smooth.json"
    assert main(_example_args("--no-smoothing", "--out", str(rough_path))) == 0
    printed = capsys.readouterr().out
    assert "variation kW" in printed and "second stage off" in printed and "deviation kW" not in printed
    rough = Plan.from_json(rough_path.read_text(encoding="utf-8"))
    assert rough.quality is not None and rough.quality.cost_tolerance_rel == 0.0
    assert main(_example_args("--out", str(smooth_path))) == 0
    smooth = Plan.from_json(smooth_path.read_text(encoding="utf-8"))
    assert smooth.quality is not None and smooth.quality.deviation_from_previous_kw is None
    assert (
        sum(smooth.quality.total_variation_kw.values()) < sum(rough.quality.total_variation_kw.values()) / 4
    )
    printed = capsys.readouterr().out
    assert f"total variation {sum(smooth.quality.total_variation_kw.values()):.1f} kW" in printed
    # given the rough plan as the previous one, the re-plan keeps it (same cost): deviation 0
    assert main(_example_args("--previous-plan", str(rough_path), "--out", str(smooth_path))) == 0
    printed = capsys.readouterr().out
    assert "deviation kW" in printed and "deviation from the previous plan 0.0 kW" in printed
    replan = Plan.from_json(smooth_path.read_text(encoding="utf-8"))
    assert replan.quality is not None and replan.quality.deviation_from_previous_kw is not None
    assert max(replan.quality.deviation_from_previous_kw.values()) < 1e-4


def test_plan_smoothing_setting_turns_the_second_stage_off(tmp_path: Path) -> None:
    site = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    (tmp_path / "site.toml").write_text(site.replace("[central]\n", "[central]\nplan_smoothing = false\n"))
    out = tmp_path / "plan.json"
    args = [
        "optimize",
        "--site",
        str(tmp_path / "site.toml"),
        "--day-ahead",
        str(EXAMPLES / "day-ahead.json"),
    ]
    assert main([*args, "--out", str(out)]) == 0
    plan = Plan.from_json(out.read_text(encoding="utf-8"))
    assert plan.quality is not None and plan.quality.cost_tolerance_rel == 0.0 and plan.solver.stage2_s == 0.0


def test_optimize_refuses_a_bad_previous_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "previous.json"
    bad.write_text('{"plan_id": "p"', encoding="utf-8")
    assert main(_example_args("--previous-plan", str(bad))) == 2
    assert f"{bad}: Invalid JSON" in capsys.readouterr().err
    assert main(_example_args("--previous-plan", str(tmp_path / "missing.json"))) == 2
    assert "cannot read" in capsys.readouterr().err


def test_optimize_exits_3_naming_the_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((EXAMPLES / "day-ahead.json").read_text(encoding="utf-8"))
    data["load_kw"][40] = 2000.0  # far above the import limit plus every cabinet's discharge
    day = tmp_path / "day.json"
    day.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "plan.json"
    code = main(
        ["optimize", "--site", str(EXAMPLES / "site.toml"), "--day-ahead", str(day), "--out", str(out)]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "error: the plan has violations: unserved energy" in err and "interval 40" in err
    assert Plan.from_json(out.read_text(encoding="utf-8")).status is PlanStatus.OPTIMAL_WITH_VIOLATIONS
