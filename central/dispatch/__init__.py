"""Economic dispatch of a site's cabinets: the LP of docs/interfaces.md: economic dispatch, solved into a
plan (section 5).

``optimize(site, dayahead, options=..., initial_soc_pct=..., plan_id=..., created_at=...) -> Plan`` is the
entry point; ``DispatchOptions`` chooses the backend (direct ``highspy`` by default, ``pyomo`` for the
reference model) and the solver settings. See docs/dispatch.md.
"""

from central.dispatch.optimizer import optimize, solve_dispatch
from central.dispatch.options import DispatchOptions
from central.dispatch.result import DispatchResult
from central.dispatch.warm_start import WarmStart

__all__ = ["DispatchOptions", "DispatchResult", "WarmStart", "optimize", "solve_dispatch"]
