//! The SOR cache's REST routes. Every route checks its privilege
//! (`read_sor`, or `manage_sor` for what changes the cache) and answers
//! errors as `{"error": ...}` naming the problem.

mod calls;
mod manage;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::{StreamExt, TryStreamExt};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};
use simcache_auth::{Authenticator, Privilege};
use simcache_web::error::ApiError;

use crate::conditional::{self, Precondition, Wanted};
use crate::disk::{FillEnd, Growing};
use crate::functions::CallError;
use crate::functions::runner::FnError;
use crate::key::{self, Key};
use crate::service::{FnFailure, Place, ReadError, Resolved, SorService};
use crate::source::SourceError;

pub const CACHE_HEADER: &str = "x-simcache-cache";
/// Most keys a prefetch may name; most entries a listing returns.
pub const MAX_BATCH: usize = 1000;

/// `Path`, with a JSON 400 naming the problem when it does not decode.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| P(t))
            .map_err(|e| ApiError::bad_request(format!("the URL path: {}", e.body_text())))
    }
}

/// `Query`, with a JSON 400 naming the problem.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|e| ApiError::bad_request(format!("the query: {}", e.body_text())))
    }
}

#[derive(Clone)]
pub struct SorState {
    pub service: Arc<SorService>,
    pub auth: Arc<Authenticator>,
}

pub(crate) use calls::args_from_query;
use calls::{call_get, call_post, functions};
use manage::{entries, evict_key, evict_prefix, invalidate, prefetch, stats};

pub fn router(state: SorState) -> Router {
    Router::new()
        .route("/sor/functions", get(functions))
        .route("/sor/{sor}/objects", get(list))
        .route("/sor/{sor}/objects/{*path}", get(object))
        .route("/sor/{sor}/meta/{*path}", get(meta))
        .route("/sor/{sor}/prefetch", post(prefetch))
        .route("/sor/{sor}/cache", delete(evict_prefix))
        .route("/sor/{sor}/cache/stats", get(stats))
        .route("/sor/{sor}/cache/entries", get(entries))
        .route("/sor/{sor}/cache/{*path}", delete(evict_key))
        .route("/sor/{sor}/invalidate", post(invalidate))
        .route("/sor/{sor}/functions/{name}", post(call_post))
        .route("/sor/{sor}/functions/{name}/{*path}", get(call_get))
        .merge(crate::compat::router())
        .with_state(state)
}

pub(crate) async fn check(s: &SorState, h: &HeaderMap, p: Privilege) -> Result<(), Response> {
    s.auth
        .authorize(h, p)
        .await
        .map(|_| ())
        .map_err(IntoResponse::into_response)
}

pub(crate) fn key_of(path: &str) -> Result<Key, ApiError> {
    Key::parse(path).map_err(|e| ApiError::bad_request(format!("path {path:?}: {e}")))
}

/// The status a failed read answers with.
pub(crate) fn read_error(e: &ReadError) -> ApiError {
    match e {
        ReadError::UnknownSor(_) => ApiError::not_found(e.to_string()),
        ReadError::Source(s) => source_error(s),
    }
}

pub(crate) fn source_error(e: &SourceError) -> ApiError {
    let status = match e {
        SourceError::NotFound => StatusCode::NOT_FOUND,
        SourceError::Outside => StatusCode::FORBIDDEN,
        SourceError::Denied(_) | SourceError::Corrupt(_) => StatusCode::BAD_GATEWAY,
        SourceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        SourceError::NotModified => StatusCode::NOT_MODIFIED,
        SourceError::Changed | SourceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

pub(crate) fn fn_failure(e: &FnFailure) -> Response {
    match e {
        FnFailure::Read(r) => read_error(r).into_response(),
        FnFailure::TooLarge { .. } => ApiError::unprocessable(e.to_string()).into_response(),
        FnFailure::Function(f) => {
            let status = match f {
                FnError::Budget(_) | FnError::NotApplicable(_) | FnError::OutputCap { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                FnError::NoValue(_) => StatusCode::NOT_FOUND,
                FnError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                FnError::Deadline(_) | FnError::Io(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = ApiError::new(status, f.to_string()).into_response();
            if status == StatusCode::TOO_MANY_REQUESTS {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}

pub(crate) fn call_error(e: &CallError) -> ApiError {
    match e {
        CallError::Unknown(_) => ApiError::not_found(e.to_string()),
        CallError::BadArguments(_) | CallError::FixedArgument { .. } => {
            ApiError::unprocessable(e.to_string())
        }
    }
}

pub(crate) fn count(s: &SorState, sor: &str, route: &str, result: &str) {
    // Only configured SOR names become label values.
    let sor = if s.service.source(sor).is_ok() {
        sor
    } else {
        "unknown"
    };
    s.service
        .metrics()
        .requests
        .with_label_values(&[sor, route, result])
        .inc();
}

fn result_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        304 => "not-modified",
        400 => "bad-request",
        401 | 403 => "refused",
        404 => "not-found",
        412 => "precondition-failed",
        416 => "unsatisfiable",
        422 => "unprocessable",
        429 => "queue-full",
        502 => "bad-gateway",
        503 => "unavailable",
        _ if status.is_success() => "ok",
        _ => "error",
    }
}

pub fn http_date(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

fn content_type(key: &str) -> &'static str {
    let ext = key.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "json" => "application/json",
        "parquet" => "application/vnd.apache.parquet",
        "csv" => "text/csv",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn object(
    State(s): State<SorState>,
    P((sor, path)): P<(String, String)>,
    req: Request,
) -> Response {
    if let Err(r) = check(&s, req.headers(), Privilege::ReadSor).await {
        return r;
    }
    let key = match key_of(&path) {
        Ok(k) => k,
        Err(e) => {
            count(&s, &sor, "object", "bad-request");
            return e.into_response();
        }
    };
    let head_only = req.method() == Method::HEAD;
    let h = req.headers().clone();
    // One retry: a pinned read that meets a changed object re-resolves.
    for attempt in 0..2 {
        // A plain GET may stream the fill it starts; a range, a HEAD or a
        // conditional waits for the verified copy.
        let follow = !head_only
            && [header::RANGE, header::IF_MATCH, header::IF_NONE_MATCH]
                .iter()
                .all(|n| !h.contains_key(n));
        let resolved = match if follow {
            s.service.resolve_following(&sor, &key).await
        } else {
            s.service.resolve(&sor, &key).await
        } {
            Ok(r) => r,
            Err(e) => {
                let e = read_error(&e);
                count(&s, &sor, "object", result_label(e.status));
                return e.into_response();
            }
        };
        match respond(&s, &sor, &key, resolved, &h, head_only).await {
            Ok(r) => {
                let label = r
                    .headers()
                    .get(CACHE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|_| r.status().is_success())
                    .unwrap_or(result_label(r.status()))
                    .to_string();
                count(&s, &sor, "object", &label);
                return r;
            }
            Err(SourceError::Changed) if attempt == 0 => {
                let _ = s.service.revalidate_now(&sor, &key).await;
            }
            Err(e) => {
                let e = source_error(&e);
                count(&s, &sor, "object", result_label(e.status));
                return e.into_response();
            }
        }
    }
    let e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the object changed twice while it was read; retry",
    );
    count(&s, &sor, "object", "unavailable");
    e.into_response()
}

/// Answers one resolved object: preconditions, range, headers, body.
async fn respond(
    s: &SorState,
    sor: &str,
    key: &Key,
    r: Resolved,
    h: &HeaderMap,
    head_only: bool,
) -> Result<Response, SourceError> {
    let etag = r.meta.info.http_etag();
    let last_modified = http_date(r.meta.info.last_modified_ms);
    let size = r.meta.info.size;
    let mut headers = HeaderMap::new();
    let put = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(&mut headers, header::ETAG, &etag);
    put(&mut headers, header::LAST_MODIFIED, &last_modified);
    put(&mut headers, header::ACCEPT_RANGES, "bytes");
    put(&mut headers, header::AGE, &r.age_secs().to_string());
    put(
        &mut headers,
        header::CONTENT_TYPE,
        content_type(key.as_str()),
    );
    headers.insert(
        header::HeaderName::from_static(CACHE_HEADER),
        HeaderValue::from_static(r.served.as_str()),
    );
    match conditional::evaluate(
        &etag,
        header_str(h, header::IF_MATCH),
        header_str(h, header::IF_NONE_MATCH),
    ) {
        Precondition::Failed => {
            let mut resp = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("If-Match does not name the current version {etag}"),
            )
            .into_response();
            resp.headers_mut().extend(headers);
            return Ok(resp);
        }
        Precondition::NotModified => {
            return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
        }
        Precondition::Proceed => {}
    }
    let wanted = conditional::wanted(
        header_str(h, header::RANGE),
        size,
        header_str(h, header::IF_RANGE),
        &etag,
        &last_modified,
    );
    let (status, start, end) = match wanted {
        Wanted::Full => (StatusCode::OK, 0, size),
        Wanted::Part { start, end } => {
            put(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{}/{size}", end - 1),
            );
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        Wanted::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range lies outside the object's {size} bytes"),
            )
            .into_response();
            put(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            resp.headers_mut().extend(headers);
            return Ok(resp);
        }
    };
    put(
        &mut headers,
        header::CONTENT_LENGTH,
        &(end - start).to_string(),
    );
    if head_only {
        return Ok((status, headers).into_response());
    }
    let body = match r.place {
        Place::Memory(b) => Body::from(b.slice(start as usize..end as usize)),
        Place::Disk(file) => file_body(file, start, end - start)
            .await
            .map_err(|e| SourceError::Unavailable(format!("cache disk: {e}")))?,
        Place::Growing(g) => growing_body(g, start, end),
        Place::Remote => {
            let range = (status == StatusCode::PARTIAL_CONTENT).then_some(start..end);
            let f = s
                .service
                .read_through(sor, key, &r.meta.info.etag, range)
                .await
                .map_err(|e| match e {
                    ReadError::Source(s) => s,
                    other => SourceError::Unavailable(other.to_string()),
                })?;
            Body::from_stream(f.body.map_err(std::io::Error::other))
        }
    };
    Ok((status, headers, body).into_response())
}

async fn file_body(file: std::fs::File, start: u64, len: u64) -> std::io::Result<Body> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::from_std(file);
    if start > 0 {
        f.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024);
    Ok(Body::from_stream(stream))
}

/// Streams `start..end` of a fill as it lands. The last byte waits for the
/// fill's verification: a body that fails it ends early, so the client sees
/// a short read (and hyper drops the connection), never a whole wrong body.
fn growing_body(g: Growing, start: u64, end: u64) -> Body {
    const CHUNK: u64 = 256 * 1024;
    let stream = futures_util::stream::try_unfold((g, start), move |(mut g, pos)| async move {
        if pos >= end {
            return Ok(None);
        }
        loop {
            let p = *g.progress.borrow_and_update();
            let readable = match p.end {
                FillEnd::Verified => end,
                FillEnd::Failed => {
                    return Err(std::io::Error::other("the fill did not verify"));
                }
                FillEnd::Writing => p.on_disk.min(end - 1),
            };
            if readable > pos {
                let n = (readable - pos).min(CHUNK) as usize;
                let file = g.file.clone();
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, pos)?;
                    Ok::<_, std::io::Error>(Bytes::from(buf))
                })
                .await
                .map_err(std::io::Error::other)??;
                return Ok(Some((chunk, (g, pos + n as u64))));
            }
            if g.progress.changed().await.is_err() && g.progress.borrow().end != FillEnd::Verified {
                return Err(std::io::Error::other("the fill stopped"));
            }
        }
    });
    Body::from_stream(stream)
}

async fn meta(
    State(s): State<SorState>,
    P((sor, path)): P<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    let key = match key_of(&path) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match s.service.meta(&sor, &key).await {
        Ok(r) => {
            count(&s, &sor, "meta", r.served.as_str());
            axum::Json(json!({
                "sor": sor,
                "path": key.as_str(),
                "size": r.meta.info.size,
                "etag": r.meta.info.http_etag(),
                "last_modified": http_date(r.meta.info.last_modified_ms),
                "last_modified_ms": r.meta.info.last_modified_ms,
                "cache": r.served.as_str(),
                "age_seconds": r.age_secs(),
                "cached": !matches!(r.place, Place::Remote),
            }))
            .into_response()
        }
        Err(e) => {
            let e = read_error(&e);
            count(&s, &sor, "meta", result_label(e.status));
            e.into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    start_after: Option<String>,
}

async fn list(
    State(s): State<SorState>,
    P(sor): P<String>,
    Q(q): Q<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&s, &headers, Privilege::ReadSor).await {
        return r;
    }
    let prefix = match key::parse_prefix(&q.prefix) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::bad_request(format!("prefix {:?}: {e}", q.prefix)).into_response();
        }
    };
    if let Some(sa) = &q.start_after
        && let Err(e) = Key::parse(sa)
    {
        return ApiError::bad_request(format!("start_after {sa:?}: {e}")).into_response();
    }
    let limit = q.limit.unwrap_or(MAX_BATCH);
    if limit == 0 || limit > MAX_BATCH {
        return ApiError::bad_request(format!("limit must be 1..={MAX_BATCH}")).into_response();
    }
    match s
        .service
        .list(&sor, &prefix, q.start_after.as_deref(), limit + 1)
        .await
    {
        Ok(mut items) => {
            count(&s, &sor, "list", "ok");
            let truncated = items.len() > limit;
            items.truncate(limit);
            let next = truncated
                .then(|| items.last().map(|i| i.key.clone()))
                .flatten();
            axum::Json(json!({ "sor": sor, "prefix": prefix, "objects": items,
                               "truncated": truncated, "next_start_after": next }))
            .into_response()
        }
        Err(e) => {
            let e = read_error(&e);
            count(&s, &sor, "list", result_label(e.status));
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{DiskTier, Meta, id_of};
    use crate::source::ObjectInfo;

    fn meta(key: &str, body: &[u8]) -> Meta {
        let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(body).into();
        Meta {
            sor: "d".into(),
            key: key.into(),
            info: ObjectInfo {
                size: body.len() as u64,
                etag: hex::encode(md5),
                last_modified_ms: 0,
            },
            fetched_at_ms: 1,
            validated_at_ms: 1,
        }
    }

    /// Reads what the body yields before `wait`, then the rest.
    async fn collect(body: Body) -> (Vec<u8>, Result<(), String>) {
        let mut out = Vec::new();
        let mut s = body.into_data_stream();
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return (out, Err(e.to_string())),
            }
        }
        (out, Ok(()))
    }

    #[tokio::test]
    async fn a_growing_body_holds_its_last_byte_until_the_fill_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 1 << 30).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (f, _) = tier.begin(data.len() as u64).await.unwrap();
        let mut f = f.unwrap();
        let reader = tokio::spawn(collect(growing_body(f.follow(), 0, data.len() as u64)));
        for c in data.chunks(500_000) {
            f.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !reader.is_finished(),
            "the body ended before the fill verified"
        );
        f.commit(meta("a", &data)).await.unwrap();
        let (got, end) = reader.await.unwrap();
        assert_eq!(end, Ok(()));
        assert!(got == data, "the streamed bytes are the object's");
        assert!(tier.lookup(&id_of("d", "a")).is_some());

        // A fill whose bytes do not match the ETag: the body stops short.
        let (f, _) = tier.begin(data.len() as u64).await.unwrap();
        let mut f = f.unwrap();
        let reader = tokio::spawn(collect(growing_body(f.follow(), 0, data.len() as u64)));
        let mut bad = data.clone();
        bad[10] ^= 1;
        f.write(Bytes::from(bad)).await.unwrap();
        assert!(f.commit(meta("b", &data)).await.is_err());
        let (got, end) = reader.await.unwrap();
        assert!(
            end.is_err(),
            "a failed fill must end the body with an error"
        );
        assert!(got.len() < data.len(), "never the whole (wrong) body");
    }
}
