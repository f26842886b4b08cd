"""``ems bench dispatch --method``: the method, lower bound and gap in the benchmark report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ems.cli import main


def test_bench_reports_method_bound_and_gap() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ems",
            "bench",
            "dispatch",
            "--cabinets",
            "6",
            "--steps",
            "24",
            "--method",
            "block_ipm",
            "--gap-target-pct",
            "0.05",
            "--repeat",
            "2",
            "--no-raw",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["method"] == "block_ipm" and report["worker"] is False
    assert report["cabinets"] == 6 and report["steps"] == 24 and report["repeat"] == 2
    assert report["lower_bound"] <= report["objective"]
    assert 0.0 <= report["gap_pct"] <= 0.05 and "stopped: gap_reached" in report["solver_message"]
    assert report["total_s"] > 0 and report["cpu_s"] > 0 and report["stage2_s"] >= 0
    assert report["total_variation_kw"] >= 0
    assert len(report["total_s_runs"]) == 2
    assert report["targets"]["gap_met"] is True
    assert "Running HiGHS" not in completed.stdout
    assert "run 2/2" in completed.stderr


def test_bench_block_ipm_in_a_worker_reports_its_bound(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "dispatch", "--cabinets", "5", "--steps", "12", "--method", "block_ipm", "--worker"]
    assert main([*args, "--repeat", "1", "--no-raw", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["method"] == "block_ipm" and report["worker"] is True
    assert report["lower_bound"] <= report["objective"] and report["gap_pct"] <= 0.01


def test_bench_auto_runs_the_exact_lp_on_a_small_site_in_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "dispatch",
            "--cabinets",
            "4",
            "--steps",
            "12",
            "--method",
            "auto",
            "--worker",
            "--repeat",
            "1",
            "--no-raw",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "(exact in a worker, highspy, median of 1)" in printed
    assert "lower bound" in printed and "target gap_met: True" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "block_ipm", "--gap-target-pct", "-1"], "--gap-target-pct: must be a number >= 0"),
        (["--method", "exact", "--gap-target-pct", "nan"], "--gap-target-pct: must be a number >= 0"),
    ],
)
def test_bench_refuses_bad_certified_options(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "dispatch", "--cabinets", "3", "--steps", "8", *extra]) == 2
    assert message in capsys.readouterr().err
