//! Functions on cached data: a fixed set of built-ins (no uploaded code),
//! and declared commands that bind a name to one built-in with fixed
//! arguments and a schema for the caller's part. Which function, with which
//! arguments, is decided here without I/O; [`runner`] runs it within bounds.

pub mod json_fns;
pub mod object_fns;
pub mod parquet_fns;
pub mod runner;
pub mod schema;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Builtin {
    #[serde(rename = "object.stat")]
    ObjectStat,
    #[serde(rename = "object.sha256")]
    ObjectSha256,
    #[serde(rename = "parquet.schema")]
    ParquetSchema,
    #[serde(rename = "parquet.row_count")]
    ParquetRowCount,
    #[serde(rename = "parquet.column_stats")]
    ParquetColumnStats,
    #[serde(rename = "parquet.info")]
    ParquetInfo,
    #[serde(rename = "parquet.head")]
    ParquetHead,
    #[serde(rename = "parquet.describe")]
    ParquetDescribe,
    #[serde(rename = "json.get")]
    JsonGet,
    #[serde(rename = "json.keys")]
    JsonKeys,
    #[serde(rename = "json.len")]
    JsonLen,
}

pub const MAX_HEAD_ROWS: u64 = 1000;

impl Builtin {
    pub const ALL: [Builtin; 11] = [
        Builtin::ObjectStat,
        Builtin::ObjectSha256,
        Builtin::ParquetSchema,
        Builtin::ParquetRowCount,
        Builtin::ParquetColumnStats,
        Builtin::ParquetInfo,
        Builtin::ParquetHead,
        Builtin::ParquetDescribe,
        Builtin::JsonGet,
        Builtin::JsonKeys,
        Builtin::JsonLen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::ObjectStat => "object.stat",
            Builtin::ObjectSha256 => "object.sha256",
            Builtin::ParquetSchema => "parquet.schema",
            Builtin::ParquetRowCount => "parquet.row_count",
            Builtin::ParquetColumnStats => "parquet.column_stats",
            Builtin::ParquetInfo => "parquet.info",
            Builtin::ParquetHead => "parquet.head",
            Builtin::ParquetDescribe => "parquet.describe",
            Builtin::JsonGet => "json.get",
            Builtin::JsonKeys => "json.keys",
            Builtin::JsonLen => "json.len",
        }
    }

    pub fn parse(name: &str) -> Option<Builtin> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            Builtin::ObjectStat => "Size, ETag and last-modified time of the object.",
            Builtin::ObjectSha256 => "SHA-256 of the object's bytes.",
            Builtin::ParquetSchema => "Columns, physical and logical types (footer only).",
            Builtin::ParquetRowCount => "Number of rows and row groups (footer only).",
            Builtin::ParquetColumnStats => {
                "Min, max, null count, distinct count when written, and sizes, per row group and aggregated (footer only)."
            }
            Builtin::ParquetInfo => {
                "A pandas info()-like table: columns, non-null counts, dtypes (footer only)."
            }
            Builtin::ParquetHead => "The first n rows (n <= 1000) of chosen columns.",
            Builtin::ParquetDescribe => {
                "Count, mean, std, min, quartiles and max of numeric columns (reads the data)."
            }
            Builtin::JsonGet => "The value at an RFC 6901 JSON pointer.",
            Builtin::JsonKeys => "The keys of the object at a pointer.",
            Builtin::JsonLen => "The length of the array, object or string at a pointer.",
        }
    }

    /// JSON Schema of the arguments.
    pub fn args_schema(self) -> Value {
        let columns = json!({"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 1000,
                             "description": "Top-level columns (default: all)."});
        let pointer = json!({"type": "string", "maxLength": 1024,
                             "description": "RFC 6901 pointer, e.g. /runs/0/temperature (default: the whole document)."});
        let props = match self {
            Builtin::ParquetColumnStats | Builtin::ParquetDescribe => json!({ "columns": columns }),
            Builtin::ParquetHead => json!({
                "n": {"type": "integer", "minimum": 0, "maximum": MAX_HEAD_ROWS, "default": 5},
                "columns": columns,
            }),
            Builtin::JsonGet | Builtin::JsonKeys | Builtin::JsonLen => {
                json!({ "pointer": pointer })
            }
            _ => json!({}),
        };
        json!({"type": "object", "properties": props, "additionalProperties": false})
    }

    pub fn is_parquet(self) -> bool {
        matches!(
            self,
            Builtin::ParquetSchema
                | Builtin::ParquetRowCount
                | Builtin::ParquetColumnStats
                | Builtin::ParquetInfo
                | Builtin::ParquetHead
                | Builtin::ParquetDescribe
        )
    }
}

/// A named command bound to one built-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Declared {
    pub name: String,
    pub builtin: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Arguments the caller cannot change.
    #[serde(default)]
    pub fixed: Map<String, Value>,
    /// JSON Schema of the caller's parameters (default: none allowed).
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// The functions one sidecar offers.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    declared: BTreeMap<String, (Builtin, Declared, Value)>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("no function named {0:?}; GET /sor/functions lists them")]
    Unknown(String),
    #[error(transparent)]
    BadArguments(#[from] schema::SchemaError),
    #[error("arguments: {argument:?} is fixed by the command {command:?}")]
    FixedArgument { argument: String, command: String },
}

/// Why declared functions are refused at start-up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclareError {
    #[error(
        "function {0:?}: names are 1-63 lowercase letters, digits, '-' and '_', starting with a letter"
    )]
    BadName(String),
    #[error("function {0:?}: the name is taken")]
    NameTaken(String),
    #[error("function {name:?}: unknown builtin {builtin:?} (one of: {known})", known = Builtin::ALL.map(Builtin::name).join(", "))]
    UnknownBuiltin { name: String, builtin: String },
    #[error("function {name:?}: {argument:?} is both fixed and a parameter")]
    FixedAndParameter { name: String, argument: String },
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error("declared functions: {0}")]
    Unreadable(String),
}

/// A function call decided: the built-in and its full arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub builtin: Builtin,
    pub args: Map<String, Value>,
}

impl Catalog {
    /// Validates declared commands (names, built-ins, fixed arguments,
    /// parameter schemas) before any is served.
    pub fn load(decls: Vec<Declared>) -> Result<Catalog, DeclareError> {
        let mut declared = BTreeMap::new();
        for d in decls {
            let at = format!("function {:?}", d.name);
            if !valid_command_name(&d.name) {
                return Err(DeclareError::BadName(d.name));
            }
            if Builtin::parse(&d.name).is_some() || declared.contains_key(&d.name) {
                return Err(DeclareError::NameTaken(d.name));
            }
            let b = Builtin::parse(&d.builtin).ok_or_else(|| DeclareError::UnknownBuiltin {
                name: d.name.clone(),
                builtin: d.builtin.clone(),
            })?;
            let params = d
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "additionalProperties": false}));
            schema::check_schema(&params, &format!("{at}: parameters"))?;
            if let Some(props) = params.get("properties").and_then(Value::as_object) {
                for k in props.keys() {
                    if d.fixed.contains_key(k) {
                        return Err(DeclareError::FixedAndParameter {
                            name: d.name.clone(),
                            argument: k.clone(),
                        });
                    }
                }
            }
            schema::validate(
                &strip_required(b.args_schema()),
                &Value::Object(d.fixed.clone()),
                &format!("{at}: fixed"),
            )?;
            declared.insert(d.name.clone(), (b, d, params));
        }
        Ok(Catalog { declared })
    }

    /// Resolves `name` with the caller's `params` into a call.
    pub fn call(&self, name: &str, params: Map<String, Value>) -> Result<Call, CallError> {
        if let Some(b) = Builtin::parse(name) {
            schema::validate(
                &b.args_schema(),
                &Value::Object(params.clone()),
                "arguments",
            )
            .map_err(CallError::BadArguments)?;
            return Ok(Call {
                name: name.into(),
                builtin: b,
                args: params,
            });
        }
        let (b, d, schema_) = self
            .declared
            .get(name)
            .ok_or_else(|| CallError::Unknown(name.into()))?;
        for k in params.keys() {
            if d.fixed.contains_key(k) {
                return Err(CallError::FixedArgument {
                    argument: k.clone(),
                    command: name.into(),
                });
            }
        }
        schema::validate(schema_, &Value::Object(params.clone()), "arguments")
            .map_err(CallError::BadArguments)?;
        let mut args = params;
        args.extend(d.fixed.clone());
        schema::validate(&b.args_schema(), &Value::Object(args.clone()), "arguments")
            .map_err(CallError::BadArguments)?;
        Ok(Call {
            name: name.into(),
            builtin: *b,
            args,
        })
    }

    /// Arguments from a query string are untyped: `columns=id` means the
    /// list `["id"]` where the schema wants a list, and `pointer=1` the
    /// string `"1"` where it wants a string.
    pub fn coerce_query_args(&self, name: &str, args: Map<String, Value>) -> Map<String, Value> {
        let schema = match Builtin::parse(name) {
            Some(b) => b.args_schema(),
            None => match self.declared.get(name) {
                Some((_, _, params)) => params.clone(),
                None => return args,
            },
        };
        let props = schema.get("properties").and_then(Value::as_object);
        args.into_iter()
            .map(|(k, v)| {
                let want = props
                    .and_then(|p| p.get(&k))
                    .and_then(|p| p.get("type"))
                    .and_then(Value::as_str);
                let v = match (want, v) {
                    (Some("array"), v @ Value::Array(_)) => v,
                    (Some("array"), v) => Value::Array(vec![v]),
                    (Some("string"), Value::String(s)) => Value::String(s),
                    (Some("string"), v) => Value::String(v.to_string()),
                    (_, v) => v,
                };
                (k, v)
            })
            .collect()
    }

    /// `GET /sor/functions`: every function with its argument schema.
    pub fn describe(&self) -> Value {
        let mut out: Vec<Value> = Builtin::ALL
            .iter()
            .map(|b| {
                json!({"name": b.name(), "kind": "builtin", "description": b.description(),
                       "arguments": b.args_schema()})
            })
            .collect();
        for (b, d, params) in self.declared.values() {
            out.push(
                json!({"name": d.name, "kind": "declared", "builtin": b.name(),
                            "description": d.description, "fixed": d.fixed, "arguments": params}),
            );
        }
        json!({ "functions": out })
    }
}

/// Fixed arguments are checked for shape, not completeness.
fn strip_required(mut s: Value) -> Value {
    if let Some(o) = s.as_object_mut() {
        o.remove("required");
    }
    s
}

fn valid_command_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Call {
    /// What determines the result: function, canonical arguments and the
    /// object's version. Keys the result cache and derives the ETag.
    pub fn fingerprint(&self, sor: &str, key: &str, object_etag: &str) -> String {
        // serde_json's Map is ordered by key: this is canonical.
        let args = Value::Object(self.args.clone()).to_string();
        let mut h = sha2::Sha256::new();
        for part in [self.builtin.name(), &args, sor, key, object_etag] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    /// The ETag of a GET of this call's result.
    pub fn etag(&self, sor: &str, key: &str, object_etag: &str) -> String {
        format!("\"fn-{}\"", &self.fingerprint(sor, key, object_etag)[..32])
    }
}

/// Reads a `--sor-functions` file (YAML or JSON: a list of commands).
pub fn parse_declared(text: &str) -> Result<Vec<Declared>, DeclareError> {
    serde_yaml::from_str(text).map_err(|e| DeclareError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, builtin: &str, fixed: Value, params: Option<Value>) -> Declared {
        Declared {
            name: name.into(),
            builtin: builtin.into(),
            description: None,
            fixed: fixed.as_object().cloned().unwrap_or_default(),
            parameters: params,
        }
    }

    #[test]
    fn builtins_check_their_arguments() {
        let c = Catalog::default();
        let call = c
            .call(
                "parquet.head",
                json!({"n": 10}).as_object().cloned().unwrap(),
            )
            .unwrap();
        assert_eq!(call.builtin, Builtin::ParquetHead);
        let e = c
            .call(
                "parquet.head",
                json!({"n": 1001}).as_object().cloned().unwrap(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("maximum"), "{e}");
        let e = c
            .call(
                "json.get",
                json!({"path": "/a"}).as_object().cloned().unwrap(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("unknown argument \"path\""), "{e}");
        assert_eq!(
            c.call("function_create", Map::new()).unwrap_err(),
            CallError::Unknown("function_create".into())
        );
    }

    #[test]
    fn declared_commands_bind_fixed_arguments_and_check_the_rest() {
        let c = Catalog::load(vec![decl(
            "price-head",
            "parquet.head",
            json!({"columns": ["price"]}),
            Some(
                json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 20}},
                        "additionalProperties": false}),
            ),
        )])
        .unwrap();
        let call = c
            .call("price-head", json!({"n": 3}).as_object().cloned().unwrap())
            .unwrap();
        assert_eq!(
            Value::Object(call.args),
            json!({"n": 3, "columns": ["price"]})
        );
        let e = c
            .call("price-head", json!({"n": 30}).as_object().cloned().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("maximum"), "{e}");
        let e = c
            .call(
                "price-head",
                json!({"columns": ["x"]}).as_object().cloned().unwrap(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("fixed"), "{e}");
        assert!(c.describe()["functions"].as_array().unwrap().len() == Builtin::ALL.len() + 1);
    }

    #[test]
    fn bad_declarations_are_refused_at_load() {
        let e = |d| Catalog::load(vec![d]).unwrap_err().to_string();
        assert!(e(decl("x", "python.exec", json!({}), None)).contains("unknown builtin"));
        assert!(e(decl("Bad", "json.get", json!({}), None)).contains("names are"));
        assert!(e(decl("json.get", "json.get", json!({}), None)).contains("names are"));
        let twice = Catalog::load(vec![
            decl("a", "json.len", json!({}), None),
            decl("a", "json.len", json!({}), None),
        ]);
        assert_eq!(twice.unwrap_err(), DeclareError::NameTaken("a".into()));
        assert!(e(decl("x", "parquet.head", json!({"n": 5000}), None)).contains("maximum"));
        assert!(
            e(decl(
                "x",
                "json.get",
                json!({}),
                Some(json!({"pattern": "a"}))
            ))
            .contains("pattern")
        );
        assert!(
            e(decl(
                "x",
                "json.get",
                json!({"pointer": "/a"}),
                Some(json!({"properties": {"pointer": {"type": "string"}}}))
            ))
            .contains("both fixed and a parameter")
        );
        let yaml = "- name: a\n  builtin: json.len\n  bogus: 1\n";
        assert!(
            parse_declared(yaml)
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
    }

    #[test]
    fn fingerprints_are_canonical_and_version_bound() {
        let c = Catalog::default();
        let a = c
            .call(
                "parquet.head",
                serde_json::from_str(r#"{"n": 3, "columns": ["a"]}"#).unwrap(),
            )
            .unwrap();
        let b = c
            .call(
                "parquet.head",
                serde_json::from_str(r#"{"columns": ["a"], "n": 3}"#).unwrap(),
            )
            .unwrap();
        assert_eq!(a.etag("d", "k", "\"e1\""), b.etag("d", "k", "\"e1\""));
        assert_ne!(a.etag("d", "k", "\"e1\""), a.etag("d", "k", "\"e2\""));
    }
}
