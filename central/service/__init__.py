"""The central service: day-ahead upload over HTTP, scheduled re-optimization, push to the edges,
persistence in SQLite (``ems central``). See docs/central.md.

Modules: ``store`` (SQLite), ``state`` (in-memory view), ``jobs`` (optimization runs and the scheduler),
``api`` (FastAPI), ``metrics`` (Prometheus text), ``app`` (:class:`~central.service.app.CentralService`).
Import them directly; this package does not import the web stack or the solver by itself.
"""
