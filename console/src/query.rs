//! What the console's query strings mean: parameter references
//! (`input.temperature`), typed range filters (`min.input.temperature=500`),
//! sorting and paging, checked against the simulation's declared parameters.
//! Pure: the handlers gather the definitions and call these.

use std::collections::BTreeMap;

use serde_json::Value;
use simcache_store::results::ParamDef;
use simcache_store::results::filter::{Op, ParamClass, ParamFilter};

/// A parameter named by the console: its side and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef {
    pub class: ParamClass,
    pub name: String,
}

impl ParamRef {
    pub fn key(&self) -> String {
        format!("{}.{}", self.class.as_str(), self.name)
    }
}

/// A query the console cannot answer; each names the query key and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("{field}: {text:?} is not a parameter; write input.NAME or output.NAME")]
    NotAParameter { field: String, text: String },
    #[error("{field}: the simulation declares no {class} {name:?} (it has {known})")]
    Undeclared {
        field: String,
        class: &'static str,
        name: String,
        known: String,
    },
    #[error("{field}: {param} is a {param_type}, and ranges need a number")]
    NotNumeric {
        field: String,
        param: String,
        param_type: String,
    },
    #[error("{field}: {text:?} is not a number")]
    NotANumber { field: String, text: String },
    #[error("{field}: {text:?} is not a whole number from 0 to {max}")]
    BadCount {
        field: String,
        text: String,
        max: i64,
    },
}

/// `input.NAME` or `output.NAME`, which the simulation must declare.
pub fn param_ref(field: &str, text: &str, defs: &[ParamDef]) -> Result<ParamRef, QueryError> {
    let (class, name) = text
        .split_once('.')
        .and_then(|(c, n)| Some((ParamClass::parse(c)?, n)))
        .ok_or_else(|| QueryError::NotAParameter {
            field: field.to_string(),
            text: text.to_string(),
        })?;
    if !defs.is_empty() && !defs.iter().any(|d| d.class == class && d.name == name) {
        let known: Vec<String> = defs
            .iter()
            .map(|d| format!("{}.{}", d.class.as_str(), d.name))
            .collect();
        return Err(QueryError::Undeclared {
            field: field.to_string(),
            class: class.as_str(),
            name: name.to_string(),
            known: known.join(", "),
        });
    }
    Ok(ParamRef {
        class,
        name: name.to_string(),
    })
}

/// A numeric range on one parameter, both ends inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub param: ParamRef,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

fn is_numeric(t: &str) -> bool {
    matches!(t, "number" | "integer" | "float" | "int")
}

/// The `min.<param>=x` / `max.<param>=x` pairs of a query string.
pub fn ranges(query: &[(String, String)], defs: &[ParamDef]) -> Result<Vec<Range>, QueryError> {
    let mut out: Vec<Range> = Vec::new();
    for (k, v) in query {
        let (bound, param) = match k.split_once('.') {
            Some(("min", p)) => (true, p),
            Some(("max", p)) => (false, p),
            _ => continue,
        };
        if v.trim().is_empty() {
            continue;
        }
        let param = param_ref(k, param, defs)?;
        if let Some(d) = defs
            .iter()
            .find(|d| d.class == param.class && d.name == param.name)
            && !is_numeric(&d.param_type)
        {
            return Err(QueryError::NotNumeric {
                field: k.clone(),
                param: param.key(),
                param_type: d.param_type.clone(),
            });
        }
        let x: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| QueryError::NotANumber {
                field: k.clone(),
                text: v.clone(),
            })?;
        let r = match out.iter_mut().find(|r| r.param == param) {
            Some(r) => r,
            None => {
                out.push(Range {
                    param,
                    min: None,
                    max: None,
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        if bound {
            r.min = Some(x);
        } else {
            r.max = Some(x);
        }
    }
    Ok(out)
}

/// The ranges as result-store filters.
pub fn store_filters(ranges: &[Range]) -> Vec<ParamFilter> {
    ranges
        .iter()
        .map(|r| ParamFilter {
            class: r.param.class,
            name: r.param.name.clone(),
            ops: r
                .min
                .map(Op::Gte)
                .into_iter()
                .chain(r.max.map(Op::Lte))
                .collect(),
        })
        .collect()
}

/// A parameter's number in a point's inputs or outputs.
pub fn number_of(
    p: &ParamRef,
    inputs: &BTreeMap<String, Value>,
    outputs: &BTreeMap<String, Value>,
) -> Option<f64> {
    let side = match p.class {
        ParamClass::Input => inputs,
        ParamClass::Output => outputs,
    };
    side.get(&p.name).and_then(Value::as_f64)
}

/// Whether a point is inside every range (a missing value is outside).
pub fn within(
    ranges: &[Range],
    inputs: &BTreeMap<String, Value>,
    outputs: &BTreeMap<String, Value>,
) -> bool {
    ranges.iter().all(|r| {
        number_of(&r.param, inputs, outputs)
            .is_some_and(|x| r.min.is_none_or(|m| x >= m) && r.max.is_none_or(|m| x <= m))
    })
}

/// Rows per page: asked for, within 1..=500.
pub fn page(query: &[(String, String)]) -> Result<(i64, i64), QueryError> {
    let get = |k: &str, default: i64, max: i64| -> Result<i64, QueryError> {
        match query.iter().rev().find(|(q, _)| q == k) {
            None => Ok(default),
            Some((_, v)) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| QueryError::BadCount {
                    field: k.to_string(),
                    text: v.clone(),
                    max,
                }),
        }
    };
    let limit = get("limit", 50, 500)?.max(1);
    Ok((limit, get("offset", 0, i64::MAX)?))
}

/// The value of a query key (the last one given).
pub fn value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `temperature [K]`: a parameter with its units, for headers and axes.
pub fn label(p: &ParamRef, defs: &[ParamDef]) -> String {
    match defs
        .iter()
        .find(|d| d.class == p.class && d.name == p.name)
        .and_then(|d| d.units.as_deref())
        .filter(|u| !u.is_empty())
    {
        Some(u) => format!("{} [{u}]", p.name),
        None => p.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> Vec<ParamDef> {
        let d = |class, name: &str, t: &str, units: Option<&str>| ParamDef {
            class,
            name: name.into(),
            param_type: t.into(),
            description: None,
            units: units.map(Into::into),
            min: None,
            max: None,
            default: None,
        };
        vec![
            d(ParamClass::Input, "temperature", "number", Some("K")),
            d(ParamClass::Input, "material", "string", None),
            d(ParamClass::Output, "stress", "number", Some("Pa")),
        ]
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_are_typed_and_merged_per_parameter() {
        let r = ranges(
            &q(&[
                ("min.input.temperature", "500"),
                ("max.input.temperature", "900"),
                ("max.output.stress", "1e8"),
                ("min.output.stress", ""),
                ("sort", "input.temperature"),
            ]),
            &defs(),
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].min, r[0].max), (Some(500.0), Some(900.0)));
        assert_eq!((r[1].min, r[1].max), (None, Some(1e8)));
        let f = store_filters(&r);
        assert_eq!(f[0].ops, vec![Op::Gte(500.0), Op::Lte(900.0)]);
        let ins = BTreeMap::from([("temperature".to_string(), json!(600))]);
        let outs = BTreeMap::from([("stress".to_string(), json!(2e7))]);
        assert!(within(&r, &ins, &outs));
        let cold = BTreeMap::from([("temperature".to_string(), json!(400))]);
        assert!(!within(&r, &cold, &outs));
        assert!(!within(&r, &ins, &BTreeMap::new()));
    }

    #[test]
    fn bad_filters_name_the_key_and_the_fix() {
        let e = ranges(&q(&[("min.input.temperature", "hot")]), &defs()).unwrap_err();
        assert_eq!(
            e,
            QueryError::NotANumber {
                field: "min.input.temperature".into(),
                text: "hot".into()
            }
        );
        let e = e.to_string();
        assert!(
            e.contains("min.input.temperature") && e.contains("not a number"),
            "{e}"
        );
        let e = ranges(&q(&[("min.input.pressure", "1")]), &defs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("declares no input \"pressure\""), "{e}");
        let e = ranges(&q(&[("min.input.material", "1")]), &defs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a string"), "{e}");
        let e = param_ref("x", "temperature", &defs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("input.NAME"), "{e}");
        let e = ranges(&q(&[("max.output.stress", "inf")]), &defs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
    }

    #[test]
    fn pages_and_labels() {
        assert_eq!(page(&q(&[])).unwrap(), (50, 0));
        assert_eq!(
            page(&q(&[("limit", "20"), ("offset", "40")])).unwrap(),
            (20, 40)
        );
        assert!(
            page(&q(&[("limit", "5000")]))
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert!(page(&q(&[("offset", "-1")])).is_err());
        let t = param_ref("x", "input.temperature", &defs()).unwrap();
        assert_eq!(label(&t, &defs()), "temperature [K]");
        assert_eq!(t.key(), "input.temperature");
    }
}
