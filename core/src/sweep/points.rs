//! The points of a sweep (pure): each parameter's values, combined as a
//! product or a zip, counted before they are made so that a sweep over the
//! cap is refused without allocating it.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use simcache_crds::sweep::{CountRange, StepRange};
use simcache_crds::{Combine, ParameterValues, SimulationSweepSpec};

/// The most points one sweep may have.
pub const MAX_POINTS: u64 = 100_000;

/// A sweep spec that does not make points; the message names the field
/// (from `spec.`) and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    #[error("input `{0}` is both fixed (spec.inputs) and swept (spec.parameters); keep one")]
    FixedAndSwept(String),
    #[error(
        "combine: zip needs every parameter to have as many values; `{first}` has {first_len}, `{other}` has {other_len}"
    )]
    ZipLengths {
        first: String,
        first_len: usize,
        other: String,
        other_len: usize,
    },
    #[error("the sweep has more than {MAX_POINTS} points; split it or use fewer values")]
    TooManyPoints,
    #[error("{at}: {problem}")]
    Parameter { at: String, problem: Problem },
}

impl SweepError {
    fn at(at: impl Into<String>, problem: Problem) -> Self {
        SweepError::Parameter {
            at: at.into(),
            problem,
        }
    }
}

/// What is wrong with one parameter's values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("give exactly one of values, range, linspace or logspace")]
    NotExactlyOneKind,
    #[error("empty")]
    Empty,
    #[error("more than {MAX_POINTS} values")]
    TooManyValues,
    #[error("{0} must be finite numbers")]
    NotFinite(&'static str),
    #[error("must not be 0")]
    ZeroStep,
    #[error("{step} leads away from `to` ({from} → {to}); use {}", -step)]
    AwayFromTo { step: f64, from: f64, to: f64 },
    #[error("at least 1")]
    ZeroCount,
    #[error("at most {MAX_POINTS}")]
    CountTooLarge,
    #[error("from and to must be > 0 (the endpoints are values, not exponents)")]
    LogOfNonPositive,
}

/// One point: the inputs of one run (fixed and swept together).
pub type Point = BTreeMap<String, Value>;

/// Every point of the sweep, in a stable order (parameters by name; for a
/// product the last parameter varies fastest).
pub fn expand(spec: &SimulationSweepSpec) -> Result<Vec<Point>, SweepError> {
    for name in spec.parameters.keys() {
        if spec.inputs.contains_key(name) {
            return Err(SweepError::FixedAndSwept(name.clone()));
        }
    }
    let mut lists: Vec<(&String, Vec<Value>)> = Vec::new();
    for (name, p) in &spec.parameters {
        lists.push((name, values(name, p)?));
    }
    let count = match spec.combine {
        Combine::Product => lists.iter().try_fold(1u64, |acc, (_, v)| {
            acc.checked_mul(v.len() as u64).filter(|n| *n <= MAX_POINTS)
        }),
        Combine::Zip => {
            let first = lists.first().map(|(_, v)| v.len()).unwrap_or(0);
            if let Some((name, v)) = lists.iter().find(|(_, v)| v.len() != first) {
                return Err(SweepError::ZipLengths {
                    first: lists[0].0.clone(),
                    first_len: first,
                    other: (*name).clone(),
                    other_len: v.len(),
                });
            }
            Some(first as u64).filter(|n| *n <= MAX_POINTS)
        }
    };
    let Some(count) = count else {
        return Err(SweepError::TooManyPoints);
    };
    let mut points = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let mut p = spec.inputs.clone();
        match spec.combine {
            Combine::Zip => {
                for (name, v) in &lists {
                    p.insert((*name).clone(), v[i].clone());
                }
            }
            Combine::Product => {
                let mut rest = i;
                for (name, v) in lists.iter().rev() {
                    p.insert((*name).clone(), v[rest % v.len()].clone());
                    rest /= v.len();
                }
            }
        }
        points.push(p);
    }
    Ok(points)
}

/// The values of one parameter.
pub fn values(name: &str, p: &ParameterValues) -> Result<Vec<Value>, SweepError> {
    let at = format!("parameters.{name}");
    let given = [
        p.values.is_some(),
        p.range.is_some(),
        p.linspace.is_some(),
        p.logspace.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(SweepError::at(at, Problem::NotExactlyOneKind));
    }
    let numbers = if let Some(v) = &p.values {
        if v.is_empty() {
            return Err(SweepError::at(format!("{at}.values"), Problem::Empty));
        }
        if v.len() as u64 > MAX_POINTS {
            return Err(SweepError::at(
                format!("{at}.values"),
                Problem::TooManyValues,
            ));
        }
        return Ok(v.clone());
    } else if let Some(r) = &p.range {
        step_range(&at, r)?
    } else if let Some(r) = &p.linspace {
        count_range(&format!("{at}.linspace"), r, false)?
    } else if let Some(r) = &p.logspace {
        count_range(&format!("{at}.logspace"), r, true)?
    } else {
        Vec::new()
    };
    Ok(numbers.into_iter().map(number).collect())
}

fn step_range(at: &str, r: &StepRange) -> Result<Vec<f64>, SweepError> {
    let at = format!("{at}.range");
    if ![r.from, r.to, r.step].iter().all(|x| x.is_finite()) {
        return Err(SweepError::at(at, Problem::NotFinite("from, to and step")));
    }
    if r.step == 0.0 {
        return Err(SweepError::at(format!("{at}.step"), Problem::ZeroStep));
    }
    let span = r.to - r.from;
    if span != 0.0 && span.signum() != r.step.signum() {
        return Err(SweepError::at(
            format!("{at}.step"),
            Problem::AwayFromTo {
                step: r.step,
                from: r.from,
                to: r.to,
            },
        ));
    }
    // A step that lands on `to` within rounding includes it.
    let steps = (span / r.step + 1e-9).floor();
    if steps + 1.0 > MAX_POINTS as f64 {
        return Err(SweepError::at(at, Problem::TooManyValues));
    }
    Ok((0..=steps as u64)
        .map(|i| r.from + r.step * i as f64)
        .collect())
}

fn count_range(at: &str, r: &CountRange, log: bool) -> Result<Vec<f64>, SweepError> {
    if !r.from.is_finite() || !r.to.is_finite() {
        return Err(SweepError::at(at, Problem::NotFinite("from and to")));
    }
    if r.count == 0 {
        return Err(SweepError::at(format!("{at}.count"), Problem::ZeroCount));
    }
    if r.count as u64 > MAX_POINTS {
        return Err(SweepError::at(
            format!("{at}.count"),
            Problem::CountTooLarge,
        ));
    }
    if log && (r.from <= 0.0 || r.to <= 0.0) {
        return Err(SweepError::at(at, Problem::LogOfNonPositive));
    }
    let n = r.count as usize;
    if n == 1 {
        return Ok(vec![r.from]);
    }
    let t = |i: usize| i as f64 / (n - 1) as f64;
    Ok((0..n)
        .map(|i| {
            if i == n - 1 {
                r.to
            } else if log {
                (r.from.ln() + (r.to.ln() - r.from.ln()) * t(i)).exp()
            } else {
                r.from + (r.to - r.from) * t(i)
            }
        })
        .collect())
}

/// A generated number as JSON, rounded to 12 significant digits (so 0.1 +
/// 0.2 is 0.3 and identical points hash identically), and integral values
/// as integers.
fn number(x: f64) -> Value {
    let rounded: f64 = format!("{x:.11e}").parse().unwrap_or(x);
    if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
        Value::from(rounded as i64)
    } else {
        Value::from(rounded)
    }
}

/// `<sweep>-<first 10 hex of SHA-256 of the point's canonical JSON>`, a
/// valid object name (the sweep's name is cut to leave room).
pub fn run_name(sweep: &str, point: &Point) -> String {
    let text = simcache_rundb::canonical_json(&Value::Object(point.clone().into_iter().collect()));
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let mut head: String = sweep.chars().take(52).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{}", &hash[..10])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> SimulationSweepSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_product_is_every_combination_and_a_zip_pairs_values() {
        let s = spec(json!({
            "simulation": {"name": "thermal"},
            "inputs": {"steps": 10},
            "parameters": {
                "temperature": {"range": {"from": 300, "to": 500, "step": 100}},
                "material": {"values": ["steel", "copper"]}
            }
        }));
        let p = expand(&s).unwrap();
        assert_eq!(p.len(), 6);
        // Parameters by name: material, then temperature (fastest).
        assert_eq!(
            p[0],
            BTreeMap::from([
                ("material".to_string(), json!("steel")),
                ("steps".to_string(), json!(10)),
                ("temperature".to_string(), json!(300)),
            ])
        );
        assert_eq!(p[1]["temperature"], json!(400));
        assert_eq!(p[3]["material"], json!("copper"));
        assert_eq!(p[5]["temperature"], json!(500));
        let mut s = s.clone();
        s.combine = Combine::Zip;
        let err = expand(&s).unwrap_err();
        assert!(matches!(
            err,
            SweepError::ZipLengths {
                first_len: 2,
                other_len: 3,
                ..
            }
        ));
        let err = err.to_string();
        assert!(
            err.contains("zip needs every parameter to have as many values; `material` has 2, `temperature` has 3"),
            "{err}"
        );
        s.parameters.get_mut("material").unwrap().values =
            Some(vec![json!("a"), json!("b"), json!("c")]);
        let p = expand(&s).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[2]["material"].clone(), p[2]["temperature"].clone()),
            (json!("c"), json!(500))
        );
    }

    #[test]
    fn ranges_include_their_end_and_are_rounded() {
        let v = |p: Value| values("x", &serde_json::from_value(p).unwrap());
        assert_eq!(
            v(json!({"range": {"from": 0.1, "to": 0.5, "step": 0.1}})).unwrap(),
            [json!(0.1), json!(0.2), json!(0.3), json!(0.4), json!(0.5)]
        );
        assert_eq!(
            v(json!({"range": {"from": 10, "to": 0, "step": -5}})).unwrap(),
            [json!(10), json!(5), json!(0)]
        );
        assert_eq!(
            v(json!({"range": {"from": 0, "to": 10, "step": 4}})).unwrap(),
            [json!(0), json!(4), json!(8)]
        );
        assert_eq!(
            v(json!({"linspace": {"from": 300, "to": 700, "count": 5}})).unwrap(),
            [json!(300), json!(400), json!(500), json!(600), json!(700)]
        );
        assert_eq!(
            v(json!({"logspace": {"from": 1, "to": 1000, "count": 4}})).unwrap(),
            [json!(1), json!(10), json!(100), json!(1000)]
        );
        assert_eq!(
            v(json!({"linspace": {"from": 2.5, "to": 9, "count": 1}})).unwrap(),
            [json!(2.5)]
        );
        for (p, want) in [
            (
                json!({"range": {"from": 0, "to": 1, "step": 0}}),
                "parameters.x.range.step: must not be 0",
            ),
            (
                json!({"range": {"from": 0, "to": 1, "step": -0.5}}),
                "leads away from `to`",
            ),
            (
                json!({"range": {"from": 0, "to": 1e9, "step": 1}}),
                "more than 100000 values",
            ),
            (
                json!({"logspace": {"from": 0, "to": 10, "count": 3}}),
                "must be > 0",
            ),
            (
                json!({"linspace": {"from": 0, "to": 1, "count": 0}}),
                "count: at least 1",
            ),
            (json!({"values": []}), "values: empty"),
            (
                json!({"values": [1], "range": {"from": 0, "to": 1, "step": 1}}),
                "exactly one of",
            ),
            (json!({}), "exactly one of"),
        ] {
            let err = v(p.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{p}: {err}");
        }
    }

    #[test]
    fn a_sweep_over_the_cap_or_with_a_clash_is_refused_before_it_is_made() {
        let s = spec(json!({
            "simulation": {"name": "t"},
            "parameters": {
                "a": {"linspace": {"from": 0, "to": 1, "count": 1000}},
                "b": {"linspace": {"from": 0, "to": 1, "count": 1000}}
            }
        }));
        assert_eq!(expand(&s).unwrap_err(), SweepError::TooManyPoints);
        assert!(
            expand(&s)
                .unwrap_err()
                .to_string()
                .contains("more than 100000 points")
        );
        let s = spec(json!({
            "simulation": {"name": "t"},
            "inputs": {"a": 1},
            "parameters": {"a": {"values": [1, 2]}}
        }));
        assert!(
            expand(&s)
                .unwrap_err()
                .to_string()
                .contains("input `a` is both fixed (spec.inputs) and swept")
        );
    }

    #[test]
    fn run_names_follow_the_point_not_its_order() {
        let a = BTreeMap::from([("t".to_string(), json!(300)), ("m".to_string(), json!("x"))]);
        let mut b = BTreeMap::new();
        b.insert("m".to_string(), json!("x"));
        b.insert("t".to_string(), json!(300));
        assert_eq!(run_name("heat", &a), run_name("heat", &b));
        assert_ne!(
            run_name("heat", &a),
            run_name("heat", &BTreeMap::from([("t".to_string(), json!(301))]))
        );
        let n = run_name(&"s".repeat(80), &a);
        assert!(n.len() <= 63 && n.starts_with(&"s".repeat(52)), "{n}");
    }
}
