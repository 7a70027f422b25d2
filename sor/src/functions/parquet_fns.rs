//! Parquet functions. The footer-only ones (`schema`, `row_count`,
//! `column_stats`, `info`) never decode a data page; `head` and `describe`
//! do, after their memory need is estimated from the footer.

use std::sync::Arc;

use parquet::basic::Type as Physical;
use parquet::column::reader::ColumnReader;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

use super::Builtin;
use super::runner::{Bounds, FnError, Input};

const BATCH: usize = 8192;

/// Where parsed footers are kept between calls (the memory tier).
pub trait Footers: Send + Sync {
    fn get(&self) -> Option<Arc<ParquetMetaData>>;
    fn put(&self, md: Arc<ParquetMetaData>);
}

/// No footer cache (tests, one-off calls).
pub struct NoFooters;

impl Footers for NoFooters {
    fn get(&self) -> Option<Arc<ParquetMetaData>> {
        None
    }
    fn put(&self, _: Arc<ParquetMetaData>) {}
}

/// True for the functions that read nothing but the footer.
pub fn footer_only(f: Builtin) -> bool {
    matches!(
        f,
        Builtin::ParquetSchema
            | Builtin::ParquetRowCount
            | Builtin::ParquetColumnStats
            | Builtin::ParquetInfo
    )
}

pub fn run(
    f: Builtin,
    columns: Option<&[String]>,
    n: usize,
    input: Input,
    b: &Bounds,
    footers: &dyn Footers,
) -> Result<Value, FnError> {
    if footer_only(f) {
        let md = match footers.get() {
            Some(md) => md,
            None => {
                let md = Arc::new(match &input {
                    Input::Bytes(bytes) => read_footer(bytes)?,
                    Input::File(file) => read_footer(file)?,
                });
                footers.put(md.clone());
                md
            }
        };
        return from_footer(f, columns, &md);
    }
    match input {
        Input::Bytes(bytes) => run_on(f, columns, n, bytes, b),
        Input::File(file) => run_on(f, columns, n, file, b),
    }
}

fn read_footer<R: ChunkReader>(r: &R) -> Result<ParquetMetaData, FnError> {
    parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(r)
        .map_err(|e| {
            FnError::NotApplicable(format!("the object is not a readable Parquet file: {e}"))
        })
}

fn from_footer(
    f: Builtin,
    columns: Option<&[String]>,
    md: &ParquetMetaData,
) -> Result<Value, FnError> {
    let chosen = choose(md, columns)?;
    match f {
        Builtin::ParquetSchema => Ok(schema(md)),
        Builtin::ParquetRowCount => Ok(json!({
            "rows": md.file_metadata().num_rows(),
            "row_groups": md.num_row_groups(),
        })),
        Builtin::ParquetColumnStats => Ok(column_stats(md, &chosen)),
        Builtin::ParquetInfo => Ok(info(md)),
        other => Err(FnError::NotApplicable(format!(
            "{} reads more than the footer",
            other.name()
        ))),
    }
}

fn open<R: ChunkReader + 'static>(r: R) -> Result<SerializedFileReader<R>, FnError> {
    SerializedFileReader::new(r).map_err(|e| {
        FnError::NotApplicable(format!("the object is not a readable Parquet file: {e}"))
    })
}

fn run_on<R: ChunkReader + 'static>(
    f: Builtin,
    columns: Option<&[String]>,
    n: usize,
    r: R,
    b: &Bounds,
) -> Result<Value, FnError> {
    let reader = open(r)?;
    let md = reader.metadata();
    let chosen = choose(md, columns)?;
    match f {
        Builtin::ParquetHead => head(&reader, &chosen, n, b),
        Builtin::ParquetDescribe => describe(&reader, &chosen, b),
        other => Err(FnError::NotApplicable(format!(
            "{} is not a Parquet function",
            other.name()
        ))),
    }
}

fn parse_err(e: parquet::errors::ParquetError) -> FnError {
    FnError::NotApplicable(format!("reading the Parquet data failed: {e}"))
}

/// Leaf column indexes of the chosen top-level columns (all when none named).
fn choose(md: &ParquetMetaData, columns: Option<&[String]>) -> Result<Vec<usize>, FnError> {
    let descr = md.file_metadata().schema_descr();
    let top = |i: usize| descr.column(i).path().parts()[0].clone();
    let Some(names) = columns else {
        return Ok((0..descr.num_columns()).collect());
    };
    let mut out = Vec::new();
    for name in names {
        let found: Vec<usize> = (0..descr.num_columns())
            .filter(|&i| top(i) == *name)
            .collect();
        if found.is_empty() {
            let all: Vec<String> = (0..descr.num_columns()).map(top).collect();
            return Err(FnError::NotApplicable(format!(
                "no column {name:?} (columns: {})",
                all.join(", ")
            )));
        }
        out.extend(found);
    }
    Ok(out)
}

fn col_name(md: &ParquetMetaData, i: usize) -> String {
    md.file_metadata().schema_descr().column(i).path().string()
}

fn schema(md: &ParquetMetaData) -> Value {
    let descr = md.file_metadata().schema_descr();
    let cols: Vec<Value> = (0..descr.num_columns())
        .map(|i| {
            let c = descr.column(i);
            json!({
                "name": c.path().string(),
                "physical_type": c.physical_type().to_string(),
                "logical_type": c.logical_type_ref().map(|l| format!("{l:?}")),
                "nullable": c.max_def_level() > 0,
                "dtype": dtype(md, i),
            })
        })
        .collect();
    json!({ "columns": cols, "created_by": md.file_metadata().created_by() })
}

/// The pandas dtype a reader would give the column.
fn dtype(md: &ParquetMetaData, i: usize) -> &'static str {
    use parquet::basic::LogicalType as L;
    let c = md.file_metadata().schema_descr().column(i);
    match (c.physical_type(), c.logical_type_ref()) {
        (_, Some(L::Timestamp { .. })) => "datetime64[ns]",
        (_, Some(L::String)) => "object",
        (Physical::BOOLEAN, _) => "bool",
        (Physical::INT32, _) => "int32",
        (Physical::INT64, _) => "int64",
        (Physical::FLOAT, _) => "float32",
        (Physical::DOUBLE, _) => "float64",
        _ => "object",
    }
}

fn stat_values(s: &Statistics) -> (Value, Value) {
    fn pair<T: Into<Value> + Clone>(min: Option<&T>, max: Option<&T>) -> (Value, Value) {
        (
            min.cloned().map(Into::into).unwrap_or(Value::Null),
            max.cloned().map(Into::into).unwrap_or(Value::Null),
        )
    }
    let text = |b: Option<&[u8]>| {
        b.map(|b| match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(hex::encode(b)),
        })
        .unwrap_or(Value::Null)
    };
    match s {
        Statistics::Boolean(v) => pair(v.min_opt(), v.max_opt()),
        Statistics::Int32(v) => pair(v.min_opt(), v.max_opt()),
        Statistics::Int64(v) => pair(v.min_opt(), v.max_opt()),
        Statistics::Float(v) => pair(v.min_opt(), v.max_opt()),
        Statistics::Double(v) => pair(v.min_opt(), v.max_opt()),
        other => (text(other.min_bytes_opt()), text(other.max_bytes_opt())),
    }
}

fn cmp_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64(), a.as_str(), b.as_str()) {
        (Some(x), Some(y), _, _) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        (_, _, Some(x), Some(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

fn column_stats(md: &ParquetMetaData, chosen: &[usize]) -> Value {
    let mut columns = Map::new();
    for &c in chosen {
        let mut groups = Vec::new();
        let (mut min, mut max) = (Value::Null, Value::Null);
        let mut nulls: Option<u64> = Some(0);
        let (mut compressed, mut uncompressed, mut values) = (0i64, 0i64, 0i64);
        for g in 0..md.num_row_groups() {
            let cc = md.row_group(g).column(c);
            compressed += cc.compressed_size();
            uncompressed += cc.uncompressed_size();
            values += cc.num_values();
            let (gmin, gmax, gnull, gdistinct) = match cc.statistics() {
                Some(s) => {
                    let (lo, hi) = stat_values(s);
                    (lo, hi, s.null_count_opt(), s.distinct_count_opt())
                }
                None => (Value::Null, Value::Null, None, None),
            };
            if !gmin.is_null() && (min.is_null() || cmp_json(&gmin, &min).is_lt()) {
                min = gmin.clone();
            }
            if !gmax.is_null() && (max.is_null() || cmp_json(&gmax, &max).is_gt()) {
                max = gmax.clone();
            }
            nulls = match (nulls, gnull) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            groups.push(json!({
                "row_group": g,
                "rows": md.row_group(g).num_rows(),
                "min": gmin, "max": gmax,
                "null_count": gnull, "distinct_count": gdistinct,
                "compressed_bytes": cc.compressed_size(),
                "uncompressed_bytes": cc.uncompressed_size(),
            }));
        }
        // Distinct counts of row groups do not add up; one group's is the file's.
        let distinct = if md.num_row_groups() == 1 {
            groups[0]["distinct_count"].clone()
        } else {
            Value::Null
        };
        columns.insert(
            col_name(md, c),
            json!({
                "min": min, "max": max, "null_count": nulls, "distinct_count": distinct,
                "values": values,
                "compressed_bytes": compressed, "uncompressed_bytes": uncompressed,
                "row_groups": groups,
            }),
        );
    }
    json!({ "rows": md.file_metadata().num_rows(), "columns": columns })
}

fn info(md: &ParquetMetaData) -> Value {
    let rows = md.file_metadata().num_rows();
    let descr = md.file_metadata().schema_descr();
    let mut lines = vec![
        "<class 'pandas.core.frame.DataFrame'>".to_string(),
        format!("RangeIndex: {rows} entries, 0 to {}", (rows - 1).max(0)),
        format!("Data columns (total {} columns):", descr.num_columns()),
    ];
    let names: Vec<String> = (0..descr.num_columns()).map(|i| col_name(md, i)).collect();
    let w = names.iter().map(String::len).max().unwrap_or(6).max(6);
    lines.push(format!(" #   {:<w$}  Non-Null Count  Dtype  ", "Column"));
    lines.push(format!(
        "---  {:<w$}  --------------  -----  ",
        "-".repeat(6)
    ));
    let mut cols = Vec::new();
    let mut dtypes: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut mem = 0i64;
    for (i, name) in names.iter().enumerate() {
        let nulls: Option<i64> = (0..md.num_row_groups())
            .map(|g| {
                md.row_group(g)
                    .column(i)
                    .statistics()
                    .and_then(Statistics::null_count_opt)
                    .map(|n| n as i64)
            })
            .sum();
        let non_null = nulls.map(|n| rows - n);
        let dt = dtype(md, i);
        *dtypes.entry(dt).or_default() += 1;
        mem += rows * 8;
        let count = non_null
            .map(|n| format!("{n} non-null"))
            .unwrap_or_else(|| "unknown".into());
        lines.push(format!(" {i:<3} {name:<w$}  {count:<14}  {dt:<7}"));
        cols.push(json!({"column": name, "non_null": non_null, "dtype": dt}));
    }
    lines.push(format!(
        "dtypes: {}",
        dtypes
            .iter()
            .map(|(d, n)| format!("{d}({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    lines.push(format!("memory usage: {:.1}+ KB", mem as f64 / 1024.0));
    json!({ "rows": rows, "columns": cols, "text": lines.join("\n") })
}

/// Bytes the chosen columns take decoded in the largest row group.
fn largest_group(md: &ParquetMetaData, chosen: &[usize]) -> u64 {
    (0..md.num_row_groups())
        .map(|g| {
            chosen
                .iter()
                .map(|&c| md.row_group(g).column(c).uncompressed_size().max(0) as u64)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

fn head<R: ChunkReader + 'static>(
    reader: &SerializedFileReader<R>,
    chosen: &[usize],
    n: usize,
    b: &Bounds,
) -> Result<Value, FnError> {
    let md = reader.metadata();
    b.check_memory(
        largest_group(md, chosen) * 2,
        "reading rows of these columns",
    )?;
    let schema = md.file_metadata().schema();
    let wanted: std::collections::BTreeSet<String> = chosen
        .iter()
        .map(|&c| md.file_metadata().schema_descr().column(c).path().parts()[0].clone())
        .collect();
    let fields: Vec<_> = schema
        .get_fields()
        .iter()
        .filter(|f| wanted.contains(f.name()))
        .cloned()
        .collect();
    let projection = parquet::schema::types::Type::group_type_builder(schema.name())
        .with_fields(fields)
        .build()
        .map_err(parse_err)?;
    let mut rows = Vec::with_capacity(n.min(1000));
    let iter = reader.get_row_iter(Some(projection)).map_err(parse_err)?;
    for (i, row) in iter.take(n).enumerate() {
        if i % 256 == 0 {
            b.check_deadline()?;
        }
        rows.push(row.map_err(parse_err)?.to_json_value());
    }
    Ok(json!({ "rows": rows, "count": rows.len() }))
}

fn describe<R: ChunkReader + 'static>(
    reader: &SerializedFileReader<R>,
    chosen: &[usize],
    b: &Bounds,
) -> Result<Value, FnError> {
    let md = reader.metadata();
    let descr = md.file_metadata().schema_descr();
    let numeric: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|&c| {
            let d = descr.column(c);
            d.max_rep_level() == 0
                && matches!(
                    d.physical_type(),
                    Physical::INT32 | Physical::INT64 | Physical::FLOAT | Physical::DOUBLE
                )
                && !matches!(dtype(md, c), "datetime64[ns]")
        })
        .collect();
    let rows = md.file_metadata().num_rows().max(0) as u64;
    // Quartiles need every value: 8 bytes per value per column, plus one
    // decoded row group.
    b.check_memory(
        rows * 8 * numeric.len() as u64 + largest_group(md, &numeric),
        "describing these columns",
    )?;
    let mut out = Map::new();
    for &c in &numeric {
        let mut values: Vec<f64> = Vec::with_capacity(rows as usize);
        for g in 0..reader.num_row_groups() {
            b.check_deadline()?;
            let rg = reader.get_row_group(g).map_err(parse_err)?;
            let col = rg.get_column_reader(c).map_err(parse_err)?;
            read_numeric(col, &mut values, b)?;
        }
        out.insert(col_name(md, c), summarise(&mut values));
    }
    Ok(json!({ "columns": out }))
}

fn read_numeric(col: ColumnReader, out: &mut Vec<f64>, b: &Bounds) -> Result<(), FnError> {
    macro_rules! drain {
        ($r:expr, $t:ty) => {{
            let mut r = $r;
            let mut buf: Vec<$t> = Vec::with_capacity(BATCH);
            let mut defs: Vec<i16> = Vec::with_capacity(BATCH);
            loop {
                b.check_deadline()?;
                buf.clear();
                defs.clear();
                let (records, _, _) = r
                    .read_records(BATCH, Some(&mut defs), None, &mut buf)
                    .map_err(parse_err)?;
                out.extend(buf.iter().map(|v| *v as f64));
                if records == 0 {
                    break;
                }
            }
        }};
    }
    match col {
        ColumnReader::Int32ColumnReader(r) => drain!(r, i32),
        ColumnReader::Int64ColumnReader(r) => drain!(r, i64),
        ColumnReader::FloatColumnReader(r) => drain!(r, f32),
        ColumnReader::DoubleColumnReader(r) => drain!(r, f64),
        _ => {}
    }
    Ok(())
}

/// pandas `describe()`: sample std (ddof 1), quartiles by linear interpolation.
pub fn summarise(v: &mut [f64]) -> Value {
    let n = v.len();
    if n == 0 {
        return json!({"count": 0, "mean": null, "std": null, "min": null, "25%": null, "50%": null, "75%": null, "max": null});
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (n - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    json!({
        "count": n, "mean": num(mean), "std": num(std), "min": num(v[0]),
        "25%": num(q(0.25)), "50%": num(q(0.5)), "75%": num(q(0.75)), "max": num(v[n - 1]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_matches_pandas_conventions() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        let s = summarise(&mut v);
        assert_eq!(s["count"], 4);
        assert_eq!(s["mean"], 2.5);
        assert_eq!(s["25%"], 1.75);
        assert_eq!(s["50%"], 2.5);
        assert_eq!(s["75%"], 3.25);
        let std = s["std"].as_f64().unwrap();
        assert!((std - 1.2909944487358056).abs() < 1e-12);
        assert_eq!(summarise(&mut [])["count"], 0);
        assert!(summarise(&mut [1.0])["std"].is_null());
    }
}
