"""Random small sites for the certified large-site methods: every feature of the LP, small enough to solve
exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from central.dispatch.inputs import DispatchInputs, build_inputs
from tests.test_dispatch_hand import make_day, make_site


@dataclass(frozen=True)
class Features:
    """Which site features a random case switches on."""

    demand_charge: bool
    commitment: bool
    tight_import: bool  # import limit below the load: the PoC limit binds, maybe load goes unserved
    pv_surplus: bool  # PV above load plus export limit: curtailment
    negative_prices: bool
    outside_window: bool  # a cabinet starts outside its SoC window
    terminal_targets: bool
    odd_cabinets: bool  # efficiency 1, zero charge or discharge limit


features_strategy = st.builds(
    Features,
    demand_charge=st.booleans(),
    commitment=st.booleans(),
    tight_import=st.booleans(),
    pv_surplus=st.booleans(),
    negative_prices=st.booleans(),
    outside_window=st.booleans(),
    terminal_targets=st.booleans(),
    odd_cabinets=st.booleans(),
)


def _cabinet(rng: np.random.Generator, odd: bool) -> dict[str, Any]:
    capacity = float(rng.uniform(20.0, 400.0))
    cabinet: dict[str, Any] = {
        "capacity_kwh": capacity,
        "charge_limit_kw": capacity * float(rng.uniform(0.2, 1.2)),
        "discharge_limit_kw": capacity * float(rng.uniform(0.2, 1.2)),
        "charge_efficiency": float(rng.uniform(0.85, 0.99)),
        "discharge_efficiency": float(rng.uniform(0.85, 0.99)),
        "soc_min_pct": float(rng.uniform(0.0, 20.0)),
        "soc_max_pct": float(rng.uniform(80.0, 100.0)),
        "cycle_cost_per_kwh": float(rng.uniform(0.0, 0.03)),
    }
    if odd:
        choice = int(rng.integers(0, 3))
        if choice == 0:
            cabinet["charge_efficiency"] = cabinet["discharge_efficiency"] = 1.0
        else:
            cabinet["charge_limit_kw" if choice == 1 else "discharge_limit_kw"] = 0.0
    return cabinet


def random_case(seed: int, features: Features) -> DispatchInputs:
    """A random site and day of 1-4 cabinets over 3-24 intervals with the given features."""
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(3, 25))
    count = int(rng.integers(1, 5))
    cabinets = [_cabinet(rng, features.odd_cabinets and i == 0) for i in range(count)]
    if features.terminal_targets:
        cabinets[-1]["soc_final_min_pct"] = float(
            rng.uniform(cabinets[-1]["soc_min_pct"], cabinets[-1]["soc_max_pct"])
        )
    power_kw = sum(c["discharge_limit_kw"] + c["charge_limit_kw"] for c in cabinets) / 2.0
    load = rng.uniform(0.1, 1.5, steps) * power_kw
    import_limit = float(load.max() * (rng.uniform(0.5, 0.95) if features.tight_import else 1.5))
    export_limit = float(power_kw * rng.uniform(0.0, 0.3 if features.pv_surplus else 1.0))
    pv = rng.uniform(0.0, 1.0, steps) * power_kw * (3.0 if features.pv_surplus else 0.5)
    price = rng.uniform(-0.1 if features.negative_prices else 0.01, 0.4, steps)
    site = make_site(
        cabinets,
        grid_import_limit_kw=import_limit,
        grid_export_limit_kw=export_limit,
        demand_charge_per_kw=float(rng.uniform(0.1, 3.0)) if features.demand_charge else 0.0,
        imbalance_price_per_kwh=float(rng.uniform(0.05, 1.0)),
        unserved_energy_price_per_kwh=float(rng.uniform(1.0, 10.0)),
    )
    initial = {f"cab-{i + 1}": float(rng.uniform(10.0, 90.0)) for i in range(count)}
    if features.outside_window:
        first = cabinets[0]
        above = rng.random() < 0.5
        low, high = first["soc_min_pct"], first["soc_max_pct"]
        initial["cab-1"] = float(rng.uniform(high, 100.0) if above else rng.uniform(0.0, low))
    day = make_day(
        load.tolist(),
        price.tolist(),
        export_price_per_kwh=(price - rng.uniform(0.0, 0.1, steps)).tolist(),
        pv_kw=pv.tolist(),
        grid_commitment_kw=(load * rng.uniform(0.3, 1.2, steps)).tolist() if features.commitment else None,
        initial_soc_pct=initial,
        interval_minutes=int(rng.choice([5, 15, 30, 60])),
    )
    return build_inputs(site, day)
