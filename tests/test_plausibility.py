"""Plausibility of sites and uploads: the plan never aims where the edge trips; wrong units are named.

Hypothesis properties: the checks never raise on any valid site or upload; a sane site or upload gets no
warning; a sane value scaled into the neighbouring unit always gets the warning naming that unit.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dayahead import DayAhead, UploadFormat, load_dayahead
from shared.errors import ConfigError
from shared.plausibility import (
    Finding,
    FindingKind,
    Severity,
    check_dayahead,
    check_site,
    refusals,
    refused_problems,
)
from shared.site import SiteConfig, load_site, parse_site
from shared.units import ProbableUnit

EXAMPLES = Path(__file__).parent.parent / "examples"
START = datetime(2026, 11, 24, tzinfo=UTC)


def site_from(cabinets: list[dict[str, Any]], **site: Any) -> SiteConfig:
    entries = []
    for index, cabinet in enumerate(cabinets):
        entry: dict[str, Any] = {
            "id": f"cab-{index + 1}",
            "capacity_kwh": 200.0,
            "charge_limit_kw": 100.0,
            "discharge_limit_kw": 100.0,
            "charge_efficiency": 0.95,
            "discharge_efficiency": 0.95,
            "soc_min_pct": 10.0,
            "soc_max_pct": 90.0,
            "opcua_endpoint": f"opc.tcp://127.0.0.1:{4841 + index}/ems/edge",
            "modbus_address": f"127.0.0.1:{15021 + index}",
        }
        entry.update(cabinet)
        entries.append(entry)
    info: dict[str, Any] = {
        "name": "t",
        "grid_import_limit_kw": 400.0,
        "grid_export_limit_kw": 300.0,
        "meter_modbus_address": "127.0.0.1:15020",
    }
    edge = site.pop("edge", {})
    info.update(site)
    return SiteConfig.model_validate({"site": info, "cabinets": entries, "edge": edge})


def day(load_kw: list[float], **fields: Any) -> DayAhead:
    steps = len(load_kw)
    values: dict[str, Any] = {
        "start": START,
        "interval_minutes": 15,
        "import_price_per_kwh": (0.2,) * steps,
        "export_price_per_kwh": (0.05,) * steps,
        "load_kw": tuple(load_kw),
        "pv_kw": (0.0,) * steps,
    }
    values.update({k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    return DayAhead(**values)


def only(findings: list[Finding], kind: FindingKind) -> list[Finding]:
    return [f for f in findings if f.kind is kind]


def warnings_of(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is not Severity.NOTE]


# ------------------------------------------------------------------------------- the edge's hard limits


def test_examples_are_plausible() -> None:
    site = load_site(EXAMPLES / "site.toml")
    assert check_site(site) == []
    json_findings = check_dayahead(load_dayahead(EXAMPLES / "day-ahead.json"), site, UploadFormat.JSON)
    assert json_findings == []
    csv_findings = check_dayahead(load_dayahead(EXAMPLES / "day-ahead.csv"), site, UploadFormat.CSV)
    assert [f.kind for f in csv_findings] == [FindingKind.NO_INITIAL_SOC]


def test_plan_window_at_or_beyond_the_edge_hard_window_is_an_error_naming_the_key() -> None:
    # The case: soc_min_pct 0.1 validates, the plan drives SoC to 0.1 %, the edge trips at 2 %.
    findings = check_site(site_from([{}, {"soc_min_pct": 0.1}]))
    errors = [f for f in findings if f.severity is Severity.ERROR]
    assert [(f.kind, f.location) for f in errors] == [
        (FindingKind.EDGE_HARD_LIMIT, "cabinets[1].soc_min_pct")
    ]
    assert "soc_hard_min_pct (2 %)" in errors[0].message
    # Equal is not enough: any overshoot would trip the cabinet.
    at_limit = check_site(site_from([{"soc_min_pct": 2.0, "soc_max_pct": 98.0}]))
    assert {f.location for f in refusals(at_limit, strict=False)} == {
        "cabinets[0].soc_min_pct",
        "cabinets[0].soc_max_pct",
    }
    # The edge's hard window is the site's own: a stricter [edge] catches a window that was fine.
    stricter = check_site(site_from([{}], edge={"soc_hard_min_pct": 12.0, "soc_hard_max_pct": 95.0}))
    assert [f.location for f in refusals(stricter, strict=False)] == ["cabinets[0].soc_min_pct"]


def test_a_soc_window_given_as_fractions_names_the_probable_unit() -> None:
    with pytest.raises(ConfigError) as info:  # soc_final_min_pct 50 no longer lies in [0.1, 0.9]
        parse_site(
            (EXAMPLES / "site.toml")
            .read_text()
            .replace("soc_min_pct = 10.0", "soc_min_pct = 0.1", 1)
            .replace("soc_max_pct = 90.0", "soc_max_pct = 0.9", 1)
        )
    assert "looks like a fraction 0-1; percent 0-100 expected" in str(info.value)
    findings = check_site(site_from([{"soc_min_pct": 0.1, "soc_max_pct": 0.9}]))
    assert {f.location for f in refusals(findings, strict=False)} == {"cabinets[0].soc_min_pct"}
    fraction = only(findings, FindingKind.WRONG_UNIT)
    assert [(f.location, f.probable_unit) for f in fraction] == [
        ("cabinets[0].soc_max_pct", ProbableUnit.FRACTION)
    ]


def test_capacity_and_limits_that_look_like_wh_and_w() -> None:
    in_wh = check_site(site_from([{"capacity_kwh": 200_000.0}]))
    assert [(f.location, f.probable_unit) for f in in_wh] == [("cabinets[0].capacity_kwh", ProbableUnit.WH)]
    in_w = check_site(site_from([{"discharge_limit_kw": 100_000.0}]))
    assert [(f.location, f.probable_unit) for f in in_w] == [
        ("cabinets[0].discharge_limit_kw", ProbableUnit.W)
    ]
    # Both in W and Wh agree with each other, but not with a 700 kW point of connection.
    both = check_site(site_from([{"capacity_kwh": 200_000.0, "charge_limit_kw": 100_000.0}]))
    assert [(f.location, f.probable_unit) for f in both] == [("cabinets[0].charge_limit_kw", ProbableUnit.W)]
    assert "x the point of connection" in both[0].message


def test_cycle_cost_per_mwh() -> None:
    findings = check_site(site_from([{"cycle_cost_per_kwh": 10.0}]))
    assert [(f.location, f.probable_unit) for f in findings] == [
        ("cabinets[0].cycle_cost_per_kwh", ProbableUnit.PER_MWH)
    ]


# -------------------------------------------------------------------------------------------- uploads


def test_load_in_w_at_a_400_kw_site_warns_w_with_the_peak_interval() -> None:
    # The case: 90,000 "kW" at a 400 kW site.
    site = load_site(EXAMPLES / "site.toml")
    example = load_dayahead(EXAMPLES / "day-ahead.json")
    in_w = dataclasses.replace(example, load_kw=tuple(v * 1000 for v in example.load_kw))
    findings = check_dayahead(in_w, site, UploadFormat.JSON)
    assert [(f.kind, f.probable_unit) for f in findings] == [(FindingKind.WRONG_UNIT, ProbableUnit.W)]
    peak = max(range(in_w.steps), key=in_w.load_kw.__getitem__)
    assert findings[0].location == f"load_kw[{peak}]"
    assert str(findings[0]).endswith("looks like W; kW expected")


def test_load_a_little_beyond_supply_warns_unserved_energy_not_a_unit() -> None:
    site = site_from([{}])  # 400 kW import + 100 kW discharge
    findings = check_dayahead(
        day([100.0, 550.0, 600.0, 100.0], pv_kw=[0.0, 0.0, 150.0, 0.0]), site, UploadFormat.JSON
    )
    assert [(f.kind, f.location, f.probable_unit) for f in warnings_of(findings)] == [
        (FindingKind.LOAD_BEYOND_SUPPLY, "load_kw[1]", None)
    ]
    assert "in 1 of 4 intervals" in warnings_of(findings)[0].message  # interval 2 is covered by its PV


def test_pv_and_commitment_in_w() -> None:
    site = site_from([{}])
    pv = check_dayahead(day([100.0, 100.0], pv_kw=[0.0, 150_000.0]), site, UploadFormat.JSON)
    assert [(f.location, f.probable_unit) for f in warnings_of(pv)] == [("pv_kw[1]", ProbableUnit.W)]
    commitment = check_dayahead(
        day([100.0, 100.0], grid_commitment_kw=[-80_000.0, 0.0]), site, UploadFormat.JSON
    )
    assert [(f.location, f.probable_unit) for f in warnings_of(commitment)] == [
        ("grid_commitment_kw[0]", ProbableUnit.W)
    ]


def test_prices_per_mwh() -> None:
    site = site_from([{}])  # unserved_energy_price_per_kwh 10 (default)
    findings = check_dayahead(
        day([100.0] * 3, import_price_per_kwh=[85.0, 92.0, 7.0]), site, UploadFormat.JSON
    )
    assert [(f.location, f.probable_unit) for f in warnings_of(findings)] == [
        ("import_price_per_kwh", ProbableUnit.PER_MWH)
    ]
    assert "median 85" in warnings_of(findings)[0].message


def test_initial_soc_as_fraction_and_beyond_the_hard_window() -> None:
    site = site_from([{}, {}])
    findings = check_dayahead(
        day([100.0], initial_soc_pct={"cab-1": 0.5, "cab-2": 99.0}), site, UploadFormat.JSON
    )
    assert [(f.location, f.kind, f.probable_unit) for f in findings] == [
        ("initial_soc_pct.cab-1", FindingKind.WRONG_UNIT, ProbableUnit.FRACTION),
        ("initial_soc_pct.cab-2", FindingKind.EDGE_HARD_LIMIT, None),
    ]
    # Without a site the fraction is still seen.
    alone = check_dayahead(day([100.0], initial_soc_pct={"cab-1": 0.5}), None, UploadFormat.JSON)
    assert [f.probable_unit for f in alone] == [ProbableUnit.FRACTION]


def test_missing_initial_soc_is_a_note_that_says_what_the_central_does() -> None:
    site = site_from([{}, {}])
    csv = check_dayahead(day([100.0]), site, UploadFormat.CSV)
    assert [(f.severity, f.location) for f in csv] == [(Severity.NOTE, "initial_soc_pct")]
    assert "CSV upload carries no initial SoC" in csv[0].message
    assert "live SoC, else from 50 %" in csv[0].message
    partial = check_dayahead(day([100.0], initial_soc_pct={"cab-1": 40.0}), site, UploadFormat.JSON)
    assert [f.message.split(":")[0] for f in partial] == ["no initial SoC for cab-2"]
    assert refusals(csv + partial, strict=True) == []  # a note never refuses


def test_strict_refuses_warnings_and_names_the_setting() -> None:
    findings = check_dayahead(
        day([100.0], initial_soc_pct={"cab-1": 0.5}), site_from([{}]), UploadFormat.JSON
    )
    assert refused_problems(findings, strict=False, strict_by="--strict") == []
    problems = refused_problems(findings, strict=True, strict_by="--strict")
    assert [str(p) for p in problems] == [
        "initial_soc_pct.cab-1: 0.5 %: looks like a fraction 0-1; percent 0-100 expected (refused: --strict)"
    ]


# ----------------------------------------------------------------------------------------- properties

HARD_MIN, HARD_MAX = 2.0, 98.0


@st.composite
def sane_sites(draw: st.DrawFn) -> SiteConfig:
    """Sites as they are built: C-rates 0.05-5, cabinets up to twice the point of connection, the plan
    window inside the edge's hard window, prices in one currency."""
    import_kw = draw(st.floats(20.0, 20_000.0))
    export_kw = draw(st.floats(0.0, 2.0)) * import_kw
    cabinets = []
    for _ in range(draw(st.integers(1, 4))):
        rated_kw = draw(st.floats(0.02, 2.0)) * (import_kw + export_kw)
        c_rate = draw(st.floats(0.05, 5.0))
        cabinets.append(
            {
                "capacity_kwh": rated_kw / c_rate,
                "charge_limit_kw": rated_kw * draw(st.floats(0.2, 1.0)),
                "discharge_limit_kw": rated_kw,
                "soc_min_pct": draw(st.floats(HARD_MIN + 0.5, 45.0)),
                "soc_max_pct": draw(st.floats(55.0, HARD_MAX - 0.5)),
                "cycle_cost_per_kwh": draw(st.floats(0.0, 0.5)),
            }
        )
    return site_from(
        cabinets,
        grid_import_limit_kw=import_kw,
        grid_export_limit_kw=export_kw,
        unserved_energy_price_per_kwh=draw(st.floats(5.0, 5000.0)),
    )


@st.composite
def sane_uploads(draw: st.DrawFn, site: SiteConfig) -> DayAhead:
    """A load the site can serve (its peak at least half of what it can supply then), PV up to what the
    site supplies without it, prices below the value of lost load, every cabinet's SoC stated."""
    steps = draw(st.integers(1, 48))
    firm_kw = site.site.grid_import_limit_kw + sum(c.discharge_limit_kw for c in site.cabinets)
    pv = [draw(st.floats(0.0, 1.0)) * firm_kw for _ in range(steps)]
    load = [draw(st.floats(0.0, 1.0)) * (firm_kw + p) for p in pv]
    peak = draw(st.integers(0, steps - 1))
    load[peak] = draw(st.floats(0.5, 1.0)) * (firm_kw + pv[peak])
    unserved = site.site.unserved_energy_price_per_kwh
    prices = st.floats(unserved / 200.0, unserved / 2.0)
    return day(
        load,
        pv_kw=pv,
        import_price_per_kwh=[draw(prices) for _ in range(steps)],
        export_price_per_kwh=[draw(prices) * 0.5 for _ in range(steps)],
        initial_soc_pct={c: draw(st.floats(HARD_MIN, HARD_MAX)) for c in site.cabinet_ids},
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sane_sites_and_uploads_never_warn(data: st.DataObject) -> None:
    site = data.draw(sane_sites())
    assert check_site(site) == []
    assert check_dayahead(data.draw(sane_uploads(site)), site, UploadFormat.JSON) == []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_sane_load_or_pv_scaled_to_w_always_warns_w(data: st.DataObject) -> None:
    site = data.draw(sane_sites())
    upload = data.draw(sane_uploads(site))
    in_w = dataclasses.replace(upload, load_kw=tuple(v * 1000 for v in upload.load_kw))
    units = [
        (f.location.split("[")[0], f.probable_unit) for f in check_dayahead(in_w, site, UploadFormat.JSON)
    ]
    assert ("load_kw", ProbableUnit.W) in units
    pv_peak = max(upload.pv_kw)
    if pv_peak > 0.05 * (site.site.grid_import_limit_kw + sum(c.discharge_limit_kw for c in site.cabinets)):
        pv_w = dataclasses.replace(upload, pv_kw=tuple(v * 1000 for v in upload.pv_kw))
        units = [
            (f.location.split("[")[0], f.probable_unit) for f in check_dayahead(pv_w, site, UploadFormat.JSON)
        ]
        assert ("pv_kw", ProbableUnit.W) in units


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sane_prices_per_mwh_and_soc_fractions_always_warn(data: st.DataObject) -> None:
    site = data.draw(sane_sites())
    upload = data.draw(sane_uploads(site))
    per_mwh = dataclasses.replace(
        upload, import_price_per_kwh=tuple(v * 1000 for v in upload.import_price_per_kwh)
    )
    assert [f.probable_unit for f in check_dayahead(per_mwh, site, UploadFormat.JSON)] == [
        ProbableUnit.PER_MWH
    ]
    fractions = {cab: soc / 100.0 for cab, soc in upload.initial_soc_pct.items()}
    found = check_dayahead(dataclasses.replace(upload, initial_soc_pct=fractions), site, UploadFormat.JSON)
    assert [(f.location, f.probable_unit) for f in found] == [
        (f"initial_soc_pct.{cab}", ProbableUnit.FRACTION) for cab in fractions
    ]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_sane_cabinet_in_wh_or_w_always_warns(data: st.DataObject) -> None:
    site = data.draw(sane_sites())
    index = data.draw(st.integers(0, len(site.cabinets) - 1))
    cabinet = site.cabinets[index]
    key = data.draw(st.sampled_from(["capacity_kwh", "discharge_limit_kw"]))
    scaled = cabinet.model_copy(update={key: getattr(cabinet, key) * 1000})
    cabinets = [scaled if i == index else c for i, c in enumerate(site.cabinets)]
    findings = check_site(site.model_copy(update={"cabinets": cabinets}))
    expected = ProbableUnit.WH if key == "capacity_kwh" else ProbableUnit.W
    assert [(f.location.split(".")[0], f.probable_unit) for f in findings] == [
        (f"cabinets[{index}]", expected)
    ]


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_checks_never_raise_on_any_valid_site_and_upload(data: st.DataObject) -> None:
    big = st.floats(0.0, 1e9)
    cabinets = []
    for _ in range(data.draw(st.integers(1, 3))):
        soc_min = data.draw(st.floats(0.0, 99.0))
        cabinets.append(
            {
                "capacity_kwh": data.draw(st.floats(1e-6, 1e9)),
                "charge_limit_kw": data.draw(big),
                "discharge_limit_kw": data.draw(big),
                "soc_min_pct": soc_min,
                "soc_max_pct": data.draw(st.floats(soc_min + 0.5, 100.0)),
                "cycle_cost_per_kwh": data.draw(big),
            }
        )
    edge_min = data.draw(st.floats(0.0, 100.0))
    site = site_from(
        cabinets,
        grid_import_limit_kw=data.draw(big),
        grid_export_limit_kw=data.draw(big),
        unserved_energy_price_per_kwh=data.draw(st.floats(1e-9, 1e9)),
        edge={"soc_hard_min_pct": edge_min, "soc_hard_max_pct": data.draw(st.floats(0.0, 100.0))},
    )
    steps = data.draw(st.integers(1, 20))
    series = st.lists(big, min_size=steps, max_size=steps)
    prices = st.lists(finite, min_size=steps, max_size=steps)
    upload = day(
        data.draw(series),
        pv_kw=data.draw(series),
        import_price_per_kwh=data.draw(prices),
        export_price_per_kwh=data.draw(prices),
        grid_commitment_kw=data.draw(st.none() | prices),
        initial_soc_pct=data.draw(
            st.dictionaries(st.sampled_from(["cab-1", "cab-9", "x"]), st.floats(0, 100))
        ),
    )
    for finding in check_site(site) + check_dayahead(upload, site, data.draw(st.sampled_from(UploadFormat))):
        assert finding.location and finding.message
        assert (finding.kind is FindingKind.WRONG_UNIT) == (finding.probable_unit is not None)
    check_dayahead(upload, None, UploadFormat.JSON)
