"""One cycle's setpoint decision: the target (schedule or fallback) and the setpoint chain, from the site
file and a valid snapshot (pure; docs/edge.md, "The setpoint chain")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.fallback import fallback_setpoint_kw
from edge.setpoint_chain import ChainInputs, ChainResult, run_chain
from edge.snapshot import Snapshot
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig


def cabinet_share(site: SiteConfig, cabinet_id: str) -> float:
    """This cabinet's share of the site's PoC headroom and fallback duty: its power range / the site's."""
    ranges = {c.id: c.charge_limit_kw + c.discharge_limit_kw for c in site.cabinets}
    total = sum(ranges.values())
    if total <= 0.0:
        return 1.0 / len(ranges)
    return ranges[cabinet_id] / total


@dataclass(frozen=True)
class Plan:
    """The setpoint a cycle decided on, and the schedule it came from (None: the fallback mode)."""

    result: ChainResult
    schedule: CabinetSchedule | None
    clock_s: float  # EMS clock time of the decision


class SetpointPlanner:
    """Chain step 1 and the chain for one cabinet."""

    def __init__(self, site: SiteConfig, cabinet_id: str) -> None:
        self.site = site.site
        self.cabinet = site.cabinet(cabinet_id)
        self.ramp_kw_per_s = site.edge.ramp_kw_per_s
        self.share = cabinet_share(site, cabinet_id)
        threshold = site.site.peak_shave_threshold_kw
        self.peak_shave_threshold_kw = threshold if threshold is not None else site.site.grid_import_limit_kw

    def plan(
        self,
        snapshot: Snapshot,
        schedule: CabinetSchedule | None,
        now: datetime,
        ramp_origin: tuple[float, float],
    ) -> Plan:
        """``schedule``: the one covering ``now`` (or None); ``ramp_origin``: (last setpoint, clock s since
        it was written)."""
        reading, grid_kw = snapshot.cabinet, snapshot.meter.grid_power_kw
        scheduled_kw = schedule.setpoint_at(now) if schedule is not None else None
        if scheduled_kw is None:
            target_kw = fallback_setpoint_kw(
                self.site.fallback_mode,
                reading.active_power_kw,
                grid_kw,
                self.share,
                self.peak_shave_threshold_kw,
            )
        else:
            target_kw = scheduled_kw
        previous_kw, elapsed_s = ramp_origin
        config = self.cabinet
        result = run_chain(
            ChainInputs(
                target_kw=target_kw,
                previous_kw=previous_kw,
                elapsed_s=elapsed_s,
                soc_pct=reading.soc_pct,
                active_power_kw=reading.active_power_kw,
                grid_power_kw=grid_kw,
                charge_rate_max_kw=reading.charge_rate_max_kw,
                discharge_rate_max_kw=reading.discharge_rate_max_kw,
                soc_min_pct=config.soc_min_pct,
                soc_max_pct=config.soc_max_pct,
                ramp_kw_per_s=self.ramp_kw_per_s,
                import_limit_kw=self.site.grid_import_limit_kw,
                export_limit_kw=self.site.grid_export_limit_kw,
                share=self.share,
                charge_limit_kw=config.charge_limit_kw,
                discharge_limit_kw=config.discharge_limit_kw,
            )
        )
        return Plan(result, schedule if scheduled_kw is not None else None, now.timestamp())
