//! Browser sessions: the web console keeps its session token in an
//! `HttpOnly`, `SameSite=Strict` cookie instead of a header, and every
//! state-changing request it makes carries a CSRF token derived from that
//! session. Pure, apart from the middleware at the bottom.
//!
//! Why a derived token rather than a stored one: a page on another origin can
//! make the browser send the cookie but can neither read it nor the console's
//! pages, so it cannot know `csrf_token(session)`. Deriving it keeps the
//! session store unchanged and the check stateless across replicas.

use axum::http::{HeaderMap, Method, header};
use sha2::{Digest, Sha256};
use simcache_web::ApiError;

use crate::authenticator::SESSION_HEADER;

/// The cookie that carries a console session.
pub const SESSION_COOKIE: &str = "simcache_session";
/// The header a cookie-authenticated, state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session token in the request's `Cookie` header(s), if any.
pub fn session_from_cookies(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// The CSRF token that goes with a session token.
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"simcache-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// `Set-Cookie` for a new console session. `secure` when served over TLS,
/// so the browser never sends it in clear.
pub fn set_session_cookie(token: &str, max_age_seconds: i64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age_seconds.max(0),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_session_cookie(secure: bool) -> String {
    set_session_cookie("", 0, secure)
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a request may go on, CSRF-wise: safe methods always; requests
/// that name their session in `X-Session-ID` (scripts, sidecars: a browser
/// cannot add that header across origins) always; a request that relies on
/// the cookie only with the matching `X-CSRF-Token`.
pub fn check_csrf(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if is_safe(method) || headers.contains_key(SESSION_HEADER) {
        return Ok(());
    }
    let Some(session) = session_from_cookies(headers) else {
        return Ok(());
    };
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match sent {
        None => Err(ApiError::forbidden(
            "missing X-CSRF-Token header: a request authenticated by the session cookie must carry the console's CSRF token",
        )),
        Some(t) if constant_time_eq(t.trim().as_bytes(), csrf_token(session).as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::forbidden("wrong X-CSRF-Token for this session")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: refuses a cookie-authenticated, state-changing request
/// without its CSRF token (403) before any handler or body extractor runs.
pub async fn csrf_guard(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match check_csrf(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_is_read_from_any_cookie_header() {
        let h = headers(&[("cookie", "a=1; simcache_session=abc ; b=2")]);
        assert_eq!(session_from_cookies(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "simcache_session=xyz")]);
        assert_eq!(session_from_cookies(&h), Some("xyz"));
        assert_eq!(
            session_from_cookies(&headers(&[("cookie", "x_simcache_session=1")])),
            None
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = set_session_cookie("t", 3600, false);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=3600")
        );
        assert!(!c.contains("Secure"));
        assert!(set_session_cookie("t", 1, true).ends_with("; Secure"));
        assert!(clear_session_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn cookie_posts_need_the_matching_csrf_token() {
        let tok = "ab".repeat(32);
        let cookie = format!("simcache_session={tok}");
        // Safe methods and header-authenticated requests pass.
        assert!(check_csrf(&Method::GET, &headers(&[("cookie", &cookie)])).is_ok());
        assert!(
            check_csrf(
                &Method::POST,
                &headers(&[("cookie", &cookie), ("x-session-id", &tok)])
            )
            .is_ok()
        );
        // No cookie: nothing to forge; authentication decides.
        assert!(check_csrf(&Method::POST, &HeaderMap::new()).is_ok());
        let e = check_csrf(&Method::POST, &headers(&[("cookie", &cookie)])).unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
        assert!(e.message.contains("X-CSRF-Token"), "{}", e.message);
        let wrong = csrf_token("other");
        let e = check_csrf(
            &Method::DELETE,
            &headers(&[("cookie", &cookie), ("x-csrf-token", &wrong)]),
        )
        .unwrap_err();
        assert!(e.message.contains("wrong"), "{}", e.message);
        let right = csrf_token(&tok);
        assert!(
            check_csrf(
                &Method::POST,
                &headers(&[("cookie", &cookie), ("x-csrf-token", &right)])
            )
            .is_ok()
        );
        assert_ne!(right, csrf_token(&"cd".repeat(32)));
    }
}
