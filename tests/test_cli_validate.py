"""``ems validate``: exit 0 on the examples, non-zero naming the problem otherwise (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def ems(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ems", *map(str, args)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", ["site.toml", "day-ahead.json", "day-ahead.csv"])
def test_examples_validate(name: str) -> None:
    result = ems("validate", EXAMPLES / name)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_upload_checked_against_site() -> None:
    result = ems("validate", EXAMPLES / "day-ahead.json", "--site", EXAMPLES / "site.toml")
    assert result.returncode == 0, result.stderr


def test_wrong_key_exits_nonzero_naming_it(tmp_path: Path) -> None:
    text = (EXAMPLES / "site.toml").read_text().replace("capacity_kwh", "capacity_kw", 1)
    (tmp_path / "site.toml").write_text(text)
    result = ems("validate", tmp_path / "site.toml")
    assert result.returncode == 2
    assert "cabinets[0].capacity_kw: unknown key" in result.stderr
    assert "cabinets[0].capacity_kwh: Field required" in result.stderr


def test_nan_in_upload_exits_nonzero(tmp_path: Path) -> None:
    lines = (EXAMPLES / "day-ahead.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[3] = "NaN"
    lines[5] = ",".join(cells)
    (tmp_path / "day.csv").write_text("\n".join(lines))
    result = ems("validate", tmp_path / "day.csv")
    assert result.returncode == 2
    assert "row 5.load_kw: must be a finite number" in result.stderr


def test_gap_in_upload_exits_nonzero(tmp_path: Path) -> None:
    lines = (EXAMPLES / "day-ahead.csv").read_text().splitlines()
    del lines[10]
    (tmp_path / "day.csv").write_text("\n".join(lines))
    result = ems("validate", tmp_path / "day.csv")
    assert result.returncode == 2
    assert "row 10.start" in result.stderr
    assert "equally spaced" in result.stderr


def test_unknown_cabinet_against_site(tmp_path: Path) -> None:
    text = (EXAMPLES / "day-ahead.json").read_text().replace('"cab-3"', '"cab-9"')
    (tmp_path / "day.json").write_text(text)
    result = ems("validate", tmp_path / "day.json", "--site", EXAMPLES / "site.toml")
    assert result.returncode == 2
    assert "cab-9: unknown cabinet" in result.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = ems("validate", tmp_path / "nope.json")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot read" in result.stderr


# -------------------------------------------------------------------------------------- plausibility


def test_a_plan_window_reaching_the_edge_hard_limit_is_refused_naming_the_key(tmp_path: Path) -> None:
    text = (EXAMPLES / "site.toml").read_text().replace("soc_min_pct = 10.0", "soc_min_pct = 0.1", 1)
    (tmp_path / "site.toml").write_text(text)
    result = ems("validate", tmp_path / "site.toml")
    assert result.returncode == 2
    assert "cabinets[0].soc_min_pct: 0.1 % must be above [edge] soc_hard_min_pct (2 %)" in result.stderr
    assert result.stdout == ""
    # The site is refused as well where it comes with an upload.
    result = ems("validate", EXAMPLES / "day-ahead.json", "--site", tmp_path / "site.toml")
    assert result.returncode == 2 and "cabinets[0].soc_min_pct" in result.stderr


def test_wrong_units_warn_and_strict_refuses(tmp_path: Path) -> None:
    data = json.loads((EXAMPLES / "day-ahead.json").read_text())
    data["load_kw"] = [v * 1000 for v in data["load_kw"]]  # W
    data["import_price_per_kwh"] = [v * 1000 for v in data["import_price_per_kwh"]]  # per MWh
    data["initial_soc_pct"]["cab-1"] = 0.5  # a fraction
    (tmp_path / "day.json").write_text(json.dumps(data))
    site = EXAMPLES / "site.toml"
    result = ems("validate", tmp_path / "day.json", "--site", site)
    assert result.returncode == 0, result.stderr
    assert "valid day-ahead upload" in result.stdout
    lines = result.stderr.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["warning"] * 3
    assert lines[0].endswith(
        "initial_soc_pct.cab-1: 0.5 %: looks like a fraction 0-1; percent 0-100 expected"
    )
    assert "load_kw[" in lines[1] and lines[1].endswith("looks like W; kW expected")
    assert lines[2].endswith("looks like currency per MWh; currency per kWh expected")

    strict = ems("validate", tmp_path / "day.json", "--site", site, "--strict")
    assert strict.returncode == 2
    assert strict.stdout == ""
    assert [line.split(": ")[0] for line in strict.stderr.splitlines()] == ["invalid"] * 3 + [
        str(tmp_path / "day.json")
    ]
    assert strict.stderr.splitlines()[-1].endswith("refused: 3 warnings (--strict)")


def test_csv_upload_says_it_carries_no_initial_soc() -> None:
    result = ems("validate", EXAMPLES / "day-ahead.csv", "--site", EXAMPLES / "site.toml", "--strict")
    assert result.returncode == 0  # a note, not a warning
    assert "note:" in result.stderr and "CSV upload carries no initial SoC" in result.stderr
    assert "live SoC, else from 50 %" in result.stderr


def test_size_limit_is_the_central_one(tmp_path: Path) -> None:
    from central.service.app import CentralService
    from shared.dayahead import MAX_UPLOAD_BYTES

    assert CentralService.max_upload_bytes == MAX_UPLOAD_BYTES
    example = (EXAMPLES / "day-ahead.json").read_bytes()
    (tmp_path / "at-limit.json").write_bytes(example + b" " * (MAX_UPLOAD_BYTES - len(example)))
    assert ems("validate", tmp_path / "at-limit.json").returncode == 0
    (tmp_path / "over.json").write_bytes(example + b" " * (MAX_UPLOAD_BYTES + 1 - len(example)))
    result = ems("validate", tmp_path / "over.json")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"invalid: {tmp_path / 'over.json'}: larger than {MAX_UPLOAD_BYTES} bytes, the most the central "
        "service accepts"
    )


def test_every_problem_is_printed_once(tmp_path: Path) -> None:
    text = (EXAMPLES / "site.toml").read_text()
    text = text.replace("capacity_kwh = 200.0", "capacity_kwh = -1.0", 1).replace(
        "soc_min_pct = 5.0", "soc_min_pct = 1.0"
    )
    (tmp_path / "site.toml").write_text(text)
    result = ems("validate", tmp_path / "site.toml")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == len(set(lines)) == 1, lines  # the parse error; plausibility needs a valid file
    assert "cabinets[0].capacity_kwh" in lines[0]
