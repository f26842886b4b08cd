"""Re-dating a day-ahead file (``ems upload --start``, ``examples/make_dayahead.py --start``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dayahead import UploadFormat, load_dayahead, parse_dayahead, render_dayahead
from shared.errors import UploadError
from shared.redate import redate, resolve_start

EXAMPLES = Path(__file__).parent.parent / "examples"
FILE_START = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)

moments = st.datetimes(datetime(1990, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))
intervals = st.integers(1, 1440)


@settings(max_examples=500, deadline=None)
@given(moments, intervals)
def test_now_is_the_start_of_the_interval_that_contains_now(now: datetime, interval_minutes: int) -> None:
    start = resolve_start("now", interval_minutes, FILE_START, now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert start <= now < start + timedelta(minutes=interval_minutes)
    assert start.second == start.microsecond == 0
    assert int((start - midnight).total_seconds() // 60) % interval_minutes == 0


@settings(max_examples=300, deadline=None)
@given(moments, moments)
def test_today_keeps_the_file_time_of_day(now: datetime, file_start: datetime) -> None:
    start = resolve_start(" Today ", 15, file_start, now)
    assert start.date() == now.date()
    assert start.timetz() == file_start.timetz()
    assert start.tzinfo is not None and start.utcoffset() == timedelta(0)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_other_spec_is_an_iso_utc_time_or_a_one_line_error(spec: str) -> None:
    try:
        start = resolve_start(spec, 15, FILE_START, FILE_START)
    except UploadError as exc:
        assert exc.source == "--start"
        assert "expected 'now'" in str(exc) and "\n" not in str(exc)
    else:
        assert spec.strip().lower() in ("now", "today") or start.utcoffset() == timedelta(0)


@pytest.mark.parametrize("fmt", list(UploadFormat))
def test_a_redated_file_keeps_interval_values_and_soc(fmt: UploadFormat) -> None:
    original = load_dayahead(EXAMPLES / f"day-ahead.{fmt.value}")
    moved = redate(original, "2027-03-01T12:00:00Z", datetime(2027, 1, 1, tzinfo=UTC))
    assert moved == dataclasses.replace(original, start=datetime(2027, 3, 1, 12, tzinfo=UTC))
    again = parse_dayahead(render_dayahead(moved, fmt), fmt)
    assert again == moved  # the CSV form never had an initial SoC to lose


def test_make_dayahead_writes_the_example_dated_today(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_dayahead.py"), "--start", "today", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for name in ("day-ahead.json", "day-ahead.csv"):
        written, shipped = load_dayahead(tmp_path / name), load_dayahead(EXAMPLES / name)
        assert written.start in (today, today - timedelta(days=1))  # a run across midnight
        assert dataclasses.replace(written, start=shipped.start) == shipped
    bad = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_dayahead.py"), "--start", "someday", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--start: not an ISO 8601 timestamp: 'someday'" in bad.stderr
