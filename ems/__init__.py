"""The ``ems`` command line, the composition root that wires the roles together (:mod:`ems.cli`)."""
