//! Routes that call a system of record's declared functions on cached data.

use super::*;

pub(super) async fn functions(State(s): State<SorState>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    axum::Json(s.service.functions().describe()).into_response()
}

pub(super) async fn call_post(
    State(s): State<SorState>,
    P((sor, name)): P<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        path: String,
        #[serde(default)]
        args: Map<String, Value>,
    }
    let req: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!(
                "expected {{\"path\": \"...\", \"args\": {{...}}}}: {e}"
            ))
            .into_response();
        }
    };
    let key = match key_of(&req.path) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    run_call(&s, &sor, &name, &key, req.args, &headers).await
}

/// `?n=5&columns=a&columns=b`: each value as JSON when it parses
/// (`n=5` is a number, `columns=["a"]` a list), else as a string; a
/// repeated name makes a list.
pub(crate) fn args_from_query(pairs: Vec<(String, String)>) -> Map<String, Value> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (k, v) in pairs {
        let val = serde_json::from_str::<Value>(&v).unwrap_or(Value::String(v));
        grouped.entry(k).or_default().push(val);
    }
    grouped
        .into_iter()
        .map(|(k, mut vs)| {
            let v = if vs.len() == 1 {
                vs.remove(0)
            } else {
                Value::Array(vs)
            };
            (k, v)
        })
        .collect()
}

pub(super) async fn call_get(
    State(s): State<SorState>,
    P((sor, name, path)): P<(String, String, String)>,
    Q(q): Q<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    let key = match key_of(&path) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let args = s
        .service
        .functions()
        .coerce_query_args(&name, args_from_query(q));
    run_call(&s, &sor, &name, &key, args, &headers).await
}

pub(super) async fn run_call(
    s: &SorState,
    sor: &str,
    name: &str,
    key: &Key,
    args: Map<String, Value>,
    headers: &HeaderMap,
) -> Response {
    let call = match s.service.call_for(name, args) {
        Ok(c) => c,
        Err(e) => {
            count(s, sor, "function", "rejected");
            return call_error(&e).into_response();
        }
    };
    match s.service.run_function(sor, key, &call).await {
        Ok(a) => {
            count(
                s,
                sor,
                "function",
                if a.cached { "cached" } else { "computed" },
            );
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&a.etag) {
                h.insert(header::ETAG, v);
            }
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::HeaderName::from_static(CACHE_HEADER),
                HeaderValue::from_static(if a.cached { "hit-memory" } else { "miss" }),
            );
            if let Some(inm) = header_str(headers, header::IF_NONE_MATCH)
                && conditional::evaluate(&a.etag, None, Some(inm)) == Precondition::NotModified
            {
                return (StatusCode::NOT_MODIFIED, h).into_response();
            }
            (StatusCode::OK, h, a.body).into_response()
        }
        Err(e) => {
            let r = fn_failure(&e);
            count(s, sor, "function", result_label(r.status()));
            r
        }
    }
}
