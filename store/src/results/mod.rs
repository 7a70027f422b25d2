//! The results store: every finished run's inputs and outputs, typed and
//! indexed for search, with the declared parameter schemas and the run's files.

pub mod filter;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::clock::now_ms;
use crate::error::{Result, StoreError};
use crate::sql::{DbRow, Param, Sql, Stmt};
use filter::{ParamClass, ParamFilter, SqlBuilder};

/// A parameter's declared schema, as introspected from a run database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamDef {
    pub class: ParamClass,
    pub name: String,
    pub param_type: String,
    pub description: Option<String>,
    pub units: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub default: Option<Value>,
}

impl ParamDef {
    /// A numeric parameter with units and nothing else declared.
    pub fn number(class: ParamClass, name: &str, units: &str) -> ParamDef {
        ParamDef {
            class,
            name: name.into(),
            param_type: "number".into(),
            description: None,
            units: Some(units.into()),
            min: None,
            max: None,
            default: None,
        }
    }
}

impl Serialize for ParamClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultFile {
    pub name: String,
    pub size_bytes: i64,
    pub category: Option<String>,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
}

/// Everything registered about one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultRecord {
    pub execution_id: String,
    pub simulation_name: String,
    pub simulation_version: String,
    pub squid_id: Option<String>,
    pub inputs: BTreeMap<String, Value>,
    pub outputs: BTreeMap<String, Value>,
    pub definitions: Vec<ParamDef>,
    pub status: String,
    pub duration_seconds: Option<f64>,
    pub error_message: Option<String>,
    pub completed_at_ms: Option<i64>,
    pub run_db_path: Option<String>,
    pub metadata: Option<Value>,
    pub provenance: Option<Value>,
    pub files: Vec<ResultFile>,
}

/// How a registration treats an existing result for the same execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// Introspection: the run database is the truth; replace everything.
    Replace,
    /// sim2l's `register_direct`: inputs keep their first values; outputs,
    /// status, duration and completion time are updated.
    KeepInputs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredResult {
    pub id: i64,
    pub execution_id: String,
    pub simulation_name: String,
    pub simulation_version: String,
    pub squid_id: Option<String>,
    pub input_params: Value,
    pub output_params: Value,
    pub status: String,
    pub duration_seconds: Option<f64>,
    pub error_message: Option<String>,
    pub created_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    pub run_db_path: Option<String>,
    pub metadata: Option<Value>,
    pub provenance: Option<Value>,
    pub schema_id: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ResultQuery {
    pub simulation_name: Option<String>,
    pub simulation_version: Option<String>,
    pub status: Option<String>,
    pub filters: Vec<ParamFilter>,
    /// Sort by a parameter; `None` = newest first.
    pub sort: Option<(ParamClass, String)>,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamStats {
    pub param_name: String,
    pub param_type: String,
    pub count: i64,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    pub avg_value: Option<f64>,
    /// Sample standard deviation (n − 1).
    pub stddev: Option<f64>,
}

/// How a JSON value is stored in `result_params`: (type, number, string, bool).
pub fn typed_value(v: &Value) -> (&'static str, Option<f64>, Option<String>, Option<bool>) {
    match v {
        Value::Null => ("null", None, None, None),
        Value::Bool(b) => ("boolean", None, None, Some(*b)),
        Value::Number(n) if n.is_i64() || n.is_u64() => ("integer", n.as_f64(), None, None),
        Value::Number(n) => ("number", n.as_f64(), None, None),
        Value::String(s) => ("string", None, Some(s.clone()), None),
        Value::Array(_) => ("array", None, None, None),
        Value::Object(_) => ("object", None, None, None),
    }
}

/// `WHERE …` for a query's simulation, version, status and filters ("" for none).
fn where_clause(q: &ResultQuery, b: &mut SqlBuilder) -> String {
    let mut wheres: Vec<String> = Vec::new();
    if let Some(s) = &q.simulation_name {
        wheres.push(format!("r.simulation_name = {}", b.bind(s.as_str().into())));
    }
    if let Some(v) = &q.simulation_version {
        wheres.push(format!(
            "r.simulation_version = {}",
            b.bind(v.as_str().into())
        ));
    }
    if let Some(s) = &q.status {
        wheres.push(format!("r.status = {}", b.bind(s.as_str().into())));
    }
    for f in &q.filters {
        wheres.push(b.filter_condition(f, q.simulation_name.as_deref()));
    }
    if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    }
}

const RESULT_COLUMNS: &str = "r.id, r.execution_id, r.simulation_name, r.simulation_version, r.squid_id, \
    r.input_params, r.output_params, r.status, r.duration_seconds, r.error_message, r.created_at_ms, \
    r.completed_at_ms, r.run_db_path, r.metadata, r.provenance, r.schema_id";

fn result_from_row(r: &DbRow) -> StoredResult {
    StoredResult {
        id: r.i64(0).unwrap_or_default(),
        execution_id: r.text(1).unwrap_or_default(),
        simulation_name: r.text(2).unwrap_or_default(),
        simulation_version: r.text(3).unwrap_or_default(),
        squid_id: r.text(4),
        input_params: r.json(5).unwrap_or(Value::Null),
        output_params: r.json(6).unwrap_or(Value::Null),
        status: r.text(7).unwrap_or_default(),
        duration_seconds: r.f64(8),
        error_message: r.text(9),
        created_at_ms: r.i64(10).unwrap_or_default(),
        completed_at_ms: r.i64(11),
        run_db_path: r.text(12),
        metadata: r.json(13),
        provenance: r.json(14),
        schema_id: r.i64(15),
    }
}

/// Rows per multi-row INSERT of parameters.
const PARAM_ROWS: usize = 100;

#[derive(Clone)]
pub struct ResultsStore {
    sql: Sql,
}

impl ResultsStore {
    pub fn new(sql: Sql) -> Self {
        ResultsStore { sql }
    }

    /// Registers (or re-registers) a run's result; returns (result id, schema id).
    pub async fn register(&self, rec: &ResultRecord, mode: Upsert) -> Result<(i64, i64)> {
        if rec.execution_id.is_empty()
            || rec.simulation_name.is_empty()
            || rec.simulation_version.is_empty()
        {
            return Err(StoreError::Conflict(
                "execution_id, simulation_name and simulation_version are required".into(),
            ));
        }
        let now = now_ms();
        // One transaction: the schema (statement 0), its parameters, the
        // result, its typed values and its files.
        let mut script = schema_statements(rec, now);
        let schema = Param::Returned { stmt: 0, col: 0 };
        script.push(result_statement(rec, mode, schema, now));
        let result_stmt = script.len() - 1;
        let result = Param::Returned {
            stmt: result_stmt,
            col: 0,
        };
        script.extend(value_statements(rec, mode, &result));
        if mode == Upsert::Replace {
            script.extend(file_statements(rec, &result));
        }
        let done = self.sql.script(script).await?;
        let id = |i: usize| done[i].first().and_then(|r| r.i64(0)).unwrap_or_default();
        Ok((id(result_stmt), id(0)))
    }

    /// Records why a registration failed (kept for operators to inspect).
    pub async fn record_error(
        &self,
        execution_id: &str,
        error_type: &str,
        message: &str,
    ) -> Result<()> {
        self.sql
            .script(vec![Stmt::new(
                "INSERT INTO result_errors (execution_id, error_type, error_message, created_at_ms) VALUES ($1, $2, $3, $4)",
                vec![execution_id.into(), error_type.into(), message.into(), now_ms().into()],
            )])
            .await
            .map(|_| ())
    }

    pub async fn get(&self, execution_id: &str) -> Result<Option<StoredResult>> {
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT {RESULT_COLUMNS} FROM execution_results r WHERE r.execution_id = $1"
                ),
                vec![execution_id.into()],
            )
            .await?;
        Ok(rows.first().map(result_from_row))
    }

    pub async fn delete(&self, execution_id: &str) -> Result<bool> {
        let done = self
            .sql
            .script(vec![
                Stmt::new(
                    "DELETE FROM result_errors WHERE execution_id = $1",
                    vec![execution_id.into()],
                ),
                Stmt::new(
                    "DELETE FROM execution_results WHERE execution_id = $1 RETURNING id",
                    vec![execution_id.into()],
                ),
            ])
            .await?;
        Ok(!done[1].is_empty())
    }

    pub async fn delete_all(&self) -> Result<i64> {
        let done = self
            .sql
            .script(vec![
                Stmt::new("DELETE FROM result_errors", vec![]),
                Stmt::new("DELETE FROM execution_results RETURNING id", vec![]),
            ])
            .await?;
        Ok(done[1].len() as i64)
    }

    /// Declared parameter types of a simulation (all versions), by class.
    pub async fn declared_types(
        &self,
        simulation: &str,
        class: ParamClass,
    ) -> Result<Option<BTreeMap<String, String>>> {
        let rows = self
            .sql
            .query(
                "SELECT d.param_name, d.param_type FROM parameter_definitions d
                 JOIN simulation_schemas s ON s.id = d.schema_id
                 WHERE s.tool_name = $1 AND d.classification = $2",
                vec![simulation.into(), class.as_str().into()],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .filter_map(|r| Some((r.text(0)?, r.text(1)?)))
                .collect(),
        ))
    }

    pub async fn definitions(&self, simulation: &str, version: &str) -> Result<Vec<ParamDef>> {
        let rows = self
            .sql
            .query(
                "SELECT d.classification, d.param_name, d.param_type, d.description, d.units, d.min_value,
                    d.max_value, d.default_value
                 FROM parameter_definitions d JOIN simulation_schemas s ON s.id = d.schema_id
                 WHERE s.tool_name = $1 AND s.tool_version = $2 ORDER BY d.classification, d.param_name",
                vec![simulation.into(), version.into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ParamDef {
                class: ParamClass::parse(&r.text(0).unwrap_or_default())
                    .unwrap_or(ParamClass::Input),
                name: r.text(1).unwrap_or_default(),
                param_type: r.text(2).unwrap_or_default(),
                description: r.text(3),
                units: r.text(4),
                min: r.f64(5),
                max: r.f64(6),
                default: r.json(7),
            })
            .collect())
    }

    pub async fn search(&self, q: &ResultQuery) -> Result<Vec<StoredResult>> {
        let mut b = SqlBuilder::default();
        let mut join = String::new();
        let mut order = "r.created_at_ms DESC, r.id DESC".to_string();
        if let Some((class, name)) = &q.sort {
            let c = b.bind(class.as_str().into());
            let n = b.bind(name.as_str().into());
            join = format!(
                "LEFT JOIN result_params s ON s.result_id = r.id AND s.class = {c} AND s.name = {n}"
            );
            let dir = if q.descending { "DESC" } else { "ASC" };
            order =
                format!("s.num_value {dir} NULLS LAST, s.str_value {dir} NULLS LAST, r.id {dir}");
        }
        let where_sql = where_clause(q, &mut b);
        let limit = b.bind(q.limit.clamp(1, 1000).into());
        let offset = b.bind(q.offset.max(0).into());
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM execution_results r {join} {where_sql} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
        );
        let rows = self.sql.query(&sql, b.params).await?;
        Ok(rows.iter().map(result_from_row).collect())
    }

    /// How many results match the query's filters (its page ignored).
    pub async fn count(&self, q: &ResultQuery) -> Result<i64> {
        let mut b = SqlBuilder::default();
        let where_sql = where_clause(q, &mut b);
        let rows = self
            .sql
            .query(
                &format!("SELECT COUNT(*) FROM execution_results r {where_sql}"),
                b.params,
            )
            .await?;
        Ok(rows.first().and_then(|r| r.i64(0)).unwrap_or(0))
    }

    /// Up to `limit` (x, y, colour) triples of numeric parameters over the
    /// results matching the query's filters, for plots: one indexed join per
    /// axis instead of every result's JSON.
    pub async fn plot_points(
        &self,
        q: &ResultQuery,
        x: (ParamClass, &str),
        y: (ParamClass, &str),
        colour: Option<(ParamClass, &str)>,
        limit: i64,
    ) -> Result<Vec<(f64, f64, Option<f64>)>> {
        let mut b = SqlBuilder::default();
        let join = |b: &mut SqlBuilder,
                    alias: &str,
                    (class, name): (ParamClass, &str),
                    kind: &str| {
            format!(
                "{kind} JOIN result_params {alias} ON {alias}.result_id = r.id AND {alias}.class = {} AND {alias}.name = {}",
                b.bind(class.as_str().into()),
                b.bind(name.into())
            )
        };
        let mut joins = vec![join(&mut b, "px", x, ""), join(&mut b, "py", y, "")];
        let c = match colour {
            Some(c) => {
                joins.push(join(&mut b, "pc", c, "LEFT"));
                "pc.num_value"
            }
            None => "NULL",
        };
        let where_sql = where_clause(q, &mut b);
        let limit = b.bind(limit.clamp(1, 100_000).into());
        let sql = format!(
            "SELECT CAST(px.num_value AS DOUBLE PRECISION), CAST(py.num_value AS DOUBLE PRECISION), CAST({c} AS DOUBLE PRECISION)
             FROM execution_results r {} {where_sql} AND px.num_value IS NOT NULL AND py.num_value IS NOT NULL
             ORDER BY r.id LIMIT {limit}",
            joins.join(" ")
        );
        let sql = if where_sql.is_empty() {
            sql.replacen(" AND px.num_value", " WHERE px.num_value", 1)
        } else {
            sql
        };
        let rows = self.sql.query(&sql, b.params).await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.f64(0)?, r.f64(1)?, r.f64(2))))
            .collect())
    }

    /// count, min, max, mean and sample standard deviation of a numeric parameter.
    pub async fn parameter_stats(
        &self,
        simulation: &str,
        param: &str,
        class: ParamClass,
    ) -> Result<ParamStats> {
        let rows = self
            .sql
            .query(
                "SELECT COUNT(num_value), CAST(MIN(num_value) AS DOUBLE PRECISION),
                    CAST(MAX(num_value) AS DOUBLE PRECISION), CAST(AVG(num_value) AS DOUBLE PRECISION),
                    CAST(SUM(num_value * num_value) AS DOUBLE PRECISION), MAX(value_type)
                 FROM result_params WHERE simulation_name = $1 AND class = $2 AND name = $3",
                vec![simulation.into(), class.as_str().into(), param.into()],
            )
            .await?;
        let r = rows.first().cloned().unwrap_or(DbRow(vec![]));
        let n = r.i64(0).unwrap_or(0);
        let avg = r.f64(3);
        let stddev = match (n, avg, r.f64(4)) {
            (n, Some(mean), Some(sum_sq)) if n > 1 => {
                let var = (sum_sq - n as f64 * mean * mean) / (n as f64 - 1.0);
                Some(var.max(0.0).sqrt())
            }
            (1, Some(_), _) => Some(0.0),
            _ => None,
        };
        Ok(ParamStats {
            param_name: param.to_string(),
            param_type: if n > 0 {
                "number".into()
            } else {
                r.text(5).unwrap_or_else(|| "number".into())
            },
            count: n,
            min_value: r.f64(1),
            max_value: r.f64(2),
            avg_value: avg,
            stddev,
        })
    }

    /// The files recorded for a run (from its run database at registration).
    pub async fn files(&self, execution_id: &str) -> Result<Vec<ResultFile>> {
        let rows = self
            .sql
            .query(
                "SELECT f.name, f.size_bytes, f.category, f.content_type, f.sha256 FROM result_files f
                 JOIN execution_results r ON r.id = f.result_id WHERE r.execution_id = $1 ORDER BY f.name",
                vec![execution_id.into()],
            )
            .await?;
        Ok(rows.iter().map(file_from_row).collect())
    }

    /// Every file of every run of a simulation version: (execution id, file).
    pub async fn simulation_files(
        &self,
        simulation: &str,
        version: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<(String, ResultFile)>> {
        let rows = self
            .sql
            .query(
                "SELECT f.name, f.size_bytes, f.category, f.content_type, f.sha256, r.execution_id
                 FROM result_files f JOIN execution_results r ON r.id = f.result_id
                 WHERE r.simulation_name = $1 AND r.simulation_version = $2
                 ORDER BY r.execution_id, f.name LIMIT $3 OFFSET $4",
                vec![
                    simulation.into(),
                    version.into(),
                    limit.clamp(1, 10_000).into(),
                    offset.max(0).into(),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.text(5).unwrap_or_default(), file_from_row(r)))
            .collect())
    }
}

fn file_from_row(r: &DbRow) -> ResultFile {
    ResultFile {
        name: r.text(0).unwrap_or_default(),
        size_bytes: r.i64(1).unwrap_or(0),
        category: r.text(2),
        content_type: r.text(3),
        sha256: r.text(4),
    }
}

/// The simulation's schema (first, returning its id) and its parameter
/// definitions.
fn schema_statements(rec: &ResultRecord, now: i64) -> Vec<Stmt> {
    let schema_doc = serde_json::json!({
        "input": rec.definitions.iter().filter(|d| d.class == ParamClass::Input).map(|d| (d.name.clone(), serde_json::json!({"type": d.param_type, "units": d.units, "description": d.description, "min": d.min, "max": d.max, "default": d.default}))).collect::<serde_json::Map<_, _>>(),
        "output": rec.definitions.iter().filter(|d| d.class == ParamClass::Output).map(|d| (d.name.clone(), serde_json::json!({"type": d.param_type, "units": d.units, "description": d.description, "min": d.min, "max": d.max}))).collect::<serde_json::Map<_, _>>(),
    });
    let mut script = vec![Stmt::new(
        "INSERT INTO simulation_schemas (tool_name, tool_version, schema_data, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (tool_name, tool_version) DO UPDATE SET updated_at_ms = excluded.updated_at_ms
         RETURNING id",
        vec![
            rec.simulation_name.as_str().into(),
            rec.simulation_version.as_str().into(),
            schema_doc.to_string().into(),
            now.into(),
        ],
    )];
    let schema = Param::Returned { stmt: 0, col: 0 };
    for d in &rec.definitions {
        script.push(Stmt::new(
            "INSERT INTO parameter_definitions (schema_id, classification, param_name, param_type,
                description, units, min_value, max_value, default_value)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (schema_id, classification, param_name) DO UPDATE SET
                param_type = excluded.param_type, description = excluded.description,
                units = excluded.units, min_value = excluded.min_value,
                max_value = excluded.max_value, default_value = excluded.default_value",
            vec![
                schema.clone(),
                d.class.as_str().into(),
                d.name.as_str().into(),
                d.param_type.as_str().into(),
                d.description.clone().into(),
                d.units.clone().into(),
                d.min.into(),
                d.max.into(),
                d.default.as_ref().map(Value::to_string).into(),
            ],
        ));
    }
    script
}

/// The result row (returning its id), inserted or updated as `mode` says.
fn result_statement(rec: &ResultRecord, mode: Upsert, schema: Param, now: i64) -> Stmt {
    let squid = rec
        .squid_id
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                rec.simulation_name, rec.simulation_version, rec.execution_id
            )
        });
    let on_conflict = match mode {
        Upsert::Replace => {
            "simulation_name = excluded.simulation_name, simulation_version = excluded.simulation_version,
             schema_id = excluded.schema_id, squid_id = excluded.squid_id,
             input_params = excluded.input_params, output_params = excluded.output_params,
             status = excluded.status, duration_seconds = excluded.duration_seconds,
             error_message = excluded.error_message, completed_at_ms = excluded.completed_at_ms,
             run_db_path = excluded.run_db_path, metadata = excluded.metadata,
             provenance = excluded.provenance"
        }
        Upsert::KeepInputs => {
            "output_params = excluded.output_params, status = excluded.status,
             duration_seconds = excluded.duration_seconds, completed_at_ms = excluded.completed_at_ms"
        }
    };
    let inputs = Value::Object(rec.inputs.clone().into_iter().collect());
    let outputs = Value::Object(rec.outputs.clone().into_iter().collect());
    Stmt::new(
        format!(
            "INSERT INTO execution_results (execution_id, simulation_name, simulation_version, schema_id,
                squid_id, input_params, output_params, status, duration_seconds, error_message,
                created_at_ms, completed_at_ms, run_db_path, metadata, provenance)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (execution_id) DO UPDATE SET {on_conflict}
             RETURNING id"
        ),
        vec![
            rec.execution_id.as_str().into(),
            rec.simulation_name.as_str().into(),
            rec.simulation_version.as_str().into(),
            schema,
            squid.into(),
            inputs.to_string().into(),
            outputs.to_string().into(),
            rec.status.as_str().into(),
            rec.duration_seconds.into(),
            rec.error_message.clone().into(),
            now.into(),
            rec.completed_at_ms.into(),
            rec.run_db_path.clone().into(),
            rec.metadata.as_ref().map(Value::to_string).into(),
            rec.provenance.as_ref().map(Value::to_string).into(),
        ],
    )
}

/// The result's typed values (replacing the old ones, or with KeepInputs
/// only the outputs), many rows per statement.
fn value_statements(rec: &ResultRecord, mode: Upsert, result: &Param) -> Vec<Stmt> {
    let mut script = Vec::new();
    let replaced = match mode {
        Upsert::Replace => "DELETE FROM result_params WHERE result_id = $1",
        Upsert::KeepInputs => "DELETE FROM result_params WHERE result_id = $1 AND class = 'output'",
    };
    script.push(Stmt::new(replaced, vec![result.clone()]));
    let rows: Vec<(ParamClass, &String, &Value)> = rec
        .inputs
        .iter()
        .map(|(k, v)| (ParamClass::Input, k, v))
        .chain(rec.outputs.iter().map(|(k, v)| (ParamClass::Output, k, v)))
        .collect();
    for chunk in rows.chunks(PARAM_ROWS) {
        let mut sql = String::from(
            "INSERT INTO result_params (result_id, simulation_name, class, name, value_type, num_value, str_value, bool_value) VALUES ",
        );
        let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * 8);
        for (i, (class, name, v)) in chunk.iter().enumerate() {
            let (t, num, s, b) = typed_value(v);
            let base = params.len();
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5,
                base + 6,
                base + 7,
                base + 8
            ));
            params.extend([
                result.clone(),
                rec.simulation_name.as_str().into(),
                class.as_str().into(),
                name.as_str().into(),
                t.into(),
                num.into(),
                s.into(),
                b.into(),
            ]);
        }
        // With KeepInputs the first input values stay.
        sql.push_str(" ON CONFLICT (result_id, class, name) DO NOTHING");
        script.push(Stmt::new(sql, params));
    }
    script
}

/// The result's files, replacing the old list.
fn file_statements(rec: &ResultRecord, result: &Param) -> Vec<Stmt> {
    let mut script = Vec::new();
    script.push(Stmt::new(
        "DELETE FROM result_files WHERE result_id = $1",
        vec![result.clone()],
    ));
    for f in &rec.files {
        script.push(Stmt::new(
            "INSERT INTO result_files (result_id, name, size_bytes, category, content_type, sha256)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                result.clone(),
                f.name.as_str().into(),
                f.size_bytes.into(),
                f.category.clone().into(),
                f.content_type.clone().into(),
                f.sha256.clone().into(),
            ],
        ));
    }
    script
}
