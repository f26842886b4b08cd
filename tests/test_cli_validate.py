"""``ems validate``: exit 0 on the examples, non-zero naming the problem otherwise (real subprocesses)."""

from __future__ import annotations

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
