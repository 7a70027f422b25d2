-- What simcache adds: the declared schema of each value (so introspection can
-- rebuild parameter definitions), metric steps, run-level provenance, parent
-- runs, and a run_summary whose counts are not multiplied by a cross join.
-- Nothing sim2l reads changes shape.
ALTER TABLE inputs ADD COLUMN description TEXT;
ALTER TABLE inputs ADD COLUMN min_value REAL;
ALTER TABLE inputs ADD COLUMN max_value REAL;
ALTER TABLE inputs ADD COLUMN default_value TEXT;
ALTER TABLE inputs ADD COLUMN choices TEXT;
ALTER TABLE outputs ADD COLUMN description TEXT;
ALTER TABLE outputs ADD COLUMN min_value REAL;
ALTER TABLE outputs ADD COLUMN max_value REAL;
ALTER TABLE outputs ADD COLUMN default_value TEXT;
ALTER TABLE outputs ADD COLUMN choices TEXT;
ALTER TABLE metrics ADD COLUMN step INTEGER;
-- A five-valued level makes a poor index and costs every insert a page
-- write; filtering by level scans the (small) log instead.
DROP INDEX IF EXISTS idx_logs_level;
CREATE INDEX IF NOT EXISTS idx_artifacts_name ON artifacts(name);

CREATE TABLE IF NOT EXISTS run_provenance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    host TEXT,
    image TEXT,
    image_digest TEXT,
    command TEXT,
    environment TEXT,
    input_hash TEXT,
    recorded_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS run_parents (
    parent_execution_id TEXT PRIMARY KEY
);

DROP VIEW IF EXISTS run_summary;
CREATE VIEW run_summary AS
SELECT
    r.execution_id, r.squid_id, r.simulation_name, r.simulation_version, r.simulation_id,
    r.started_at, r.completed_at, r.duration_seconds, r.status, r.executor_type,
    r.cache_key, r.cache_hit, r.user_id, r.session_id, r.error_message, r.error_traceback,
    (SELECT COUNT(DISTINCT name) FROM inputs) AS input_count,
    (SELECT COUNT(DISTINCT name) FROM outputs) AS output_count,
    (SELECT COUNT(*) FROM artifacts) AS artifact_count,
    (SELECT COUNT(*) FROM logs) AS log_count,
    (SELECT COUNT(*) FROM logs WHERE level IN ('ERROR', 'CRITICAL')) AS error_count,
    (SELECT COUNT(*) FROM logs WHERE level = 'WARNING') AS warning_count,
    (SELECT COUNT(*) FROM metrics) AS metric_count,
    (SELECT COALESCE(SUM(size_bytes), 0) FROM artifacts) AS artifact_bytes
FROM run_metadata r;
