//! Introspection, typed search, statistics and files over real HTTP, with run
//! databases written by the real library, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use common::Ctx;
use reqwest::StatusCode;
use serde_json::{Value, json};

simcache_testkit::on_both_backends!(
    introspection_registers_typed_values_idempotently,
    search_filters_sort_and_pages,
    parameter_statistics,
    bad_registrations_and_filters_are_refused,
    run_files_and_folders,
);

/// Ten runs: temperature 300..=390 step 10, material alternating, a boolean.
async fn sweep(c: &Ctx) {
    for i in 0..10 {
        let t = 300 + i * 10;
        let material = if i % 2 == 0 { "steel" } else { "copper" };
        c.write_run(
            &format!("r{i}"),
            "thermal",
            "1.0.0",
            json!({"temperature": t as f64, "material": material, "constrained": i < 5}),
            json!({"max_stress": (t - 293) as f64 * 2.4e6, "label": format!("run {i}")}),
        );
        let (s, b) = c
            .post(
                "/register",
                Some(&c.dev),
                json!({"execution_id": format!("r{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap().to_string())
        .collect()
}

async fn introspection_registers_typed_values_idempotently(c: Ctx) {
    c.write_run(
        "run-a",
        "thermal",
        "1.0.0",
        json!({"temperature": 350.0, "material": "steel"}),
        json!({"max_stress": 1.3e8}),
    );
    let (s, first) = c
        .post(
            "/register",
            Some(&c.dev),
            json!({"execution_id": "run-a", "metadata": {"sweep": "A"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["success"], json!(true));
    let (s, again) = c
        .post("/register", Some(&c.dev), json!({"execution_id": "run-a"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        again["result_id"], first["result_id"],
        "re-registering is idempotent"
    );
    let (s, r) = c.get("/results/run-a", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["simulation_name"], json!("thermal"));
    assert_eq!(
        r["input_params"],
        json!({"temperature": 350.0, "material": "steel"})
    );
    assert_eq!(r["output_params"], json!({"max_stress": 1.3e8}));
    assert_eq!(r["status"], json!("completed"));
    assert_eq!(r["duration_seconds"], json!(1.5));
    assert_eq!(r["squid_id"], json!("thermal/1.0.0/run-a"));
    assert!(r["completed_at"].is_string());
    assert_eq!(r["metadata"]["artifact_count"], json!(1));
    let (s, defs) = c.get("/schemas/thermal/1.0.0", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK);
    let t = defs["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "temperature")
        .unwrap()
        .clone();
    assert_eq!(
        (
            t["param_type"].clone(),
            t["units"].clone(),
            t["min"].clone(),
            t["class"].clone()
        ),
        (json!("number"), json!("K"), json!(0.0), json!("input"))
    );
    // register_direct keeps the first inputs and updates outputs.
    let direct = json!({"execution_id": "d1", "simulation_name": "thermal", "simulation_version": "1.0.0",
        "input_params": {"temperature": 1.0}, "output_params": {"max_stress": 2.0}, "status": "completed"});
    let (s, b) = c
        .post("/register_direct", Some(&c.dev), direct.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut again = direct.clone();
    again["input_params"] = json!({"temperature": 999.0});
    again["output_params"] = json!({"max_stress": 3.0});
    c.post("/register_direct", Some(&c.dev), again).await;
    let (_, d) = c.get("/results/d1", Some(&c.user)).await;
    assert_eq!(
        (
            d["input_params"]["temperature"].clone(),
            d["output_params"]["max_stress"].clone()
        ),
        (json!(1.0), json!(3.0))
    );
    let (s, hits) = c
        .post(
            "/search",
            Some(&c.user),
            json!({"input_filters": {"temperature": 999}}),
        )
        .await;
    assert_eq!(
        (s, hits["count"].clone()),
        (StatusCode::OK, json!(0)),
        "typed rows keep the first input too"
    );

    let (s, _) = c.delete("/results/d1", Some(&c.user)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c.delete("/results/d1", Some(&c.dev)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = c.get("/results/d1", Some(&c.user)).await;
    assert_eq!(
        (s, b),
        (StatusCode::NOT_FOUND, json!({"error": "Result not found"}))
    );
    let (s, _) = c.delete("/results", Some(&c.dev)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "deleting everything needs admin");
    let (s, b) = c.delete("/results", Some(&c.admin)).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"deleted": 1})));
}

async fn search_filters_sort_and_pages(c: Ctx) {
    sweep(&c).await;
    let search = |body: Value| {
        let c = &c;
        async move {
            let (s, b) = c.post("/search", Some(&c.user), body.clone()).await;
            assert_eq!(s, StatusCode::OK, "{body}: {b}");
            b
        }
    };
    // sim2l's own operators, two range filters.
    let r = search(json!({"simulation_name": "thermal", "input_filters": {"temperature": {"$gte": 320, "$lt": 360}}, "sort_by": "input.temperature"})).await;
    assert_eq!(ids(&r), ["r2", "r3", "r4", "r5"]);
    let r = search(json!({"input_filters": {"temperature": {"$gt": 320, "$lte": 350}}, "output_filters": {"max_stress": {"$gt": 1.0e8}}, "sort_by": "input.temperature"})).await;
    assert_eq!(ids(&r), ["r4", "r5"], "max_stress > 1e8 needs t > 334.7");
    // Equality: plain values, strings, booleans, $eq; $ne and $in beyond sim2l.
    let r = search(json!({"input_filters": {"material": "copper", "constrained": true}, "sort_by": "input.temperature"})).await;
    assert_eq!(ids(&r), ["r1", "r3"]);
    let r = search(json!({"input_filters": {"temperature": {"$eq": 300}}})).await;
    assert_eq!(ids(&r), ["r0"]);
    let r = search(json!({"input_filters": {"material": {"$ne": "steel"}, "temperature": {"$in": [310, 350, 390]}}, "sort_by": "input.temperature"})).await;
    assert_eq!(ids(&r), ["r1", "r5", "r9"]);
    let r = search(json!({"output_filters": {"label": {"$in": ["run 2", "run 7"]}}, "sort_by": "input.temperature", "order": "desc"})).await;
    assert_eq!(ids(&r), ["r7", "r2"]);
    // A parameter nobody has never matches a comparison; equality with null matches all.
    let r = search(json!({"input_filters": {"pressure": {"$gt": 0}}})).await;
    assert_eq!(r["count"], json!(0));
    let r = search(json!({"input_filters": {"pressure": null}, "limit": 1000})).await;
    assert_eq!(r["count"], json!(10));
    // Sorting by an output, descending, in pages.
    let p1 = search(json!({"sort_by": "output.max_stress", "order": "desc", "limit": 3})).await;
    let p2 =
        search(json!({"sort_by": "output.max_stress", "order": "desc", "limit": 3, "offset": 3}))
            .await;
    assert_eq!(ids(&p1), ["r9", "r8", "r7"]);
    assert_eq!(ids(&p2), ["r6", "r5", "r4"]);
    // Newest first by default; version and status filters.
    let r = search(json!({"simulation_version": "2.0.0"})).await;
    assert_eq!(r["count"], json!(0));
    let r = search(json!({"status": "completed", "limit": 2})).await;
    assert_eq!(r["count"], json!(2));
}

async fn parameter_statistics(c: Ctx) {
    sweep(&c).await;
    let (s, st) = c
        .get("/stats/thermal/temperature?class=input", Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["count"], json!(10));
    assert_eq!(
        (
            st["min_value"].clone(),
            st["max_value"].clone(),
            st["avg_value"].clone()
        ),
        (json!(300.0), json!(390.0), json!(345.0))
    );
    // Sample standard deviation of 300..390 step 10 = 10 * sqrt(55/6).
    let sd = st["stddev"].as_f64().unwrap();
    assert!((sd - 10.0 * (55.0f64 / 6.0).sqrt()).abs() < 1e-6, "{sd}");
    let (_, out) = c.get("/stats/thermal/max_stress", Some(&c.user)).await;
    assert_eq!(out["count"], json!(10), "class defaults to output");
    let (_, none) = c.get("/stats/thermal/nothing", Some(&c.user)).await;
    assert_eq!(none, json!({"param_name": "nothing", "count": 0}));
    let (s, b) = c
        .get("/stats/thermal/temperature?class=sideways", Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("class \"sideways\""));
}

async fn bad_registrations_and_filters_are_refused(c: Ctx) {
    sweep(&c).await;
    let before = c
        .post("/search", Some(&c.user), json!({"limit": 1000}))
        .await
        .1;
    // Registration.
    let outside = tempfile::tempdir().unwrap();
    common::write_run(
        outside.path(),
        "elsewhere",
        "thermal",
        "1.0.0",
        json!({"temperature": 1.0}),
        json!({"max_stress": 1.0}),
    );
    std::fs::write(c.runs.path().join("garbage.db"), b"this is not a database").unwrap();
    c.write_run(
        "other",
        "thermal",
        "1.0.0",
        json!({"temperature": 1.0}),
        json!({"max_stress": 1.0}),
    );
    let cases = [
        (json!({}), StatusCode::BAD_REQUEST, "execution_id required"),
        (
            json!({"execution_id": "../../etc/passwd"}),
            StatusCode::BAD_REQUEST,
            "Invalid execution_id",
        ),
        (
            json!({"execution_id": "ghost"}),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            json!({"execution_id": "elsewhere", "run_db_path": outside.path().join("elsewhere.db").display().to_string()}),
            StatusCode::BAD_REQUEST,
            "must be under the run database directory",
        ),
        (
            json!({"execution_id": "r1", "run_db_path": "../x.db"}),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            json!({"execution_id": "r1", "run_db_path": "other.db"}),
            StatusCode::BAD_REQUEST,
            "belongs to execution \"other\", not \"r1\"",
        ),
        (
            json!({"execution_id": "garbage"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot read run database",
        ),
        (
            json!({"execution_id": "r1", "colour": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
    ];
    for (body, status, msg) in cases {
        let (s, b) = c.post("/register", Some(&c.dev), body.clone()).await;
        assert_eq!(s, status, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{body}: {b}");
    }
    let (s, _) = c
        .post("/register", Some("nope"), json!({"execution_id": "r1"}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Search filters are validated against the declared parameter types.
    let filters = [
        (
            json!({"simulation_name": "thermal", "input_filters": {"temperature": {"$regex": "3.*"}}}),
            "input_filters.temperature.$regex: unknown operator $regex",
        ),
        (
            json!({"simulation_name": "thermal", "input_filters": {"temperature": "hot"}}),
            "input_filters.temperature: the parameter is a number, the filter gives a string",
        ),
        (
            json!({"simulation_name": "thermal", "input_filters": {"material": {"$gt": 3}}}),
            "range operators need a number parameter",
        ),
        (
            json!({"simulation_name": "thermal", "output_filters": {"colour": 1}}),
            "no output parameter \"colour\" is declared",
        ),
        (
            json!({"input_filters": {"temperature": {"$gte": "300"}}}),
            "$gte needs a number, got \"300\"",
        ),
        (
            json!({"input_filters": {"temperature": {"$in": 5}}}),
            "$in needs a non-empty array",
        ),
        (
            json!({"input_filters": [1]}),
            "input_filters: must be an object",
        ),
        (json!({"sort_by": "sideways.x"}), "sort_by \"sideways.x\""),
        (json!({"order": "up"}), "order \"up\""),
        (json!({"limit": 0}), "limit must be between 1 and 1000"),
    ];
    for (body, msg) in filters {
        let (s, b) = c.post("/search", Some(&c.user), body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{body}: {b}");
    }
    let (s, b) = c
        .post(
            "/search",
            Some(&c.user),
            json!({"input_filters": {}, "bogus": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let after = c
        .post("/search", Some(&c.user), json!({"limit": 1000}))
        .await
        .1;
    assert_eq!(before, after, "refused requests changed the results");
    assert_eq!(after["count"], json!(10));
}

async fn run_files_and_folders(c: Ctx) {
    sweep(&c).await;
    let (s, f) = c.get("/runs/r3/files", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["files"][0]["name"], json!("result.csv"));
    assert_eq!(f["files"][0]["size_bytes"], json!(7));
    assert_eq!(f["files"][0]["content_type"], json!("text/csv"));
    let resp = c
        .http
        .get(format!("{}/runs/r3/files/result.csv", c.url))
        .header("X-Session-ID", &c.user)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/csv");
    assert_eq!(resp.text().await.unwrap(), "run,r3\n");
    let (s, _) = c.get("/runs/r3/files/missing.bin", Some(&c.user)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = c.get("/runs/ghost/files", Some(&c.user)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, all) = c
        .get("/simulations/thermal/1.0.0/files", Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all["count"], json!(10));

    // Folders.
    let (s, top) = c
        .post("/folders", Some(&c.dev), json!({"name": "campaign"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{top}");
    let top_id = top["id"].as_str().unwrap().to_string();
    let (s, sub) = c
        .post(
            "/folders",
            Some(&c.dev),
            json!({"name": "week-1", "parent_id": top_id}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let (s, file) = c.post("/files", Some(&c.dev), json!({"name": "mesh.vtk", "uri": "s3://bucket/mesh.vtk", "size": 1024, "parent_id": sub_id})).await;
    assert_eq!(s, StatusCode::CREATED, "{file}");
    assert_eq!(file["is_folder"], json!(false));
    let (_, listing) = c.get(&format!("/folders/{sub_id}"), Some(&c.user)).await;
    assert_eq!(listing["objects"][0]["uri"], json!("s3://bucket/mesh.vtk"));
    assert_eq!(listing["folder"]["name"], json!("week-1"));
    let (_, root) = c.get("/folders/0", Some(&c.user)).await;
    assert_eq!(root["objects"].as_array().unwrap().len(), 1);
    for (path, body, status, msg) in [
        (
            "/folders",
            json!({"name": "x", "parent_id": "nope"}),
            StatusCode::NOT_FOUND,
            "parent folder \"nope\" not found",
        ),
        (
            "/folders",
            json!({"name": "x", "parent_id": file["id"]}),
            StatusCode::BAD_REQUEST,
            "is a file, not a folder",
        ),
        (
            "/folders",
            json!({"name": "a/b"}),
            StatusCode::BAD_REQUEST,
            "without '/'",
        ),
        (
            "/files",
            json!({"name": "f", "uri": ""}),
            StatusCode::BAD_REQUEST,
            "needs a uri",
        ),
        (
            "/files",
            json!({"name": "f", "uri": "u", "size": -1}),
            StatusCode::BAD_REQUEST,
            "size must not be negative",
        ),
    ] {
        let (s, b) = c.post(path, Some(&c.dev), body.clone()).await;
        assert_eq!(s, status, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{body}: {b}");
    }
    let (s, _) = c
        .post("/folders", Some(&c.user), json!({"name": "x"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = c.delete(&format!("/files/{top_id}"), Some(&c.dev)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = c
        .delete(&format!("/files/{top_id}?recursive=true"), Some(&c.dev))
        .await;
    assert_eq!((s, b["deleted"].clone()), (StatusCode::OK, json!(3)));
    let (_, root) = c.get("/folders/0", Some(&c.user)).await;
    assert_eq!(root["count"], json!(0));
}
