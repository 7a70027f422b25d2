//! Calls to the SFM service a device is registered with. Only the
//! registered base URL is ever contacted: no redirects are followed, no
//! proxy from the environment is used, and the path is one the route
//! classifier accepted.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::registry::Device;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("SFM service refused the connection: {0}")]
    Refused(String),
    #[error("SFM service did not answer within {0} s")]
    Timeout(i64),
    #[error("SFM service answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("SFM service call failed: {0}")]
    Other(String),
}

impl UpstreamError {
    /// The `Reachable` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Refused(_) => "ConnectRefused",
            UpstreamError::Timeout(_) => "Timeout",
            UpstreamError::TooLarge(_) => "ResponseTooLarge",
            UpstreamError::Other(_) => "UpstreamError",
        }
    }
}

#[derive(Debug)]
pub struct UpstreamReply {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
}

pub struct Upstream {
    client: reqwest::Client,
}

/// Request headers passed on to the SFM service.
const FORWARDED: [http::header::HeaderName; 2] = [http::header::CONTENT_TYPE, http::header::ACCEPT];

impl Upstream {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Upstream { client })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        dev: &Device,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
        max_bytes: usize,
    ) -> Result<UpstreamReply, UpstreamError> {
        let base = dev.spec.upstream.url.trim_end_matches('/');
        let url = if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        };
        let timeout = dev.spec.upstream.timeout_seconds.max(1);
        let mut req = self
            .client
            .request(method, &url)
            .timeout(std::time::Duration::from_secs(timeout as u64));
        for h in FORWARDED {
            if let Some(v) = headers.get(&h) {
                req = req.header(h, v);
            }
        }
        if let Some(auth) = &dev.authorization {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| classify(e, timeout))?;
        let status = resp.status();
        let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
        let mut stream = resp.bytes_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(e, timeout))?;
            if buf.len() + chunk.len() > max_bytes {
                return Err(UpstreamError::TooLarge(max_bytes));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(UpstreamReply {
            status,
            body: buf.freeze(),
            content_type,
        })
    }
}

fn classify(e: reqwest::Error, timeout: i64) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout(timeout)
    } else if e.is_connect() {
        // Without the URL: it is configuration, not for every caller.
        // The innermost cause ("Connection refused (os error 111)").
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        UpstreamError::Refused(cause.to_string())
    } else {
        UpstreamError::Other(e.without_url().to_string())
    }
}
