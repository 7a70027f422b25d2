//! The small part of JSON Schema that function arguments use. A schema with
//! any other keyword is refused when it is loaded, so a declared command
//! never silently accepts what its author meant to forbid.

use serde_json::Value;

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "description",
    "title",
    "default",
    "$schema",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "integer", "number", "boolean", "null",
];

/// A schema or an argument refused, and where (`function "f": parameters.x`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct SchemaError {
    pub at: String,
    pub problem: Problem,
}

/// What is wrong: with a declared schema, or with an argument checked against one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("a schema must be an object")]
    NotAnObject,
    #[error("keyword {0:?} is not supported (supported: {known})", known = KNOWN.join(", "))]
    UnsupportedKeyword(String),
    #[error("type {0} is not a JSON Schema type")]
    UnknownType(Value),
    #[error("{0} must be {1}")]
    BadKeyword(String, &'static str),
    #[error("expected {expected}, got {got}")]
    WrongType { expected: Value, got: Value },
    #[error("{got} is not one of {allowed}")]
    NotInEnum { got: Value, allowed: Value },
    #[error("{got} is less than the minimum {min}")]
    BelowMinimum { got: Value, min: f64 },
    #[error("{got} is more than the maximum {max}")]
    AboveMaximum { got: Value, max: f64 },
    #[error("shorter than {0} characters")]
    TooShort(u64),
    #[error("longer than {0} characters")]
    TooLong(u64),
    #[error("fewer than {0} items")]
    TooFewItems(u64),
    #[error("more than {0} items")]
    TooManyItems(u64),
    #[error("missing required argument {0:?}")]
    MissingArgument(String),
    #[error("unknown argument {name:?} (known: {known})")]
    UnknownArgument { name: String, known: String },
}

fn refuse(at: &str, problem: Problem) -> SchemaError {
    SchemaError {
        at: at.to_string(),
        problem,
    }
}

/// Checks that `schema` uses only what [`validate`] understands.
pub fn check_schema(schema: &Value, at: &str) -> Result<(), SchemaError> {
    let obj = schema
        .as_object()
        .ok_or_else(|| refuse(at, Problem::NotAnObject))?;
    let bad = |k: &str, must: &'static str| Err(refuse(at, Problem::BadKeyword(k.into(), must)));
    for (k, v) in obj {
        if !KNOWN.contains(&k.as_str()) {
            return Err(refuse(at, Problem::UnsupportedKeyword(k.clone())));
        }
        match k.as_str() {
            "type" => {
                let ok = match v {
                    Value::String(t) => TYPES.contains(&t.as_str()),
                    Value::Array(ts) => ts
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                    _ => false,
                };
                if !ok {
                    return Err(refuse(at, Problem::UnknownType(v.clone())));
                }
            }
            "properties" => {
                let Some(props) = v.as_object() else {
                    return bad(k, "an object");
                };
                for (name, s) in props {
                    check_schema(s, &format!("{at}.properties.{name}"))?;
                }
            }
            "items" => check_schema(v, &format!("{at}.items"))?,
            "required" if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                return bad(k, "a list of names");
            }
            "additionalProperties" if !v.is_boolean() => return bad(k, "true or false"),
            "minimum" | "maximum" if !v.is_number() => return bad(k, "a number"),
            "minLength" | "maxLength" | "minItems" | "maxItems" if !v.is_u64() => {
                return bad(k, "a non-negative integer");
            }
            "enum" if !v.is_array() => return bad(k, "a list"),
            _ => {}
        }
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Checks `v` against `schema`; the error names where and what.
pub fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), SchemaError> {
    let Some(s) = schema.as_object() else {
        return Ok(());
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, v)),
            _ => true,
        };
        if !ok {
            return Err(refuse(
                at,
                Problem::WrongType {
                    expected: t.clone(),
                    got: v.clone(),
                },
            ));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(refuse(
            at,
            Problem::NotInEnum {
                got: v.clone(),
                allowed: Value::Array(e.clone()),
            },
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(refuse(
                at,
                Problem::BelowMinimum {
                    got: v.clone(),
                    min,
                },
            ));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(refuse(
                at,
                Problem::AboveMaximum {
                    got: v.clone(),
                    max,
                },
            ));
        }
    }
    if let Some(st) = v.as_str() {
        let len = st.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            return Err(refuse(at, Problem::TooShort(min)));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            return Err(refuse(at, Problem::TooLong(max)));
        }
    }
    if let Some(items) = v.as_array() {
        validate_items(s, items, at)?;
    }
    if let Some(obj) = v.as_object() {
        validate_fields(s, obj, at)?;
    }
    Ok(())
}

/// An array's length and items against `s`.
fn validate_items(
    s: &serde_json::Map<String, Value>,
    items: &[Value],
    at: &str,
) -> Result<(), SchemaError> {
    let n = items.len() as u64;
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        return Err(refuse(at, Problem::TooFewItems(min)));
    }
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        return Err(refuse(at, Problem::TooManyItems(max)));
    }
    if let Some(item) = s.get("items") {
        for (i, x) in items.iter().enumerate() {
            validate(item, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// An object's required and known fields against `s`.
fn validate_fields(
    s: &serde_json::Map<String, Value>,
    obj: &serde_json::Map<String, Value>,
    at: &str,
) -> Result<(), SchemaError> {
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                return Err(refuse(at, Problem::MissingArgument(r.to_string())));
            }
        }
    }
    for (k, x) in obj {
        match props.and_then(|p| p.get(k)) {
            Some(ps) => validate(ps, x, &format!("{at}.{k}"))?,
            None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                let known: Vec<&String> = props.map(|p| p.keys().collect()).unwrap_or_default();
                return Err(refuse(
                    at,
                    Problem::UnknownArgument {
                        name: k.clone(),
                        known: known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                ));
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_the_supported_keywords() {
        let s = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 1000},
                "columns": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "mode": {"enum": ["a", "b"]}
            },
            "required": ["n"],
            "additionalProperties": false
        });
        check_schema(&s, "args").unwrap();
        validate(&s, &json!({"n": 5, "columns": ["x"]}), "args").unwrap();
        let e = |v| validate(&s, &v, "args").unwrap_err().to_string();
        assert_eq!(
            validate(&s, &json!({}), "args").unwrap_err().problem,
            Problem::MissingArgument("n".into())
        );
        assert!(e(json!({})).contains("missing required argument \"n\""));
        assert!(e(json!({"n": 0})).contains("minimum"));
        assert!(e(json!({"n": 1001})).contains("maximum"));
        assert!(e(json!({"n": "5"})).contains("expected \"integer\""));
        assert!(e(json!({"n": 1, "columns": [1]})).contains("args.columns[0]"));
        assert!(e(json!({"n": 1, "columns": ["a", "b", "c"]})).contains("more than 2"));
        assert!(e(json!({"n": 1, "mode": "c"})).contains("not one of"));
        assert!(e(json!({"n": 1, "bogus": 1})).contains("unknown argument \"bogus\""));
    }

    #[test]
    fn unsupported_schemas_are_refused_at_load() {
        assert!(
            check_schema(&json!({"pattern": "^a"}), "p")
                .unwrap_err()
                .to_string()
                .contains("pattern")
        );
        assert!(check_schema(&json!({"type": "str"}), "p").is_err());
        assert!(
            check_schema(&json!({"properties": {"a": {"oneOf": []}}}), "p")
                .unwrap_err()
                .to_string()
                .contains("p.properties.a")
        );
        assert!(check_schema(&json!([]), "p").is_err());
    }
}
