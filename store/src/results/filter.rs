//! Result search filters: parsing and validating what clients send, and
//! turning it into SQL over the typed `result_params` rows. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::sql::SqlValue;

/// Which side of a run a parameter is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamClass {
    Input,
    Output,
}

impl ParamClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamClass::Input => "input",
            ParamClass::Output => "output",
        }
    }

    pub fn parse(s: &str) -> Option<ParamClass> {
        match s {
            "input" | "inputs" => Some(ParamClass::Input),
            "output" | "outputs" => Some(ParamClass::Output),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            ParamClass::Input => "input_filters",
            ParamClass::Output => "output_filters",
        }
    }
}

/// A scalar a filter compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Num(_) => "number",
            Scalar::Str(_) => "string",
            Scalar::Bool(_) => "boolean",
        }
    }

    fn column(&self) -> &'static str {
        match self {
            Scalar::Num(_) => "num_value",
            Scalar::Str(_) => "str_value",
            Scalar::Bool(_) => "bool_value",
        }
    }

    fn sql(&self) -> SqlValue {
        match self {
            Scalar::Num(x) => SqlValue::F64(*x),
            Scalar::Str(s) => SqlValue::Text(s.clone()),
            Scalar::Bool(b) => SqlValue::Bool(*b),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Scalar),
    /// Equality with `null`: the parameter is absent or null.
    IsNull,
    Ne(Scalar),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    In(Vec<Scalar>),
}

/// All conditions on one parameter (ANDed).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamFilter {
    pub class: ParamClass,
    pub name: String,
    pub ops: Vec<Op>,
}

pub const OPERATORS: &str = "$gt, $gte, $lt, $lte, $eq, $ne, $in";

/// A filter refused, and where in the request it was (`inputs.t.$gte`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct FilterError {
    pub at: String,
    pub problem: FilterProblem,
}

/// What is wrong with a filter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterProblem {
    #[error("must be an object, got {0}")]
    NotAnObject(Value),
    #[error("{0} is not a finite number")]
    NotFinite(String),
    #[error("filters compare numbers, strings and booleans, not {0}")]
    NotAScalar(Value),
    #[error("{op} needs a number, got {got}")]
    NeedsNumber { op: String, got: Value },
    #[error("$ne needs a value, not null")]
    NeNull,
    #[error("$in needs a non-empty array, got {0}")]
    InNotAList(Value),
    #[error("null is not allowed in $in")]
    NullInList,
    #[error("unknown operator {0} (expected one of {OPERATORS})")]
    UnknownOperator(String),
    #[error("operators and plain fields cannot be mixed")]
    MixedOperators,
    #[error("no {class} parameter {name:?} is declared (known: {known})")]
    Undeclared {
        class: &'static str,
        name: String,
        known: String,
    },
    #[error("range operators need a number parameter, but it is a {0}")]
    RangeOnNonNumber(String),
    #[error("the parameter is a {declared}, the filter gives a {given}")]
    WrongType {
        declared: String,
        given: &'static str,
    },
}

fn refuse(at: &str, problem: FilterProblem) -> FilterError {
    FilterError {
        at: at.to_string(),
        problem,
    }
}

fn scalar(v: &Value, at: &str) -> Result<Option<Scalar>, FilterError> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => Scalar::Num(
            n.as_f64()
                .ok_or_else(|| refuse(at, FilterProblem::NotFinite(n.to_string())))?,
        ),
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            return Err(refuse(at, FilterProblem::NotAScalar(v.clone())));
        }
    }))
}

fn number(v: &Value, at: &str, op: &str) -> Result<f64, FilterError> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
        refuse(
            at,
            FilterProblem::NeedsNumber {
                op: op.to_string(),
                got: v.clone(),
            },
        )
    })
}

/// Parses `{"temperature": 350}` / `{"temperature": {"$gte": 300, "$lt": 400}}`.
/// `declared` maps parameter names to their declared types when known; a
/// filter on an undeclared name or with a value of the wrong type is refused.
pub fn parse_filters(
    class: ParamClass,
    filters: &Value,
    declared: Option<&BTreeMap<String, String>>,
) -> Result<Vec<ParamFilter>, FilterError> {
    let field = class.field();
    let map = match filters {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m,
        other => return Err(refuse(field, FilterProblem::NotAnObject(other.clone()))),
    };
    let mut out = Vec::new();
    for (name, spec) in map {
        let at = format!("{field}.{name}");
        let ops = match spec {
            Value::Object(o) if !o.is_empty() && o.keys().all(|k| k.starts_with('$')) => {
                let mut ops = Vec::new();
                for (op, v) in o {
                    let at = format!("{at}.{op}");
                    ops.push(match op.as_str() {
                        "$eq" => match scalar(v, &at)? {
                            Some(s) => Op::Eq(s),
                            None => Op::IsNull,
                        },
                        "$ne" => Op::Ne(
                            scalar(v, &at)?.ok_or_else(|| refuse(&at, FilterProblem::NeNull))?,
                        ),
                        "$gt" => Op::Gt(number(v, &at, op)?),
                        "$gte" => Op::Gte(number(v, &at, op)?),
                        "$lt" => Op::Lt(number(v, &at, op)?),
                        "$lte" => Op::Lte(number(v, &at, op)?),
                        "$in" => {
                            let items = v
                                .as_array()
                                .filter(|a| !a.is_empty())
                                .ok_or_else(|| refuse(&at, FilterProblem::InNotAList(v.clone())))?;
                            let mut list = Vec::new();
                            for (i, x) in items.iter().enumerate() {
                                let at = format!("{at}[{i}]");
                                list.push(
                                    scalar(x, &at)?
                                        .ok_or_else(|| refuse(&at, FilterProblem::NullInList))?,
                                );
                            }
                            Op::In(list)
                        }
                        other => {
                            return Err(refuse(
                                &at,
                                FilterProblem::UnknownOperator(other.to_string()),
                            ));
                        }
                    });
                }
                ops
            }
            Value::Object(o) if o.keys().any(|k| k.starts_with('$')) => {
                return Err(refuse(&at, FilterProblem::MixedOperators));
            }
            other => match scalar(other, &at)? {
                Some(s) => vec![Op::Eq(s)],
                None => vec![Op::IsNull],
            },
        };
        if let Some(types) = declared {
            let Some(t) = types.get(name) else {
                return Err(refuse(
                    &at,
                    FilterProblem::Undeclared {
                        class: class.as_str(),
                        name: name.clone(),
                        known: types.keys().cloned().collect::<Vec<_>>().join(", "),
                    },
                ));
            };
            for op in &ops {
                check_declared(&at, t, op)?;
            }
        }
        out.push(ParamFilter {
            class,
            name: name.clone(),
            ops,
        });
    }
    Ok(out)
}

fn check_declared(at: &str, declared: &str, op: &Op) -> Result<(), FilterError> {
    let numeric = matches!(declared, "number" | "integer" | "float" | "int");
    let values: Vec<&Scalar> = match op {
        Op::Eq(s) | Op::Ne(s) => vec![s],
        Op::In(l) => l.iter().collect(),
        Op::IsNull => vec![],
        Op::Gt(_) | Op::Gte(_) | Op::Lt(_) | Op::Lte(_) => {
            if !numeric {
                return Err(refuse(
                    at,
                    FilterProblem::RangeOnNonNumber(declared.to_string()),
                ));
            }
            vec![]
        }
    };
    for v in values {
        let ok = match v {
            Scalar::Num(_) => numeric,
            Scalar::Str(_) => matches!(declared, "string" | "str" | "file"),
            Scalar::Bool(_) => matches!(declared, "boolean" | "bool"),
        };
        if !ok {
            return Err(refuse(
                at,
                FilterProblem::WrongType {
                    declared: declared.to_string(),
                    given: v.kind(),
                },
            ));
        }
    }
    Ok(())
}

/// Collects SQL and its parameters, numbering placeholders `$n`.
#[derive(Debug, Default)]
pub struct SqlBuilder {
    pub params: Vec<SqlValue>,
}

impl SqlBuilder {
    pub fn bind(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        format!("${}", self.params.len())
    }

    /// One condition on `r.id` per filter: `r.id IN (SELECT result_id FROM
    /// result_params WHERE …)`, which the typed indexes answer.
    pub fn filter_condition(&mut self, f: &ParamFilter, simulation: Option<&str>) -> String {
        let mut conds = Vec::new();
        if let Some(s) = simulation {
            conds.push(format!("simulation_name = {}", self.bind(s.into())));
        }
        conds.push(format!("class = {}", self.bind(f.class.as_str().into())));
        conds.push(format!("name = {}", self.bind(f.name.as_str().into())));
        let mut null_check = false;
        for op in &f.ops {
            match op {
                Op::IsNull => null_check = true,
                Op::Eq(s) => conds.push(format!("{} = {}", s.column(), self.bind(s.sql()))),
                Op::Ne(s) => conds.push(format!(
                    "{c} IS NOT NULL AND {c} <> {}",
                    self.bind(s.sql()),
                    c = s.column()
                )),
                Op::Gt(x) => conds.push(format!("num_value > {}", self.bind(SqlValue::F64(*x)))),
                Op::Gte(x) => conds.push(format!("num_value >= {}", self.bind(SqlValue::F64(*x)))),
                Op::Lt(x) => conds.push(format!("num_value < {}", self.bind(SqlValue::F64(*x)))),
                Op::Lte(x) => conds.push(format!("num_value <= {}", self.bind(SqlValue::F64(*x)))),
                Op::In(list) => {
                    // Group by kind so each IN list compares one typed column.
                    let mut by_col: Vec<(&str, Vec<String>)> = Vec::new();
                    for s in list {
                        let p = self.bind(s.sql());
                        match by_col.iter_mut().find(|(c, _)| *c == s.column()) {
                            Some((_, ps)) => ps.push(p),
                            None => by_col.push((s.column(), vec![p])),
                        }
                    }
                    let any: Vec<String> = by_col
                        .iter()
                        .map(|(c, ps)| format!("{c} IN ({})", ps.join(", ")))
                        .collect();
                    conds.push(format!("({})", any.join(" OR ")));
                }
            }
        }
        if null_check {
            // Absent or null: no row with a non-null value.
            let non_null = "value_type <> 'null'";
            return format!(
                "r.id NOT IN (SELECT result_id FROM result_params WHERE {} AND {non_null})",
                conds.join(" AND ")
            );
        }
        format!(
            "r.id IN (SELECT result_id FROM result_params WHERE {})",
            conds.join(" AND ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_values_and_operators_parse() {
        let f = parse_filters(
            ParamClass::Input,
            &json!({"t": {"$gte": 300, "$lt": 400}, "m": "steel", "x": null}),
            None,
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        let t = f.iter().find(|p| p.name == "t").unwrap();
        assert_eq!(t.ops, vec![Op::Gte(300.0), Op::Lt(400.0)]);
        let m = f.iter().find(|p| p.name == "m").unwrap();
        assert_eq!(m.ops, vec![Op::Eq(Scalar::Str("steel".into()))]);
        assert_eq!(
            f.iter().find(|p| p.name == "x").unwrap().ops,
            vec![Op::IsNull]
        );
        let f = parse_filters(
            ParamClass::Output,
            &json!({"ok": {"$ne": false}, "k": {"$in": [1, "a"]}}),
            None,
        )
        .unwrap();
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn bad_filters_name_the_problem() {
        let cases = [
            (
                json!({"t": {"$gte": "hot"}}),
                "input_filters.t.$gte: $gte needs a number, got \"hot\"",
            ),
            (
                json!({"t": {"$regex": "x"}}),
                "input_filters.t.$regex: unknown operator $regex",
            ),
            (json!({"t": {"$in": []}}), "$in needs a non-empty array"),
            (json!({"t": {"$in": [null]}}), "null is not allowed in $in"),
            (
                json!({"t": [1, 2]}),
                "filters compare numbers, strings and booleans",
            ),
            (json!({"t": {"$gt": 1, "plain": 2}}), "cannot be mixed"),
            (json!([1]), "input_filters: must be an object"),
        ];
        for (f, msg) in cases {
            let e = parse_filters(ParamClass::Input, &f, None).unwrap_err();
            assert!(e.to_string().contains(msg), "{f}: {e}");
        }
    }

    #[test]
    fn declared_types_are_enforced() {
        let declared: BTreeMap<String, String> = [
            ("t".to_string(), "number".to_string()),
            ("m".to_string(), "string".to_string()),
        ]
        .into();
        assert!(
            parse_filters(
                ParamClass::Input,
                &json!({"t": {"$gt": 1}, "m": "steel"}),
                Some(&declared)
            )
            .is_ok()
        );
        let e =
            parse_filters(ParamClass::Input, &json!({"t": "hot"}), Some(&declared)).unwrap_err();
        assert_eq!(
            e.problem,
            FilterProblem::WrongType {
                declared: "number".into(),
                given: "string"
            }
        );
        assert_eq!(e.at, "input_filters.t");
        assert!(
            e.to_string()
                .contains("the parameter is a number, the filter gives a string"),
            "{e}"
        );
        let e = parse_filters(
            ParamClass::Input,
            &json!({"m": {"$gt": 1}}),
            Some(&declared),
        )
        .unwrap_err();
        assert_eq!(e.problem, FilterProblem::RangeOnNonNumber("string".into()));
        let e = parse_filters(ParamClass::Input, &json!({"z": 1}), Some(&declared)).unwrap_err();
        assert!(matches!(e.problem, FilterProblem::Undeclared { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("no input parameter \"z\" is declared"),
            "{e}"
        );
    }

    #[test]
    fn sql_uses_typed_columns_and_numbered_placeholders() {
        let f = parse_filters(
            ParamClass::Input,
            &json!({"t": {"$gte": 300, "$in": [1, "a"]}}),
            None,
        )
        .unwrap();
        let mut b = SqlBuilder::default();
        let sql = b.filter_condition(&f[0], Some("thermal"));
        assert_eq!(
            sql,
            "r.id IN (SELECT result_id FROM result_params WHERE simulation_name = $1 AND class = $2 AND name = $3 AND num_value >= $4 AND (num_value IN ($5) OR str_value IN ($6)))"
        );
        assert_eq!(b.params.len(), 6);
    }
}
