//! What the SFM proxies share through the database: the device registry,
//! the cached bodies, the event index-to-identity map, fetch leases and
//! device session slots.
//!
//! Every change other processes must hear about is announced on
//! [`CHANNEL`] inside the writing transaction (PostgreSQL; SQLite serves a
//! single process, which learns of its own writes directly).

mod leases;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sql::{DbRow, Dialect, Param, Sql, SqlValue, Stmt};

pub const CHANNEL: &str = "simcache_sfm_events";

/// What travels on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SfmEvent {
    /// A body was written, marked stale or dropped.
    Body {
        conn_key: String,
        kind: String,
        id: String,
    },
    /// A fetch lease was released (its body, or its failure, is there).
    Lease { conn_key: String, fetch_key: String },
    /// A session slot was freed.
    Slot { conn_key: String },
    /// The device's registration, reachability or whole cache changed.
    Device { conn_key: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SfmEnvelope {
    pub origin: String,
    #[serde(flatten)]
    pub event: SfmEvent,
}

/// A registered device as the proxies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub conn_key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The SFMDevice spec as JSON (the proxy reads its settings from it).
    pub settings: String,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub event_count: Option<i64>,
    pub counters: Counters,
    pub last_contact_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_reason: Option<String>,
    pub failures: i64,
    pub unreachable_until_ms: i64,
}

/// Per-device counters, summed over every proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub hits: i64,
    pub misses: i64,
    pub upstream_calls: i64,
    pub coalesced: i64,
    pub stale_served: i64,
}

impl Counters {
    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// Another SFMDevice already holds the address.
    Conflict {
        namespace: String,
        name: String,
    },
}

/// A stored body and when it was fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBody {
    pub body: Bytes,
    pub etag: String,
    pub fetched_at_ms: i64,
    /// When the fetch that produced it started (a forced read needs one that
    /// started after it arrived).
    pub fetch_started_ms: i64,
    /// Marked stale by a config write: served only when the unit is unreachable.
    pub stale: bool,
}

/// A body to write, with its index links.
#[derive(Debug, Clone)]
pub struct NewBody {
    pub kind: String,
    pub id: String,
    pub body: Bytes,
    pub etag: String,
    pub fetch_started_ms: i64,
}

/// Cached amounts of one device, or of all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub info: i64,
    pub events: i64,
    pub event_lists: i64,
    pub waveforms: i64,
    pub monitor_status: i64,
    pub bytes: i64,
}

/// A fetch lease as found.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseState {
    Free,
    Held {
        expires_at_ms: i64,
    },
    /// The last holder's upstream call failed; its answer, for those who waited.
    Failed {
        started_ms: i64,
        status: u16,
        body: Bytes,
        expires_at_ms: i64,
    },
}

#[derive(Clone)]
pub struct SfmStore {
    sql: Sql,
    origin: String,
}

const DEVICE_COLUMNS: &str =
    "conn_key, namespace, name, uid, settings, serial, firmware, event_count,
    hits, misses, upstream_calls, coalesced, stale_served, last_contact_ms, last_success_ms,
    last_error, last_error_reason, failures, unreachable_until_ms";

fn device_row(r: &DbRow) -> DeviceRow {
    DeviceRow {
        conn_key: r.text(0).unwrap_or_default(),
        namespace: r.text(1).unwrap_or_default(),
        name: r.text(2).unwrap_or_default(),
        uid: r.text(3).unwrap_or_default(),
        settings: r.text(4).unwrap_or_default(),
        serial: r.text(5),
        firmware: r.text(6),
        event_count: r.i64(7),
        counters: Counters {
            hits: r.i64(8).unwrap_or(0),
            misses: r.i64(9).unwrap_or(0),
            upstream_calls: r.i64(10).unwrap_or(0),
            coalesced: r.i64(11).unwrap_or(0),
            stale_served: r.i64(12).unwrap_or(0),
        },
        last_contact_ms: r.i64(13),
        last_success_ms: r.i64(14),
        last_error: r.text(15),
        last_error_reason: r.text(16),
        failures: r.i64(17).unwrap_or(0),
        unreachable_until_ms: r.i64(18).unwrap_or(0),
    }
}

impl SfmStore {
    /// `origin` names this process in the events it publishes.
    pub fn new(sql: Sql, origin: impl Into<String>) -> Self {
        SfmStore {
            sql,
            origin: origin.into(),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn dialect(&self) -> Dialect {
        self.sql.dialect()
    }

    /// The statement that announces `event` (none on SQLite).
    fn notify(&self, event: SfmEvent) -> Option<Stmt> {
        (self.sql.dialect() == Dialect::Postgres).then(|| {
            let payload = serde_json::to_string(&SfmEnvelope {
                origin: self.origin.clone(),
                event,
            })
            .unwrap_or_default();
            Stmt::new(
                "SELECT 1 FROM pg_notify($1, $2)",
                vec![CHANNEL.into(), payload.into()],
            )
        })
    }

    fn device_event(&self, conn_key: &str) -> Option<Stmt> {
        self.notify(SfmEvent::Device {
            conn_key: conn_key.into(),
        })
    }

    // ------------------------------------------------------------ registry

    /// Registers (or updates) the device `uid` at `conn_key`. If the uid was
    /// registered at another address, that registration is dropped.
    pub async fn register(
        &self,
        conn_key: &str,
        namespace: &str,
        name: &str,
        uid: &str,
        settings: &str,
        now_ms: i64,
    ) -> Result<Registration> {
        let mut script = vec![
            Stmt::new(
                "DELETE FROM sfm_devices WHERE uid = $1 AND conn_key <> $2",
                vec![uid.into(), conn_key.into()],
            ),
            Stmt::new(
                "INSERT INTO sfm_devices (conn_key, namespace, name, uid, settings, registered_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (conn_key) DO UPDATE SET settings = excluded.settings,
                    namespace = excluded.namespace, name = excluded.name
                 WHERE sfm_devices.uid = excluded.uid
                 RETURNING conn_key",
                vec![
                    conn_key.into(),
                    namespace.into(),
                    name.into(),
                    uid.into(),
                    settings.into(),
                    now_ms.into(),
                ],
            ),
        ];
        script.extend(self.device_event(conn_key));
        let done = self.sql.script(script).await?;
        if !done[1].is_empty() {
            return Ok(Registration::Registered);
        }
        let rows = self
            .sql
            .query(
                "SELECT namespace, name FROM sfm_devices WHERE conn_key = $1",
                vec![conn_key.into()],
            )
            .await?;
        Ok(match rows.first() {
            Some(r) => Registration::Conflict {
                namespace: r.text(0).unwrap_or_default(),
                name: r.text(1).unwrap_or_default(),
            },
            // Unregistered in between: the next reconcile registers it.
            None => Registration::Conflict {
                namespace: String::new(),
                name: String::new(),
            },
        })
    }

    /// Drops the registration of `uid`; with `purge`, its cached data too.
    /// Returns the connection key it had.
    pub async fn unregister(&self, uid: &str, purge: bool) -> Result<Option<String>> {
        let rows = self
            .sql
            .query(
                "SELECT conn_key FROM sfm_devices WHERE uid = $1",
                vec![uid.into()],
            )
            .await?;
        let Some(conn_key) = rows.first().and_then(|r| r.text(0)) else {
            return Ok(None);
        };
        let mut script = vec![Stmt::new(
            "DELETE FROM sfm_devices WHERE uid = $1",
            vec![uid.into()],
        )];
        if purge {
            script.extend(purge_statements(&conn_key));
        }
        script.extend(self.device_event(&conn_key));
        self.sql.script(script).await?;
        Ok(Some(conn_key))
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRow>> {
        let rows = self
            .sql
            .query(
                &format!("SELECT {DEVICE_COLUMNS} FROM sfm_devices ORDER BY conn_key"),
                vec![],
            )
            .await?;
        Ok(rows.iter().map(device_row).collect())
    }

    pub async fn device(&self, conn_key: &str) -> Result<Option<DeviceRow>> {
        let rows = self
            .sql
            .query(
                &format!("SELECT {DEVICE_COLUMNS} FROM sfm_devices WHERE conn_key = $1"),
                vec![conn_key.into()],
            )
            .await?;
        Ok(rows.first().map(device_row))
    }

    pub async fn device_by_uid(&self, uid: &str) -> Result<Option<DeviceRow>> {
        let rows = self
            .sql
            .query(
                &format!("SELECT {DEVICE_COLUMNS} FROM sfm_devices WHERE uid = $1"),
                vec![uid.into()],
            )
            .await?;
        Ok(rows.first().map(device_row))
    }

    /// Adds counter deltas gathered in memory.
    pub async fn add_counters(&self, conn_key: &str, d: Counters) -> Result<()> {
        self.sql
            .script(vec![Stmt::new(
                "UPDATE sfm_devices SET hits = hits + $2, misses = misses + $3,
                    upstream_calls = upstream_calls + $4, coalesced = coalesced + $5,
                    stale_served = stale_served + $6 WHERE conn_key = $1",
                vec![
                    conn_key.into(),
                    d.hits.into(),
                    d.misses.into(),
                    d.upstream_calls.into(),
                    d.coalesced.into(),
                    d.stale_served.into(),
                ],
            )])
            .await?;
        Ok(())
    }

    /// Records a successful contact: the unit is reachable again.
    pub async fn record_success(&self, conn_key: &str, now_ms: i64) -> Result<()> {
        let mut script = vec![Stmt::new(
            "UPDATE sfm_devices SET last_contact_ms = $2, last_success_ms = $2, failures = 0,
                unreachable_until_ms = 0 WHERE conn_key = $1 RETURNING failures",
            vec![conn_key.into(), now_ms.into()],
        )];
        script.extend(self.device_event(conn_key));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Records a failed contact and backs off: the unit is not asked again
    /// before `now + base × 2^(failures-1)` (capped at 32 × base).
    pub async fn record_failure(
        &self,
        conn_key: &str,
        reason: &str,
        error: &str,
        base_backoff_ms: i64,
        now_ms: i64,
    ) -> Result<i64> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "UPDATE sfm_devices SET last_contact_ms = $2, last_error = $3,
                    last_error_reason = $4, failures = failures + 1
                 WHERE conn_key = $1 RETURNING failures",
                vec![conn_key.into(), now_ms.into(), error.into(), reason.into()],
            )])
            .await?;
        let failures = done[0].first().and_then(|r| r.i64(0)).unwrap_or(1);
        let until = now_ms + backoff_window_ms(base_backoff_ms, failures);
        let mut script = vec![Stmt::new(
            "UPDATE sfm_devices SET unreachable_until_ms = $2 WHERE conn_key = $1",
            vec![conn_key.into(), until.into()],
        )];
        script.extend(self.device_event(conn_key));
        self.sql.script(script).await?;
        Ok(until)
    }

    /// Claims the one probe of an expired backoff window: true for exactly
    /// one caller, cluster-wide, which may then contact the unit. The window
    /// is pushed out meanwhile so nobody else probes.
    pub async fn claim_probe(&self, conn_key: &str, hold_ms: i64, now_ms: i64) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "UPDATE sfm_devices SET unreachable_until_ms = $3
                 WHERE conn_key = $1 AND failures > 0 AND unreachable_until_ms <= $2
                 RETURNING conn_key",
                vec![conn_key.into(), now_ms.into(), (now_ms + hold_ms).into()],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }

    /// Notes what info or an event list said about the unit.
    pub async fn record_identity(
        &self,
        conn_key: &str,
        serial: Option<&str>,
        firmware: Option<&str>,
        event_count: Option<i64>,
    ) -> Result<()> {
        self.sql
            .script(vec![Stmt::new(
                "UPDATE sfm_devices SET serial = COALESCE($2, serial),
                    firmware = COALESCE($3, firmware), event_count = COALESCE($4, event_count)
                 WHERE conn_key = $1",
                vec![
                    conn_key.into(),
                    serial.map(str::to_string).into(),
                    firmware.map(str::to_string).into(),
                    event_count.into(),
                ],
            )])
            .await?;
        Ok(())
    }

    // -------------------------------------------------------------- bodies

    pub async fn body(&self, conn_key: &str, kind: &str, id: &str) -> Result<Option<StoredBody>> {
        let rows = self
            .sql
            .query(
                "SELECT body, etag, fetched_at_ms, fetch_started_ms, stale FROM sfm_bodies
                 WHERE conn_key = $1 AND kind = $2 AND id = $3",
                vec![conn_key.into(), kind.into(), id.into()],
            )
            .await?;
        Ok(rows.first().map(|r| StoredBody {
            body: r.bytes(0).unwrap_or_default(),
            etag: r.text(1).unwrap_or_default(),
            fetched_at_ms: r.i64(2).unwrap_or(0),
            fetch_started_ms: r.i64(3).unwrap_or(0),
            stale: r.bool(4).unwrap_or(false),
        }))
    }

    /// Writes the bodies a fetch produced, links event indexes to their
    /// identities (`links`: index → identity; `unlink`: indexes whose event
    /// changed), releases `holder`'s fetch lease, and announces it all, in
    /// one transaction. A lease that expired and was taken over is the new
    /// holder's and stays; the bodies are stored either way.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_fetch(
        &self,
        conn_key: &str,
        fetch_key: &str,
        holder: &str,
        bodies: &[NewBody],
        links: &[(i64, String)],
        unlink: &[i64],
        now_ms: i64,
    ) -> Result<()> {
        let mut script = Vec::new();
        for idx in unlink {
            script.push(Stmt::new(
                "DELETE FROM sfm_event_index WHERE conn_key = $1 AND idx = $2",
                vec![conn_key.into(), (*idx).into()],
            ));
        }
        for b in bodies {
            script.push(Stmt::new(
                "INSERT INTO sfm_bodies (conn_key, kind, id, body, etag, fetched_at_ms, fetch_started_ms, stale)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE)
                 ON CONFLICT (conn_key, kind, id) DO UPDATE SET body = excluded.body,
                    etag = excluded.etag, fetched_at_ms = excluded.fetched_at_ms,
                    fetch_started_ms = excluded.fetch_started_ms, stale = FALSE",
                vec![
                    conn_key.into(),
                    b.kind.as_str().into(),
                    b.id.as_str().into(),
                    Param::Value(SqlValue::Bytes(b.body.clone())),
                    b.etag.as_str().into(),
                    now_ms.into(),
                    b.fetch_started_ms.into(),
                ],
            ));
        }
        for (idx, identity) in links {
            script.push(Stmt::new(
                "INSERT INTO sfm_event_index (conn_key, idx, identity) VALUES ($1, $2, $3)
                 ON CONFLICT (conn_key, idx) DO UPDATE SET identity = excluded.identity",
                vec![conn_key.into(), (*idx).into(), identity.as_str().into()],
            ));
        }
        script
            .push(crate::lease::SFM_FETCH.release(vec![conn_key.into(), fetch_key.into()], holder));
        for b in bodies {
            script.extend(self.notify(SfmEvent::Body {
                conn_key: conn_key.into(),
                kind: b.kind.clone(),
                id: b.id.clone(),
            }));
        }
        if !unlink.is_empty() || !links.is_empty() {
            script.extend(self.device_event(conn_key));
        }
        script.extend(self.notify(SfmEvent::Lease {
            conn_key: conn_key.into(),
            fetch_key: fetch_key.into(),
        }));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Marks bodies of `kinds` stale (a config write): they are fetched anew
    /// before being served again, unless the unit cannot be reached.
    pub async fn mark_stale(&self, conn_key: &str, kinds: &[&str]) -> Result<()> {
        let mut script = Vec::new();
        for k in kinds {
            script.push(Stmt::new(
                "UPDATE sfm_bodies SET stale = TRUE WHERE conn_key = $1 AND kind = $2",
                vec![conn_key.into(), (*k).into()],
            ));
        }
        script.extend(self.device_event(conn_key));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Drops the bodies of one kind (monitor status after start/stop).
    pub async fn drop_kind(&self, conn_key: &str, kind: &str) -> Result<()> {
        let mut script = vec![Stmt::new(
            "DELETE FROM sfm_bodies WHERE conn_key = $1 AND kind = $2",
            vec![conn_key.into(), kind.into()],
        )];
        script.extend(self.device_event(conn_key));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Unlinks every event index (an erase): single events and waveforms
    /// stay under their identities, but no index names them any more; the
    /// cached list goes and info turns stale.
    pub async fn unlink_all(&self, conn_key: &str) -> Result<u64> {
        let mut script = vec![Stmt::new(
            "DELETE FROM sfm_event_index WHERE conn_key = $1 RETURNING idx",
            vec![conn_key.into()],
        )];
        // The cached list describes events the unit no longer has.
        script.push(Stmt::new(
            "DELETE FROM sfm_bodies WHERE conn_key = $1 AND kind = 'events'",
            vec![conn_key.into()],
        ));
        script.push(Stmt::new(
            "UPDATE sfm_bodies SET stale = TRUE WHERE conn_key = $1 AND kind = 'info'",
            vec![conn_key.into()],
        ));
        script.extend(self.device_event(conn_key));
        let done = self.sql.script(script).await?;
        Ok(done[0].len() as u64)
    }

    pub async fn identity_at(&self, conn_key: &str, idx: i64) -> Result<Option<String>> {
        let rows = self
            .sql
            .query(
                "SELECT identity FROM sfm_event_index WHERE conn_key = $1 AND idx = $2",
                vec![conn_key.into(), idx.into()],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.text(0)))
    }

    /// The whole index of a device: (index, identity), by index.
    pub async fn index(&self, conn_key: &str) -> Result<Vec<(i64, String)>> {
        let rows = self
            .sql
            .query(
                "SELECT idx, identity FROM sfm_event_index WHERE conn_key = $1 ORDER BY idx",
                vec![conn_key.into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.i64(0).unwrap_or(0), r.text(1).unwrap_or_default()))
            .collect())
    }

    /// Deletes everything cached about a device (`DELETE /cache/device`, a
    /// serial swap); returns what it held.
    pub async fn flush_device(&self, conn_key: &str) -> Result<Amounts> {
        let before = self.amounts(Some(conn_key)).await?;
        let mut script = purge_statements(conn_key);
        script.extend(self.device_event(conn_key));
        self.sql.script(script).await?;
        Ok(before)
    }

    /// What is cached, for one device or all.
    pub async fn amounts(&self, conn_key: Option<&str>) -> Result<Amounts> {
        let mut a = Amounts::default();
        for (kind, n, bytes) in self.by_kind(conn_key).await? {
            a.bytes += bytes;
            match kind.as_str() {
                "info" => a.info += n,
                "event" => a.events += n,
                "events" => a.event_lists += n,
                "waveform" => a.waveforms += n,
                "status" => a.monitor_status += n,
                _ => {}
            }
        }
        Ok(a)
    }

    /// (kind, bodies, bytes) cached, for one device or all.
    pub async fn by_kind(&self, conn_key: Option<&str>) -> Result<Vec<(String, i64, i64)>> {
        let (filter, params) = match conn_key {
            Some(k) => ("WHERE conn_key = $1", vec![SqlValue::from(k)]),
            None => ("", vec![]),
        };
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT kind, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM sfm_bodies {filter} GROUP BY kind"
                ),
                params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.text(0).unwrap_or_default(),
                    r.i64(1).unwrap_or(0),
                    r.i64(2).unwrap_or(0),
                )
            })
            .collect())
    }
}

fn purge_statements(conn_key: &str) -> Vec<Stmt> {
    [
        "DELETE FROM sfm_bodies WHERE conn_key = $1",
        "DELETE FROM sfm_event_index WHERE conn_key = $1",
        "DELETE FROM sfm_fetch_leases WHERE conn_key = $1",
    ]
    .into_iter()
    .map(|q| Stmt::new(q, vec![conn_key.into()]))
    .collect()
}

/// How long the unit is left alone after `failures` failed contacts in a
/// row: the base, doubling, capped at 32 × base.
pub fn backoff_window_ms(base_ms: i64, failures: i64) -> i64 {
    let doublings = (failures.max(1) - 1).min(5) as u32;
    base_ms.max(1).saturating_mul(1 << doublings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> SfmStore {
        let db = crate::sqlite::SqliteDb::open(&dir.path().join("s.db"), crate::migrate::SQLITE, 2)
            .unwrap();
        SfmStore::new(std::sync::Arc::new(db), "test")
    }

    fn body(kind: &str, id: &str) -> NewBody {
        NewBody {
            kind: kind.into(),
            id: id.into(),
            body: Bytes::from_static(b"{\"x\":1}"),
            etag: "e".into(),
            fetch_started_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_late_commit_keeps_the_lease_of_whoever_took_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let (conn, fetch) = ("tcp:10.0.0.1:12345", "info");
        assert!(s.try_lease(conn, fetch, "p-1", 10, 0).await.unwrap());
        // p-1's lease lapses; p-2 takes it over and is fetching.
        assert!(!s.try_lease(conn, fetch, "p-2", 10_000, 5).await.unwrap());
        assert!(s.try_lease(conn, fetch, "p-2", 10_000, 20).await.unwrap());
        s.commit_fetch(conn, fetch, "p-1", &[body("info", "")], &[], &[], 30)
            .await
            .unwrap();
        assert!(
            matches!(s.lease(conn, fetch).await.unwrap(), LeaseState::Held { .. }),
            "p-2 still holds its lease"
        );
        assert!(!s.try_lease(conn, fetch, "p-3", 10_000, 40).await.unwrap());
        // p-2's own commit releases it.
        s.commit_fetch(conn, fetch, "p-2", &[body("info", "")], &[], &[], 50)
            .await
            .unwrap();
        assert!(matches!(
            s.lease(conn, fetch).await.unwrap(),
            LeaseState::Free
        ));
    }

    #[tokio::test]
    async fn one_registration_per_address_and_purge_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let key = "tcp:10.0.0.1:12345";
        assert_eq!(
            s.register(key, "ns", "a", "uid-a", "{}", 1).await.unwrap(),
            Registration::Registered
        );
        assert_eq!(
            s.register(key, "ns", "b", "uid-b", "{}", 2).await.unwrap(),
            Registration::Conflict {
                namespace: "ns".into(),
                name: "a".into()
            }
        );
        s.commit_fetch(
            key,
            "waveform:0",
            "p-1",
            &[body("waveform", "ev:0@t")],
            &[(0, "ev:0@t".into())],
            &[],
            3,
        )
        .await
        .unwrap();
        // Unregistered without purge: the data stays for a successor.
        assert_eq!(
            s.unregister("uid-a", false).await.unwrap().as_deref(),
            Some(key)
        );
        assert_eq!(s.amounts(Some(key)).await.unwrap().waveforms, 1);
        assert_eq!(
            s.register(key, "ns", "b", "uid-b", "{}", 4).await.unwrap(),
            Registration::Registered
        );
        assert_eq!(
            s.identity_at(key, 0).await.unwrap().as_deref(),
            Some("ev:0@t")
        );
        // With purge: nothing of it is left.
        s.unregister("uid-b", true).await.unwrap();
        assert_eq!(s.amounts(Some(key)).await.unwrap(), Amounts::default());
        assert_eq!(s.identity_at(key, 0).await.unwrap(), None);
        assert!(s.devices().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn leases_and_slots_are_exclusive_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let key = "serial:COM1:38400";
        assert!(s.try_lease(key, "info", "p1", 1000, 0).await.unwrap());
        assert!(!s.try_lease(key, "info", "p2", 1000, 10).await.unwrap());
        assert!(
            s.try_lease(key, "info", "p2", 1000, 1000).await.unwrap(),
            "expired: taken over"
        );
        assert_eq!(s.try_slot(key, 1, "p1", 1000, 0).await.unwrap(), Some(0));
        assert_eq!(s.try_slot(key, 1, "p2", 1000, 5).await.unwrap(), None);
        assert_eq!(s.try_slot(key, 2, "p2", 1000, 5).await.unwrap(), Some(1));
        s.release_slot(key, 0, "p1").await.unwrap();
        assert_eq!(s.try_slot(key, 1, "p3", 1000, 6).await.unwrap(), Some(0));
        // A failed fetch leaves its answer for the waiters, and frees the lease.
        s.fail_lease(key, "info", "p2", 503, Bytes::from_static(b"{}"), 500, 1001)
            .await
            .unwrap();
        assert!(matches!(
            s.lease(key, "info").await.unwrap(),
            LeaseState::Failed { status: 503, .. }
        ));
        assert!(s.try_lease(key, "info", "p4", 1000, 1002).await.unwrap());
    }

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_32_times_it() {
        let w: Vec<i64> = (1..=8).map(|f| backoff_window_ms(1000, f)).collect();
        assert_eq!(
            w,
            [1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000],
            "doubling, capped"
        );
        assert_eq!(backoff_window_ms(1000, 0), 1000);
    }
}
