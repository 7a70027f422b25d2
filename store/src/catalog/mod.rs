//! The catalog: which simulations exist (name, version, schema, image) and
//! what ran (one row per execution), with search and statistics.

mod index;

mod executions;

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use index::{Delta, IndexRow, Query, SearchIndex};

use crate::clock::now_ms;
use crate::error::{Result, StoreError};
use crate::sql::{DbRow, Param, Sql, Stmt};

/// What a client registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationSpec {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub author: Option<String>,
    pub tags: Vec<String>,
    pub input_schema: Value,
    pub output_schema: Value,
    pub image: Option<String>,
    pub workflow_type: String,
    pub workflow_hash: Option<String>,
    pub visibility: String,
    pub metadata: Option<Value>,
}

impl SimulationSpec {
    /// Hash of everything registered, to tell a repeat from a conflicting
    /// registration of the same name and version.
    pub fn content_hash(&self) -> String {
        let canonical = serde_json::to_string(&serde_json::json!([
            self.description,
            self.author,
            self.tags,
            self.input_schema,
            self.output_schema,
            self.image,
            self.workflow_type,
            self.workflow_hash,
            self.visibility,
            self.metadata
        ]))
        .unwrap_or_default();
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    fn search_text(&self) -> String {
        format!(
            "{} {} {}",
            self.name,
            self.description.as_deref().unwrap_or(""),
            self.tags.join(" ")
        )
        .to_lowercase()
    }
}

/// A registered simulation version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    pub id: i64,
    #[serde(flatten)]
    pub spec: SimulationSpec,
    pub status: String,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created(i64),
    /// The same name, version and content were already registered.
    Unchanged(i64),
}

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: Option<String>,
    /// Every one of these tags (all-of).
    pub tags: Vec<String>,
    /// `None` = any status.
    pub status: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Where an execution stands, as the registry stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Pending,
    Running,
    Completed,
    Failed,
    /// Answered from the cache (recorded under its own execution id).
    Cached,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 5] = [
        ExecutionStatus::Pending,
        ExecutionStatus::Running,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Cached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cached => "cached",
        }
    }

    /// The stored text, and sim2l's `succeeded` as `completed`.
    pub fn parse(s: &str) -> Option<ExecutionStatus> {
        match s {
            "succeeded" => Some(ExecutionStatus::Completed),
            _ => Self::ALL.into_iter().find(|v| v.as_str() == s),
        }
    }
}

/// What the cache did for an execution, as the registry stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// Its result was written to the cache.
    Populated,
    /// The cache was not used.
    Skipped,
    LookupFailure,
    PutFailure,
}

impl CacheOutcome {
    pub const ALL: [CacheOutcome; 6] = [
        CacheOutcome::Hit,
        CacheOutcome::Miss,
        CacheOutcome::Populated,
        CacheOutcome::Skipped,
        CacheOutcome::LookupFailure,
        CacheOutcome::PutFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "Hit",
            CacheOutcome::Miss => "Miss",
            CacheOutcome::Populated => "Populated",
            CacheOutcome::Skipped => "Skipped",
            CacheOutcome::LookupFailure => "LookupFailure",
            CacheOutcome::PutFailure => "PutFailure",
        }
    }

    pub fn parse(s: &str) -> Option<CacheOutcome> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One execution, as recorded in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub execution_id: String,
    pub squid_id: String,
    pub simulation_id: i64,
    pub user_id: Option<String>,
    pub started_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    pub duration_seconds: Option<f64>,
    pub status: ExecutionStatus,
    pub executor_type: String,
    pub cache_hit: bool,
    pub cache_status: Option<CacheOutcome>,
    pub node: Option<String>,
    pub run_db_path: Option<String>,
    pub run_db_size_bytes: Option<i64>,
    pub input_hash: Option<String>,
    pub output_count: i64,
    pub artifact_count: i64,
    pub error_count: i64,
    pub warning_count: i64,
    pub environment: Option<Value>,
}

/// Per-simulation figures (sim2l's fields plus rates, p95 and the last run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationStats {
    pub total_executions: i64,
    pub successful: i64,
    pub failed: i64,
    pub cached: i64,
    pub success_rate: Option<f64>,
    pub cache_hit_rate: Option<f64>,
    pub avg_duration: Option<f64>,
    pub min_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub p95_duration: Option<f64>,
    pub last_run_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// Executions by status.
    pub by_status: Vec<(String, i64)>,
    /// (UTC day start in ms, seconds of computing cache hits saved that day),
    /// oldest first: each hit saves what its key's computing run took.
    pub saved_by_day: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub total_simulations: i64,
    pub active_simulations: i64,
    pub total_executions: i64,
    pub successful_executions: i64,
    pub cached_executions: i64,
}

/// sim2l's tokenizer: lower-case, split on whitespace, drop tokens shorter
/// than two characters, de-duplicate keeping order.
pub fn tokenize(q: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in q.to_lowercase().split_whitespace() {
        if t.chars().count() >= 2 && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

const SIM_COLUMNS: &str = "id, name, version, description, author, tags, input_schema, output_schema, \
    image, workflow_type, workflow_hash, visibility, metadata, status, created_by, created_at_ms, updated_at_ms";

fn simulation_from_row(r: &DbRow) -> Result<Simulation> {
    let text = |i| {
        r.text(i)
            .ok_or_else(|| StoreError::Corrupt(format!("simulations column {i} is NULL")))
    };
    Ok(Simulation {
        id: r.i64(0).unwrap_or_default(),
        spec: SimulationSpec {
            name: text(1)?,
            version: text(2)?,
            description: r.text(3),
            author: r.text(4),
            tags: r
                .json(5)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            input_schema: r.json(6).unwrap_or(Value::Null),
            output_schema: r.json(7).unwrap_or(Value::Null),
            image: r.text(8),
            workflow_type: text(9)?,
            workflow_hash: r.text(10),
            visibility: text(11)?,
            metadata: r.json(12),
        },
        status: text(13)?,
        created_by: r.text(14),
        created_at_ms: r.i64(15).unwrap_or_default(),
        updated_at_ms: r.i64(16).unwrap_or_default(),
    })
}

/// The catalog over either backend.
#[derive(Clone)]
pub struct CatalogStore {
    sql: Sql,
    search: Arc<SearchState>,
}

/// This process's search index and the lock under which it is brought up
/// to date (one refresh at a time; searches read the last snapshot).
struct SearchState {
    current: RwLock<Arc<SearchIndex>>,
    refresh: tokio::sync::Mutex<()>,
}

/// The current generation with every row changed after `$1` and every
/// deletion after it, in one statement: one snapshot of the database.
const DELTA_SQL: &str =
    "SELECT g.gen, s.change_gen, s.id, s.created_at_ms, s.status, s.search_text, s.tags,
        CAST(0 AS BIGINT), g.instance
    FROM catalog_generation g LEFT JOIN simulations s ON s.change_gen > $1
    UNION ALL
    SELECT g.gen, d.change_gen, d.simulation_id, NULL, NULL, NULL, NULL, CAST(1 AS BIGINT),
        g.instance
    FROM catalog_generation g JOIN catalog_deletions d ON d.change_gen > $1";

impl CatalogStore {
    pub fn new(sql: Sql) -> Self {
        CatalogStore {
            sql,
            search: Arc::new(SearchState {
                current: RwLock::new(Arc::new(SearchIndex::empty())),
                refresh: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Registers a version. The same content again is `Unchanged`; different
    /// content under an existing name and version is a `Conflict`.
    pub async fn register(
        &self,
        spec: &SimulationSpec,
        created_by: Option<&str>,
    ) -> Result<Registration> {
        let hash = spec.content_hash();
        let now = now_ms();
        let tags = serde_json::to_string(&spec.tags)?;
        let mut script = vec![Stmt::new(
            "INSERT INTO simulations (name, version, description, author, tags, input_schema, output_schema,
                image, workflow_type, workflow_hash, visibility, metadata, search_text, content_hash,
                created_by, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)
             ON CONFLICT (name, version) DO NOTHING RETURNING id",
            vec![
                spec.name.as_str().into(),
                spec.version.as_str().into(),
                spec.description.clone().into(),
                spec.author.clone().into(),
                tags.into(),
                spec.input_schema.to_string().into(),
                spec.output_schema.to_string().into(),
                spec.image.clone().into(),
                spec.workflow_type.as_str().into(),
                spec.workflow_hash.clone().into(),
                spec.visibility.as_str().into(),
                spec.metadata.as_ref().map(Value::to_string).into(),
                spec.search_text().into(),
                hash.as_str().into(),
                created_by.map(str::to_string).into(),
                now.into(),
            ],
        )];
        // Tags only when the row was inserted: the SELECT yields nothing otherwise.
        for t in &spec.tags {
            script.push(Stmt::new(
                "INSERT INTO simulation_tags (simulation_id, tag)
                 SELECT id, $3 FROM simulations WHERE name = $1 AND version = $2 AND created_at_ms = $4
                    AND content_hash = $5
                 ON CONFLICT DO NOTHING",
                vec![
                    spec.name.as_str().into(),
                    spec.version.as_str().into(),
                    t.to_lowercase().into(),
                    now.into(),
                    hash.as_str().into(),
                ],
            ));
        }
        let done = self.sql.script(script).await?;
        if let Some(id) = done[0].first().and_then(|r| r.i64(0)) {
            return Ok(Registration::Created(id));
        }
        let existing = self
            .sql
            .query(
                "SELECT id, content_hash FROM simulations WHERE name = $1 AND version = $2",
                vec![spec.name.as_str().into(), spec.version.as_str().into()],
            )
            .await?;
        match existing.first() {
            Some(r) if r.text(1).as_deref() == Some(hash.as_str()) => {
                Ok(Registration::Unchanged(r.i64(0).unwrap_or_default()))
            }
            Some(_) => Err(StoreError::Conflict(format!(
                "simulation {} version {} is already registered with different content; register a new version",
                spec.name, spec.version
            ))),
            None => Err(StoreError::Database(
                "registration raced a deletion; retry".into(),
            )),
        }
    }

    pub async fn get_by_id(&self, id: i64) -> Result<Option<Simulation>> {
        let rows = self
            .sql
            .query(
                &format!("SELECT {SIM_COLUMNS} FROM simulations WHERE id = $1"),
                vec![id.into()],
            )
            .await?;
        rows.first().map(simulation_from_row).transpose()
    }

    /// One version, or the newest registered when `version` is `None`.
    pub async fn get(&self, name: &str, version: Option<&str>) -> Result<Option<Simulation>> {
        let rows = match version {
            Some(v) => {
                self.sql
                    .query(
                        &format!(
                            "SELECT {SIM_COLUMNS} FROM simulations WHERE name = $1 AND version = $2"
                        ),
                        vec![name.into(), v.into()],
                    )
                    .await?
            }
            None => {
                self.sql
                    .query(
                        &format!(
                            "SELECT {SIM_COLUMNS} FROM simulations WHERE name = $1
                             ORDER BY created_at_ms DESC, id DESC LIMIT 1"
                        ),
                        vec![name.into()],
                    )
                    .await?
            }
        };
        rows.first().map(simulation_from_row).transpose()
    }

    /// Every version of a simulation, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<Simulation>> {
        let rows = self
            .sql
            .query(
                &format!("SELECT {SIM_COLUMNS} FROM simulations WHERE name = $1 ORDER BY created_at_ms DESC, id DESC"),
                vec![name.into()],
            )
            .await?;
        rows.iter().map(simulation_from_row).collect()
    }

    /// Free text (any token, best matches first) and tags (all of them).
    pub async fn search(&self, q: &SearchQuery) -> Result<Vec<Simulation>> {
        let tokens = q.text.as_deref().map(tokenize).unwrap_or_default();
        let mut tags: Vec<String> = q.tags.iter().map(|t| t.to_lowercase()).collect();
        tags.sort();
        tags.dedup();
        let query = Query {
            tokens: &tokens,
            tags: &tags,
            status: q.status.as_deref(),
            offset: usize::try_from(q.offset.max(0)).unwrap_or(usize::MAX),
            limit: usize::try_from(q.limit.clamp(1, 1000)).unwrap_or(1000),
        };
        // Every search asks whether the catalog changed since this process's
        // snapshot (one small query), so a version registered through any
        // replica is found by the next search. The answer from the snapshot
        // is worked out meanwhile; it is the answer when nothing changed.
        let current = self.snapshot();
        let page = async {
            let ids = current.search(&query);
            self.by_ids(&ids).await
        };
        let (delta, page) = tokio::join!(self.delta_since(current.generation()), page);
        if current.is_current(&delta?) {
            return page;
        }
        let index = self.refreshed().await?;
        self.by_ids(&index.search(&query)).await
    }

    /// How many versions the search index holds and its estimated heap bytes.
    pub fn index_size(&self) -> (usize, usize) {
        let s = self.snapshot();
        (s.len(), s.heap_bytes())
    }

    /// The index brought up to the database, shared with every search from
    /// now on. One refresh at a time; each asks again for what changed since
    /// the latest snapshot, which another refresh may have moved on.
    async fn refreshed(&self) -> Result<Arc<SearchIndex>> {
        let _one_refresh = self.search.refresh.lock().await;
        let latest = self.snapshot();
        let delta = self.delta_since(latest.generation()).await?;
        if latest.is_current(&delta) {
            return Ok(latest);
        }
        let next = if latest.continued_by(&delta) {
            latest.apply(delta)
        } else {
            // Another database, or this one restored to an earlier state.
            tracing::info!("catalog database replaced or restored; rebuilding the search index");
            SearchIndex::empty().apply(self.delta_since(-1).await?)
        };
        let next = Arc::new(next);
        if let Ok(mut w) = self.search.current.write() {
            *w = next.clone();
        }
        Ok(next)
    }

    fn snapshot(&self) -> Arc<SearchIndex> {
        match self.search.current.read() {
            Ok(r) => r.clone(),
            // A panic while swapping an Arc leaves a valid Arc behind.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn delta_since(&self, since: i64) -> Result<Delta> {
        let rows = self.sql.query(DELTA_SQL, vec![since.into()]).await?;
        let mut delta = Delta {
            generation: since,
            ..Default::default()
        };
        for r in &rows {
            delta.generation = r.i64(0).unwrap_or(since);
            delta.instance = r.text(8).unwrap_or_default();
            let (Some(change), Some(id)) = (r.i64(1), r.i64(2)) else {
                continue; // the generation row alone: nothing changed
            };
            if r.i64(7) == Some(1) {
                delta.deletions.push((id, change));
                continue;
            }
            let tags: Vec<String> = r
                .json(6)
                .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.to_lowercase())
                .collect();
            delta.upserts.push((
                change,
                IndexRow {
                    id,
                    created_at_ms: r.i64(3).unwrap_or_default(),
                    status: r.text(4).unwrap_or_default(),
                    search_text: r.text(5).unwrap_or_default(),
                    tags,
                },
            ));
        }
        Ok(delta)
    }

    /// The rows of `ids`, in that order (one deleted since is left out).
    async fn by_ids(&self, ids: &[i64]) -> Result<Vec<Simulation>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The list is padded (with its last id) to a power of two, so that
        // a page of any size is one of eleven statements: each connection
        // keeps the statements it prepared.
        let slots = ids.len().next_power_of_two();
        let marks: Vec<String> = (1..=slots).map(|i| format!("${i}")).collect();
        let last = ids[ids.len() - 1];
        let params = (0..slots)
            .map(|i| ids.get(i).copied().unwrap_or(last).into())
            .collect();
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT {SIM_COLUMNS} FROM simulations WHERE id IN ({})",
                    marks.join(",")
                ),
                params,
            )
            .await?;
        let mut found: std::collections::HashMap<i64, Simulation> = rows
            .iter()
            .map(|r| simulation_from_row(r).map(|s| (s.id, s)))
            .collect::<Result<_>>()?;
        Ok(ids.iter().filter_map(|i| found.remove(i)).collect())
    }

    /// Sets a version's status (`active`, `deprecated`); false when unknown.
    /// Rewrites a version's editable fields (sim2l's `PATCH`): `spec` is the
    /// whole new description, read and changed by the caller. Its name,
    /// version and registration content hash stay. The search index of every
    /// process follows (the change bumps the catalog generation). False when
    /// there is no such id.
    pub async fn update(&self, id: i64, spec: &SimulationSpec, status: &str) -> Result<bool> {
        let tags = serde_json::to_string(&spec.tags)?;
        let mut script = vec![Stmt::new(
            "UPDATE simulations SET description = $2, tags = $3, input_schema = $4, output_schema = $5,
                workflow_type = $6, workflow_hash = $7, visibility = $8, metadata = $9, status = $10,
                search_text = $11, updated_at_ms = $12
             WHERE id = $1 RETURNING id",
            vec![
                id.into(),
                spec.description.clone().into(),
                tags.into(),
                spec.input_schema.to_string().into(),
                spec.output_schema.to_string().into(),
                spec.workflow_type.as_str().into(),
                spec.workflow_hash.clone().into(),
                spec.visibility.as_str().into(),
                spec.metadata.as_ref().map(Value::to_string).into(),
                status.into(),
                spec.search_text().into(),
                now_ms().into(),
            ],
        )];
        script.push(Stmt::new(
            "DELETE FROM simulation_tags WHERE simulation_id = $1",
            vec![id.into()],
        ));
        for t in &spec.tags {
            script.push(Stmt::new(
                "INSERT INTO simulation_tags (simulation_id, tag) SELECT id, $2 FROM simulations WHERE id = $1
                 ON CONFLICT DO NOTHING",
                vec![id.into(), t.to_lowercase().into()],
            ));
        }
        let done = self.sql.script(script).await?;
        Ok(!done[0].is_empty())
    }

    pub async fn set_status(&self, id: i64, status: &str) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "UPDATE simulations SET status = $2, updated_at_ms = $3 WHERE id = $1 RETURNING id",
                vec![id.into(), status.into(), now_ms().into()],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }

    /// Deletes a simulation and (by cascade) its executions; false when absent.
    pub async fn delete(&self, id: i64) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "DELETE FROM simulations WHERE id = $1 RETURNING id",
                vec![id.into()],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_matches_sim2l() {
        assert_eq!(
            tokenize("Thermal  a STRESS thermal x"),
            ["thermal", "stress"]
        );
        assert!(tokenize(" ").is_empty());
    }

    #[test]
    fn execution_and_cache_statuses_read_back_what_they_write() {
        for s in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            ExecutionStatus::parse("succeeded"),
            Some(ExecutionStatus::Completed)
        );
        assert_eq!(ExecutionStatus::parse("Completed"), None);
        for c in CacheOutcome::ALL {
            assert_eq!(CacheOutcome::parse(c.as_str()), Some(c));
        }
        assert_eq!(CacheOutcome::parse("hit"), None);
    }
}
