-- The catalog (simulations and their executions), the results store (typed,
-- searchable values introspected from run databases) and the file manager.
-- Timestamps are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE simulations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    description TEXT,
    author TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    input_schema TEXT NOT NULL,
    output_schema TEXT NOT NULL,
    image TEXT,
    workflow_type TEXT NOT NULL DEFAULT 'container',
    workflow_hash TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    visibility TEXT NOT NULL DEFAULT 'public',
    metadata TEXT,
    search_text TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    created_by TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX simulations_name_created ON simulations (name, created_at_ms DESC);
CREATE INDEX simulations_created ON simulations (created_at_ms DESC, id DESC);

CREATE TABLE simulation_tags (
    simulation_id BIGINT NOT NULL REFERENCES simulations (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (tag, simulation_id)
);
CREATE INDEX simulation_tags_sim ON simulation_tags (simulation_id);

CREATE TABLE execution_registry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL UNIQUE,
    squid_id TEXT NOT NULL,
    simulation_id BIGINT NOT NULL REFERENCES simulations (id) ON DELETE CASCADE,
    user_id TEXT,
    started_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT,
    duration_seconds DOUBLE PRECISION,
    status TEXT NOT NULL,
    executor_type TEXT NOT NULL,
    cache_hit BOOLEAN NOT NULL DEFAULT 0,
    cache_status TEXT,
    node TEXT,
    run_db_path TEXT,
    run_db_size_bytes BIGINT,
    input_hash TEXT,
    output_count BIGINT NOT NULL DEFAULT 0,
    artifact_count BIGINT NOT NULL DEFAULT 0,
    error_count BIGINT NOT NULL DEFAULT 0,
    warning_count BIGINT NOT NULL DEFAULT 0,
    environment TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX execution_registry_sim ON execution_registry (simulation_id, started_at_ms);

CREATE TABLE simulation_schemas (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tool_name TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    schema_data TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (tool_name, tool_version)
);

CREATE TABLE parameter_definitions (
    schema_id BIGINT NOT NULL REFERENCES simulation_schemas (id) ON DELETE CASCADE,
    classification TEXT NOT NULL,
    param_name TEXT NOT NULL,
    param_type TEXT NOT NULL,
    description TEXT,
    units TEXT,
    min_value DOUBLE PRECISION,
    max_value DOUBLE PRECISION,
    default_value TEXT,
    PRIMARY KEY (schema_id, classification, param_name)
);

CREATE TABLE execution_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL UNIQUE,
    simulation_name TEXT NOT NULL,
    simulation_version TEXT NOT NULL,
    schema_id BIGINT REFERENCES simulation_schemas (id) ON DELETE SET NULL,
    squid_id TEXT UNIQUE,
    input_params TEXT NOT NULL,
    output_params TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_seconds DOUBLE PRECISION,
    error_message TEXT,
    created_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT,
    run_db_path TEXT,
    metadata TEXT,
    provenance TEXT
);
CREATE INDEX execution_results_sim ON execution_results (simulation_name, simulation_version, created_at_ms DESC);
CREATE INDEX execution_results_created ON execution_results (created_at_ms DESC, id DESC);

-- One row per input/output value of a result, typed, so filters and sorts
-- use indexes instead of parsing JSON.
CREATE TABLE result_params (
    result_id BIGINT NOT NULL REFERENCES execution_results (id) ON DELETE CASCADE,
    simulation_name TEXT NOT NULL,
    class TEXT NOT NULL,
    name TEXT NOT NULL,
    value_type TEXT NOT NULL,
    num_value DOUBLE PRECISION,
    str_value TEXT,
    bool_value BOOLEAN,
    PRIMARY KEY (result_id, class, name)
);
CREATE INDEX result_params_num ON result_params (simulation_name, class, name, num_value);
CREATE INDEX result_params_str ON result_params (simulation_name, class, name, str_value);
CREATE INDEX result_params_any_num ON result_params (class, name, num_value);

CREATE TABLE result_files (
    result_id BIGINT NOT NULL REFERENCES execution_results (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    category TEXT,
    content_type TEXT,
    sha256 TEXT,
    PRIMARY KEY (result_id, name)
);

CREATE TABLE result_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE file_objects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    is_folder BOOLEAN NOT NULL,
    parent_id TEXT,
    uri TEXT,
    size_bytes BIGINT,
    creator TEXT,
    metadata TEXT,
    created_at_ms BIGINT NOT NULL,
    modified_at_ms BIGINT NOT NULL
);
CREATE INDEX file_objects_parent ON file_objects (parent_id, name);
