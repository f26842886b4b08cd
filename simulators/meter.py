"""The site meter at the point of connection: a SunSpec device with models 1 and 203, unit id 1.

It measures ``load - pv - sum(cabinet AC power)`` plus Gaussian noise (``[sim] meter_noise_kw``).
Sign of 203 ``W``: **positive when the site imports from the grid** (consumer reference, as most SunSpec
meters at a point of connection), which is the project's own grid sign; ``TotWhImp`` counts imported and
``TotWhExp`` exported energy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared import __version__
from shared.clock import Clock
from shared.site import SiteConfig
from shared.sunspec.layout import METER_MODELS
from simulators.cabinet_device import GRID_HZ, GRID_LINE_V, GRID_PHASE_V, UNIT_ID, CabinetSimulator
from simulators.faults import CommFaults, FaultName
from simulators.profile import LoadProfile
from simulators.registers import RegisterImage, WriteRefused, fit_scale_factor


@dataclass(frozen=True)
class MeterState:
    """The site meter now. Powers [kW]; ``power_kw`` is positive when the site imports."""

    time_s: float
    power_kw: float  # 203 W, + import
    load_kw: float
    pv_kw: float
    cabinets_kw: float  # sum of cabinet AC power, + discharge
    noise_kw: float
    imported_kwh: float  # 203 TotWhImp since start
    exported_kwh: float  # 203 TotWhExp since start


class MeterSimulator:
    """The site meter; reads the cabinets it is given (stepping them to the same time first)."""

    def __init__(
        self,
        site: SiteConfig,
        clock: Clock,
        profile: LoadProfile,
        cabinets: Sequence[CabinetSimulator],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.id = "meter"
        self.unit_id = UNIT_ID
        self._clock = clock
        self._profile = profile
        self._cabinets = tuple(cabinets)
        self._noise_sigma_kw = site.sim.meter_noise_kw
        self._rng = rng if rng is not None else random.Random(site.sim.seed)  # nosec B311  # seeded noise
        self.faults = CommFaults(on_change=self._fault_changed)
        self.image = RegisterImage(METER_MODELS, self._scale_factors(site))
        self._time_s = clock.time_s()
        self._noise_kw = self._sample_noise()
        self._imported_kwh = 0.0
        self._exported_kwh = 0.0
        self._power_kw = self._measure(self._time_s)
        self._image_stale = True
        self._write_static_points()
        self._refresh_image()

    # ---------------------------------------------------------------------------------- public

    @property
    def state(self) -> MeterState:
        """The meter at the clock's present time."""
        self.step(self._clock.time_s())
        return self._snapshot()

    def step(self, now_s: float) -> None:
        """Bring the cabinets and the meter to simulated time ``now_s``."""
        for cabinet in self._cabinets:
            cabinet.step(now_s)
        if not now_s > self._time_s:
            return
        dt_h = (now_s - self._time_s) / 3600.0
        self._noise_kw = self._sample_noise()
        power_kw = self._measure(now_s)
        mean_kw = (self._power_kw + power_kw) / 2.0
        if mean_kw >= 0.0:
            self._imported_kwh += mean_kw * dt_h
        else:
            self._exported_kwh += -mean_kw * dt_h
        self._power_kw = power_kw
        self._time_s = now_s
        self._image_stale = True

    def status(self) -> dict[str, Any]:
        return {"kind": "meter", "state": self.state.__dict__, "faults": self.faults.active}

    # ---------------------------------------------------------------------------------- Modbus side

    def read_registers(self, address: int, count: int) -> list[int]:
        self.step(self._clock.time_s())
        if self._image_stale and not self.faults.frozen:
            self._refresh_image()
        return self.image.read(address, count)

    def write_registers(self, address: int, values: list[int]) -> int | None:
        try:
            self.image.check_write(address, values)  # only model 1 DA is writable; stored, not acted on
        except WriteRefused as exc:
            return exc.code
        self.image.apply_write(address, values)
        return None

    # ---------------------------------------------------------------------------------- internals

    def _cabinets_kw(self) -> float:
        return sum(cabinet.physics.power_kw for cabinet in self._cabinets)

    def _measure(self, time_s: float) -> float:
        load = self._profile.load_kw(time_s)
        pv = self._profile.pv_kw(time_s)
        return load - pv - self._cabinets_kw() + self._noise_kw

    def _sample_noise(self) -> float:
        return self._rng.gauss(0.0, self._noise_sigma_kw) if self._noise_sigma_kw > 0 else 0.0

    def _fault_changed(self, fault: FaultName, active: bool) -> None:
        if fault is FaultName.FREEZE and active:
            self.step(self._clock.time_s())
            self._refresh_image()
        self._image_stale = True

    def _snapshot(self) -> MeterState:
        t = self._time_s
        return MeterState(
            time_s=t,
            power_kw=self._power_kw,
            load_kw=self._profile.load_kw(t),
            pv_kw=self._profile.pv_kw(t),
            cabinets_kw=self._cabinets_kw(),
            noise_kw=self._noise_kw,
            imported_kwh=self._imported_kwh,
            exported_kwh=self._exported_kwh,
        )

    def _scale_factors(self, site: SiteConfig) -> dict[tuple[int, str], int]:
        charge_kw = sum(c.charge_limit_kw for c in site.cabinets)
        discharge_kw = sum(c.discharge_limit_kw for c in site.cabinets)
        bound_kw = max(
            self._profile.max_load_kw + charge_kw,
            self._profile.max_pv_kw + discharge_kw,
            site.site.grid_import_limit_kw,
            site.site.grid_export_limit_kw,
        )
        bound_w = 1000.0 * (1.25 * bound_kw + 4.0 * site.sim.meter_noise_kw)
        w_sf = fit_scale_factor(bound_w, "int16", 0)
        return {
            (203, "A_SF"): fit_scale_factor(bound_w / (math.sqrt(3.0) * GRID_LINE_V), "int16", -1),
            (203, "V_SF"): -1,
            (203, "Hz_SF"): -2,
            (203, "W_SF"): w_sf,
            (203, "VA_SF"): w_sf,
            (203, "VAR_SF"): w_sf,
            (203, "PF_SF"): -1,
            (203, "TotWh_SF"): 0,
            (203, "TotVAh_SF"): 0,
            (203, "TotVArh_SF"): 0,
        }

    def _write_static_points(self) -> None:
        image = self.image
        image.set_raw(1, "Mn", "hybrid-ems")
        image.set_raw(1, "Md", "sim-meter")
        image.set_raw(1, "Vr", __version__)
        image.set_raw(1, "SN", "SIM-meter")
        image.set_raw(1, "DA", self.unit_id)
        for name in ("PhV", "PhVphA", "PhVphB", "PhVphC"):
            image.set(203, name, GRID_PHASE_V)
        for name in ("PPV", "PhVphAB", "PhVphBC", "PhVphCA"):
            image.set(203, name, GRID_LINE_V)
        image.set(203, "Hz", GRID_HZ)
        for name in ("VAR", "VARphA", "VARphB", "VARphC"):
            image.set(203, name, 0.0)
        for name, point in image.layout.model(203).points.items():
            if point.type == "acc32":
                image.set_raw(203, name, 0)
        image.set_raw(203, "Evt", 0)

    def _refresh_image(self) -> None:
        image = self.image
        power_w = self._power_kw * 1000.0
        current_a = abs(power_w) / (math.sqrt(3.0) * GRID_LINE_V)
        image.set(203, "W", power_w)
        image.set(203, "VA", abs(power_w))
        image.set(203, "PF", 100.0)
        image.set(203, "A", current_a)
        for phase in ("A", "B", "C"):
            image.set(203, f"Wph{phase}", power_w / 3.0)
            image.set(203, f"VAph{phase}", abs(power_w) / 3.0)
            image.set(203, f"PFph{phase}", 100.0)
            image.set(203, f"Aph{phase}", current_a)
        image.set(203, "TotWhImp", self._imported_kwh * 1000.0)
        image.set(203, "TotWhExp", self._exported_kwh * 1000.0)
        self._image_stale = False
