"""The central database's schema (version 2) and the migration from version 1, as SQL text."""

from __future__ import annotations

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    source_format TEXT NOT NULL CHECK (source_format IN ('json', 'csv')),
    start TEXT NOT NULL,
    interval_minutes INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    raw BLOB NOT NULL,
    dayahead_json TEXT NOT NULL,
    planning TEXT NOT NULL DEFAULT 'pending',
    superseded_by TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_planning ON uploads(planning, seq);
CREATE TABLE IF NOT EXISTS plans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id TEXT NOT NULL UNIQUE,
    upload_id TEXT NOT NULL REFERENCES uploads(upload_id),
    trigger TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    status TEXT NOT NULL,
    start TEXT NOT NULL,
    steps INTEGER NOT NULL,
    objective_total REAL NOT NULL,
    plan_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plans_by_upload ON plans(upload_id);
CREATE TABLE IF NOT EXISTS push_outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id TEXT NOT NULL REFERENCES plans(plan_id),
    cabinet_id TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    at TEXT NOT NULL,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS push_by_cabinet ON push_outcomes(cabinet_id, seq);
CREATE TABLE IF NOT EXISTS telemetry_samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    cabinet_id TEXT NOT NULL,
    soc_pct REAL NOT NULL,
    active_power_kw REAL NOT NULL,
    setpoint_kw REAL NOT NULL,
    mode TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    interlock_active INTEGER NOT NULL,
    interlock_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_by_cabinet ON telemetry_samples(cabinet_id, at);
CREATE INDEX IF NOT EXISTS telemetry_by_time ON telemetry_samples(at);
"""


# Schema 1 had no planning state: an upload with a usable plan was planned, the newest without one is
# still to be planned, the others were superseded.
MIGRATE_1_TO_2 = """
ALTER TABLE uploads ADD COLUMN planning TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE uploads ADD COLUMN superseded_by TEXT;
UPDATE uploads SET planning = 'planned'
    WHERE upload_id IN (SELECT upload_id FROM plans WHERE status != 'failed');
UPDATE uploads SET planning = 'superseded',
    superseded_by = (SELECT upload_id FROM uploads ORDER BY seq DESC LIMIT 1)
    WHERE planning = 'pending' AND seq < (SELECT MAX(seq) FROM uploads)
"""
