-- sim2l's run database, table for table (12 tables, the error_summary view).
-- Every statement is IF NOT EXISTS so a database sim2l created migrates
-- forward untouched; run_summary is (re)defined by migration 2.
CREATE TABLE IF NOT EXISTS run_metadata (
    execution_id TEXT PRIMARY KEY,
    squid_id TEXT,
    simulation_name TEXT NOT NULL,
    simulation_version TEXT NOT NULL,
    simulation_id INTEGER,
    started_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP,
    duration_seconds REAL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cached')),
    executor_type TEXT NOT NULL,
    executor_config TEXT,
    cache_key TEXT,
    cache_hit BOOLEAN DEFAULT 0,
    user_id TEXT,
    session_id TEXT,
    environment TEXT,
    error_message TEXT,
    error_traceback TEXT,
    notes TEXT
);
CREATE TABLE IF NOT EXISTS inputs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    value TEXT,
    value_blob BLOB,
    units TEXT,
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS outputs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    value TEXT,
    value_blob BLOB,
    units TEXT,
    file_reference TEXT,
    metadata TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    path TEXT,
    content_hash TEXT,
    content_type TEXT,
    size_bytes INTEGER,
    category TEXT CHECK (category IN ('input', 'output', 'intermediate', 'notebook', 'plot', 'data')),
    data BLOB,
    external_path TEXT,
    description TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    level TEXT NOT NULL CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    logger TEXT,
    message TEXT NOT NULL,
    context TEXT,
    exception_type TEXT,
    exception_message TEXT,
    stack_trace TEXT
);
CREATE TABLE IF NOT EXISTS cell_executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_index INTEGER NOT NULL,
    cell_type TEXT,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    duration_seconds REAL,
    status TEXT CHECK (status IN ('pending', 'running', 'completed', 'failed', 'skipped')),
    source_code TEXT,
    output_text TEXT,
    output_data TEXT,
    error_message TEXT,
    error_traceback TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    metric_name TEXT NOT NULL,
    metric_value REAL NOT NULL,
    metric_unit TEXT,
    category TEXT CHECK (category IN ('performance', 'resource', 'custom')),
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS resource_usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    cpu_percent REAL,
    memory_mb REAL,
    memory_percent REAL,
    disk_read_mb REAL,
    disk_write_mb REAL,
    network_sent_mb REAL,
    network_recv_mb REAL
);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type TEXT NOT NULL CHECK (entity_type IN ('input', 'output', 'artifact', 'intermediate')),
    entity_name TEXT NOT NULL,
    source_type TEXT CHECK (source_type IN ('user_provided', 'computed', 'cached', 'derived_from')),
    source_reference TEXT,
    transformation TEXT,
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tag TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS run_tags (
    tag_id INTEGER NOT NULL,
    FOREIGN KEY (tag_id) REFERENCES tags(id),
    PRIMARY KEY (tag_id)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    checkpoint_name TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    state_data TEXT,
    state_blob BLOB,
    description TEXT,
    is_final BOOLEAN DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_logs_timestamp ON logs(timestamp);
CREATE INDEX IF NOT EXISTS idx_logs_level ON logs(level);
CREATE INDEX IF NOT EXISTS idx_artifacts_category ON artifacts(category);
CREATE INDEX IF NOT EXISTS idx_artifacts_hash ON artifacts(content_hash);
CREATE INDEX IF NOT EXISTS idx_cell_executions_status ON cell_executions(status);
CREATE INDEX IF NOT EXISTS idx_metrics_name ON metrics(metric_name);
CREATE INDEX IF NOT EXISTS idx_provenance_entity ON provenance(entity_type, entity_name);
CREATE VIEW IF NOT EXISTS error_summary AS
    SELECT timestamp, logger, message, exception_type, exception_message
    FROM logs WHERE level IN ('ERROR', 'CRITICAL')
    ORDER BY timestamp DESC, id DESC;
