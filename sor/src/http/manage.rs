//! Routes that manage the cache rather than read through it: prefetch,
//! eviction, invalidation, statistics and the entry list.

use super::*;

pub(super) async fn prefetch(
    State(s): State<SorState>,
    P(sor): P<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ManageSor).await {
        return r;
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        paths: Vec<String>,
    }
    let req: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!(
                "expected {{\"paths\": [\"a.parquet\", ...]}}: {e}"
            ))
            .into_response();
        }
    };
    if req.paths.is_empty() || req.paths.len() > MAX_BATCH {
        return ApiError::bad_request(format!("paths: give 1 to {MAX_BATCH}")).into_response();
    }
    if let Err(e) = s.service.source(&sor) {
        return read_error(&e).into_response();
    }
    let mut keys = Vec::with_capacity(req.paths.len());
    for p in &req.paths {
        match key_of(p) {
            Ok(k) => keys.push(k),
            Err(e) => return e.into_response(),
        }
    }
    // Fills share the fetch slots; this only bounds how many wait at once.
    let results: Vec<Value> = futures_util::stream::iter(keys)
        .map(|k| {
            let svc = s.service.clone();
            let sor = sor.clone();
            async move {
                match svc.resolve(&sor, &k).await {
                    Ok(r) => json!({"path": k.as_str(), "cache": r.served.as_str(),
                                    "size": r.meta.info.size, "cached": !matches!(r.place, Place::Remote)}),
                    Err(e) => json!({"path": k.as_str(), "error": e.to_string(),
                                    "status": read_error(&e).status.as_u16()}),
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    count(&s, &sor, "prefetch", "ok");
    axum::Json(json!({ "sor": sor, "results": results })).into_response()
}

pub(super) async fn evict_key(
    State(s): State<SorState>,
    P((sor, path)): P<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ManageSor).await {
        return r;
    }
    let key = match key_of(&path) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = s.service.source(&sor) {
        return read_error(&e).into_response();
    }
    let evicted = s.service.evict_key(&sor, &key);
    count(&s, &sor, "evict", "ok");
    axum::Json(json!({"sor": sor, "path": key.as_str(), "evicted": usize::from(evicted)}))
        .into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct PrefixQuery {
    prefix: Option<String>,
}

pub(super) async fn evict_prefix(
    State(s): State<SorState>,
    P(sor): P<String>,
    Q(q): Q<PrefixQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ManageSor).await {
        return r;
    }
    let Some(raw) = q.prefix else {
        return ApiError::bad_request(
            "name what to evict: DELETE /sor/{sor}/cache/{path} or ?prefix= (empty for everything)",
        )
        .into_response();
    };
    let prefix = match key::parse_prefix(&raw) {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(format!("prefix {raw:?}: {e}")).into_response(),
    };
    if let Err(e) = s.service.source(&sor) {
        return read_error(&e).into_response();
    }
    let n = s.service.evict_prefix(&sor, &prefix, "evicted");
    count(&s, &sor, "evict", "ok");
    axum::Json(json!({"sor": sor, "prefix": prefix, "evicted": n})).into_response()
}

pub(super) async fn invalidate(
    State(s): State<SorState>,
    P(sor): P<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ManageSor).await {
        return r;
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        path: Option<String>,
        prefix: Option<String>,
    }
    let req: Req = if body.is_empty() {
        Req {
            path: None,
            prefix: None,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return ApiError::bad_request(format!(
                    "expected {{\"path\": ...}} or {{\"prefix\": ...}}: {e}"
                ))
                .into_response();
            }
        }
    };
    let prefix = match (req.path, req.prefix) {
        (Some(p), None) => match key_of(&p) {
            Ok(k) => k.as_str().to_string(),
            Err(e) => return e.into_response(),
        },
        (None, Some(p)) => match key::parse_prefix(&p) {
            Ok(p) => p,
            Err(e) => return ApiError::bad_request(format!("prefix {p:?}: {e}")).into_response(),
        },
        _ => {
            return ApiError::bad_request(
                "give exactly one of \"path\" or \"prefix\" (\"\" invalidates everything)",
            )
            .into_response();
        }
    };
    match s.service.invalidate(&sor, &prefix).await {
        Ok((n, announced)) => {
            count(&s, &sor, "invalidate", "ok");
            axum::Json(json!({"sor": sor, "prefix": prefix, "evicted_here": n,
                              "announced": announced}))
            .into_response()
        }
        Err(e) => read_error(&e).into_response(),
    }
}

pub(super) async fn stats(
    State(s): State<SorState>,
    P(sor): P<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    match s.service.stats(&sor) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => read_error(&e).into_response(),
    }
}

pub(super) async fn entries(
    State(s): State<SorState>,
    P(sor): P<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    if let Err(e) = s.service.source(&sor) {
        return read_error(&e).into_response();
    }
    let entries = s.service.entries(&sor);
    axum::Json(json!({"sor": sor, "entries": entries})).into_response()
}
