-- SFM devices: the registry the operator keeps (one row per connection key,
-- so two SFMDevices cannot claim one unit), the bodies the proxies share,
-- the index-to-identity map of events, and the fetch leases and device
-- session slots that keep N readers to one upstream call and a unit to its
-- session limit.
CREATE TABLE IF NOT EXISTS sfm_devices (
    conn_key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    settings TEXT NOT NULL,
    registered_at_ms BIGINT NOT NULL,
    serial TEXT,
    firmware TEXT,
    event_count BIGINT,
    hits BIGINT NOT NULL DEFAULT 0,
    misses BIGINT NOT NULL DEFAULT 0,
    upstream_calls BIGINT NOT NULL DEFAULT 0,
    coalesced BIGINT NOT NULL DEFAULT 0,
    stale_served BIGINT NOT NULL DEFAULT 0,
    last_contact_ms BIGINT,
    last_success_ms BIGINT,
    last_error TEXT,
    last_error_reason TEXT,
    failures BIGINT NOT NULL DEFAULT 0,
    unreachable_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sfm_devices_uid ON sfm_devices (uid);

CREATE TABLE IF NOT EXISTS sfm_bodies (
    conn_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body BYTEA NOT NULL,
    etag TEXT NOT NULL,
    fetched_at_ms BIGINT NOT NULL,
    fetch_started_ms BIGINT NOT NULL,
    stale BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (conn_key, kind, id)
);
-- Waveforms are megabytes of JSON read far more often than written:
-- compressing them (TOAST's default) made every read decompress them.
ALTER TABLE sfm_bodies ALTER COLUMN body SET STORAGE EXTERNAL;

CREATE TABLE IF NOT EXISTS sfm_event_index (
    conn_key TEXT NOT NULL,
    idx BIGINT NOT NULL,
    identity TEXT NOT NULL,
    PRIMARY KEY (conn_key, idx)
);

CREATE TABLE IF NOT EXISTS sfm_fetch_leases (
    conn_key TEXT NOT NULL,
    fetch_key TEXT NOT NULL,
    holder TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    failed_status BIGINT,
    failed_body BYTEA,
    PRIMARY KEY (conn_key, fetch_key)
);

CREATE TABLE IF NOT EXISTS sfm_session_slots (
    conn_key TEXT NOT NULL,
    slot BIGINT NOT NULL,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (conn_key, slot)
);
