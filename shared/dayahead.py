"""The day-ahead upload (docs/interfaces.md: day-ahead upload), from JSON or CSV, validated whole.

A bad upload is refused whole with the row or field named; the parsers never raise anything but
:class:`shared.errors.UploadError` on bad input, and never return a half-valid model.

Defaults where the contract leaves a field optional: ``export_price_per_kwh`` 0 (export earns nothing),
``pv_kw`` 0, ``grid_commitment_kw`` none (no imbalance term), ``initial_soc_pct`` empty (the central
service uses live telemetry, else 50 %).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.errors import Problem, UploadError
from shared.site import SiteConfig
from shared.timeutil import NotUtcError, format_utc, parse_utc

MAX_STEPS = 20_160  # two weeks of minutes; more is a mistake, not a forecast
# Largest upload body or file [bytes]: the central refuses a larger POST (413), `ems validate` a larger file.
# Two weeks of minute values fit in well under 2 MiB.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
# Timestamps a parser accepts at all (the central narrows this to a window around now).
MIN_YEAR = 1970
MAX_YEAR = 9000
SERIES_FIELDS = ("import_price_per_kwh", "export_price_per_kwh", "load_kw", "pv_kw", "grid_commitment_kw")
REQUIRED_SERIES = ("import_price_per_kwh", "load_kw")
NON_NEGATIVE_SERIES = ("load_kw", "pv_kw")
CSV_COLUMNS = ("start", *SERIES_FIELDS)
JSON_KEYS = frozenset({"start", "interval_minutes", "initial_soc_pct", *SERIES_FIELDS})


class UploadFormat(StrEnum):
    """The two forms of a day-ahead upload."""

    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True)
class DayAhead:
    """A validated day-ahead upload: T equally spaced intervals from ``start`` (UTC)."""

    start: datetime
    interval_minutes: int
    import_price_per_kwh: tuple[float, ...]
    export_price_per_kwh: tuple[float, ...]
    load_kw: tuple[float, ...]
    pv_kw: tuple[float, ...]
    grid_commitment_kw: tuple[float, ...] | None = None
    initial_soc_pct: Mapping[str, float] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Number of intervals T [-]."""
        return len(self.load_kw)

    @property
    def interval_s(self) -> int:
        return self.interval_minutes * 60

    @property
    def interval_h(self) -> float:
        return self.interval_minutes / 60.0

    @property
    def end(self) -> datetime:
        """End of the last interval (exclusive)."""
        return self.start + timedelta(minutes=self.interval_minutes * self.steps)

    def interval_start(self, index: int) -> datetime:
        return self.start + timedelta(minutes=self.interval_minutes * index)

    def index_at(self, when: datetime) -> int | None:
        """Index of the interval containing ``when``, or None outside the horizon."""
        offset_s = (when - self.start).total_seconds()
        if offset_s < 0:
            return None
        index = int(offset_s // self.interval_s)
        return index if index < self.steps else None

    def tail(self, first_index: int, initial_soc_pct: Mapping[str, float] | None = None) -> DayAhead:
        """The horizon from interval ``first_index`` to the end (rolling re-optimization)."""
        if not 0 <= first_index < self.steps:
            raise IndexError(f"interval {first_index} outside 0..{self.steps - 1}")
        commitment = self.grid_commitment_kw
        return DayAhead(
            start=self.interval_start(first_index),
            interval_minutes=self.interval_minutes,
            import_price_per_kwh=self.import_price_per_kwh[first_index:],
            export_price_per_kwh=self.export_price_per_kwh[first_index:],
            load_kw=self.load_kw[first_index:],
            pv_kw=self.pv_kw[first_index:],
            grid_commitment_kw=None if commitment is None else commitment[first_index:],
            initial_soc_pct=dict(self.initial_soc_pct if initial_soc_pct is None else initial_soc_pct),
        )

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "start": format_utc(self.start),
            "interval_minutes": self.interval_minutes,
            "import_price_per_kwh": list(self.import_price_per_kwh),
            "export_price_per_kwh": list(self.export_price_per_kwh),
            "load_kw": list(self.load_kw),
            "pv_kw": list(self.pv_kw),
        }
        if self.grid_commitment_kw is not None:
            data["grid_commitment_kw"] = list(self.grid_commitment_kw)
        if self.initial_soc_pct:
            data["initial_soc_pct"] = dict(self.initial_soc_pct)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict())


def check_against_site(dayahead: DayAhead, site: SiteConfig, source: str = "upload") -> None:
    """Refuse an upload that names cabinets the site does not have."""
    known = set(site.cabinet_ids)
    problems = [
        Problem(f"initial_soc_pct.{cabinet_id}", f"unknown cabinet (site has: {', '.join(sorted(known))})")
        for cabinet_id in dayahead.initial_soc_pct
        if cabinet_id not in known
    ]
    if problems:
        raise UploadError(source, problems)


# ---------------------------------------------------------------------------------------------- JSON


def parse_dayahead_json(text: str | bytes, source: str = "upload") -> DayAhead:
    """Parse and validate a JSON day-ahead upload."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UploadError(source, [Problem("", f"not valid JSON: {exc}")]) from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UploadError(source, [Problem("", "not valid JSON: a number has too many digits")]) from exc
    except RecursionError as exc:
        raise UploadError(source, [Problem("", "not valid JSON: nested too deeply")]) from exc
    if not isinstance(raw, dict):
        raise UploadError(source, [Problem("", "the upload must be a JSON object")])
    problems: list[Problem] = [Problem(str(key), "unknown field") for key in raw if key not in JSON_KEYS]
    start = _field_start(raw.get("start"), "start", problems)
    interval = _field_interval(raw.get("interval_minutes"), problems)
    series: dict[str, tuple[float, ...] | None] = {}
    for name in SERIES_FIELDS:
        series[name] = _json_series(raw.get(name), name, name in REQUIRED_SERIES, problems)
    soc = _field_initial_soc(raw.get("initial_soc_pct"), problems)
    return _assemble(source, problems, start, interval, series, soc)


def _field_start(value: object, location: str, problems: list[Problem]) -> datetime | None:
    if value is None:
        problems.append(Problem(location, "missing"))
        return None
    if not isinstance(value, str):
        problems.append(Problem(location, "must be an ISO 8601 UTC timestamp string"))
        return None
    try:
        return parse_utc(value)
    except NotUtcError as exc:
        problems.append(Problem(location, str(exc)))
    except ValueError as exc:
        problems.append(Problem(location, str(exc)))
    return None


def _field_interval(value: object, problems: list[Problem]) -> int | None:
    if value is None:
        problems.append(Problem("interval_minutes", "missing"))
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(Problem("interval_minutes", "must be a whole number of minutes"))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(Problem("interval_minutes", f"must be a whole number of minutes, got {_show(value)}"))
        return None
    if value != int(value):
        problems.append(Problem("interval_minutes", "must be a whole number of minutes"))
        return None
    if not 1 <= int(value) <= 1440:
        problems.append(Problem("interval_minutes", f"must be 1-1440, got {value}"))
        return None
    return int(value)


def _json_series(
    value: object, name: str, required: bool, problems: list[Problem]
) -> tuple[float, ...] | None:
    if value is None:
        if required:
            problems.append(Problem(name, "missing"))
        return None
    if not isinstance(value, list):
        problems.append(Problem(name, "must be a list of numbers"))
        return None
    numbers: list[float] = []
    for index, item in enumerate(value):
        number = _finite(item)
        if number is None:
            problems.append(Problem(f"{name}[{index}]", f"must be a finite number, got {_show(item)}"))
            return None
        numbers.append(number)
    return tuple(numbers)


def _field_initial_soc(value: object, problems: list[Problem]) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(Problem("initial_soc_pct", "must be an object of cabinet id to percent"))
        return {}
    soc: dict[str, float] = {}
    for key, item in value.items():
        number = _finite(item)
        if number is None or not 0.0 <= number <= 100.0:
            problems.append(Problem(f"initial_soc_pct.{key}", f"must be a number 0-100, got {_show(item)}"))
            continue
        soc[str(key)] = number
    return soc


def _finite(item: object) -> float | None:
    if isinstance(item, bool) or not isinstance(item, int | float):
        return None
    try:
        number = float(item)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _show(item: object) -> str:
    text = json.dumps(item) if not isinstance(item, float) else repr(item)
    return text if len(text) <= 40 else text[:37] + "..."


# ----------------------------------------------------------------------------------------------- CSV


def parse_dayahead_csv(text: str | bytes, source: str = "upload") -> DayAhead:
    """Parse and validate a CSV day-ahead upload (one row per interval, equally spaced)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UploadError(source, [Problem("", f"not UTF-8 text: {exc}")]) from exc
    text = text.removeprefix("\ufeff")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise UploadError(source, [Problem("", f"not valid CSV: {exc}")]) from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise UploadError(source, [Problem("", "empty CSV: expected a header and one row per interval")])
    header = [cell.strip() for cell in rows[0]]
    header_problems = _check_header(header)
    if header_problems:
        raise UploadError(source, header_problems)
    body = rows[1:]
    if len(body) < 2:
        raise UploadError(source, [Problem("", "need at least 2 rows to know the interval length")])
    problems: list[Problem] = []
    columns: dict[str, list[float]] = {name: [] for name in header if name != "start"}
    starts: list[datetime] = []
    for number, row in enumerate(body, start=1):
        where = f"row {number}"
        if len(row) != len(header):
            problems.append(Problem(where, f"has {len(row)} cells, the header has {len(header)}"))
            continue
        for name, cell in zip(header, row, strict=True):
            if name == "start":
                stamp = _field_start(cell, f"{where}.start", problems)
                if stamp is not None:
                    starts.append(stamp)
                continue
            value = _csv_number(cell)
            if value is None:
                problems.append(Problem(f"{where}.{name}", f"must be a finite number, got {cell.strip()!r}"))
                continue
            columns[name].append(value)
        if len(problems) >= 20:
            break
    if problems:
        raise UploadError(source, problems)
    interval = _csv_interval(starts, problems)
    series: dict[str, tuple[float, ...] | None] = {
        name: (tuple(columns[name]) if name in columns else None) for name in SERIES_FIELDS
    }
    return _assemble(source, problems, starts[0], interval, series, {})


def _check_header(header: list[str]) -> list[Problem]:
    problems = [Problem("header", f"unknown column {name!r}") for name in header if name not in CSV_COLUMNS]
    problems += [
        Problem("header", f"column {name!r} appears twice") for name in set(header) if header.count(name) > 1
    ]
    for name in ("start", *REQUIRED_SERIES):
        if name not in header:
            problems.append(Problem("header", f"missing column {name!r}"))
    return problems


def _csv_number(cell: str) -> float | None:
    try:
        number = float(cell.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _csv_interval(starts: list[datetime], problems: list[Problem]) -> int | None:
    step = starts[1] - starts[0]
    minutes = step.total_seconds() / 60.0
    if minutes <= 0 or minutes != int(minutes) or not 1 <= minutes <= 1440:
        problems.append(Problem("row 2.start", f"interval must be 1-1440 whole minutes, got {minutes:g}"))
        return None
    for number in range(2, len(starts)):
        if starts[number] - starts[number - 1] != step:
            gap = (starts[number] - starts[number - 1]).total_seconds() / 60.0
            problems.append(
                Problem(
                    f"row {number + 1}.start",
                    f"rows must be equally spaced by {minutes:g} min; this is {gap:g} min after the last",
                )
            )
            return None
    return int(minutes)


# ---------------------------------------------------------------------------------------------- both


def _assemble(
    source: str,
    problems: list[Problem],
    start: datetime | None,
    interval: int | None,
    series: Mapping[str, tuple[float, ...] | None],
    soc: dict[str, float],
) -> DayAhead:
    lengths = {name: len(values) for name, values in series.items() if values is not None}
    if lengths:
        expected = lengths.get("load_kw", next(iter(lengths.values())))
        if expected == 0:
            problems.append(Problem("load_kw", "must have at least one interval"))
        if expected > MAX_STEPS:
            problems.append(Problem("load_kw", f"{expected} intervals; at most {MAX_STEPS} are accepted"))
        for name, length in lengths.items():
            if length != expected:
                problems.append(Problem(name, f"has {length} values, expected {expected} (as load_kw)"))
    for name in NON_NEGATIVE_SERIES:
        values = series.get(name)
        for index, value in enumerate(values or ()):
            if value < 0:
                problems.append(Problem(f"{name}[{index}]", f"must not be negative, got {value:g}"))
                break
    if start is not None and interval is not None and lengths:
        try:
            horizon_end = start + timedelta(minutes=interval * max(lengths.values()))
        except OverflowError:
            horizon_end = None
        if horizon_end is None or horizon_end.year > MAX_YEAR or start.year < MIN_YEAR:
            problems.append(Problem("start", f"must lie between the years {MIN_YEAR} and {MAX_YEAR}"))
    if problems or start is None or interval is None:
        raise UploadError(source, problems or [Problem("", "incomplete upload")])
    load = series["load_kw"]
    imports = series["import_price_per_kwh"]
    if load is None or imports is None:  # pragma: no cover - reported above as missing
        raise UploadError(source, [Problem("load_kw", "missing")])
    zeros = tuple(0.0 for _ in load)
    return DayAhead(
        start=start,
        interval_minutes=interval,
        import_price_per_kwh=imports,
        export_price_per_kwh=series["export_price_per_kwh"] or zeros,
        load_kw=load,
        pv_kw=series["pv_kw"] or zeros,
        grid_commitment_kw=series["grid_commitment_kw"],
        initial_soc_pct=soc,
    )


def parse_dayahead(text: str | bytes, fmt: str, source: str = "upload") -> DayAhead:
    """Parse ``fmt`` ``json`` or ``csv``."""
    if fmt == "json":
        return parse_dayahead_json(text, source)
    if fmt == "csv":
        return parse_dayahead_csv(text, source)
    raise UploadError(source, [Problem("", f"unknown format {fmt!r}: expected json or csv")])


def upload_format(path: str | Path) -> UploadFormat:
    """The format a day-ahead file's suffix names; refuse any other suffix."""
    suffix = Path(path).suffix.lower().lstrip(".")
    try:
        return UploadFormat(suffix)
    except ValueError:
        raise UploadError(str(path), [Problem("", "a day-ahead file must end in .json or .csv")]) from None


def read_upload_file(path: str | Path) -> bytes:
    """The bytes of a day-ahead file, refused (as the central refuses the upload) above the size limit."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_UPLOAD_BYTES + 1)
    except OSError as exc:
        raise UploadError(str(file), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    if len(data) > MAX_UPLOAD_BYTES:
        problem = f"larger than {MAX_UPLOAD_BYTES} bytes, the most the central service accepts"
        raise UploadError(str(file), [Problem("", problem)])
    return data


def load_dayahead(path: str | Path) -> DayAhead:
    """Load a ``.json`` or ``.csv`` day-ahead file."""
    fmt = upload_format(path)
    return parse_dayahead(read_upload_file(path), fmt, str(path))


def render_dayahead(dayahead: DayAhead, fmt: UploadFormat) -> str:
    """The upload as a JSON or CSV document (CSV drops the initial SoC, which it cannot carry)."""
    return dayahead.to_json() if fmt is UploadFormat.JSON else write_dayahead_csv(dayahead)


def write_dayahead_csv(dayahead: DayAhead) -> str:
    """Render an upload as CSV (initial SoC is not part of the CSV form)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names: Sequence[str] = [
        n for n in SERIES_FIELDS if n != "grid_commitment_kw" or dayahead.grid_commitment_kw
    ]
    writer.writerow(["start", *names])
    for index in range(dayahead.steps):
        row: list[str] = [format_utc(dayahead.interval_start(index))]
        for name in names:
            values = getattr(dayahead, name)
            row.append(repr(float(values[index])))
        writer.writerow(row)
    return out.getvalue()
