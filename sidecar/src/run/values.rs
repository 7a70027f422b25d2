//! Turning a request body (or an outputs file) into checked value writes.
//! Pure: no database, no HTTP.

use serde_json::{Map, Value};
use simcache_rundb::{Direction, ParamError, ParamSpec, RunSchema, ValueType};

/// Why a body of values is refused; the message names the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("no {0}s given")]
    Empty(&'static str),
    #[error("expected an object of {0}s or an array of {{\"name\", \"value\", \"type\"}} entries")]
    Shape(&'static str),
    #[error("{direction} {name:?} is given twice")]
    GivenTwice {
        direction: &'static str,
        name: String,
    },
    #[error("entry {0}: expected an object with name and value")]
    NotAnEntry(usize),
    #[error("entry {index}: unknown field {field:?}")]
    UnknownField { index: usize, field: String },
    #[error("entry {0}: \"name\" (a string) is required")]
    NoName(usize),
    #[error("entry {index} ({name}): \"value\" is required")]
    NoValue { index: usize, name: String },
    #[error("{name}: {field:?} must be a string")]
    NotAString { name: String, field: String },
    #[error("{direction} name {name:?} must be 1 to 256 characters")]
    BadName {
        direction: &'static str,
        name: String,
    },
    #[error("{name}: {source}")]
    Type { name: String, source: ParamError },
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// One value ready to be stored: already checked against its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueWrite {
    pub name: String,
    pub value: Value,
    pub spec: ParamSpec,
}

/// Accepts either an object of bare values (`{"max_stress": 1.2e8}`, types
/// from the declared schema or inferred) or an array of typed entries
/// (`[{"name": "x", "value": 1, "type": "number", "units": "m"}]`). Every
/// value is checked before any is returned, so a bad one stores nothing.
pub fn parse_values(
    body: &Value,
    schema: &RunSchema,
    d: Direction,
) -> Result<Vec<ValueWrite>, ValuesError> {
    let writes = match body {
        Value::Object(m) => {
            if m.is_empty() {
                return Err(ValuesError::Empty(d.as_str()));
            }
            m.iter()
                .map(|(name, v)| typed(schema, d, name, None, None, None, v))
                .collect::<Result<Vec<_>, _>>()?
        }
        Value::Array(entries) => {
            if entries.is_empty() {
                return Err(ValuesError::Empty(d.as_str()));
            }
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| entry(schema, d, i, e))
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            return Err(ValuesError::Shape(d.as_str()));
        }
    };
    let mut seen = std::collections::HashSet::new();
    for w in &writes {
        if !seen.insert(w.name.as_str()) {
            return Err(ValuesError::GivenTwice {
                direction: d.as_str(),
                name: w.name.clone(),
            });
        }
    }
    Ok(writes)
}

fn entry(schema: &RunSchema, d: Direction, i: usize, e: &Value) -> Result<ValueWrite, ValuesError> {
    let Value::Object(m) = e else {
        return Err(ValuesError::NotAnEntry(i));
    };
    for k in m.keys() {
        if !matches!(
            k.as_str(),
            "name" | "value" | "type" | "units" | "unit" | "description"
        ) {
            return Err(ValuesError::UnknownField {
                index: i,
                field: k.clone(),
            });
        }
    }
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .ok_or(ValuesError::NoName(i))?;
    let value = m.get("value").ok_or_else(|| ValuesError::NoValue {
        index: i,
        name: name.to_string(),
    })?;
    let not_a_string = |field: &str| ValuesError::NotAString {
        name: name.to_string(),
        field: field.to_string(),
    };
    let given_type = match m.get("type") {
        None => None,
        Some(Value::String(t)) => {
            Some(ValueType::parse(t).map_err(|source| ValuesError::Type {
                name: name.to_string(),
                source,
            })?)
        }
        Some(_) => return Err(not_a_string("type")),
    };
    let text = |k: &str| -> Result<Option<String>, ValuesError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(not_a_string(k)),
        }
    };
    let units = match text("units")? {
        Some(u) => Some(u),
        None => text("unit")?,
    };
    typed(
        schema,
        d,
        name,
        given_type,
        units,
        text("description")?,
        value,
    )
}

fn typed(
    schema: &RunSchema,
    d: Direction,
    name: &str,
    given_type: Option<ValueType>,
    units: Option<String>,
    description: Option<String>,
    value: &Value,
) -> Result<ValueWrite, ValuesError> {
    if name.is_empty() || name.len() > 256 {
        return Err(ValuesError::BadName {
            direction: d.as_str(),
            name: name.to_string(),
        });
    }
    let mut spec = schema.spec_for(d, name, given_type, value)?;
    // Units and descriptions a caller sends fill in what the schema leaves open.
    if spec.units.is_none() {
        spec.units = units;
    }
    if spec.description.is_none() {
        spec.description = description;
    }
    spec.check(name, value)?;
    Ok(ValueWrite {
        name: name.to_string(),
        value: value.clone(),
        spec,
    })
}

pub use simcache_rundb::{input_env_name, input_env_value};

/// The inputs JSON file handed to a program: name → value.
pub fn inputs_document(inputs: &[ValueWrite]) -> Value {
    Value::Object(
        inputs
            .iter()
            .map(|w| (w.name.clone(), w.value.clone()))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> RunSchema {
        serde_json::from_value(json!({
            "outputs": {"max_stress": {"type": "number", "units": "Pa", "min": 0}}
        }))
        .unwrap()
    }

    #[test]
    fn bare_values_take_declared_types() {
        let w = parse_values(&json!({"max_stress": 12.5}), &schema(), Direction::Output).unwrap();
        assert_eq!(w[0].spec.units.as_deref(), Some("Pa"));
        let e =
            parse_values(&json!({"max_stress": "big"}), &schema(), Direction::Output).unwrap_err();
        assert!(matches!(e, ValuesError::Param(_)), "{e}");
        assert!(
            e.to_string()
                .contains("max_stress: expected number, got string"),
            "{e}"
        );
        let e = parse_values(&json!({"max_stress": -1}), &schema(), Direction::Output).unwrap_err();
        assert!(e.to_string().contains("below the minimum"), "{e}");
        let e = parse_values(&json!({"other": 1}), &schema(), Direction::Output).unwrap_err();
        assert!(e.to_string().contains("unknown output \"other\""), "{e}");
    }

    #[test]
    fn typed_entries_without_schema() {
        let none = RunSchema::default();
        let w = parse_values(
            &json!([{"name": "x", "value": 3, "type": "number", "units": "m"}, {"name": "f", "value": "/o/f.csv", "type": "file"}]),
            &none,
            Direction::Output,
        )
        .unwrap();
        assert_eq!(w[0].spec.value_type, ValueType::Number);
        assert_eq!(w[0].spec.units.as_deref(), Some("m"));
        assert_eq!(w[1].spec.value_type, ValueType::File);
        for (body, msg) in [
            (
                json!([{"name": "x", "value": 1, "type": "quaternion"}]),
                "unknown value type",
            ),
            (
                json!([{"name": "x", "value": "a", "type": "integer"}]),
                "expected integer",
            ),
            (json!([{"value": 1}]), "\"name\" (a string) is required"),
            (json!([{"name": "x"}]), "\"value\" is required"),
            (
                json!([{"name": "x", "value": 1, "colour": 2}]),
                "unknown field \"colour\"",
            ),
            (
                json!([{"name": "x", "value": 1}, {"name": "x", "value": 2}]),
                "given twice",
            ),
            (json!({"x": null}), "null value needs an explicit type"),
            (json!([]), "no outputs given"),
            (json!("x"), "expected an object"),
        ] {
            let e = parse_values(&body, &none, Direction::Output).unwrap_err();
            assert!(e.to_string().contains(msg), "{body}: {e}");
        }
    }

    #[test]
    fn env_names_are_shell_safe() {
        assert_eq!(input_env_name("temperature"), "SIMCACHE_INPUT_TEMPERATURE");
        assert_eq!(
            input_env_name("bar-length.m"),
            "SIMCACHE_INPUT_BAR_LENGTH_M"
        );
        assert_eq!(input_env_value(&json!("steel")), "steel");
        assert_eq!(input_env_value(&json!([1, 2])), "[1,2]");
    }
}
