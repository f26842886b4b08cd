"""Day-ahead uploads: JSON and CSV agree; every refusal of docs/interfaces.md: day-ahead upload names the row
or field."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dayahead import (
    DayAhead,
    check_against_site,
    load_dayahead,
    parse_dayahead_csv,
    parse_dayahead_json,
    write_dayahead_csv,
)
from shared.errors import UploadError
from shared.site import load_site

EXAMPLES = Path(__file__).parent.parent / "examples"


def upload(steps: int = 4, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "start": "2026-11-24T00:00:00Z",
        "interval_minutes": 15,
        "import_price_per_kwh": [0.2] * steps,
        "export_price_per_kwh": [0.05] * steps,
        "load_kw": [100.0] * steps,
        "pv_kw": [0.0] * steps,
    }
    data.update(overrides)
    return data


def refused_json(data: dict[str, Any]) -> str:
    with pytest.raises(UploadError) as info:
        parse_dayahead_json(json.dumps(data))
    return str(info.value)


def refused_csv(text: str) -> str:
    with pytest.raises(UploadError) as info:
        parse_dayahead_csv(text)
    return str(info.value)


def test_examples_are_valid_and_json_equals_csv() -> None:
    from_json = load_dayahead(EXAMPLES / "day-ahead.json")
    from_csv = load_dayahead(EXAMPLES / "day-ahead.csv")
    assert from_json.steps == 96
    assert from_json.interval_minutes == 15
    assert from_json.start == datetime(2026, 11, 24, tzinfo=UTC)
    # The CSV form carries no initial SoC; everything else is identical.
    assert from_json.initial_soc_pct
    assert from_json.tail(0, initial_soc_pct={}) == from_csv
    check_against_site(from_json, load_site(EXAMPLES / "site.toml"))


def test_optional_fields_default() -> None:
    data = upload(3)
    del data["export_price_per_kwh"], data["pv_kw"]
    parsed = parse_dayahead_json(json.dumps(data))
    assert parsed.export_price_per_kwh == (0.0, 0.0, 0.0)
    assert parsed.pv_kw == (0.0, 0.0, 0.0)
    assert parsed.grid_commitment_kw is None
    assert parsed.initial_soc_pct == {}
    assert parsed.end == parsed.start + timedelta(minutes=45)


def test_json_round_trip_and_csv_writer() -> None:
    parsed = parse_dayahead_json(json.dumps(upload(5, grid_commitment_kw=[50.0] * 5)))
    assert parse_dayahead_json(parsed.to_json()) == parsed
    assert parse_dayahead_csv(write_dayahead_csv(parsed)) == parsed


# --- every refusal of docs/interfaces.md: day-ahead upload, JSON ---------------------------------------


def test_wrong_length_is_refused() -> None:
    message = refused_json(upload(4, pv_kw=[0.0] * 3))
    assert "pv_kw" in message
    assert "3 values, expected 4" in message


def test_nan_is_refused_with_index() -> None:
    text = json.dumps(upload(4)).replace('"load_kw": [100.0, 100.0', '"load_kw": [100.0, NaN')
    with pytest.raises(UploadError, match=r"load_kw\[1\]: must be a finite number"):
        parse_dayahead_json(text)


def test_negative_load_is_refused_with_index() -> None:
    assert "load_kw[2]: must not be negative" in refused_json(upload(4, load_kw=[1.0, 2.0, -3.0, 4.0]))


def test_negative_pv_is_refused() -> None:
    assert "pv_kw[0]" in refused_json(upload(2, pv_kw=[-1.0, 0.0]))


@pytest.mark.parametrize("start", ["2026-11-24T00:00:00", "2026-11-24T01:00:00+01:00", "yesterday", 17])
def test_start_not_utc_is_refused(start: object) -> None:
    assert "start" in refused_json(upload(2, start=start))


def test_unknown_cabinet_is_refused() -> None:
    parsed = parse_dayahead_json(json.dumps(upload(2, initial_soc_pct={"cab-9": 40.0})))
    with pytest.raises(UploadError, match=r"initial_soc_pct\.cab-9: unknown cabinet"):
        check_against_site(parsed, load_site(EXAMPLES / "site.toml"))


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"interval_minutes": 0}, "interval_minutes"),
        ({"interval_minutes": 7.5}, "interval_minutes"),
        ({"load_kw": []}, "load_kw"),
        ({"load_kw": "lots"}, "load_kw"),
        ({"import_price_per_kwh": [0.1, None]}, "import_price_per_kwh[1]"),
        ({"import_price_per_kwh": [0.1, True]}, "import_price_per_kwh[1]"),
        ({"initial_soc_pct": {"cab-1": 120.0}}, "initial_soc_pct.cab-1"),
        ({"surprise": 1}, "surprise: unknown field"),
    ],
)
def test_other_bad_fields(overrides: dict[str, Any], where: str) -> None:
    assert where in refused_json(upload(2, **overrides))


def test_missing_required_and_not_an_object() -> None:
    data = upload(2)
    del data["load_kw"]
    assert "load_kw: missing" in refused_json(data)
    with pytest.raises(UploadError, match="JSON object"):
        parse_dayahead_json("[1, 2]")
    with pytest.raises(UploadError, match="not valid JSON"):
        parse_dayahead_json("{")


# --- CSV ------------------------------------------------------------------------------------------------

HEADER = "start,import_price_per_kwh,load_kw"


def test_csv_gap_is_refused_naming_the_row() -> None:
    text = "\n".join(
        [HEADER, "2026-11-24T00:00:00Z,0.2,10", "2026-11-24T00:15:00Z,0.2,10", "2026-11-24T00:45:00Z,0.2,10"]
    )
    message = refused_csv(text)
    assert "row 3.start" in message
    assert "equally spaced" in message


def test_csv_nan_negative_and_not_utc() -> None:
    rows = ["2026-11-24T00:00:00Z,0.2,10", "2026-11-24T00:15:00Z,nan,10"]
    assert "row 2.import_price_per_kwh" in refused_csv("\n".join([HEADER, *rows]))
    rows = ["2026-11-24T00:00:00Z,0.2,10", "2026-11-24T00:15:00Z,0.2,-10"]
    assert "load_kw[1]: must not be negative" in refused_csv("\n".join([HEADER, *rows]))
    rows = ["2026-11-24T00:00:00", "2026-11-24T00:15:00"]
    assert "row 1.start" in refused_csv("\n".join([HEADER, *(r + ",0.2,10" for r in rows)]))


def test_csv_header_and_shape_problems() -> None:
    assert "unknown column 'price'" in refused_csv("start,price,load_kw,import_price_per_kwh\n")
    assert "missing column 'load_kw'" in refused_csv("start,import_price_per_kwh\nx,1\n")
    short = "\n".join([HEADER, "2026-11-24T00:00:00Z,0.2", "2026-11-24T00:15:00Z,0.2,10"])
    assert "row 1: has 2 cells" in refused_csv(short)
    assert "at least 2 rows" in refused_csv(HEADER + "\n2026-11-24T00:00:00Z,0.2,10\n")
    assert "empty" in refused_csv("")


def test_load_dayahead_refuses_other_extensions(tmp_path: Path) -> None:
    path = tmp_path / "day.xlsx"
    path.write_text("x")
    with pytest.raises(UploadError, match=r"\.json or \.csv"):
        load_dayahead(path)


# --- properties -----------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def _assert_valid_model(model: DayAhead) -> None:
    lengths = {
        len(model.import_price_per_kwh),
        len(model.export_price_per_kwh),
        len(model.load_kw),
        len(model.pv_kw),
    }
    if model.grid_commitment_kw is not None:
        lengths.add(len(model.grid_commitment_kw))
    assert len(lengths) == 1
    assert model.steps >= 1
    assert 1 <= model.interval_minutes <= 1440
    assert model.start.utcoffset() == timedelta(0)
    series = (*model.import_price_per_kwh, *model.export_price_per_kwh, *model.load_kw, *model.pv_kw)
    assert all(math.isfinite(v) for v in series)
    assert all(v >= 0 for v in (*model.load_kw, *model.pv_kw))
    assert all(0 <= v <= 100 for v in model.initial_soc_pct.values())


@st.composite
def mutated_uploads(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(st.integers(min_value=0, max_value=6))
    data: dict[str, Any] = {
        "start": draw(
            st.sampled_from(["2026-11-24T00:00:00Z", "2026-11-24T00:00:00", "x", "2026-11-24T03:00:00+03:00"])
        ),
        "interval_minutes": draw(st.sampled_from([15, 60, 0, -5, 1441, 2.5, "15"])),
        "import_price_per_kwh": draw(st.lists(finite, min_size=steps, max_size=steps)),
        "load_kw": draw(
            st.lists(st.floats(min_value=-10, max_value=1e4, allow_nan=False), min_size=steps, max_size=steps)
        ),
    }
    for key in ("export_price_per_kwh", "pv_kw", "grid_commitment_kw"):
        if draw(st.booleans()):
            length = draw(st.sampled_from([steps, steps + 1, max(0, steps - 1)]))
            data[key] = draw(st.lists(st.one_of(finite, anything), min_size=length, max_size=length))
    if draw(st.booleans()):
        data["initial_soc_pct"] = draw(
            st.dictionaries(st.text(max_size=4), st.one_of(finite, anything), max_size=2)
        )
    if draw(st.booleans()):
        data[draw(st.text(max_size=6))] = draw(anything)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_uploads())
def test_json_parser_accepts_only_valid_uploads(data: dict[str, Any]) -> None:
    try:
        model = parse_dayahead_json(json.dumps(data))
    except UploadError as exc:
        assert exc.problems
        return
    _assert_valid_model(model)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parsers_never_crash_on_garbage(text: str | bytes) -> None:
    for parser in (parse_dayahead_json, parse_dayahead_csv):
        try:
            model = parser(text)
        except UploadError:
            continue
        _assert_valid_model(model)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(finite, finite, st.floats(min_value=0, max_value=1e4)), min_size=2, max_size=8),
    st.sampled_from([1, 5, 15, 60]),
)
def test_csv_and_json_give_identical_models(rows: list[tuple[float, float, float]], interval: int) -> None:
    start = datetime(2026, 11, 24, tzinfo=UTC)
    stamps = [
        (start + timedelta(minutes=interval * i)).isoformat().replace("+00:00", "Z") for i in range(len(rows))
    ]
    csv_text = "start,import_price_per_kwh,export_price_per_kwh,load_kw\n" + "\n".join(
        f"{s},{a!r},{b!r},{c!r}" for s, (a, b, c) in zip(stamps, rows, strict=True)
    )
    json_text = json.dumps(
        {
            "start": stamps[0],
            "interval_minutes": interval,
            "import_price_per_kwh": [r[0] for r in rows],
            "export_price_per_kwh": [r[1] for r in rows],
            "load_kw": [r[2] for r in rows],
        }
    )
    assert parse_dayahead_csv(csv_text) == parse_dayahead_json(json_text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789.,-:TZe\n nan", max_size=40), max_size=6))
def test_csv_parser_never_crashes_on_csvish_garbage(lines: list[str]) -> None:
    text = "start,import_price_per_kwh,load_kw\n" + "\n".join(lines)
    try:
        model = parse_dayahead_csv(text)
    except UploadError:
        return
    _assert_valid_model(model)


# --- values that crashed the parser (an HTTP 500 in the central) --------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 5000])
def test_non_finite_or_huge_interval_is_refused(literal: str) -> None:
    text = json.dumps(upload()).replace('"interval_minutes": 15', f'"interval_minutes": {literal}')
    with pytest.raises(UploadError) as info:
        parse_dayahead_json(text)
    assert info.value.problems[0].location in ("interval_minutes", "")


@pytest.mark.parametrize("start", ["9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z", "1969-12-31T00:00:00Z"])
def test_start_beyond_the_calendar_is_refused(start: str) -> None:
    assert "start: must lie between the years" in refused_json(upload(start=start))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**5000), max_value=10**5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["9999-12-31T23:45:00Z", "0001-01-01T00:00:00Z", "3000-01-01T00:00:00Z"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(upload())), st.one_of(json_scalars, st.lists(json_scalars, max_size=4)))
def test_any_json_value_in_any_field_is_parsed_or_refused(key: str, value: object) -> None:
    data = upload()
    data[key] = value
    try:
        text = json.dumps(data)
    except ValueError:  # an integer json cannot print: not an upload anyone can send
        return
    try:
        model = parse_dayahead_json(text)
    except UploadError as exc:
        assert exc.problems
        return
    _assert_valid_model(model)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=12), st.none() | st.floats() | st.text(max_size=12), max_size=4),
    st.dictionaries(st.text(max_size=12), st.floats(), max_size=3),
)
def test_every_refusal_line_is_one_line_whatever_the_keys(
    extra: dict[str, Any], soc: dict[str, float]
) -> None:
    """Keys and values are quoted in the messages: control characters in them must not split a line of a
    log or an HTTP answer."""
    with pytest.raises(UploadError) as info:
        parse_dayahead_json(json.dumps({**upload(), **extra, "initial_soc_pct": soc, "bogus": 1}).encode())
    error = info.value
    for line in [str(error), *error.lines(), *(str(p) for p in error.problems)]:
        assert line.isprintable(), line
