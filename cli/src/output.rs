//! Printing rows: an aligned table for people (units in the headers,
//! numbers to a sensible precision), or JSON, YAML or CSV for scripts
//! (full precision, one record per row).

use std::io::Write;

use serde_json::{Map, Value};

/// How to print (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
    Csv,
}

/// One column: its key in the records and its header (with units).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub key: String,
    pub header: String,
}

impl Column {
    pub fn new(key: &str, header: &str) -> Self {
        Column {
            key: key.into(),
            header: header.into(),
        }
    }

    /// `name [units]`, or just the name.
    pub fn with_units(key: &str, name: &str, units: Option<&str>) -> Self {
        let header = match units.filter(|u| !u.is_empty()) {
            Some(u) => format!("{name} [{u}]"),
            None => name.to_string(),
        };
        Column::new(key, &header)
    }
}

/// Rows to print: the columns in order, and one JSON object per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub records: Vec<Map<String, Value>>,
}

impl Rows {
    pub fn print(&self, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
        match format {
            Format::Table => out.write_all(self.table().as_bytes())?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, &self.records)?;
                writeln!(out)?;
            }
            Format::Yaml => out.write_all(serde_yaml::to_string(&self.records)?.as_bytes())?,
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(self.columns.iter().map(|c| c.key.as_str()))?;
                for r in &self.records {
                    w.write_record(
                        self.columns
                            .iter()
                            .map(|c| raw(r.get(&c.key).unwrap_or(&Value::Null))),
                    )?;
                }
                w.flush()?;
            }
        }
        Ok(())
    }

    /// The aligned table: numbers right-aligned, text left-aligned.
    pub fn table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .records
            .iter()
            .map(|r| {
                self.columns
                    .iter()
                    .map(|c| human(r.get(&c.key).unwrap_or(&Value::Null)))
                    .collect()
            })
            .collect();
        let numeric: Vec<bool> = self
            .columns
            .iter()
            .map(|c| {
                self.records
                    .iter()
                    .filter_map(|r| r.get(&c.key))
                    .filter(|v| !v.is_null())
                    .all(Value::is_number)
                    && self
                        .records
                        .iter()
                        .any(|r| r.get(&c.key).is_some_and(Value::is_number))
            })
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain(std::iter::once(c.header.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| -> String {
            let mut s = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if numeric[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    if i + 1 < row.len() {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let headers: Vec<String> = self
            .columns
            .iter()
            .map(|c| c.header.to_uppercase_first())
            .collect();
        let mut out = line(&headers);
        for row in &cells {
            out.push_str(&line(row));
        }
        out
    }
}

trait UpperFirst {
    fn to_uppercase_first(&self) -> String;
}

impl UpperFirst for String {
    /// Headers are upper case (kubectl's convention), units as written.
    fn to_uppercase_first(&self) -> String {
        match self.split_once(" [") {
            Some((name, units)) => format!("{} [{units}", name.to_uppercase()),
            None => self.to_uppercase(),
        }
    }
}

/// A value for people: numbers to 6 significant digits (scientific
/// notation outside 0.001–1,000,000), text as is, nothing as `-`.
pub fn human(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => number(x),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if !(1e-3..1e6).contains(&a) {
        // 4 decimals of the mantissa: 1.0631e8.
        let s = format!("{x:.4e}");
        return match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim_zeros(m)),
            None => s,
        };
    }
    let digits = 6 - 1 - a.log10().floor() as i32;
    trim_zeros(&format!("{x:.*}", digits.max(0) as usize))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// A value for scripts: full precision, text unquoted.
fn raw(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_well_for_people_and_keep_their_precision_for_scripts() {
        assert_eq!(human(&json!(106309500.00000004)), "1.0631e8");
        assert_eq!(human(&json!(0.0009664500000000004)), "9.6645e-4");
        assert_eq!(human(&json!(0.0017582300000000001)), "0.00175823");
        assert_eq!(human(&json!(350.0)), "350");
        assert_eq!(human(&json!(293.15)), "293.15");
        assert_eq!(human(&json!(1.5e-7)), "1.5e-7");
        assert_eq!(human(&json!(-2.0e9)), "-2e9");
        assert_eq!(human(&json!(42)), "42");
        assert_eq!(human(&json!(null)), "-");
        assert_eq!(raw(&json!(106309500.00000004)), "106309500.00000004");
    }

    fn rows() -> Rows {
        let rec = |t: f64, s: f64, m: &str| {
            json!({"temperature": t, "max_stress": s, "material": m})
                .as_object()
                .unwrap()
                .clone()
        };
        Rows {
            columns: vec![
                Column::with_units("temperature", "temperature", Some("K")),
                Column::new("material", "material"),
                Column::with_units("max_stress", "max_stress", Some("Pa")),
            ],
            records: vec![
                rec(300.0, 1.3e7, "steel"),
                rec(1000.0, 106309500.00000004, "copper"),
            ],
        }
    }

    #[test]
    fn a_table_has_units_in_its_headers_and_aligned_columns() {
        assert_eq!(
            rows().table(),
            "TEMPERATURE [K]  MATERIAL  MAX_STRESS [Pa]\n\
             \x20           300  steel               1.3e7\n\
             \x20          1000  copper           1.0631e8\n"
        );
    }

    #[test]
    fn scripts_get_json_yaml_and_csv() {
        let mut out = Vec::new();
        rows().print(Format::Csv, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "temperature,material,max_stress\n300.0,steel,13000000.0\n1000.0,copper,106309500.00000004\n"
        );
        let mut out = Vec::new();
        rows().print(Format::Json, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[1]["max_stress"], json!(106309500.00000004));
        let mut out = Vec::new();
        rows().print(Format::Yaml, &mut out).unwrap();
        let v: Value = serde_yaml::from_slice(&out).unwrap();
        assert_eq!(v[0]["material"], json!("steel"));
    }
}
