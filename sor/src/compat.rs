//! cache_api's route, `GET|POST /cache/api/v1.0/`, answered in its envelope
//! (`{"return": {"uri", "path", "value"}}`, `value` a Python repr) so its
//! clients and curl examples work unchanged — over the safe cache: logical
//! keys only, configured SORs only, no uploaded code, errors as 4xx JSON.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};
use simcache_auth::Privilege;
use simcache_web::error::ApiError;

use crate::functions::Builtin;
use crate::http::{SorState, call_error, check, fn_failure, key_of, read_error};
use crate::service::Place;

pub const URI: &str = "/cache/api/v1.0/";

pub fn router() -> Router<SorState> {
    Router::new().route(URI, get(compat_get).post(compat_post))
}

/// What a cache_api request asks for, whichever style it used.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `create` / `read` / `cache_create` / `data_read`.
    Read {
        data: bool,
    },
    Update,
    Delete,
    Head,
    /// `cache_item_stats` / `stats_cache_item`.
    ItemStats,
    /// `stats_cache`.
    CacheStats,
    /// `function_create`: refused.
    Upload,
    /// A built-in or declared function by name.
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub op: Op,
    /// From `path=`; `key=` in the older style.
    pub path: Option<String>,
    /// The envelope carries `path` unless the older function style (`key=`) was used.
    pub path_in_envelope: bool,
    pub storage: Option<String>,
    pub timing: bool,
    /// The remaining parameters (function arguments).
    pub args: Map<String, Value>,
}

/// A request in neither of cache_api's shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("command {0:?} is not one of create, read, update, delete, head")]
    UnknownCommand(String),
    #[error("give command= or function=, not both")]
    CommandAndFunction,
    #[error("give command=create|read|update|delete|head or function=NAME")]
    NoOperation,
    #[error("return={0:?}: expected meta or data")]
    Return(String),
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// Reads either parameter style. Pure.
pub fn parse(params: &Map<String, Value>) -> Result<Request, RequestError> {
    let text = |k: &str| -> Option<String> {
        params.get(k).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let (command, function) = (text("command"), text("function"));
    let (op, function_style) = match (command.as_deref(), function.as_deref()) {
        (Some(c), None) => (
            match c {
                "create" | "read" => Op::Read {
                    data: text("return").as_deref() == Some("data"),
                },
                "update" => Op::Update,
                "delete" => Op::Delete,
                "head" => Op::Head,
                other => return Err(RequestError::UnknownCommand(other.into())),
            },
            false,
        ),
        (None, Some(f)) => (
            match f {
                "cache_create" | "data_read" | "create" | "read" => Op::Read {
                    data: text("return").as_deref() == Some("data"),
                },
                "update" => Op::Update,
                "cache_delete" | "delete" => Op::Delete,
                "cache_head" | "head" => Op::Head,
                "cache_item_stats" | "stats_cache_item" => Op::ItemStats,
                "stats_cache" => Op::CacheStats,
                "function_create" => Op::Upload,
                other => Op::Function(other.to_string()),
            },
            true,
        ),
        (Some(_), Some(_)) => return Err(RequestError::CommandAndFunction),
        (None, None) => return Err(RequestError::NoOperation),
    };
    if let Some(r) = text("return")
        && r != "meta"
        && r != "data"
    {
        return Err(RequestError::Return(r));
    }
    let path = text("path").or_else(|| text("key"));
    let path_in_envelope =
        params.contains_key("path") || !matches!(op, Op::ItemStats | Op::Function(_));
    let timing = match text("time") {
        Some(t) => truthy(&t),
        // The newer style timed by default; the older did not.
        None => function_style && matches!(op, Op::Read { .. }),
    };
    let reserved = [
        "command", "function", "path", "key", "storage", "return", "time", "options",
    ];
    let args = params
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Request {
        op,
        path,
        path_in_envelope,
        storage: text("storage"),
        timing,
        args,
    })
}

/// Python's `repr` of a JSON value, as cache_api's `str()` printed it.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A dict in the given key order (cache_api's answers start with `result`).
pub fn py_dict(pairs: &[(&str, Value)]) -> String {
    format!(
        "{{{}}}",
        pairs
            .iter()
            .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `success 0.000000754138 seconds (7.541385e-07)`, as cache_api timed.
pub fn timing_text(secs: f64) -> String {
    // Python's %e: six decimals, a signed exponent of at least two digits.
    let e = format!("{secs:.6e}");
    let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
    let (sign, digits) = match x.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', x),
    };
    format!("success {secs:.12} seconds ({m}e{sign}{digits:0>2})")
}

fn envelope(path: Option<&str>, include_path: bool, value: String) -> Response {
    // Built by hand: the key order (uri, path, value) is part of the contract.
    let mut body = String::from("{\"return\": {\"uri\": ");
    body.push_str(&Value::String(URI.into()).to_string());
    if include_path {
        body.push_str(", \"path\": ");
        body.push_str(&path.map_or("null".to_string(), |p| Value::String(p.into()).to_string()));
    }
    body.push_str(", \"value\": ");
    body.push_str(&Value::String(value).to_string());
    body.push_str("}}");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn compat_get(
    State(s): State<SorState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pairs: Vec<(String, String)> = form_pairs(q.as_deref().unwrap_or(""));
    let params = crate::http::args_from_query(pairs);
    answer(&s, params, &headers).await
}

async fn compat_post(State(s): State<SorState>, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let params = if is_json || body.first() == Some(&b'{') {
        match serde_json::from_slice::<Value>(&body) {
            // The README's form: {"data": {...}}; a flat object works too.
            Ok(Value::Object(mut o)) => match o.remove("data") {
                Some(Value::Object(d)) => d,
                Some(_) => {
                    return ApiError::bad_request("\"data\" must be an object").into_response();
                }
                None => o,
            },
            Ok(_) => {
                return ApiError::bad_request("the body must be a JSON object").into_response();
            }
            Err(e) => {
                return ApiError::bad_request(format!("the body is not JSON: {e}")).into_response();
            }
        }
    } else {
        let text = String::from_utf8_lossy(&body);
        crate::http::args_from_query(form_pairs(&text))
    };
    answer(&s, params, &headers).await
}

/// `a=b&c=d` as cache_api's framework reads it (percent-decoding, `+` as
/// space), for the query string and form bodies alike.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn count(s: &SorState, sor: &str, result: &str) {
    crate::http::count(s, sor, "compat", result);
}

async fn answer(s: &SorState, params: Map<String, Value>, headers: &HeaderMap) -> Response {
    let req = match parse(&params) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let sor = req
        .storage
        .clone()
        .unwrap_or_else(|| s.service.default_sor().to_string());
    let privilege = match req.op {
        Op::Delete | Op::Update => Privilege::ManageSor,
        _ => Privilege::ReadSor,
    };
    if let Err(r) = check(s, headers, privilege).await {
        return r;
    }
    if req.op == Op::Upload {
        count(s, &sor, "refused");
        return ApiError::forbidden(
            "function_create is not available: simcache runs built-in functions only (GET /sor/functions lists them)",
        )
        .into_response();
    }
    if let Err(e) = s.service.source(&sor) {
        let names: Vec<&str> = s.service.sor_names().collect();
        return ApiError::not_found(format!("{e} (configured: {})", names.join(", ")))
            .into_response();
    }
    let path = req.path.clone();
    let needs_path = !matches!(req.op, Op::Head | Op::CacheStats);
    let key = match (&path, needs_path) {
        (Some(p), _) => match key_of(p) {
            Ok(k) => Some(k),
            Err(e) => return e.into_response(),
        },
        (None, true) => return ApiError::bad_request("give path=NAME").into_response(),
        (None, false) => None,
    };
    let env = |value: String| envelope(path.as_deref(), req.path_in_envelope, value);
    let started = Instant::now();
    match (&req.op, key) {
        (Op::Read { data }, Some(key)) => match s.service.resolve(&sor, &key).await {
            Ok(r) => {
                count(s, &sor, r.served.as_str());
                if *data {
                    return match data_value(s, &sor, &key, r).await {
                        Ok(v) => env(v),
                        Err(resp) => resp,
                    };
                }
                let result = if req.timing {
                    timing_text(started.elapsed().as_secs_f64())
                } else {
                    "success".into()
                };
                env(py_dict(&[("result", json!(result))]))
            }
            Err(e) => read_error(&e).into_response(),
        },
        (Op::Update, Some(key)) => match s.service.revalidate_now(&sor, &key).await {
            Ok(r) => {
                count(s, &sor, r.served.as_str());
                env(py_repr(
                    &json!({ "result": "success", "cache": r.served.as_str() }),
                ))
            }
            Err(e) => read_error(&e).into_response(),
        },
        (Op::Delete, Some(key)) => {
            // This cache only: the SOR is never written.
            let evicted = s.service.evict_key(&sor, &key);
            count(s, &sor, "evicted");
            env(py_dict(&[
                ("result", json!("success")),
                ("evicted", json!(evicted)),
            ]))
        }
        (Op::Head, _) | (Op::CacheStats, _) => {
            let keys: Vec<Value> = s
                .service
                .entries(&sor)
                .into_iter()
                .map(|e| Value::String(e.key))
                .collect();
            count(s, &sor, "listed");
            env(py_repr(&Value::Array(keys)))
        }
        (Op::ItemStats, Some(key)) => {
            let name = if key.as_str().ends_with(".parquet") {
                Builtin::ParquetInfo.name()
            } else {
                Builtin::JsonKeys.name()
            };
            run_fn(s, &sor, &key, name, Map::new(), env).await
        }
        (Op::Function(name), Some(key)) => {
            let args = s
                .service
                .functions()
                .coerce_query_args(name, req.args.clone());
            run_fn(s, &sor, &key, name, args, env).await
        }
        _ => ApiError::bad_request("give path=NAME").into_response(),
    }
}

async fn run_fn(
    s: &SorState,
    sor: &str,
    key: &crate::key::Key,
    name: &str,
    args: Map<String, Value>,
    env: impl Fn(String) -> Response,
) -> Response {
    let call = match s.service.call_for(name, args) {
        Ok(c) => c,
        Err(e) => return call_error(&e).into_response(),
    };
    match s.service.run_function(sor, key, &call).await {
        Ok(a) => {
            count(s, sor, "function");
            let v: Value = serde_json::from_slice(&a.result).unwrap_or(Value::Null);
            // pandas' info() text prints as text, as cache_api showed it.
            match v.get("text").and_then(Value::as_str) {
                Some(t) if call.builtin == Builtin::ParquetInfo => env(t.to_string()),
                _ => env(py_repr(&v)),
            }
        }
        Err(e) => fn_failure(&e),
    }
}

/// `return=data`: a JSON document as its Python repr, a Parquet file as its
/// first rows, text as text.
async fn data_value(
    s: &SorState,
    sor: &str,
    key: &crate::key::Key,
    r: crate::service::Resolved,
) -> Result<String, Response> {
    if key.as_str().ends_with(".parquet") {
        let call = s
            .service
            .call_for(
                Builtin::ParquetHead.name(),
                json!({"n": 10}).as_object().cloned().unwrap_or_default(),
            )
            .map_err(|e| call_error(&e).into_response())?;
        let a = s
            .service
            .run_function(sor, key, &call)
            .await
            .map_err(|e| fn_failure(&e))?;
        let v: Value = serde_json::from_slice(&a.result).unwrap_or(Value::Null);
        return Ok(py_repr(&v["rows"]));
    }
    let limit = s.service.limits().function_output_bytes;
    let bytes = match r.place {
        Place::Memory(b) => b,
        Place::Disk(f) if r.meta.info.size as usize <= limit => {
            let v = tokio::task::spawn_blocking(move || {
                let mut f = f;
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut v).map(|_| v)
            })
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
            })?
            .map_err(|e| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
            })?;
            Bytes::from(v)
        }
        _ => {
            return Err(ApiError::unprocessable(format!(
                "the object is {} bytes; return=data answers at most {limit}; read it from /sor/{sor}/objects/{} instead",
                r.meta.info.size,
                key.as_str()
            ))
            .into_response());
        }
    };
    if bytes.len() > limit {
        return Err(ApiError::unprocessable(format!(
            "the object is {} bytes; return=data answers at most {limit}",
            bytes.len()
        ))
        .into_response());
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        return Ok(py_repr(&v));
    }
    match std::str::from_utf8(&bytes) {
        Ok(t) => Ok(t.to_string()),
        Err(_) => Err(ApiError::unprocessable(
            "the object is binary; read it from /sor/{sor}/objects/{path} instead",
        )
        .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Map<String, Value> {
        crate::http::args_from_query(form_pairs(q))
    }

    #[test]
    fn both_styles_parse() {
        let r = parse(&params("command=create&path=file1.snappy.parquet")).unwrap();
        assert_eq!(r.op, Op::Read { data: false });
        assert_eq!(r.path.as_deref(), Some("file1.snappy.parquet"));
        assert!(!r.timing && r.path_in_envelope);
        let r = parse(&params(
            "function=cache_create&path=a.json&storage=s3&return=data",
        ))
        .unwrap();
        assert_eq!(r.op, Op::Read { data: true });
        assert!(r.timing);
        assert_eq!(r.storage.as_deref(), Some("s3"));
        let r = parse(&params("function=data_read&path=a.json&time=false")).unwrap();
        assert!(!r.timing);
        let r = parse(&params(
            "function=cache_item_stats&key=file1.snappy.parquet",
        ))
        .unwrap();
        assert_eq!(r.op, Op::ItemStats);
        assert!(
            !r.path_in_envelope,
            "the older function style has no path key"
        );
        assert_eq!(
            parse(&params("function=function_create&function_name=x"))
                .unwrap()
                .op,
            Op::Upload
        );
        assert_eq!(
            parse(&params("command=delete&path=a")).unwrap().op,
            Op::Delete
        );
        assert_eq!(parse(&params("function=cache_head")).unwrap().op, Op::Head);
        assert_eq!(
            parse(&params("function=stats_cache")).unwrap().op,
            Op::CacheStats
        );
        let r = parse(&params("function=parquet.head&path=a.parquet&n=3")).unwrap();
        assert_eq!(r.op, Op::Function("parquet.head".into()));
        assert_eq!(r.args.get("n"), Some(&json!(3)));
        let e = parse(&params("command=explode&path=a")).unwrap_err();
        assert_eq!(e, RequestError::UnknownCommand("explode".into()));
        assert!(e.to_string().contains("\"explode\" is not one of"), "{e}");
        assert_eq!(
            parse(&params("path=a")).unwrap_err(),
            RequestError::NoOperation
        );
        assert_eq!(
            parse(&params("command=read&function=read&path=a")).unwrap_err(),
            RequestError::CommandAndFunction
        );
        assert_eq!(
            parse(&params("command=read&path=a&return=xml")).unwrap_err(),
            RequestError::Return("xml".into())
        );
    }

    #[test]
    fn values_print_as_python_did() {
        assert_eq!(
            py_repr(&json!({"result": "success"})),
            "{'result': 'success'}"
        );
        assert_eq!(
            py_repr(&json!({"a": [1, 2.5, null, true, false], "b": "it's"})),
            "{'a': [1, 2.5, None, True, False], 'b': \"it's\"}"
        );
        assert_eq!(py_repr(&json!("a\nb'\"")), "'a\\nb\\'\"'");
        let t = timing_text(7.54138e-07);
        assert_eq!(t, "success 0.000000754138 seconds (7.541380e-07)");
        assert!(timing_text(12.5).ends_with("(1.250000e+01)"));
    }

    #[tokio::test]
    async fn the_envelope_keeps_its_key_order() {
        let r = envelope(Some("file1.json"), true, "{'result': 'success'}".into());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"return": {"uri": "/cache/api/v1.0/", "path": "file1.json", "value": "{'result': 'success'}"}}"#
        );
        let r = envelope(None, false, "x".into());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"return": {"uri": "/cache/api/v1.0/", "value": "x"}}"#
        );
    }
}
