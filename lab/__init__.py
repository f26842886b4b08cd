"""The lab: everything that exercises hybrid-ems rather than runs a plant.

The demo (:mod:`lab.demo`), the benchmarks (:mod:`lab.bench`), a whole site in one process
(:mod:`lab.localsite`), loopback site files (:mod:`lab.loopback`) and the in-memory edge double
(:mod:`lab.memory_edge`). The lab may import every role; nothing in ``central``, ``edge``, ``shared`` or
``simulators`` imports the lab (enforced by the import contracts in ``pyproject.toml``).
"""
