//! Typed parameter values and the schema they are checked against. Pure logic,
//! shared by the run database, the sidecar's run API and the operator's input
//! validation so that all three accept and refuse exactly the same values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A value, or a declared spec, that does not fit; each names the
/// parameter and says why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error(
        "unknown value type {0:?} (expected one of number, integer, boolean, string, array, object, file)"
    )]
    UnknownType(String),
    #[error("{name}: expected {expected}, got {got} ({value})")]
    WrongType {
        name: String,
        expected: ValueType,
        got: &'static str,
        value: String,
    },
    #[error("{name}: {value} is below the minimum {min}")]
    BelowMinimum { name: String, value: f64, min: f64 },
    #[error("{name}: {value} is above the maximum {max}")]
    AboveMaximum { name: String, value: f64, max: f64 },
    #[error("{name}: {value} is not one of the allowed values {allowed}")]
    NotAllowed {
        name: String,
        value: Value,
        allowed: Value,
    },
    #[error("{name}: min {min} is greater than max {max}")]
    MinAboveMax { name: String, min: f64, max: f64 },
    #[error("{0}: min/max only apply to number and integer parameters")]
    RangeOnNonNumber(String),
    #[error("default of {0}")]
    BadDefault(Box<ParamError>),
    #[error("unknown input {name:?} (declared inputs: {declared})")]
    UnknownInput { name: String, declared: String },
    #[error("missing input {0:?} (it has no default)")]
    MissingInput(String),
    #[error("{name}: type {given} contradicts the declared type {declared}")]
    TypeContradicts {
        name: String,
        given: ValueType,
        declared: ValueType,
    },
    #[error("unknown {direction} {name:?} (declared: {declared})")]
    Undeclared {
        direction: &'static str,
        name: String,
        declared: String,
    },
    #[error("{0}: a null value needs an explicit type")]
    NullNeedsType(String),
}

/// The type of an input or output value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Number,
    Integer,
    Boolean,
    String,
    Array,
    Object,
    /// A reference to a file: a path or URI, stored as a string.
    File,
}

impl ValueType {
    pub const ALL: [ValueType; 7] = [
        ValueType::Number,
        ValueType::Integer,
        ValueType::Boolean,
        ValueType::String,
        ValueType::Array,
        ValueType::Object,
        ValueType::File,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Number => "number",
            ValueType::Integer => "integer",
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::Object => "object",
            ValueType::File => "file",
        }
    }

    /// Parses a type name; sim2l's spellings (`float`, `int`, `bool`, `str`,
    /// `list`, `dict`) are accepted too.
    pub fn parse(s: &str) -> Result<ValueType, ParamError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "number" | "float" | "double" | "real" => ValueType::Number,
            "integer" | "int" => ValueType::Integer,
            "boolean" | "bool" => ValueType::Boolean,
            "string" | "str" | "text" => ValueType::String,
            "array" | "list" => ValueType::Array,
            "object" | "dict" | "map" => ValueType::Object,
            "file" | "path" | "uri" => ValueType::File,
            _ => {
                return Err(ParamError::UnknownType(s.to_string()));
            }
        })
    }

    /// The narrowest type a bare JSON value has (used when no schema declares one).
    pub fn infer(v: &Value) -> Option<ValueType> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(_) => ValueType::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => ValueType::Integer,
            Value::Number(_) => ValueType::Number,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::Object(_) => ValueType::Object,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a simulation declares about one input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type", with = "type_name")]
    pub value_type: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "unit")]
    pub units: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// When set, the value must equal one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Value>>,
}

mod type_name {
    use super::ValueType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &ValueType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ValueType, D::Error> {
        let s = String::deserialize(d)?;
        ValueType::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl ParamSpec {
    pub fn of_type(value_type: ValueType) -> Self {
        ParamSpec {
            value_type,
            units: None,
            description: None,
            min: None,
            max: None,
            default: None,
            choices: None,
        }
    }

    /// Checks a value against this spec; the error names the parameter.
    pub fn check(&self, name: &str, v: &Value) -> Result<(), ParamError> {
        check_type(name, self.value_type, v)?;
        if let Some(x) = v.as_f64() {
            if let Some(min) = self.min.filter(|m| x < *m) {
                return Err(ParamError::BelowMinimum {
                    name: name.to_string(),
                    value: x,
                    min,
                });
            }
            if let Some(max) = self.max.filter(|m| x > *m) {
                return Err(ParamError::AboveMaximum {
                    name: name.to_string(),
                    value: x,
                    max,
                });
            }
        }
        if let Some(choices) = &self.choices
            && !choices.iter().any(|c| json_eq(c, v))
        {
            return Err(ParamError::NotAllowed {
                name: name.to_string(),
                value: v.clone(),
                allowed: Value::Array(choices.clone()),
            });
        }
        Ok(())
    }

    /// Checks that the spec itself makes sense (min ≤ max, default valid).
    pub fn check_self(&self, name: &str) -> Result<(), ParamError> {
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(ParamError::MinAboveMax {
                name: name.to_string(),
                min,
                max,
            });
        }
        if (self.min.is_some() || self.max.is_some())
            && !matches!(self.value_type, ValueType::Number | ValueType::Integer)
        {
            return Err(ParamError::RangeOnNonNumber(name.to_string()));
        }
        if let Some(d) = &self.default {
            self.check(name, d)
                .map_err(|e| ParamError::BadDefault(Box::new(e)))?;
        }
        Ok(())
    }
}

/// Numbers compare by value so that `3` equals `3.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Checks that `v` has type `t`; the error names the parameter and both types.
pub fn check_type(name: &str, t: ValueType, v: &Value) -> Result<(), ParamError> {
    let ok = match t {
        ValueType::Number => v.as_f64().is_some_and(f64::is_finite),
        ValueType::Integer => match v {
            Value::Number(n) => {
                n.is_i64()
                    || n.is_u64()
                    || n.as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            }
            _ => false,
        },
        ValueType::Boolean => v.is_boolean(),
        ValueType::String => v.is_string(),
        ValueType::Array => v.is_array(),
        ValueType::Object => v.is_object(),
        ValueType::File => v.as_str().is_some_and(|s| !s.is_empty()),
    };
    if ok {
        return Ok(());
    }
    let got = match ValueType::infer(v) {
        Some(g) => g.as_str(),
        None => "null",
    };
    Err(ParamError::WrongType {
        name: name.to_string(),
        expected: t,
        got,
        value: short(v),
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let mut end = 57;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// The declared inputs and outputs of a simulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSchema {
    #[serde(default)]
    pub inputs: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub outputs: BTreeMap<String, ParamSpec>,
}

/// Which side of a run a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

impl RunSchema {
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty()
    }

    pub fn side(&self, d: Direction) -> &BTreeMap<String, ParamSpec> {
        match d {
            Direction::Input => &self.inputs,
            Direction::Output => &self.outputs,
        }
    }

    /// Checks every declared spec (min ≤ max, defaults valid).
    pub fn check_self(&self) -> Result<(), ParamError> {
        for (d, side) in [
            (Direction::Input, &self.inputs),
            (Direction::Output, &self.outputs),
        ] {
            for (name, spec) in side {
                spec.check_self(&format!("{} {name}", d.as_str()))?;
            }
        }
        Ok(())
    }

    /// Validates a full set of inputs: unknown names, types, ranges; fills
    /// defaults; refuses missing inputs that have no default. Returns the
    /// complete, ordered input map.
    pub fn resolve_inputs(
        &self,
        given: &serde_json::Map<String, Value>,
    ) -> Result<BTreeMap<String, Value>, ParamError> {
        let mut out = BTreeMap::new();
        for (name, v) in given {
            let spec = self
                .inputs
                .get(name)
                .ok_or_else(|| ParamError::UnknownInput {
                    name: name.clone(),
                    declared: self.inputs.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
            spec.check(name, v)?;
            out.insert(name.clone(), v.clone());
        }
        for (name, spec) in &self.inputs {
            if out.contains_key(name) {
                continue;
            }
            match &spec.default {
                Some(d) => {
                    out.insert(name.clone(), d.clone());
                }
                None => return Err(ParamError::MissingInput(name.clone())),
            }
        }
        Ok(out)
    }

    /// The spec a value is checked against: the declared one, or (with no
    /// schema for that side) one inferred from the value or the given type.
    pub fn spec_for(
        &self,
        d: Direction,
        name: &str,
        given_type: Option<ValueType>,
        v: &Value,
    ) -> Result<ParamSpec, ParamError> {
        let side = self.side(d);
        if let Some(spec) = side.get(name) {
            if let Some(t) = given_type
                && t != spec.value_type
            {
                return Err(ParamError::TypeContradicts {
                    name: name.to_string(),
                    given: t,
                    declared: spec.value_type,
                });
            }
            return Ok(spec.clone());
        }
        if !side.is_empty() {
            return Err(ParamError::Undeclared {
                direction: d.as_str(),
                name: name.to_string(),
                declared: side.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let t = match given_type.or_else(|| ValueType::infer(v)) {
            Some(t) => t,
            None => return Err(ParamError::NullNeedsType(name.to_string())),
        };
        Ok(ParamSpec::of_type(t))
    }
}

/// The environment variable a program reads an input from:
/// `SIMCACHE_INPUT_` + the name upper-cased with anything else than
/// letters and digits turned into `_`.
pub fn input_env_name(name: &str) -> String {
    let mut s = String::from("SIMCACHE_INPUT_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// Strings as they are; everything else as JSON text.
pub fn input_env_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(j: Value) -> ParamSpec {
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn types_are_checked_and_errors_name_the_parameter() {
        let s = spec(json!({"type": "integer"}));
        assert!(s.check("n", &json!(3)).is_ok());
        assert!(s.check("n", &json!(3.0)).is_ok());
        let e = s.check("n", &json!(3.5)).unwrap_err();
        assert!(matches!(&e, ParamError::WrongType { got: "number", .. }));
        let e = e.to_string();
        assert!(e.contains("n: expected integer, got number"), "{e}");
        let e = spec(json!({"type": "number"}))
            .check("t", &json!("hot"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t: expected number, got string (\"hot\")");
        assert!(
            spec(json!({"type": "file"}))
                .check("f", &json!(""))
                .is_err()
        );
        assert!(
            spec(json!({"type": "bool"}))
                .check("b", &json!(true))
                .is_ok()
        );
    }

    #[test]
    fn ranges_and_choices() {
        let s = spec(json!({"type": "number", "min": 0, "max": 1000, "units": "K"}));
        assert_eq!(s.units.as_deref(), Some("K"));
        assert!(s.check("t", &json!(1000)).is_ok());
        assert_eq!(
            s.check("t", &json!(-1)).unwrap_err().to_string(),
            "t: -1 is below the minimum 0"
        );
        assert!(
            s.check("t", &json!(1000.5))
                .unwrap_err()
                .to_string()
                .contains("above the maximum 1000")
        );
        let c = spec(json!({"type": "string", "choices": ["steel", "copper"]}));
        assert!(c.check("m", &json!("steel")).is_ok());
        assert!(
            c.check("m", &json!("wood"))
                .unwrap_err()
                .to_string()
                .contains("not one of")
        );
    }

    #[test]
    fn unknown_type_and_bad_spec_are_refused() {
        let e = serde_json::from_value::<ParamSpec>(json!({"type": "complex"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string().contains("unknown value type \"complex\""),
            "{e}"
        );
        let s = spec(json!({"type": "number", "min": 5, "max": 1}));
        assert!(
            s.check_self("x")
                .unwrap_err()
                .to_string()
                .contains("greater than max")
        );
        let s = spec(json!({"type": "number", "max": 1, "default": 2}));
        assert!(
            s.check_self("x")
                .unwrap_err()
                .to_string()
                .starts_with("default of x")
        );
        let s = spec(json!({"type": "string", "min": 1}));
        assert_eq!(
            s.check_self("x"),
            Err(ParamError::RangeOnNonNumber("x".into()))
        );
    }

    #[test]
    fn resolve_inputs_fills_defaults_and_refuses_unknown_or_missing() {
        let schema: RunSchema = serde_json::from_value(json!({
            "inputs": {
                "temperature": {"type": "number", "min": 0},
                "material": {"type": "string", "default": "steel"}
            }
        }))
        .unwrap();
        let given = json!({"temperature": 350}).as_object().unwrap().clone();
        let r = schema.resolve_inputs(&given).unwrap();
        assert_eq!(r["material"], json!("steel"));
        let given = json!({"temperature": 350, "colour": "red"})
            .as_object()
            .unwrap()
            .clone();
        assert!(
            schema
                .resolve_inputs(&given)
                .unwrap_err()
                .to_string()
                .starts_with("unknown input \"colour\"")
        );
        let given = json!({}).as_object().unwrap().clone();
        assert!(
            schema
                .resolve_inputs(&given)
                .unwrap_err()
                .to_string()
                .contains("missing input \"temperature\"")
        );
        let given = json!({"temperature": -3}).as_object().unwrap().clone();
        assert!(
            schema
                .resolve_inputs(&given)
                .unwrap_err()
                .to_string()
                .contains("below the minimum")
        );
    }

    #[test]
    fn spec_for_infers_without_schema_and_enforces_with_one() {
        let empty = RunSchema::default();
        let s = empty
            .spec_for(Direction::Output, "x", None, &json!(1.5))
            .unwrap();
        assert_eq!(s.value_type, ValueType::Number);
        assert!(
            empty
                .spec_for(Direction::Output, "x", None, &Value::Null)
                .is_err()
        );
        let schema: RunSchema =
            serde_json::from_value(json!({"outputs": {"y": {"type": "number"}}})).unwrap();
        assert!(
            schema
                .spec_for(Direction::Output, "z", None, &json!(1))
                .unwrap_err()
                .to_string()
                .contains("unknown output \"z\"")
        );
        assert!(
            schema
                .spec_for(Direction::Output, "y", Some(ValueType::String), &json!(1))
                .unwrap_err()
                .to_string()
                .contains("contradicts")
        );
    }
}
