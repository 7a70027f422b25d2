//! Sessions and privileges over real HTTP: 401 without a live session, 403
//! without the privilege, rate-limited login, refresh, logout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::time::Duration;

use common::{Ctx, entry_body};
use reqwest::StatusCode;
use serde_json::json;
use simcache_auth::{PrivilegeSet, Role};
use simcache_store::Stores;

simcache_testkit::on_both_backends!(
    every_route_checks_its_privilege,
    expired_and_forged_sessions_are_refused,
    login_is_rate_limited_and_sessions_refresh_and_end,
    anonymous_sessions_grant_no_more_than_the_caller_holds,
    passwords_are_stored_as_argon2,
);

async fn every_route_checks_its_privilege(c: Ctx) {
    c.put_entry("p/1", 1, json!({})).await;
    // (method, path, body, weakest role allowed)
    let routes: Vec<(&str, &str, Option<serde_json::Value>, Role)> = vec![
        ("GET", "/cache/p/1", None, Role::User),
        ("GET", "/cache/stats", None, Role::User),
        ("GET", "/cache/entries", None, Role::User),
        (
            "POST",
            "/cache",
            Some(entry_body("p/2", 1, json!({}))),
            Role::User,
        ),
        (
            "POST",
            "/cache/invalidate",
            Some(json!({"pattern": "zzz/*"})),
            Role::Developer,
        ),
        ("DELETE", "/cache/p/2", None, Role::Developer),
        ("DELETE", "/cache", None, Role::Admin),
    ];
    let weaker = |r: Role| match r {
        Role::User => None,
        Role::Developer => Some(c.user.clone()),
        Role::Admin => Some(c.dev.clone()),
    };
    for (method, path, body, role) in &routes {
        let call = |tok: Option<String>| {
            let rb = match *method {
                "GET" => c.http.get(format!("{}{path}", c.url)),
                "POST" => c
                    .http
                    .post(format!("{}{path}", c.url))
                    .json(body.as_ref().unwrap()),
                _ => c.http.delete(format!("{}{path}", c.url)),
            };
            let rb = match tok {
                Some(t) => rb.header("X-Session-ID", t),
                None => rb,
            };
            async move {
                let r = rb.send().await.unwrap();
                let s = r.status();
                (s, r.json::<serde_json::Value>().await.unwrap())
            }
        };
        let (s, b) = call(None).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a session: {b}"
        );
        assert_eq!(b["error"], "missing X-Session-ID header");
        if let Some(tok) = weaker(*role) {
            let (s, b) = call(Some(tok)).await;
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{method} {path} with a weaker role: {b}"
            );
            assert!(b["error"].as_str().unwrap().contains("privilege"), "{b}");
        }
        let tok = match role {
            Role::User => c.user.clone(),
            Role::Developer => c.dev.clone(),
            Role::Admin => c.admin.clone(),
        };
        let (s, b) = call(Some(tok)).await;
        assert!(s.is_success(), "{method} {path} with {role:?}: {s} {b}");
    }
    // A session header that is there but not visible ASCII is called
    // invalid, not missing.
    let r = c
        .http
        .get(format!("{}/cache/stats", c.url))
        .header(
            "X-Session-ID",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error"], "invalid X-Session-ID header");
    // Health and metrics are open (probes and Prometheus scrape them).
    assert_eq!(c.get("/health", None).await.0, StatusCode::OK);
    assert_eq!(
        c.http
            .get(format!("{}/metrics", c.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

async fn expired_and_forged_sessions_are_refused(c: Ctx) {
    c.put_entry("e/1", 1, json!({})).await;
    let short = c
        .srv
        .auth
        .create_anonymous(Role::User.privileges(), Some(0.001))
        .await
        .unwrap()
        .token;
    // 3.6 s: long enough for the first request on a loaded machine.
    assert_eq!(c.get("/cache/e/1", Some(&short)).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let (s, b) = c.get("/cache/e/1", Some(&short)).await;
    assert_eq!(
        (s, b["error"].clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!("invalid or expired session")
        )
    );
    for forged in [
        "demo-session",
        "no-auth-session",
        &"0".repeat(64),
        "'; DROP TABLE sessions; --",
    ] {
        assert_eq!(
            c.get("/cache/e/1", Some(forged)).await.0,
            StatusCode::UNAUTHORIZED,
            "{forged}"
        );
    }
}

async fn login_is_rate_limited_and_sessions_refresh_and_end(c: Ctx) {
    c.srv
        .auth
        .create_user("alice", "correct horse", Role::Developer, None)
        .await
        .unwrap();
    c.put_entry("l/1", 1, json!({})).await;
    let (s, b) = c
        .post("/session/login", None, json!({"username": "alice"}))
        .await;
    assert_eq!(
        (s, b["error"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("username and password are required")
        )
    );
    let (s, b) = c
        .post(
            "/session/login",
            None,
            json!({"username": "nobody", "password": "x"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!("invalid username or password")
        )
    );
    let (s, b) = c
        .post(
            "/session/login",
            None,
            json!({"username": "alice", "password": "correct horse"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let tok = b["session_id"].as_str().unwrap().to_string();
    assert_eq!(b["token"], b["session_id"]);
    assert_eq!(b["role"], "developer");
    assert!(
        b["privileges"]
            .as_array()
            .unwrap()
            .contains(&json!("invalidate_cache"))
    );
    assert_eq!(c.get("/cache/l/1", Some(&tok)).await.0, StatusCode::OK);

    // Five attempts per client and name per minute; then even the right password waits.
    for _ in 0..5 {
        let (s, _) = c
            .post(
                "/session/login",
                None,
                json!({"username": "alice", "password": "wrong"}),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, b) = c
        .post(
            "/session/login",
            None,
            json!({"username": "Alice", "password": "correct horse"}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert!(b["error"].as_str().unwrap().contains("too many"));

    // Refresh moves the expiry; logout ends the session everywhere.
    let (_, who) = c.get("/session", Some(&tok)).await;
    let (s, r) = c
        .post_raw(
            "/session/refresh",
            Some(&tok),
            "application/json",
            br#"{"ttl_hours": 48}"#.to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["expires_at"].as_str().unwrap() > who["expires_at"].as_str().unwrap());
    let (s, _) = c
        .post_raw("/session/refresh", Some(&tok), "application/json", vec![])
        .await;
    assert_eq!(s, StatusCode::OK, "a body is optional");
    let (s, r) = c
        .post_raw(
            "/session/refresh",
            Some(&tok),
            "application/json",
            br#"{"ttl_hours": -1}"#.to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(
        c.post("/session/logout", Some(&tok), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.get("/cache/l/1", Some(&tok)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.post_raw("/session/refresh", Some(&tok), "application/json", vec![])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

async fn anonymous_sessions_grant_no_more_than_the_caller_holds(c: Ctx) {
    let (s, b) = c
        .post(
            "/session/anonymous",
            Some(&c.admin),
            json!({"privileges": ["developer"], "ttl_hours": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let tok = b["session_id"].as_str().unwrap().to_string();
    let (s, _) = c
        .post("/cache/invalidate", Some(&tok), json!({"pattern": "x/*"}))
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "role name expands to the developer privileges"
    );
    assert_eq!(
        c.delete("/cache", Some(&tok)).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, _) = c
        .post(
            "/session/anonymous",
            Some(&c.dev),
            json!({"privileges": ["read_cache"]}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "creating sessions needs manage_users"
    );
    let mgr = c
        .srv
        .auth
        .create_anonymous(
            PrivilegeSet::parse(&["manage_users", "read_cache"]).unwrap(),
            None,
        )
        .await
        .unwrap()
        .token;
    let (s, b) = c
        .post(
            "/session/anonymous",
            Some(&mgr),
            json!({"privileges": ["admin"]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = c
        .post(
            "/session/anonymous",
            Some(&c.admin),
            json!({"privileges": ["superuser"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("superuser"));
}

async fn passwords_are_stored_as_argon2(c: Ctx) {
    c.srv
        .auth
        .create_user("bob", "hunter2hunter2", Role::User, Some("bob@example.org"))
        .await
        .unwrap();
    let err = c
        .srv
        .auth
        .create_user("bob", "another password", Role::User, None)
        .await
        .unwrap_err();
    assert_eq!(err.status.as_u16(), 409);
    let short = c
        .srv
        .auth
        .create_user("carol", "short", Role::User, None)
        .await
        .unwrap_err();
    assert_eq!(short.status.as_u16(), 400);
    let store = Stores::open(&c.backend, "observer").await.unwrap();
    let u = store.sessions.find_user("bob").await.unwrap().unwrap();
    assert!(
        u.password_hash.starts_with("$argon2id$"),
        "{}",
        u.password_hash
    );
    assert!(!u.password_hash.contains("hunter2"));
}

#[tokio::test]
async fn no_auth_only_when_asked_for() {
    let c = common::sqlite_with(|cfg| cfg.auth.no_auth = true).await;
    let (s, _) = c
        .post("/cache", None, entry_body("n/1", 1, json!({})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c.get("/cache/n/1", None).await.0, StatusCode::OK);
    let secured = common::sqlite().await;
    assert_eq!(
        secured.get("/cache/n/1", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}
