//! The `/session/*` routes every simcache server offers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use simcache_store::clock::format_ms;
use simcache_web::{ApiError, JsonBody};

use crate::limiter::client_ip;
use crate::{Authenticator, IssuedSession, Privilege, PrivilegeSet};

pub fn router(auth: Arc<Authenticator>) -> Router {
    Router::new()
        .route("/session", get(whoami))
        .route("/session/login", post(login))
        .route("/session/refresh", post(refresh))
        .route("/session/logout", post(logout))
        .route("/session/anonymous", post(anonymous))
        .with_state(auth)
}

#[derive(Deserialize)]
struct LoginBody {
    username: Option<String>,
    password: Option<String>,
    ttl_hours: Option<f64>,
}

fn issued_json(i: &IssuedSession) -> Value {
    json!({
        "token": i.token,
        "session_id": i.token,
        "username": i.session.username,
        "role": i.session.role,
        "privileges": i.session.privileges.names(),
        "expires_at": format_ms(i.session.expires_at_ms),
    })
}

async fn login(
    State(auth): State<Arc<Authenticator>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let (Some(username), Some(password)) = (body.username, body.password) else {
        return Err(ApiError::bad_request("username and password are required"));
    };
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), xff, &auth.config().trusted_proxies);
    let issued = auth.login(ip, &username, &password, body.ttl_hours).await?;
    Ok(Json(issued_json(&issued)))
}

#[derive(Deserialize)]
struct TtlBody {
    ttl_hours: Option<f64>,
}

async fn refresh(
    State(auth): State<Arc<Authenticator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional here: sim2l's client refreshes with none.
    let ttl = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        simcache_web::json::parse::<TtlBody>(&body)?.ttl_hours
    };
    let session = auth.authenticate(&headers).await?;
    let token = headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let expires = auth.refresh(&session, ttl).await?;
    Ok(Json(
        json!({ "token": token, "session_id": token, "expires_at": format_ms(expires) }),
    ))
}

async fn logout(
    State(auth): State<Arc<Authenticator>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let session = auth.authenticate(&headers).await?;
    auth.logout(&session).await?;
    Ok(Json(json!({ "success": true })))
}

async fn whoami(
    State(auth): State<Arc<Authenticator>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let s = auth.authenticate(&headers).await?;
    Ok(Json(json!({
        "username": s.username,
        "user_id": s.user_id,
        "role": s.role,
        "privileges": s.privileges.names(),
        "expires_at": format_ms(s.expires_at_ms),
    })))
}

#[derive(Deserialize)]
struct AnonymousBody {
    privileges: Option<Vec<String>>,
    ttl_hours: Option<f64>,
}

/// Issues an anonymous session (sim2l's `create_anonymous_session`). Needs
/// `manage_users`, and grants nothing the caller does not hold.
async fn anonymous(
    State(auth): State<Arc<Authenticator>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AnonymousBody>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth.authorize(&headers, Privilege::ManageUsers).await?;
    let names = body.privileges.unwrap_or_else(|| vec!["user".into()]);
    let wanted = PrivilegeSet::parse(&names).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !caller.privileges.covers(wanted) {
        return Err(ApiError::forbidden(
            "cannot grant privileges this session does not hold",
        ));
    }
    let issued = auth.create_anonymous(wanted, body.ttl_hours).await?;
    Ok(Json(issued_json(&issued)))
}
