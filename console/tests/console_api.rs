//! The console's API over real HTTP on both stores (SQLite and a throwaway
//! PostgreSQL): the session cookie beside X-Session-ID, the CSRF guard in
//! front of every state-changing route, typed range filters, sorting and
//! paging of runs, plots, and the errors that name what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

#[path = "../../api/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use common::Ctx;
use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_auth::Role;
use simcache_store::results::filter::ParamClass;
use simcache_store::results::{ParamDef, ResultRecord, Upsert};

/// 60 results of `grid` 1.0: temperature 300..=890 step 10, pressure 1..=3.
async fn seed(ctx: &Ctx) {
    for i in 0..60 {
        let t = 300.0 + 10.0 * i as f64;
        let p = 1.0 + (i % 3) as f64;
        ctx.api
            .stores
            .results
            .register(
                &ResultRecord {
                    execution_id: format!("grid.{i}"),
                    simulation_name: "grid".into(),
                    simulation_version: "1.0".into(),
                    inputs: BTreeMap::from([
                        ("temperature".into(), json!(t)),
                        ("pressure".into(), json!(p)),
                        ("label".into(), json!(format!("point {i}"))),
                    ]),
                    outputs: BTreeMap::from([("stress".into(), json!(t * p))]),
                    definitions: vec![
                        ParamDef::number(ParamClass::Input, "temperature", "K"),
                        ParamDef::number(ParamClass::Input, "pressure", "bar"),
                        ParamDef {
                            param_type: "string".into(),
                            units: None,
                            ..ParamDef::number(ParamClass::Input, "label", "")
                        },
                        ParamDef::number(ParamClass::Output, "stress", "Pa"),
                    ],
                    status: "completed".into(),
                    duration_seconds: Some(2.0),
                    ..Default::default()
                },
                Upsert::Replace,
            )
            .await
            .unwrap();
    }
}

struct Browserish {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

async fn login(ctx: &Ctx, user: &str, role: Role) -> Browserish {
    ctx.api
        .auth
        .create_user(user, "a-long-password", role, None)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = ctx.api.url();
    let r = http
        .post(format!("{base}/ui/api/login"))
        .json(&json!({"username": user, "password": "a-long-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["username"], user);
    Browserish {
        http,
        base,
        cookie: cookie.split(';').next().unwrap().to_string(),
        csrf: body["csrf"].as_str().unwrap().to_string(),
    }
}

impl Browserish {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let s = r.status();
        let text = r.text().await.unwrap();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value, csrf: Option<&str>) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .json(&body);
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn console_api_behaves(ctx: Ctx) {
    seed(&ctx).await;
    let dev = login(&ctx, "dana", Role::Developer).await;

    // Filters, sorting, paging: temperature in [500, 700] and pressure ≤ 2.
    let (s, page) = dev
        .get("/ui/api/simulations/grid/1.0/runs?min.input.temperature=500&max.input.temperature=700&max.input.pressure=2&sort=output.stress&desc=true&limit=5")
        .await;
    assert_eq!(s, 200, "{page}");
    let want: Vec<f64> = {
        let mut v: Vec<f64> = (0..60)
            .map(|i| (300.0 + 10.0 * i as f64, 1.0 + (i % 3) as f64))
            .filter(|(t, p)| (500.0..=700.0).contains(t) && *p <= 2.0)
            .map(|(t, p)| t * p)
            .collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v
    };
    assert_eq!(page["total"], want.len(), "{page}");
    let got: Vec<f64> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outputs"]["stress"].as_f64().unwrap())
        .collect();
    assert_eq!(got, want[..5]);
    let (_, next) = dev
        .get("/ui/api/simulations/grid/1.0/runs?min.input.temperature=500&max.input.temperature=700&max.input.pressure=2&sort=output.stress&desc=true&limit=5&offset=5")
        .await;
    assert_eq!(
        next["rows"][0]["outputs"]["stress"].as_f64().unwrap(),
        want[5]
    );
    // Past the last match: no rows, the total still right.
    let (_, past) = dev
        .get("/ui/api/simulations/grid/1.0/runs?min.input.temperature=500&max.input.temperature=700&max.input.pressure=2&offset=400")
        .await;
    assert_eq!(past["rows"], json!([]));
    assert_eq!(past["total"], want.len());

    // Plots: every matching point, as JSON, CSV and SVG.
    let (s, plot) = dev
        .get("/ui/api/simulations/grid/1.0/plot?x=input.temperature&y=output.stress&color=input.pressure&format=json&min.input.temperature=500")
        .await;
    assert_eq!(s, 200, "{plot}");
    assert_eq!(plot["count"], 40);
    assert_eq!(plot["x"], "temperature [K]");
    assert_eq!(plot["color"], "pressure [bar]");
    let (_, svg) = dev
        .get("/ui/api/simulations/grid/1.0/plot?x=input.temperature&y=output.stress")
        .await;
    assert_eq!(svg.as_str().unwrap().matches("<circle").count(), 60);
    let (_, csv) = dev
        .get("/ui/api/simulations/grid/1.0/plot?x=input.temperature&y=output.stress&format=csv&max.input.temperature=310")
        .await;
    assert_eq!(
        csv.as_str().unwrap(),
        "temperature [K],stress [Pa]\n300,300\n310,620\n"
    );

    // The simulation page's data: parameters with units and what was seen.
    let (s, sim) = dev.get("/ui/api/simulations/grid/1.0").await;
    assert_eq!(s, 404, "not in the catalog yet: {sim}");
    ctx.register("grid", "1.0", json!({})).await;
    let (s, sim) = dev.get("/ui/api/simulations/grid/1.0").await;
    assert_eq!(s, 200, "{sim}");
    assert_eq!(sim["versions"], json!(["1.0"]));
    let t = sim["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "input.temperature")
        .unwrap();
    assert_eq!(t["units"], "K");
    let st = sim["parameter_stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "input.temperature")
        .unwrap();
    assert_eq!(
        (st["count"].as_i64(), st["min"].as_f64(), st["max"].as_f64()),
        (Some(60), Some(300.0), Some(890.0))
    );

    // Bad input: 400 naming the key and the fix; nothing without a session.
    for (path, want) in [
        (
            "/ui/api/simulations/grid/1.0/runs?min.input.temperature=hot",
            "min.input.temperature: \"hot\" is not a number",
        ),
        (
            "/ui/api/simulations/grid/1.0/runs?min.input.altitude=1",
            "declares no input \"altitude\"",
        ),
        (
            "/ui/api/simulations/grid/1.0/runs?min.input.label=1",
            "is a string",
        ),
        (
            "/ui/api/simulations/grid/1.0/runs?sort=temperature",
            "input.NAME or output.NAME",
        ),
        ("/ui/api/simulations/grid/1.0/runs?limit=100000", "limit"),
        (
            "/ui/api/simulations/grid/1.0/plot?y=output.stress",
            "x is required",
        ),
        (
            "/ui/api/simulations/grid/1.0/plot?x=input.temperature&y=output.stress&kind=pie",
            "scatter, line, heatmap",
        ),
    ] {
        let (s, body) = dev.get(path).await;
        assert!(s == 400 || s == 404, "{path}: {s} {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(want),
            "{path}: {body}"
        );
    }
    // No sweep source in this server: said plainly.
    let (s, body) = dev.get("/ui/api/sweeps/ns/x").await;
    assert_eq!(s, 503, "{body}");
    let r = reqwest::get(format!("{}/ui/api/overview", ctx.api.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The cookie stands in for X-Session-ID on the operator's own API too,
    // and the CSRF guard covers those routes: a cookie POST without the
    // token is refused before the handler.
    let (s, _) = dev.get("/results/grid.1").await;
    assert_eq!(s, 200);
    let reg = json!({"name": "viaui", "version": "1", "input_schema": {}, "output_schema": {}});
    let (s, body) = dev.post("/simulations", reg.clone(), None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("X-CSRF-Token"));
    let (s, body) = dev.post("/simulations", reg, Some(&dev.csrf)).await;
    assert!(s == 201 || s == 200, "{s} {body}");
    // Scripts with the header need no token.
    let (s, _) = ctx
        .client
        .post(
            "/ui/api/cache/invalidate",
            Some(&ctx.dev),
            json!({"simulation": "nothing-here"}),
        )
        .await;
    assert_eq!(s, 200);

    // Invalidation: exactly one selector; a user may not. None of the
    // refused requests records an invalidation.
    let (_, before) = dev.get("/ui/api/cache").await;
    let (s, body) = dev
        .post(
            "/ui/api/cache/invalidate",
            json!({"pattern": "a\u{7}b"}),
            Some(&dev.csrf),
        )
        .await;
    assert!(
        s == 400 && body["error"].as_str().unwrap().starts_with("pattern:"),
        "{s} {body}"
    );
    let (s, body) = dev
        .post(
            "/ui/api/cache/invalidate",
            json!({"key": "k", "simulation": "grid"}),
            Some(&dev.csrf),
        )
        .await;
    assert!(
        s == 400 && body["error"].as_str().unwrap().contains("exactly one"),
        "{body}"
    );
    let (s, body) = dev
        .post("/ui/api/cache/invalidate", json!({}), Some(&dev.csrf))
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = dev
        .post(
            "/ui/api/cache/invalidate",
            json!({"key": "a/*"}),
            Some(&dev.csrf),
        )
        .await;
    assert!(
        s == 400
            && body["error"]
                .as_str()
                .unwrap()
                .contains("send it as pattern"),
        "{body}"
    );
    let (s, body) = dev
        .post(
            "/ui/api/cache/invalidate",
            json!({"everything": true}),
            Some(&dev.csrf),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `everything`")
    );
    let user = login(&ctx, "uma", Role::User).await;
    let (s, body) = user
        .post(
            "/ui/api/cache/invalidate",
            json!({"simulation": "grid"}),
            Some(&user.csrf),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    let (s, cache) = user.get("/ui/api/cache").await;
    assert_eq!(s, 200);
    assert_eq!(cache["can_invalidate"], false);
    let (_, cache) = dev.get("/ui/api/cache").await;
    assert_eq!(cache["can_invalidate"], true);

    let (_, after) = dev.get("/ui/api/cache").await;
    assert_eq!(
        after["stats"]["invalidations"],
        before["stats"]["invalidations"]
    );

    // Cluster pages: an unknown kind is a 404 naming the three; with no
    // cluster the lists are empty and say so.
    let (s, body) = dev.get("/ui/api/cluster/widgets").await;
    assert_eq!(s, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cachepolicies, sfmdevices or systemsofrecord")
    );
    let (s, body) = dev.get("/ui/api/cluster/sfmdevices").await;
    assert_eq!(
        (s.as_u16(), &body["cluster"], &body["items"]),
        (200, &json!(false), &json!([]))
    );
    // Each list needs its own privilege: a session with read_cache only
    // may list policies, not systems of record.
    let narrow = ctx
        .api
        .auth
        .create_anonymous(
            simcache_auth::PrivilegeSet::parse(&["read_cache".to_string()]).unwrap(),
            None,
        )
        .await
        .unwrap()
        .token;
    let (s, _) = ctx
        .client
        .get("/ui/api/cluster/cachepolicies", Some(&narrow))
        .await;
    assert_eq!(s, 200);
    let (s, body) = ctx
        .client
        .get("/ui/api/cluster/systemsofrecord", Some(&narrow))
        .await;
    assert!(
        s == 403 && body["error"].as_str().unwrap().contains("read_sor"),
        "{body}"
    );

    // A login without a password, or with a wrong one, sets no cookie.
    let r = reqwest::Client::new()
        .post(format!("{}/ui/api/login", ctx.api.url()))
        .json(&json!({"username": "dana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("username and password are required")
    );

    // Logging out ends the session behind the cookie.
    let (s, _) = dev
        .post("/ui/api/logout", json!(null), Some(&dev.csrf))
        .await;
    assert_eq!(s, 200);
    let (s, _) = dev.get("/ui/api/me").await;
    assert_eq!(s, 401);
}

/// The console as the operator mounts it, with no sweep source yet.
fn console(secure_cookies: bool) -> Vec<simcache_api::Extension> {
    vec![simcache_console::mount(
        simcache_console::SourceSlot::default(),
        secure_cookies,
    )]
}

#[tokio::test]
async fn the_console_api_on_sqlite() {
    console_api_behaves(common::sqlite_with(console(false)).await).await;
}

#[tokio::test]
async fn the_console_api_on_postgres() {
    console_api_behaves(common::postgres_with("console_api", console(false)).await).await;
}

#[tokio::test]
async fn console_cookies_are_secure_behind_tls() {
    let (backend, dir) = common::sqlite_backend();
    let ctx = common::serve(backend, Some(dir), |_| {}, console(true)).await;
    ctx.api
        .auth
        .create_user("tess", "a-long-password", Role::User, None)
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/ui/api/login", ctx.api.url()))
        .json(&json!({"username": "tess", "password": "a-long-password"}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let r = reqwest::Client::new()
        .post(format!("{}/ui/api/login", ctx.api.url()))
        .json(&json!({"username": "tess", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
}
