//! Catalog routes over real HTTP, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use common::Ctx;
use reqwest::StatusCode;
use serde_json::{Value, json};

simcache_testkit::on_both_backends!(
    registration_is_idempotent_and_conflicts_are_refused,
    search_by_text_and_all_tags_with_pages,
    search_matches_substrings_of_words_as_sim2l_does,
    search_orders_and_pages_many_versions,
    another_replica_sees_each_change_at_once,
    executions_feed_statistics,
    privileges_and_bad_input,
    patch_changes_a_version_as_sim2l_does_and_every_replica_sees_it,
);

async fn patch(c: &Ctx, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let rb = c
        .client
        .http
        .patch(format!("{}{path}", c.api.url()))
        .json(&body);
    c.client.send(rb, token).await
}

/// sim2l's CatalogClient.update_simulation and deprecate_simulation:
/// `PATCH /simulations/{id}` changes the editable fields, lists the keys it
/// ignored, refuses bad values and unknown ids, needs `update_catalog`, and
/// another process's search index sees the change at once.
async fn patch_changes_a_version_as_sim2l_does_and_every_replica_sees_it(c: Ctx) {
    let id = c
        .register(
            "glacier-flow",
            "1",
            json!({"description": "Ice sheet model", "tags": ["geo"]}),
        )
        .await;
    let replica = simcache_store::Stores::open(&c.backend, "replica-b")
        .await
        .unwrap();
    assert_eq!(found(&replica, "moraine", None).await, Vec::<String>::new());
    let path = format!("/simulations/{id}");
    let (s, b) = patch(
        &c,
        &path,
        Some(&c.dev),
        json!({"description": "Moraine and ice sheet model", "tags": ["geo", "ice"],
               "metadata": {"group": "glaciology"}, "dependencies": {"numpy": ">=1.26"},
               "license": "MIT", "colour": "blue", "owner": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"status": "updated", "ignored_keys": ["colour", "owner"]})
    );
    let (_, got) = c
        .get("/simulations/glacier-flow?version=1", Some(&c.user))
        .await;
    assert_eq!(got["description"], "Moraine and ice sheet model");
    assert_eq!(got["tags"], json!(["geo", "ice"]));
    assert_eq!(got["metadata"]["group"], "glaciology");
    assert_eq!(got["metadata"]["dependencies"]["numpy"], ">=1.26");
    assert_eq!(got["metadata"]["license"], "MIT");
    // The other process's index: the new words and the new tag.
    assert_eq!(found(&replica, "moraine", None).await, ["glacier-flow"]);
    let by_tag = simcache_store::catalog::SearchQuery {
        tags: vec!["ice".into()],
        ..text_query("", None)
    };
    assert_eq!(replica.catalog.search(&by_tag).await.unwrap().len(), 1);

    // deprecate_simulation: the default (active) search drops it everywhere.
    let (s, _) = patch(&c, &path, Some(&c.dev), json!({"status": "deprecated"})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(found(&replica, "glacier", Some("active")).await.is_empty());
    assert_eq!(
        found(&replica, "glacier", Some("deprecated")).await,
        ["glacier-flow"]
    );

    // Refusals, and nothing changed by them.
    for (who, p, body, want, needle) in [
        (
            Some(c.dev.as_str()),
            "/simulations/999999".to_string(),
            json!({"status": "active"}),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            Some(c.dev.as_str()),
            "/simulations/glacier".to_string(),
            json!({"status": "active"}),
            StatusCode::BAD_REQUEST,
            "is not a simulation id",
        ),
        (
            Some(c.dev.as_str()),
            path.clone(),
            json!({"status": "retired"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "must be one of active, deprecated, archived",
        ),
        (
            Some(c.dev.as_str()),
            path.clone(),
            json!({"tags": "geo"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags must be an array of strings",
        ),
        (
            Some(c.dev.as_str()),
            path.clone(),
            json!({"description": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "description must be a string",
        ),
        (
            Some(c.dev.as_str()),
            path.clone(),
            json!({"metadata": [1]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "metadata must be a JSON object",
        ),
        (
            Some(c.dev.as_str()),
            path.clone(),
            json!({"colour": "red"}),
            StatusCode::BAD_REQUEST,
            "No valid fields to update",
        ),
        (
            Some(c.dev.as_str()),
            path.clone(),
            json!([{"status": "active"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            Some(c.user.as_str()),
            path.clone(),
            json!({"status": "active"}),
            StatusCode::FORBIDDEN,
            "update_catalog",
        ),
        (
            None,
            path.clone(),
            json!({"status": "active"}),
            StatusCode::UNAUTHORIZED,
            "X-Session-ID",
        ),
    ] {
        let (s, b) = patch(&c, &p, who, body.clone()).await;
        assert_eq!(s, want, "{p} {body}: {b}");
        assert!(
            b["error"].as_str().unwrap_or("").contains(needle),
            "{p} {body}: {b}"
        );
    }
    let (_, after) = c
        .get("/simulations/glacier-flow?version=1", Some(&c.user))
        .await;
    assert_eq!(after["status"], "deprecated", "refusals changed nothing");
    assert_eq!(after["tags"], json!(["geo", "ice"]));
}

async fn registration_is_idempotent_and_conflicts_are_refused(c: Ctx) {
    let body = json!({"name": "thermal", "version": "1.0.0", "description": "Thermal stress", "tags": ["heat"],
        "input_schema": {"temperature": {"type": "number", "units": "K", "min": 0}},
        "output_schema": "{\"max_stress\": {\"type\": \"float\"}}", "image": "ghcr.io/x/thermal:1",
        "license": "MIT"});
    let (s, b) = c.post("/simulations", Some(&c.dev), body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], json!("registered"));
    let id = b["id"].as_i64().unwrap();
    let (s, b) = c.post("/simulations", Some(&c.dev), body.clone()).await;
    assert_eq!(
        (s, b["id"].as_i64(), b["status"].clone()),
        (StatusCode::OK, Some(id), json!("already_registered"))
    );
    let mut changed = body.clone();
    changed["description"] = json!("something else");
    let (s, b) = c.post("/simulations", Some(&c.dev), changed).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("already registered with different content"),
        "{b}"
    );

    let (s, sim) = c.get("/simulations/thermal", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        sim["description"],
        json!("Thermal stress"),
        "the conflicting write changed nothing"
    );
    assert_eq!(
        sim["output_schema"],
        json!({"max_stress": {"type": "float"}})
    );
    assert_eq!(sim["image"], json!("ghcr.io/x/thermal:1"));
    assert_eq!(sim["metadata"]["extra"]["license"], json!("MIT"));
    c.register("thermal", "1.1.0", json!({})).await;
    let (_, latest) = c.get("/simulations/thermal", Some(&c.user)).await;
    assert_eq!(latest["version"], json!("1.1.0"));
    let (_, exact) = c
        .get("/simulations/thermal?version=1.0.0", Some(&c.user))
        .await;
    assert_eq!(exact["id"].as_i64(), Some(id));
    let (s, v) = c.get("/simulations/thermal/versions", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["version"].clone())
            .collect::<Vec<_>>(),
        [json!("1.1.0"), json!("1.0.0")]
    );
    let (s, b) = c.get("/simulations/nope", Some(&c.user)).await;
    assert_eq!(
        (s, b),
        (StatusCode::NOT_FOUND, json!({"error": "Not found"}))
    );

    let (s, _) = c.delete(&format!("/simulations/{id}"), Some(&c.user)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = c.delete(&format!("/simulations/{id}"), Some(&c.dev)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["version"], json!("1.0.0"));
    let (s, _) = c.delete(&format!("/simulations/{id}"), Some(&c.dev)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn search_by_text_and_all_tags_with_pages(c: Ctx) {
    c.register(
        "thermal-bar",
        "1",
        json!({"description": "Thermal stress of a heated bar", "tags": ["heat", "solid"]}),
    )
    .await;
    c.register(
        "heat-flow",
        "1",
        json!({"description": "Transient heat conduction", "tags": ["heat", "fluid"]}),
    )
    .await;
    c.register(
        "beam",
        "1",
        json!({"description": "Euler beam under load", "tags": ["solid"]}),
    )
    .await;
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    // Two tokens: the simulation matching both ranks first.
    let (s, r) = c
        .get("/simulations/search?query=heat%20thermal", Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&r)[0], "thermal-bar");
    assert_eq!(names(&r).len(), 2);
    let (_, r) = c.get("/simulations/search?query=BEAM", Some(&c.user)).await;
    assert_eq!(names(&r), ["beam"]);
    // Tags are all-of.
    let (_, r) = c
        .get("/simulations/search?tags=heat,solid", Some(&c.user))
        .await;
    assert_eq!(names(&r), ["thermal-bar"]);
    let (_, r) = c.get("/simulations/search?tags=solid", Some(&c.user)).await;
    assert_eq!(names(&r).len(), 2);
    // A LIKE wildcard in the query is a literal character.
    let (_, r) = c
        .get("/simulations/search?query=%25%25", Some(&c.user))
        .await;
    assert_eq!(names(&r).len(), 0);
    // Pages: newest first without a query.
    let (_, p1) = c.get("/simulations/search?limit=2", Some(&c.user)).await;
    let (_, p2) = c
        .get("/simulations/search?limit=2&offset=2", Some(&c.user))
        .await;
    assert_eq!(names(&p1), ["beam", "heat-flow"]);
    assert_eq!(names(&p2), ["thermal-bar"]);
    for (q, msg) in [
        ("limit=0", "limit must be between 1 and 1000"),
        ("status=gone", "status \"gone\""),
        ("colour=red", "unknown field `colour`"),
        ("offset=-1", "offset must not be negative"),
    ] {
        let (s, b) = c
            .get(&format!("/simulations/search?{q}"), Some(&c.user))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{q}: {b}");
    }
}

/// sim2l matches each token anywhere in the text (`LIKE '%tok%'`): inside a
/// word, across a hyphen, in the description or a tag, whatever whitespace
/// separates the words. Both backends answer from the in-memory index kept
/// from their tables; both must give exactly this.
async fn search_matches_substrings_of_words_as_sim2l_does(c: Ctx) {
    let a = c
        .register(
            "thermal-bar",
            "1",
            json!({"description": "Euler\tbeam,\nheated  (steel)", "tags": ["Solid_Mechanics"]}),
        )
        .await;
    c.register("plasma", "1", json!({"description": "50% ionised"}))
        .await;
    // A long text whose only match lies past the part an index holds.
    let long = format!("{} deepword", "filler ".repeat(120));
    c.register("long-text", "1", json!({"description": long}))
        .await;
    let names = |v: &Value| {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    for (query, want) in [
        ("herm", vec!["thermal-bar"]),
        ("al-b", vec!["thermal-bar"]),
        ("uler", vec!["thermal-bar"]),
        ("beam,", vec!["thermal-bar"]),
        ("(steel)", vec!["thermal-bar"]),
        ("solid_mech", vec!["thermal-bar"]),
        ("solidxmech", vec![]),
        ("50%", vec!["plasma"]),
        ("%_", vec![]),
        ("ma", vec!["plasma", "thermal-bar"]),
        ("beam ionised", vec!["plasma", "thermal-bar"]),
        ("nothing-like-it", vec![]),
        ("deepword", vec!["long-text"]),
        ("filler deepword", vec!["long-text"]),
    ] {
        let q = query.replace('%', "%25").replace(' ', "%20");
        let (s, r) = c
            .get(&format!("/simulations/search?query={q}"), Some(&c.user))
            .await;
        assert_eq!(s, StatusCode::OK, "{query}: {r}");
        assert_eq!(names(&r), want, "query {query:?}");
        // One result: the scan stops at the first page.
        let (_, r) = c
            .get(
                &format!("/simulations/search?query={q}&limit=1"),
                Some(&c.user),
            )
            .await;
        let got = names(&r);
        assert_eq!(
            got.len(),
            want.len().min(1),
            "query {query:?} limit 1: {got:?}"
        );
        assert!(
            got.iter().all(|g| want.contains(&g.as_str())),
            "query {query:?} limit 1: {got:?}"
        );
    }
    // A deleted simulation is no longer found.
    let (s, _) = c.delete(&format!("/simulations/{a}"), Some(&c.dev)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, r) = c.get("/simulations/search?query=herm", Some(&c.user)).await;
    assert_eq!(names(&r), Vec::<String>::new());
}

async fn executions_feed_statistics(c: Ctx) {
    let id = c.register("thermal", "1", json!({})).await;
    for i in 1..=20 {
        let status = if i == 20 { "failed" } else { "completed" };
        let (s, b) = c
            .post("/executions", Some(&c.dev), json!({
                "execution_id": format!("e{i}"), "squid_id": format!("thermal/1/e{i}"), "simulation_id": id,
                "started_at": format!("2026-01-01T00:00:{i:02}"), "status": status, "executor_type": "kubernetes",
                "duration_seconds": i as f64, "cache_hit": i % 4 == 0, "node": "node-a"}))
            .await;
        assert_eq!((s, b), (StatusCode::CREATED, json!({"status": "recorded"})));
    }
    // A repeat updates instead of duplicating.
    let (s, _) = c
        .post("/executions", Some(&c.dev), json!({"execution_id": "e1", "squid_id": "x", "simulation_name": "thermal",
            "started_at": "2026-01-01T00:00:01", "status": "completed", "executor_type": "kubernetes", "duration_seconds": 1.0}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, st) = c
        .get(&format!("/simulations/{id}/stats"), Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["total_executions"], json!(20));
    assert_eq!(st["successful"], json!(19));
    assert_eq!(st["failed"], json!(1));
    assert_eq!(st["success_rate"], json!(0.95));
    assert_eq!(st["cached"], json!(5), "e4, e8, e12, e16, e20");
    assert_eq!(st["cache_hit_rate"], json!(0.25));
    assert_eq!(st["p95_duration"], json!(19.0));
    assert_eq!(st["avg_duration"], json!(10.5));
    assert_eq!(st["max_duration"], json!(20.0));
    assert_eq!(st["last_run"], json!("2026-01-01T00:00:20"));
    let (_, by_name) = c.get("/simulations/thermal/stats", Some(&c.user)).await;
    assert_eq!(by_name["total_executions"], json!(20));
    let (_, ov) = c.get("/statistics/overview", Some(&c.user)).await;
    assert_eq!(ov["total_executions"], json!(20));
    assert_eq!(ov["total_simulations"], json!(1));

    for (body, status, msg) in [
        (
            json!({"execution_id": "x", "simulation_id": 999, "started_at": "2026-01-01T00:00:00", "status": "completed"}),
            StatusCode::NOT_FOUND,
            "simulation id 999 is not registered",
        ),
        (
            json!({"execution_id": "x", "simulation_id": id, "started_at": "yesterday", "status": "completed"}),
            StatusCode::BAD_REQUEST,
            "started_at \"yesterday\" is not a timestamp",
        ),
        (
            json!({"execution_id": "x", "simulation_id": id, "status": "completed"}),
            StatusCode::BAD_REQUEST,
            "started_at is required",
        ),
        (
            json!({"execution_id": "../x", "simulation_id": id, "started_at": "1", "status": "completed"}),
            StatusCode::BAD_REQUEST,
            "invalid execution id",
        ),
        (
            json!({"execution_id": "x", "simulation_id": id, "started_at": "1", "status": "exploded"}),
            StatusCode::BAD_REQUEST,
            "status \"exploded\"",
        ),
        (
            json!({"execution_id": "x", "simulation_id": id, "started_at": "1", "status": "completed", "cache_status": "hit-ish"}),
            StatusCode::BAD_REQUEST,
            "cache_status \"hit-ish\" must be one of Hit, Miss",
        ),
        (
            json!({"execution_id": "x", "simulation_id": id, "started_at": "1", "status": "failed", "bogus": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `bogus`",
        ),
    ] {
        let (s, b) = c.post("/executions", Some(&c.dev), body.clone()).await;
        assert_eq!(s, status, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{body}: {b}");
    }
    let (_, st2) = c
        .get(&format!("/simulations/{id}/stats"), Some(&c.user))
        .await;
    assert_eq!(st2, st, "refused executions changed the statistics");
}

async fn privileges_and_bad_input(c: Ctx) {
    let body = json!({"name": "t", "version": "1", "input_schema": {}, "output_schema": {}});
    let (s, b) = c.post("/simulations", None, body.clone()).await;
    assert_eq!(
        (s, b["error"].clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!("missing X-Session-ID header")
        )
    );
    let (s, _) = c
        .post("/simulations", Some("not-a-session"), body.clone())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = c.post("/simulations", Some(&c.user), body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(b["error"].as_str().unwrap().contains("register_simulation"));
    let reader = c
        .api
        .auth
        .create_anonymous(
            simcache_auth::PrivilegeSet::parse(&["read_catalog".to_string()]).unwrap(),
            None,
        )
        .await
        .unwrap()
        .token;
    let (s, b) = c.post("/executions", Some(&reader), json!({})).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a read-only session cannot record executions: {b}"
    );
    let (s, _) = c.get("/simulations/search", Some(&reader)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = c.get("/simulations/search", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for (body, msg) in [
        (
            json!({"version": "1", "input_schema": {}, "output_schema": {}}),
            "name is required",
        ),
        (
            json!({"name": "a b", "version": "1", "input_schema": {}, "output_schema": {}}),
            "name \"a b\" must be",
        ),
        (
            json!({"name": "t", "version": "1", "input_schema": {}}),
            "input_schema and output_schema are required",
        ),
        (
            json!({"name": "t", "version": "1", "input_schema": [], "output_schema": {}}),
            "input_schema must be an object",
        ),
        (
            json!({"name": "t", "version": "1", "input_schema": {"x": {"type": "tensor"}}, "output_schema": {}}),
            "input_schema.x: unknown value type \"tensor\"",
        ),
        (
            json!({"name": "t", "version": "1", "input_schema": {"x": {"type": "number", "min": 5, "max": 1}}, "output_schema": {}}),
            "min 5 is greater than max 1",
        ),
        (
            json!({"name": "t", "version": "1", "input_schema": "{broken", "output_schema": {}}),
            "input_schema is not valid JSON",
        ),
        (
            json!({"name": "t", "version": "1", "input_schema": {}, "output_schema": {}, "visibility": "secret"}),
            "visibility must be",
        ),
    ] {
        let (s, b) = c.post("/simulations", Some(&c.dev), body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{body}: {b}");
    }
    let (s, b) = c
        .send(
            c.http
                .post(format!("{}/simulations", c.url))
                .header("content-type", "application/json")
                .body(vec![b'x'; (1 << 20) + 1024]),
            Some(&c.dev),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let (_, all) = c.get("/simulations/search?status=all", Some(&c.user)).await;
    assert_eq!(all, json!([]), "nothing was stored by the refused requests");
}

/// Over 1,300 versions: matches among the oldest are found, pages of a
/// common word follow newest-first order, and two words rank versions with
/// both first.
async fn search_orders_and_pages_many_versions(c: Ctx) {
    let spec = |i: usize, desc: &str| spec_named(&format!("sim-{i:04}"), desc);
    // "rare" in the 5 oldest and the 20 newest of 1,300; "common" in every third.
    for i in 0..1300 {
        let mut d = String::from("plain");
        if !(5..1280).contains(&i) {
            d.push_str(" rare");
        }
        if i % 3 == 0 {
            d.push_str(" common");
        }
        c.api
            .stores
            .catalog
            .register(&spec(i, &d), None)
            .await
            .unwrap();
        // Distinct creation times keep the expected order unambiguous.
        tokio::time::sleep(std::time::Duration::from_micros(1100)).await;
    }
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (_, rare) = c
        .get("/simulations/search?query=rare&limit=100", Some(&c.user))
        .await;
    let expected: Vec<String> = (1280..1300)
        .rev()
        .chain((0..5).rev())
        .map(|i| format!("sim-{i:04}"))
        .collect();
    assert_eq!(
        names(&rare),
        expected,
        "matches among the oldest versions are found"
    );
    let (_, common) = c
        .get(
            "/simulations/search?query=common&limit=50&offset=10",
            Some(&c.user),
        )
        .await;
    let expected: Vec<String> = (0..1300)
        .rev()
        .filter(|i| i % 3 == 0)
        .skip(10)
        .take(50)
        .map(|i| format!("sim-{i:04}"))
        .collect();
    assert_eq!(
        names(&common),
        expected,
        "a page of a common word, newest first"
    );
    let (_, both) = c
        .get(
            "/simulations/search?query=rare%20common&limit=8",
            Some(&c.user),
        )
        .await;
    let mut expected: Vec<usize> = (1280..1300)
        .rev()
        .chain((0..5).rev())
        .filter(|i| i % 3 == 0)
        .collect();
    expected.extend(
        (0..1300)
            .rev()
            .filter(|i| (i % 3 == 0) == (5..1280).contains(i))
            .take(8),
    );
    let expected: Vec<String> = expected
        .into_iter()
        .take(8)
        .map(|i| format!("sim-{i:04}"))
        .collect();
    assert_eq!(
        names(&both),
        expected,
        "both words first, then either, newest first"
    );
}

fn text_query(text: &str, status: Option<&str>) -> simcache_store::catalog::SearchQuery {
    simcache_store::catalog::SearchQuery {
        text: Some(text.into()),
        tags: vec![],
        status: status.map(str::to_string),
        limit: 100,
        offset: 0,
    }
}

fn spec_named(name: &str, description: &str) -> simcache_store::catalog::SimulationSpec {
    simcache_store::catalog::SimulationSpec {
        name: name.into(),
        version: "1".into(),
        description: Some(description.into()),
        author: None,
        tags: vec!["Geo".into()],
        input_schema: json!({}),
        output_schema: json!({}),
        image: None,
        workflow_type: "container".into(),
        workflow_hash: None,
        visibility: "public".into(),
        metadata: None,
    }
}

/// The names a search through `stores` finds, in order.
async fn found(stores: &simcache_store::Stores, text: &str, status: Option<&str>) -> Vec<String> {
    stores
        .catalog
        .search(&text_query(text, status))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.spec.name)
        .collect()
}

/// Each process searches an index of its own in memory. A change made
/// through another process (registration, status, deletion) is found by
/// the very next search there, also while both register at once.
async fn another_replica_sees_each_change_at_once(c: Ctx) {
    let a = &c.api.stores;
    let b = simcache_store::Stores::open(&c.backend, "replica-b")
        .await
        .unwrap();
    let active = Some("active");
    let none: Vec<String> = Vec::new();
    // B builds its index before A registers anything.
    assert_eq!(found(&b, "glacier", active).await, none);
    let id = c
        .register(
            "glacier-flow",
            "1",
            json!({"description": "Ice sheet model", "tags": ["Geo"]}),
        )
        .await;
    assert_eq!(found(&b, "ice sheet", active).await, ["glacier-flow"]);
    let by_tag = simcache_store::catalog::SearchQuery {
        tags: vec!["GEO".into()],
        ..text_query("", active)
    };
    let tagged = b.catalog.search(&by_tag).await.unwrap();
    assert_eq!(tagged.len(), 1, "found by its tag, in any case");

    assert!(a.catalog.set_status(id, "deprecated").await.unwrap());
    assert_eq!(found(&b, "glacier", active).await, none);
    assert_eq!(found(&b, "glacier", None).await, ["glacier-flow"]);

    assert!(a.catalog.delete(id).await.unwrap());
    assert_eq!(found(&b, "glacier", None).await, none);
    let (_, over_http) = c
        .get(
            "/simulations/search?query=glacier&status=all",
            Some(&c.user),
        )
        .await;
    assert_eq!(over_http, json!([]), "A's own index dropped it too");

    // Both register 15 versions at once while both search.
    let mut tasks = Vec::new();
    for (who, stores) in [("a", a.clone()), ("b", b.clone())] {
        for i in 0..15 {
            let stores = stores.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("swarm-{who}-{i}x");
                stores
                    .catalog
                    .register(&spec_named(&name, "swarm member"), None)
                    .await
                    .unwrap();
                found(&stores, &name, None).await
            }));
        }
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().len(),
            1,
            "a search after a registration finds it"
        );
    }
    let mut want: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|w| (0..15).map(move |i| format!("swarm-{w}-{i}x")))
        .collect();
    want.sort();
    for stores in [a, &b] {
        let mut all = found(stores, "swarm", None).await;
        all.sort();
        assert_eq!(all, want);
    }
}

/// Generations follow commits: a registration that starts after another
/// one took its number waits for that one to commit, so no process can see
/// the later change, remember its generation, and miss the earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_late_is_never_missed() {
    let url = simcache_testkit::fresh_database("catalog_commit_order").await;
    let backend =
        simcache_store::Backend::Postgres(simcache_store::postgres::PgOptions::new(url.clone()));
    let a = simcache_store::Stores::open(&backend, "a").await.unwrap();
    let b = simcache_store::Stores::open(&backend, "b").await.unwrap();
    let none: Vec<String> = Vec::new();
    assert_eq!(found(&a, "moraine", None).await, none);

    let (mut raw, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let slow = raw.transaction().await.unwrap();
    slow.execute(
        "INSERT INTO simulations (name, version, input_schema, output_schema, search_text, content_hash, created_at_ms, updated_at_ms)
         VALUES ('moraine-slow', '1', '{}', '{}', 'moraine-slow slow', 'x', 1, 1)",
        &[],
    )
    .await
    .unwrap();
    let fast = tokio::spawn(async move {
        b.catalog
            .register(&spec_named("moraine-fast", "fast"), None)
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !fast.is_finished(),
        "the later registration waits for the earlier commit"
    );
    assert_eq!(
        found(&a, "moraine", None).await,
        none,
        "nothing uncommitted is found"
    );
    slow.commit().await.unwrap();
    fast.await.unwrap();
    let mut both = found(&a, "moraine", None).await;
    both.sort();
    assert_eq!(both, ["moraine-fast", "moraine-slow"]);
}

/// A database recreated under a running process (or restored from a
/// backup) starts its generations over; the process's index must follow it,
/// not keep what the old database held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_a_recreated_database() {
    let url = simcache_testkit::fresh_database("catalog_recreated").await;
    let backend =
        simcache_store::Backend::Postgres(simcache_store::postgres::PgOptions::new(url.clone()));
    let a = simcache_store::Stores::open(&backend, "a").await.unwrap();
    for name in ["reset-before", "other-old"] {
        a.catalog
            .register(&spec_named(name, "old"), None)
            .await
            .unwrap();
    }
    assert_eq!(found(&a, "reset", None).await, ["reset-before"]);

    let (raw, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    raw.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .await
        .unwrap();
    let b = simcache_store::Stores::open(&backend, "b").await.unwrap();
    // Same ids and the same generation as the old database, other versions.
    for name in ["filler-new", "reset-after"] {
        b.catalog
            .register(&spec_named(name, "new"), None)
            .await
            .unwrap();
    }
    assert_eq!(found(&a, "reset", None).await, ["reset-after"]);
    assert_eq!(found(&a, "other", None).await, Vec::<String>::new());

    // Restored to an earlier state: a version the index never saw, at a
    // generation behind the index's.
    raw.batch_execute(
        "INSERT INTO simulations (name, version, input_schema, output_schema, search_text, content_hash, created_at_ms, updated_at_ms)
             VALUES ('reset-restored', '1', '{}', '{}', 'reset-restored', 'x', 1, 1);
         UPDATE simulations SET change_gen = 1;
         UPDATE catalog_generation SET gen = 1",
    )
    .await
    .unwrap();
    assert_eq!(
        found(&a, "reset", None).await,
        ["reset-after", "reset-restored"]
    );
}
