-- Users and sessions shared by every simcache process using this database.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    email TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at_ms INTEGER NOT NULL
);

-- Sessions are stored by the SHA-256 of their token, never the token itself.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER,
    username TEXT NOT NULL,
    role TEXT,
    privileges TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    metadata TEXT
);
CREATE INDEX idx_sessions_expires ON sessions (expires_at_ms);

CREATE TABLE cache_entries (
    cache_key TEXT PRIMARY KEY,
    simulation_id INTEGER NOT NULL,
    simulation_name TEXT NOT NULL,
    simulation_version TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    squid_id TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    run_db_path TEXT,
    user_id INTEGER,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    last_accessed_ms INTEGER NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    hit_count INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'valid',
    metadata TEXT,
    invalidation_reason TEXT
);
CREATE INDEX idx_cache_entries_simulation ON cache_entries (simulation_id);
CREATE INDEX idx_cache_entries_name ON cache_entries (simulation_name, simulation_version);
CREATE INDEX idx_cache_entries_expires ON cache_entries (expires_at_ms);
CREATE INDEX idx_cache_entries_created ON cache_entries (created_at_ms);
CREATE INDEX idx_cache_entries_status ON cache_entries (status);

CREATE TABLE cache_invalidations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    simulation_id INTEGER,
    simulation_name TEXT,
    simulation_version TEXT,
    invalidation_type TEXT NOT NULL,
    invalidation_pattern TEXT,
    invalidated_count INTEGER NOT NULL,
    requested_by TEXT,
    requested_at_ms INTEGER NOT NULL,
    reason TEXT
);

-- Counters that belong to no entry (a miss has no row to count on).
CREATE TABLE cache_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO cache_counters (name, value) VALUES ('misses', 0), ('evictions', 0);
