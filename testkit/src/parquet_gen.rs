//! Parquet files with known contents for the SOR function tests and
//! benchmarks: the test keeps the values, so every function's answer can be
//! checked against a computation over every row.

use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One column of a generated table. `None` is a null.
pub enum Column {
    Int64(String, Vec<Option<i64>>),
    Double(String, Vec<Option<f64>>),
    Text(String, Vec<Option<String>>),
}

impl Column {
    fn name(&self) -> &str {
        match self {
            Column::Int64(n, _) | Column::Double(n, _) | Column::Text(n, _) => n,
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Int64(_, v) => v.len(),
            Column::Double(_, v) => v.len(),
            Column::Text(_, v) => v.len(),
        }
    }
}

/// Writes `columns` (all optional, same length) as a snappy Parquet file
/// with row groups of `group_rows` rows.
pub fn write(columns: &[Column], group_rows: usize) -> Vec<u8> {
    let fields: Vec<String> = columns
        .iter()
        .map(|c| match c {
            Column::Int64(n, _) => format!("OPTIONAL INT64 {n};"),
            Column::Double(n, _) => format!("OPTIONAL DOUBLE {n};"),
            Column::Text(n, _) => format!("OPTIONAL BYTE_ARRAY {n} (UTF8);"),
        })
        .collect();
    let schema = Arc::new(
        parse_message_type(&format!("message schema {{ {} }}", fields.join(" "))).unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let rows = columns.first().map(Column::len).unwrap_or(0);
    assert!(
        columns.iter().all(|c| c.len() == rows),
        "columns differ in length"
    );
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    let mut start = 0;
    while start < rows || (rows == 0 && start == 0) {
        let end = (start + group_rows).min(rows);
        let mut rg = w.next_row_group().unwrap();
        for c in columns {
            let mut cw = rg
                .next_column()
                .unwrap()
                .unwrap_or_else(|| panic!("no column {}", c.name()));
            fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
                let defs = v.iter().map(|x| i16::from(x.is_some())).collect();
                (v.iter().flatten().cloned().collect(), defs)
            }
            match c {
                Column::Int64(_, v) => {
                    let (vals, defs) = split(&v[start..end]);
                    cw.typed::<Int64Type>()
                        .write_batch(&vals, Some(&defs), None)
                        .unwrap();
                }
                Column::Double(_, v) => {
                    let (vals, defs) = split(&v[start..end]);
                    cw.typed::<DoubleType>()
                        .write_batch(&vals, Some(&defs), None)
                        .unwrap();
                }
                Column::Text(_, v) => {
                    let (vals, defs) = split(&v[start..end]);
                    let vals: Vec<ByteArray> = vals
                        .into_iter()
                        .map(|s| ByteArray::from(s.as_str()))
                        .collect();
                    cw.typed::<ByteArrayType>()
                        .write_batch(&vals, Some(&defs), None)
                        .unwrap();
                }
            }
            cw.close().unwrap();
        }
        rg.close().unwrap();
        if rows == 0 {
            break;
        }
        start = end;
    }
    w.close().unwrap();
    out
}

/// A deterministic numeric table: `rows` rows of `id` (int64), `temperature`,
/// `stress`, `strain` (doubles, a few nulls in `strain`).
pub fn numeric_table(rows: usize) -> (Vec<u8>, Vec<Column>) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let id: Vec<Option<i64>> = (0..rows as i64).map(Some).collect();
    let temperature: Vec<Option<f64>> = (0..rows).map(|_| Some(250.0 + 100.0 * next())).collect();
    let stress: Vec<Option<f64>> = (0..rows).map(|_| Some(1e8 * next())).collect();
    let strain: Vec<Option<f64>> = (0..rows)
        .map(|i| {
            if i % 97 == 0 {
                None
            } else {
                Some(next() - 0.5)
            }
        })
        .collect();
    let cols = vec![
        Column::Int64("id".into(), id),
        Column::Double("temperature".into(), temperature),
        Column::Double("stress".into(), stress),
        Column::Double("strain".into(), strain),
    ];
    (write(&cols, 16_384), cols)
}
