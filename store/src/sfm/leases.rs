//! Fetch leases (one fetch per piece of data across the cluster) and
//! session slots (at most a unit's allowed sessions), with the NOTIFY
//! that wakes the proxies waiting for them: the store's one lease
//! primitive ([`crate::lease`]) over two tables.

use super::*;
use crate::lease;

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
        let key = vec![conn_key.into(), fetch_key.into()];
        let take = lease::SFM_FETCH.take(key, holder, vec![], ttl_ms, now_ms);
        let done = self.sql.script(vec![take]).await?;
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
        let key = vec![conn_key.into(), fetch_key.into()];
        let renew = lease::SFM_FETCH.renew(key, holder, vec![], ttl_ms, now_ms);
        let done = self.sql.script(vec![renew]).await?;
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
        let key = vec![conn_key.into(), fetch_key.into()];
        let failure = vec![
            ("failed_status", i64::from(status).into()),
            ("failed_body", Param::Value(SqlValue::Bytes(body))),
        ];
        let mut script = vec![lease::SFM_FETCH.renew(key, holder, failure, keep_ms, now_ms)];
        script.extend(self.notify(SfmEvent::Lease {
            conn_key: conn_key.into(),
            fetch_key: fetch_key.into(),
        }));
        self.sql.script(script).await?;
        Ok(())
    }

    /// Releases a lease without a result (the holder gave up).
    pub async fn release_lease(&self, conn_key: &str, fetch_key: &str, holder: &str) -> Result<()> {
        let key = vec![conn_key.into(), fetch_key.into()];
        let mut script = vec![lease::SFM_FETCH.release(key, holder)];
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
            let key = vec![conn_key.into(), slot.into()];
            let take = lease::SFM_SLOT.take(key, holder, vec![], ttl_ms, now_ms);
            if !self.sql.script(vec![take]).await?[0].is_empty() {
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
        let key = vec![conn_key.into(), slot.into()];
        let renew = lease::SFM_SLOT.renew(key, holder, vec![], ttl_ms, now_ms);
        let done = self.sql.script(vec![renew]).await?;
        Ok(!done[0].is_empty())
    }

    pub async fn release_slot(&self, conn_key: &str, slot: i64, holder: &str) -> Result<()> {
        let key = vec![conn_key.into(), slot.into()];
        let mut script = vec![lease::SFM_SLOT.release(key, holder)];
        script.extend(self.notify(SfmEvent::Slot {
            conn_key: conn_key.into(),
        }));
        self.sql.script(script).await?;
        Ok(())
    }
}
