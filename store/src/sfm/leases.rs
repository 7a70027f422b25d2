//! Fetch leases (one fetch per piece of data across the cluster) and
//! session slots (at most a unit's allowed sessions), with the NOTIFY
//! that wakes the proxies waiting for them.

use super::*;

impl SfmStore {
    /// Takes the fetch lease on `fetch_key` unless a live one is held.
    pub async fn try_lease(
        &self,
        conn_key: &str,
        fetch_key: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "INSERT INTO sfm_fetch_leases (conn_key, fetch_key, holder, started_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (conn_key, fetch_key) DO UPDATE SET holder = excluded.holder,
                    started_ms = excluded.started_ms, expires_at_ms = excluded.expires_at_ms,
                    failed_status = NULL, failed_body = NULL
                 WHERE sfm_fetch_leases.expires_at_ms <= $4
                    OR sfm_fetch_leases.failed_status IS NOT NULL
                 RETURNING holder",
                vec![
                    conn_key.into(),
                    fetch_key.into(),
                    holder.into(),
                    now_ms.into(),
                    (now_ms + ttl_ms).into(),
                ],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }

    pub async fn renew_lease(
        &self,
        conn_key: &str,
        fetch_key: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "UPDATE sfm_fetch_leases SET expires_at_ms = $4
                 WHERE conn_key = $1 AND fetch_key = $2 AND holder = $3 RETURNING holder",
                vec![
                    conn_key.into(),
                    fetch_key.into(),
                    holder.into(),
                    (now_ms + ttl_ms).into(),
                ],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }

    pub async fn lease(&self, conn_key: &str, fetch_key: &str) -> Result<LeaseState> {
        let rows = self
            .sql
            .query(
                "SELECT expires_at_ms, failed_status, failed_body, started_ms FROM sfm_fetch_leases
                 WHERE conn_key = $1 AND fetch_key = $2",
                vec![conn_key.into(), fetch_key.into()],
            )
            .await?;
        Ok(match rows.first() {
            None => LeaseState::Free,
            Some(r) => match r.i64(1) {
                Some(status) => LeaseState::Failed {
                    started_ms: r.i64(3).unwrap_or(0),
                    status: u16::try_from(status).unwrap_or(502),
                    body: r.bytes(2).unwrap_or_default(),
                    expires_at_ms: r.i64(0).unwrap_or(0),
                },
                None => LeaseState::Held {
                    expires_at_ms: r.i64(0).unwrap_or(0),
                },
            },
        })
    }

    /// Releases a lease whose fetch failed, leaving the upstream answer for
    /// `keep_ms` so that readers who waited for this fetch get it too.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail_lease(
        &self,
        conn_key: &str,
        fetch_key: &str,
        holder: &str,
        status: u16,
        body: Bytes,
        keep_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        let mut script = vec![Stmt::new(
            "UPDATE sfm_fetch_leases SET failed_status = $4, failed_body = $5, expires_at_ms = $6
             WHERE conn_key = $1 AND fetch_key = $2 AND holder = $3",
            vec![
                conn_key.into(),
                fetch_key.into(),
                holder.into(),
                i64::from(status).into(),
                Param::Value(SqlValue::Bytes(body)),
                (now_ms + keep_ms).into(),
            ],
        )];
        script.extend(self.notify(SfmEvent::Lease {
            conn_key: conn_key.into(),
            fetch_key: fetch_key.into(),
        }));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Releases a lease without a result (the holder gave up).
    pub async fn release_lease(&self, conn_key: &str, fetch_key: &str, holder: &str) -> Result<()> {
        let mut script = vec![Stmt::new(
            "DELETE FROM sfm_fetch_leases WHERE conn_key = $1 AND fetch_key = $2 AND holder = $3",
            vec![conn_key.into(), fetch_key.into(), holder.into()],
        )];
        script.extend(self.notify(SfmEvent::Lease {
            conn_key: conn_key.into(),
            fetch_key: fetch_key.into(),
        }));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Takes one of the device's `max` session slots; `None` when all are
    /// held by live holders.
    pub async fn try_slot(
        &self,
        conn_key: &str,
        max: i64,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        for slot in 0..max.max(1) {
            let done = self
                .sql
                .script(vec![Stmt::new(
                    "INSERT INTO sfm_session_slots (conn_key, slot, holder, expires_at_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (conn_key, slot) DO UPDATE SET holder = excluded.holder,
                        expires_at_ms = excluded.expires_at_ms
                     WHERE sfm_session_slots.expires_at_ms <= $5
                     RETURNING slot",
                    vec![
                        conn_key.into(),
                        slot.into(),
                        holder.into(),
                        (now_ms + ttl_ms).into(),
                        now_ms.into(),
                    ],
                )])
                .await?;
            if !done[0].is_empty() {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    pub async fn renew_slot(
        &self,
        conn_key: &str,
        slot: i64,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "UPDATE sfm_session_slots SET expires_at_ms = $4
                 WHERE conn_key = $1 AND slot = $2 AND holder = $3 RETURNING slot",
                vec![
                    conn_key.into(),
                    slot.into(),
                    holder.into(),
                    (now_ms + ttl_ms).into(),
                ],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }

    pub async fn release_slot(&self, conn_key: &str, slot: i64, holder: &str) -> Result<()> {
        let mut script = vec![Stmt::new(
            "DELETE FROM sfm_session_slots WHERE conn_key = $1 AND slot = $2 AND holder = $3",
            vec![conn_key.into(), slot.into(), holder.into()],
        )];
        script.extend(self.notify(SfmEvent::Slot {
            conn_key: conn_key.into(),
        }));
        self.sql.script(script).await?;
        Ok(())
    }
}
