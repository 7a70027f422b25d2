//! Every bad input gets a JSON error naming the problem, and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use common::{Ctx, entry_body};
use reqwest::StatusCode;
use serde_json::{Value, json};

simcache_testkit::on_both_backends!(every_bad_input_is_refused_and_nothing_changes);

fn assert_names(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("JSON error body expected, got {body}"));
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{msg:?} should mention {needle:?}"
    );
}

async fn every_bad_input_is_refused_and_nothing_changes(c: Ctx) {
    c.put_entry("keep/me", 9, json!({})).await;
    let (_, before) = c.get("/cache/entries?limit=10", Some(&c.user)).await;
    let dev = Some(c.dev.as_str());

    // Malformed JSON and wrong shapes.
    let (s, b) = c
        .post_raw(
            "/cache",
            dev,
            "application/json",
            b"{\"cache_key\": ".to_vec(),
        )
        .await;
    assert_names(s, &b, StatusCode::BAD_REQUEST, "malformed JSON");
    let (s, b) = c
        .post_raw("/cache", dev, "application/json", b"".to_vec())
        .await;
    assert_names(s, &b, StatusCode::BAD_REQUEST, "empty");
    let (s, b) = c
        .post(
            "/cache",
            dev,
            entry_body("keep/me", 9, json!({"simulation_id": "abc"})),
        )
        .await;
    assert_names(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid type");
    let mut missing = entry_body("keep/me", 9, json!({}));
    missing.as_object_mut().unwrap().remove("execution_id");
    let (s, b) = c.post("/cache", dev, missing).await;
    assert_names(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing field `execution_id`",
    );
    let (s, b) = c.post("/cache", dev, json!([1, 2])).await;
    assert_names(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    // Every field, in order, as an array: serde alone would take it.
    let as_array = json!([
        "keep/me", 9, "thermal_sim", "1.0.0", "exec-001", "thermal_sim/1.0.0/xyz",
        "hash123", "/path/to/run.db", 24, null, {"node": "n1"}
    ]);
    let (s, b) = c.post("/cache", dev, as_array).await;
    assert_names(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "must be a JSON object, not an array",
    );
    let (s, b) = c
        .post_raw("/cache", dev, "text/plain", b"{}".to_vec())
        .await;
    assert_names(
        s,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    );

    // Body over the 1 MiB default limit.
    let big = entry_body(
        "keep/me",
        9,
        json!({"metadata": {"blob": "x".repeat(1_100_000)}}),
    );
    let (s, b) = c.post("/cache", dev, big).await;
    assert_names(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "larger than");

    // Keys: empty, over-long, traversal, empty segments, control characters.
    for (key, needle) in [
        ("", "empty"),
        (&"k".repeat(1025) as &str, "longer"),
        ("a/../keep/me", "'..'"),
        ("/abs", "empty segment"),
        ("a\u{1}b", "control"),
        ("a\\b", "backslash"),
    ] {
        let (s, b) = c.post("/cache", dev, entry_body(key, 9, json!({}))).await;
        assert_names(s, &b, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }
    let (s, b) = c.get("/cache/a//b", Some(&c.user)).await;
    assert_names(s, &b, StatusCode::BAD_REQUEST, "empty segment");

    // TTLs and metadata.
    for (extra, needle) in [
        (json!({"ttl_hours": -1}), "negative"),
        (json!({"ttl_seconds": -5}), "negative"),
        (json!({"ttl_seconds": "tomorrow"}), "ttl_seconds"),
        (json!({"ttl_seconds": true}), "ttl_seconds"),
        (json!({"ttl_hours": 1e15}), "maximum"),
        (json!({"metadata": "not an object"}), "metadata"),
        (json!({"metadata": {"note": "a\u{0}b"}}), "NUL"),
        (json!({"metadata": {"deep": [{"a\u{0}": 1}]}}), "NUL"),
        (json!({"simulation_name": ""}), "simulation_name"),
        (json!({"simulation_id": -1}), "simulation_id"),
    ] {
        let (s, b) = c
            .post("/cache", dev, entry_body("keep/me", 9, extra.clone()))
            .await;
        assert_names(s, &b, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }

    // Invalidation: invalid globs and unknown fields.
    for (pattern, needle) in [("run[0-9", "pattern"), ("", "empty"), ("ab\\", "backslash")] {
        let (s, b) = c
            .post("/cache/invalidate", dev, json!({"pattern": pattern}))
            .await;
        assert_names(s, &b, StatusCode::BAD_REQUEST, needle);
    }
    let (s, b) = c
        .post("/cache/invalidate", dev, json!({"simulation": 9}))
        .await;
    assert_names(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field `simulation`",
    );
    let (s, b) = c
        .post("/cache/invalidate", dev, json!({"simulation_id": "nine"}))
        .await;
    assert_names(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid type");

    // Query parameters.
    for (q, needle) in [
        ("/cache/entries?limit=0", "limit"),
        ("/cache/entries?limit=5000", "limit"),
        ("/cache/entries?limit=ten", "limit"),
        ("/cache/entries?offset=-1", "offset"),
        ("/cache/entries?status=bogus", "status"),
        ("/cache/stats?simulation_id=x", "simulation_id"),
    ] {
        let (s, b) = c.get(q, Some(&c.user)).await;
        assert_names(s, &b, StatusCode::BAD_REQUEST, needle);
    }

    // Unknown routes and methods.
    let (s, b) = c.get("/nope", None).await;
    assert_names(s, &b, StatusCode::NOT_FOUND, "route");
    let (s, b) = c.send_put("/cache/stats").await;
    assert_names(s, &b, StatusCode::METHOD_NOT_ALLOWED, "method");

    // Nothing stored changed, and no invalidation was recorded.
    let (_, after) = c.get("/cache/entries?limit=10", Some(&c.user)).await;
    assert_eq!(before, after);
    let (_, st) = c.get("/cache/stats", Some(&c.user)).await;
    assert_eq!(
        (
            st["total_entries"].clone(),
            st["invalidation_count"].clone()
        ),
        (json!(1), json!(0))
    );
}
