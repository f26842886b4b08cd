"""Plausibility of a site file and a day-ahead upload: values that are valid but cannot be meant.

The parsers (:mod:`shared.site`, :mod:`shared.dayahead`) refuse what is malformed. This module looks at
what is well-formed yet implausible, and says what was probably meant:

- **errors** (always refused): a plan window that reaches the edge's hard limits, so the plan would aim
  where the edge trips (``soc_min_pct`` at or below ``[edge] soc_hard_min_pct``, and the same at the top);
- **warnings** (refused by ``ems validate --strict`` and ``[central] strict_plausibility``): values that
  look like the wrong unit (power in W, energy in Wh, prices per MWh, SoC as a fraction 0-1), and a load
  the site cannot supply;
- **notes** (never refused): facts worth knowing, such as an upload without initial SoC.

Every check is a small function of the inputs; none raises on a valid site or upload. The thresholds are
factors far from any real plant (a unit mistake is a factor of 1000), see docs/configuration.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.dayahead import DayAhead, UploadFormat
from shared.errors import ConfigError, Problem, UploadError
from shared.site import CabinetConfig, SiteConfig
from shared.units import ProbableUnit

# A series whose peak is this many times what the site can supply or take looks like W.
POWER_RATIO_W = 10.0
# Full charge or discharge faster than this many times per hour looks like power in W (or energy in MWh).
C_RATE_W = 40.0
# Full charge or discharge slower than this (125 h) looks like energy in Wh.
C_RATE_WH = 0.008
# A cabinet rated this many times the point of connection (import + export limit) looks like W.
CABINET_POC_RATIO_W = 20.0
# A percentage at or below this (and above 0) looks like a fraction 0-1.
FRACTION_MAX = 1.0


class Severity(StrEnum):
    """What a finding means for the input: refused always, refused when strict, or never."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class FindingKind(StrEnum):
    """What is implausible."""

    EDGE_HARD_LIMIT = "edge_hard_limit"  # the plan would aim at or beyond an edge interlock limit
    WRONG_UNIT = "wrong_unit"  # the value looks like another unit (see ProbableUnit)
    LOAD_BEYOND_SUPPLY = "load_beyond_supply"  # more load than import + discharge + PV can cover
    NO_INITIAL_SOC = "no_initial_soc"  # the upload does not say the SoC the day starts from


@dataclass(frozen=True)
class Finding:
    """One implausible value: where (a key path or series index), what, and the unit probably meant."""

    kind: FindingKind
    severity: Severity
    location: str
    message: str
    probable_unit: ProbableUnit | None = None

    @property
    def text(self) -> str:
        """The message with the probable unit, as printed and returned by the API."""
        return f"{self.message}: {self.probable_unit.value}" if self.probable_unit else self.message

    def problem(self) -> Problem:
        return Problem(self.location, self.text)

    def __str__(self) -> str:
        return str(self.problem())


def refusals(findings: Iterable[Finding], *, strict: bool) -> list[Finding]:
    """The findings that refuse the input: errors, and warnings too when ``strict``."""
    refused = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    return [f for f in findings if f.severity in refused]


# ------------------------------------------------------------------------------------------ the site


def check_site(site: SiteConfig) -> list[Finding]:
    """Every finding of a site file, cabinet by cabinet, then the site's prices."""
    findings: list[Finding] = []
    for index, cabinet in enumerate(site.cabinets):
        where = f"cabinets[{index}]"
        findings += _soc_window_fraction(cabinet, where)
        findings += _soc_window_inside_hard(site, cabinet, where)
        findings += _cabinet_rating(site, cabinet, where)
    findings += _edge_hard_fraction(site)
    findings += _site_prices(site)
    return findings


def _soc_window_fraction(cabinet: CabinetConfig, where: str) -> list[Finding]:
    if not 0.0 < cabinet.soc_max_pct <= FRACTION_MAX:
        return []
    message = f"SoC window {cabinet.soc_min_pct:g}-{cabinet.soc_max_pct:g} %"
    return [_unit(f"{where}.soc_max_pct", message, ProbableUnit.FRACTION)]


def _edge_hard_fraction(site: SiteConfig) -> list[Finding]:
    edge = site.edge
    if not 0.0 < edge.soc_hard_max_pct <= FRACTION_MAX:
        return []
    message = f"hard SoC window {edge.soc_hard_min_pct:g}-{edge.soc_hard_max_pct:g} %"
    return [_unit("edge.soc_hard_max_pct", message, ProbableUnit.FRACTION)]


def _soc_window_inside_hard(site: SiteConfig, cabinet: CabinetConfig, where: str) -> list[Finding]:
    """The plan keeps SoC in [soc_min_pct, soc_max_pct]; the edge trips outside its hard window, so the
    plan window must lie strictly inside it (at the limit, any overshoot trips the cabinet)."""
    hard_min, hard_max = site.edge.soc_hard_min_pct, site.edge.soc_hard_max_pct
    findings = []
    if cabinet.soc_min_pct <= hard_min:
        findings.append(
            Finding(
                FindingKind.EDGE_HARD_LIMIT,
                Severity.ERROR,
                f"{where}.soc_min_pct",
                f"{cabinet.soc_min_pct:g} % must be above [edge] soc_hard_min_pct ({hard_min:g} %): the plan "
                "would drive the cabinet to where its edge trips",
            )
        )
    if cabinet.soc_max_pct >= hard_max:
        findings.append(
            Finding(
                FindingKind.EDGE_HARD_LIMIT,
                Severity.ERROR,
                f"{where}.soc_max_pct",
                f"{cabinet.soc_max_pct:g} % must be below [edge] soc_hard_max_pct ({hard_max:g} %): the plan "
                "would drive the cabinet to where its edge trips",
            )
        )
    return findings


def _cabinet_rating(site: SiteConfig, cabinet: CabinetConfig, where: str) -> list[Finding]:
    """Power against energy (C-rate) and against the point of connection."""
    rated_kw = max(cabinet.charge_limit_kw, cabinet.discharge_limit_kw)
    if rated_kw <= 0.0:
        return []
    key = "charge_limit_kw" if cabinet.charge_limit_kw >= cabinet.discharge_limit_kw else "discharge_limit_kw"
    c_rate = rated_kw / cabinet.capacity_kwh
    if c_rate > C_RATE_W:
        message = (
            f"{rated_kw:g} kW would charge or discharge capacity_kwh {cabinet.capacity_kwh:g} kWh in "
            f"{3600.0 / c_rate:.0f} s"
        )
        return [_unit(f"{where}.{key}", message, ProbableUnit.W)]
    if c_rate < C_RATE_WH:
        message = (
            f"{cabinet.capacity_kwh:g} kWh would take {cabinet.capacity_kwh / rated_kw:.0f} h to charge at "
            f"{rated_kw:g} kW ({key})"
        )
        return [_unit(f"{where}.capacity_kwh", message, ProbableUnit.WH)]
    poc_kw = site.site.grid_import_limit_kw + site.site.grid_export_limit_kw
    if poc_kw > 0.0 and rated_kw > CABINET_POC_RATIO_W * poc_kw:
        message = (
            f"{rated_kw:g} kW is {rated_kw / poc_kw:.0f} x the point of connection "
            f"(grid_import_limit_kw + grid_export_limit_kw = {poc_kw:g} kW)"
        )
        return [_unit(f"{where}.{key}", message, ProbableUnit.W)]
    return []


def _site_prices(site: SiteConfig) -> list[Finding]:
    unserved = site.site.unserved_energy_price_per_kwh
    findings = []
    for index, cabinet in enumerate(site.cabinets):
        if cabinet.cycle_cost_per_kwh >= unserved:
            message = (
                f"{cabinet.cycle_cost_per_kwh:g} is not below [site] unserved_energy_price_per_kwh "
                f"({unserved:g}): the plan would rather shed load than use the battery"
            )
            findings.append(_unit(f"cabinets[{index}].cycle_cost_per_kwh", message, ProbableUnit.PER_MWH))
    return findings


# ----------------------------------------------------------------------------------------- an upload


def check_dayahead(dayahead: DayAhead, site: SiteConfig | None, fmt: UploadFormat) -> list[Finding]:
    """Every finding of an upload; without a site only what needs none (SoC fractions, missing SoC)."""
    if dayahead.steps == 0:
        return []
    findings = _initial_soc(dayahead, site)
    findings += _missing_initial_soc(dayahead, site, fmt)
    if site is not None:
        findings += _load(dayahead, site)
        findings += _pv(dayahead, site)
        findings += _commitment(dayahead, site)
        findings += _prices(dayahead, site)
    return findings


def _initial_soc(dayahead: DayAhead, site: SiteConfig | None) -> list[Finding]:
    findings = []
    for cabinet_id, soc_pct in dayahead.initial_soc_pct.items():
        where = f"initial_soc_pct.{cabinet_id}"
        if 0.0 < soc_pct <= FRACTION_MAX:
            findings.append(_unit(where, f"{soc_pct:g} %", ProbableUnit.FRACTION))
            continue
        if site is None:
            continue
        hard_min, hard_max = site.edge.soc_hard_min_pct, site.edge.soc_hard_max_pct
        if not hard_min <= soc_pct <= hard_max:
            message = (
                f"{soc_pct:g} % is outside the edge's hard window [{hard_min:g}, {hard_max:g}] % "
                "([edge] soc_hard_min_pct, soc_hard_max_pct): that cabinet's edge is tripped there"
            )
            findings.append(Finding(FindingKind.EDGE_HARD_LIMIT, Severity.WARNING, where, message))
    return findings


def _missing_initial_soc(dayahead: DayAhead, site: SiteConfig | None, fmt: UploadFormat) -> list[Finding]:
    then = "the central plans from each cabinet's live SoC, else from 50 %"
    if fmt is UploadFormat.CSV:
        return [_note(f"a CSV upload carries no initial SoC: {then}")]
    if site is None:
        return [] if dayahead.initial_soc_pct else [_note(f"no initial SoC in the upload: {then}")]
    missing = [c for c in site.cabinet_ids if c not in dayahead.initial_soc_pct]
    if not missing:
        return []
    return [_note(f"no initial SoC for {', '.join(missing)}: {then}")]


def _note(message: str) -> Finding:
    return Finding(FindingKind.NO_INITIAL_SOC, Severity.NOTE, "initial_soc_pct", message)


def _load(dayahead: DayAhead, site: SiteConfig) -> list[Finding]:
    """Load beyond what import, discharge and PV can supply: by far (W), or a little (unserved energy)."""
    firm_kw = site.site.grid_import_limit_kw + sum(c.discharge_limit_kw for c in site.cabinets)
    peak_index = _argmax(dayahead.load_kw)
    peak_kw = dayahead.load_kw[peak_index]
    supply_kw = firm_kw + max(dayahead.pv_kw)
    if peak_kw > POWER_RATIO_W * supply_kw and supply_kw > 0.0:
        message = (
            f"peak {peak_kw:g} kW is {peak_kw / supply_kw:.0f} x what the site can supply (grid import "
            f"limit + cabinet discharge limits + peak PV = {supply_kw:g} kW)"
        )
        return [_unit(f"load_kw[{peak_index}]", message, ProbableUnit.W)]
    short = [
        t
        for t, (load, pv) in enumerate(zip(dayahead.load_kw, dayahead.pv_kw, strict=True))
        if load > firm_kw + pv + 1e-6
    ]
    if not short:
        return []
    first = short[0]
    message = (
        f"{dayahead.load_kw[first]:g} kW is more than the site can supply then (grid import limit + "
        f"cabinet discharge limits + PV = {firm_kw + dayahead.pv_kw[first]:g} kW), in {len(short)} of "
        f"{dayahead.steps} intervals: the plan will shed load (unserved energy)"
    )
    return [Finding(FindingKind.LOAD_BEYOND_SUPPLY, Severity.WARNING, f"load_kw[{first}]", message)]


def _pv(dayahead: DayAhead, site: SiteConfig) -> list[Finding]:
    """PV is measured against everything the site connects (it may be curtailed, but not by 90 %)."""
    connected_kw = site.site.grid_import_limit_kw + site.site.grid_export_limit_kw
    connected_kw += sum(c.charge_limit_kw + c.discharge_limit_kw for c in site.cabinets)
    peak_index = _argmax(dayahead.pv_kw)
    peak_kw = dayahead.pv_kw[peak_index]
    if connected_kw <= 0.0 or peak_kw <= POWER_RATIO_W * connected_kw:
        return []
    message = (
        f"peak {peak_kw:g} kW is {peak_kw / connected_kw:.0f} x all the site connects (grid import + "
        f"export limits + cabinet charge and discharge limits = {connected_kw:g} kW)"
    )
    return [_unit(f"pv_kw[{peak_index}]", message, ProbableUnit.W)]


def _commitment(dayahead: DayAhead, site: SiteConfig) -> list[Finding]:
    commitment = dayahead.grid_commitment_kw
    poc_kw = max(site.site.grid_import_limit_kw, site.site.grid_export_limit_kw)
    if not commitment or poc_kw <= 0.0:
        return []
    magnitudes = [abs(v) for v in commitment]
    peak_index = _argmax(magnitudes)
    if magnitudes[peak_index] <= POWER_RATIO_W * poc_kw:
        return []
    message = (
        f"{commitment[peak_index]:g} kW is {magnitudes[peak_index] / poc_kw:.0f} x the larger grid limit "
        f"({poc_kw:g} kW)"
    )
    return [_unit(f"grid_commitment_kw[{peak_index}]", message, ProbableUnit.W)]


def _prices(dayahead: DayAhead, site: SiteConfig) -> list[Finding]:
    """A typical price above the value of lost load sheds load to save energy cost: per MWh, not kWh."""
    unserved = site.site.unserved_energy_price_per_kwh
    findings = []
    reasons = {
        "import_price_per_kwh": "the plan would rather shed load than import",
        "export_price_per_kwh": "the plan would shed load to export",
    }
    for name, reason in reasons.items():
        values: Sequence[float] = getattr(dayahead, name)
        typical = statistics.median(abs(v) for v in values)
        if typical > unserved:
            message = (
                f"median {typical:g} is above [site] unserved_energy_price_per_kwh ({unserved:g}): {reason}"
            )
            findings.append(_unit(name, message, ProbableUnit.PER_MWH))
    return findings


# ------------------------------------------------------------------------------------------- helpers


def _unit(location: str, message: str, unit: ProbableUnit) -> Finding:
    return Finding(FindingKind.WRONG_UNIT, Severity.WARNING, location, message, unit)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def refused_problems(findings: Iterable[Finding], *, strict: bool, strict_by: str) -> list[Problem]:
    """The problems of the findings that refuse the input; a refused warning names ``strict_by``, the
    option or setting that made it refuse (``--strict``, ``[central] strict_plausibility``)."""
    problems = []
    for finding in refusals(findings, strict=strict):
        text = finding.text
        if finding.severity is not Severity.ERROR:
            text += f" (refused: {strict_by})"
        problems.append(Problem(finding.location, text))
    return problems


def accept_site(site: SiteConfig, *, strict: bool, strict_by: str, source: str) -> list[Finding]:
    """The site's findings, when none of them refuses it; a :class:`ConfigError` naming each refusal."""
    findings = check_site(site)
    refused = refused_problems(findings, strict=strict, strict_by=strict_by)
    if refused:
        raise ConfigError(source, refused)
    return findings


def accept_dayahead(
    dayahead: DayAhead, site: SiteConfig, fmt: UploadFormat, *, strict: bool, strict_by: str, source: str
) -> list[Finding]:
    """The upload's findings, when none of them refuses it; an :class:`UploadError` naming each refusal."""
    findings = check_dayahead(dayahead, site, fmt)
    refused = refused_problems(findings, strict=strict, strict_by=strict_by)
    if refused:
        raise UploadError(source, refused)
    return findings
