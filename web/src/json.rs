//! A JSON body extractor whose every rejection is a JSON error naming the
//! problem: 413 over the size limit, 415 for a non-JSON content type, 400 for
//! malformed JSON, 422 for well-formed JSON of the wrong shape.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A missing content type is accepted (curl users forget it); a wrong one is not.
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("expected Content-Type application/json, got {ct:?}"),
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body is larger than the configured limit")
            } else {
                ApiError::new(
                    status,
                    format!("cannot read request body: {}", rej.body_text()),
                )
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document, classifying errors into 400 (syntax) and 422 (shape).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable(format!("invalid request: {e}"))
        }
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}
