//! Streaming a file as a response body without reading it into memory.

use axum::body::Body;
use axum::http::header;
use axum::response::Response;

/// Streams an open file (often an unlinked spool file) with its length and
/// content type; `download_name` adds a Content-Disposition.
pub fn file_response(
    file: std::fs::File,
    content_type: &str,
    download_name: Option<&str>,
) -> Response {
    let len = file.metadata().map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Some(name) = download_name {
        // Quotes and control characters would break the header; drop them.
        let safe: String = name
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .collect();
        if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    resp
}
