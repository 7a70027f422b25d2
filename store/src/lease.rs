//! One lease primitive for every table of leases: a row per key, held by a
//! holder until `expires_at_ms`, with three verbs — take, renew, release.
//! The run ledger's cache-key leases, the SFM proxies' fetch leases and
//! the units' session slots are three [`LeaseTable`]s; the statements are
//! built here without I/O (and tested as text), and run by their stores,
//! which may add statements (a NOTIFY) to the same transaction.

use crate::sql::{Param, Stmt};

/// A table of leases and how taking one behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTable {
    pub table: &'static str,
    /// The columns that name one lease (its primary key).
    pub key: &'static [&'static str],
    /// The column naming who holds it.
    pub holder: &'static str,
    /// The same holder taking a lease it holds renews it (else it waits
    /// for the lease to expire like anyone else).
    pub reentrant: bool,
    /// A condition on the row under which a live lease may be taken anyway
    /// (an SFM fetch lease that holds a recorded failure).
    pub free_when: Option<&'static str>,
    /// Columns cleared (set to NULL) when the lease changes hands.
    pub cleared_on_take: &'static [&'static str],
    /// Set to `now` on take and on every renewal.
    pub heartbeat: Option<&'static str>,
    /// Set to `now` when taken, kept when the same holder takes it again.
    pub taken_at: Option<&'static str>,
}

/// `cache_leases`: one computing run per cache key (the SimulationRun's uid
/// holds it; the operator replica renews it with a heartbeat).
pub const RUN_CACHE_KEY: LeaseTable = LeaseTable {
    table: "cache_leases",
    key: &["cache_key"],
    holder: "holder_uid",
    reentrant: true,
    free_when: None,
    cleared_on_take: &[],
    heartbeat: Some("heartbeat_at_ms"),
    taken_at: Some("acquired_at_ms"),
};

/// `sfm_fetch_leases`: one upstream fetch per piece of a unit's data across
/// every proxy; a recorded failure frees it for the next fetch.
pub const SFM_FETCH: LeaseTable = LeaseTable {
    table: "sfm_fetch_leases",
    key: &["conn_key", "fetch_key"],
    holder: "holder",
    reentrant: false,
    free_when: Some("failed_status IS NOT NULL"),
    cleared_on_take: &["failed_status", "failed_body"],
    heartbeat: None,
    taken_at: Some("started_ms"),
};

/// `sfm_session_slots`: a unit's session slots, one row per slot number.
pub const SFM_SLOT: LeaseTable = LeaseTable {
    table: "sfm_session_slots",
    key: &["conn_key", "slot"],
    holder: "holder",
    reentrant: false,
    free_when: None,
    cleared_on_take: &[],
    heartbeat: None,
    taken_at: None,
};

impl LeaseTable {
    /// Takes the lease on `key` for `holder` unless another live holder has
    /// it; `extra` columns are written with it. Returns the holder's column
    /// when taken (an empty result: someone else holds it).
    pub fn take(
        &self,
        key: Vec<Param>,
        holder: &str,
        extra: Vec<(&'static str, Param)>,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Stmt {
        let t = self.table;
        let mut columns: Vec<&str> = self.key.to_vec();
        let mut params = key;
        columns.push(self.holder);
        params.push(holder.into());
        for (c, p) in extra {
            columns.push(c);
            params.push(p);
        }
        let stamps: Vec<&str> = self.taken_at.into_iter().chain(self.heartbeat).collect();
        for c in &stamps {
            columns.push(c);
            params.push(now_ms.into());
        }
        columns.push("expires_at_ms");
        params.push((now_ms + ttl_ms).into());
        params.push(now_ms.into());
        let now = format!("${}", params.len());
        let placeholders: Vec<String> = (1..params.len()).map(|i| format!("${i}")).collect();
        let mut set: Vec<String> = columns
            .iter()
            .filter(|c| !self.key.contains(c) && Some(**c) != self.taken_at)
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        if let Some(c) = self.taken_at {
            set.push(if self.reentrant {
                format!(
                    "{c} = CASE WHEN {t}.{h} = excluded.{h} THEN {t}.{c} ELSE excluded.{c} END",
                    h = self.holder
                )
            } else {
                format!("{c} = excluded.{c}")
            });
        }
        set.extend(self.cleared_on_take.iter().map(|c| format!("{c} = NULL")));
        let mut free = vec![format!("{t}.expires_at_ms <= {now}")];
        if self.reentrant {
            free.push(format!("{t}.{h} = excluded.{h}", h = self.holder));
        }
        if let Some(w) = self.free_when {
            free.push(format!("{t}.{w}"));
        }
        let sql = format!(
            "INSERT INTO {t} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {} WHERE {} RETURNING {}",
            columns.join(", "),
            placeholders.join(", "),
            self.key.join(", "),
            set.join(", "),
            free.join(" OR "),
            self.holder
        );
        Stmt::new(sql, params)
    }

    /// Extends the holder's lease by `ttl_ms` from `now_ms`, setting `extra`
    /// columns too; an empty result: it no longer holds it. An expired lease
    /// that nobody took over is still the holder's (a take changes the
    /// holder column), so it renews without looking at the expiry: the
    /// holder column alone says who may act.
    pub fn renew(
        &self,
        key: Vec<Param>,
        holder: &str,
        extra: Vec<(&'static str, Param)>,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Stmt {
        let mut params = key;
        params.push(holder.into());
        let mut set = Vec::new();
        let mut put = |column: &str, p: Param, params: &mut Vec<Param>| {
            params.push(p);
            set.push(format!("{column} = ${}", params.len()));
        };
        put("expires_at_ms", (now_ms + ttl_ms).into(), &mut params);
        if let Some(c) = self.heartbeat {
            put(c, now_ms.into(), &mut params);
        }
        for (c, p) in extra {
            put(c, p, &mut params);
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {} RETURNING {}",
            self.table,
            set.join(", "),
            self.held_by(),
            self.holder
        );
        Stmt::new(sql, params)
    }

    /// Gives the lease up (only its holder can); an empty result: it did
    /// not hold it.
    pub fn release(&self, key: Vec<Param>, holder: &str) -> Stmt {
        let mut params = key;
        params.push(holder.into());
        let sql = format!(
            "DELETE FROM {} WHERE {} RETURNING {}",
            self.table,
            self.held_by(),
            self.holder
        );
        Stmt::new(sql, params)
    }

    /// `key1 = $1 AND … AND holder = $n`: the holder's row.
    fn held_by(&self) -> String {
        let mut clauses: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 1))
            .collect();
        clauses.push(format!("{} = ${}", self.holder, self.key.len() + 1));
        clauses.join(" AND ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_reentrant_take_keeps_the_first_take_time_for_the_same_holder() {
        let s = RUN_CACHE_KEY.take(
            vec!["k".into()],
            "uid-1",
            vec![("holder", "run-a".into()), ("execution_id", "e1".into())],
            30_000,
            1_000,
        );
        assert_eq!(
            squash(&s.sql),
            "INSERT INTO cache_leases (cache_key, holder_uid, holder, execution_id, acquired_at_ms, \
             heartbeat_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (cache_key) DO UPDATE SET holder_uid = excluded.holder_uid, \
             holder = excluded.holder, execution_id = excluded.execution_id, \
             heartbeat_at_ms = excluded.heartbeat_at_ms, expires_at_ms = excluded.expires_at_ms, \
             acquired_at_ms = CASE WHEN cache_leases.holder_uid = excluded.holder_uid \
             THEN cache_leases.acquired_at_ms ELSE excluded.acquired_at_ms END \
             WHERE cache_leases.expires_at_ms <= $8 OR cache_leases.holder_uid = excluded.holder_uid \
             RETURNING holder_uid"
        );
        assert_eq!(s.params.len(), 8);
    }

    #[test]
    fn a_failed_fetch_frees_its_lease_and_a_take_clears_the_failure() {
        let s = SFM_FETCH.take(vec!["c".into(), "info".into()], "p-1", vec![], 5_000, 7);
        let sql = squash(&s.sql);
        assert!(sql.contains("WHERE sfm_fetch_leases.expires_at_ms <= $6 OR sfm_fetch_leases.failed_status IS NOT NULL"), "{sql}");
        assert!(
            sql.contains("failed_status = NULL, failed_body = NULL"),
            "{sql}"
        );
        assert!(sql.contains("started_ms = excluded.started_ms"), "{sql}");
        assert!(
            !sql.contains("= excluded.holder WHERE")
                && !sql.contains("OR sfm_fetch_leases.holder ="),
            "not reentrant: {sql}"
        );
    }

    #[test]
    fn renew_and_release_touch_only_the_holders_row() {
        let r = RUN_CACHE_KEY.renew(vec!["k".into()], "uid-1", vec![], 30_000, 5);
        assert_eq!(
            squash(&r.sql),
            "UPDATE cache_leases SET expires_at_ms = $3, heartbeat_at_ms = $4 \
             WHERE cache_key = $1 AND holder_uid = $2 RETURNING holder_uid"
        );
        let f = SFM_FETCH.renew(
            vec!["c".into(), "info".into()],
            "p",
            vec![("failed_status", 503i64.into())],
            2_000,
            5,
        );
        assert_eq!(
            squash(&f.sql),
            "UPDATE sfm_fetch_leases SET expires_at_ms = $4, failed_status = $5 \
             WHERE conn_key = $1 AND fetch_key = $2 AND holder = $3 RETURNING holder"
        );
        let d = SFM_SLOT.release(vec!["c".into(), 1i64.into()], "p");
        assert_eq!(
            squash(&d.sql),
            "DELETE FROM sfm_session_slots WHERE conn_key = $1 AND slot = $2 AND holder = $3 RETURNING holder"
        );
    }
}
