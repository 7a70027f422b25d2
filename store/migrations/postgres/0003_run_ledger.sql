-- The operator's ledger of runs in flight: one lease per cache key (so
-- identical runs start one pod) and one row per execution it expects a run
-- database from (the ingest token's hash, and what the ingest found).
CREATE TABLE IF NOT EXISTS cache_leases (
    cache_key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    holder_uid TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    acquired_at_ms BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS run_ingests (
    execution_id TEXT PRIMARY KEY,
    run_uid TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    ingested_at_ms BIGINT,
    run_db_path TEXT,
    size_bytes BIGINT,
    run_status TEXT,
    result_id BIGINT,
    outputs TEXT,
    duration_seconds DOUBLE PRECISION,
    error_message TEXT,
    last_logs TEXT
);
