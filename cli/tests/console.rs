//! The web console in a real browser: the example's 40-point sweep run by
//! `simcache run` into a real local store, `simcache ui` serving it, and
//! Debian's headless Chromium driven over WebDriver. Screenshots land in
//! `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use simcache_auth::{AuthConfig, Authenticator, Role};
use simcache_store::{Backend, Stores};
use simcache_testkit::ServerProcess;
use simcache_testkit::browser::Browser;
use simcache_testkit::browser::fantoccini::Locator;
use simcache_testkit::browser::fantoccini::key::Key;

const BIN: &str = env!("CARGO_BIN_EXE_simcache");

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

async fn add_user(home: &Path, name: &str, password: &str, role: Role) {
    let stores = Stores::open(
        &Backend::Sqlite {
            path: home.join("simcache.db"),
        },
        "test",
    )
    .await
    .unwrap();
    let auth = Authenticator::new(stores.sessions.clone(), AuthConfig::default());
    auth.create_user(name, password, role, None).await.unwrap();
}

/// Text of every element matching `css`.
async fn texts(b: &Browser, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in b.client.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap_or_default());
    }
    out
}

/// Logs in over the API and returns (cookie header, csrf token).
async fn api_login(http: &reqwest::Client, base: &str, user: &str, pw: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/ui/api/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    (
        cookie.split(';').next().unwrap().to_string(),
        body["csrf"].as_str().unwrap().to_string(),
    )
}

async fn live_entries(http: &reqwest::Client, base: &str, cookie: &str) -> Vec<String> {
    let v: Value = http
        .get(format!("{base}/ui/api/cache?limit=500"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_sweep_filters_it_and_guards_invalidation() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .args(["run", "-f"])
        .arg(repo("examples/thermal/simulation.yaml"))
        .arg("-f")
        .arg(repo("examples/thermal/simulationsweep.yaml"))
        .args(["-j", "2", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hot = outcomes
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["input.temperature"].as_f64().is_some_and(|t| t >= 500.0))
        .count();
    assert!(hot > 0 && hot < 40, "{hot} of 40 points at 500 K or more");
    // The sweep again: every point from the cache, so the overview has
    // cache hits and computing time saved to show.
    let again = Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .args(["run", "-f"])
        .arg(repo("examples/thermal/simulation.yaml"))
        .arg("-f")
        .arg(repo("examples/thermal/simulationsweep.yaml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("40 from the cache"), "{said}");
    add_user(home.path(), "dev", "dev-password-1", Role::Developer).await;
    add_user(home.path(), "alice", "alice-password-1", Role::User).await;
    let home_s = home.path().display().to_string();
    let server = ServerProcess::spawn(
        Path::new(BIN),
        &["--home", &home_s, "ui", "--port", "0"],
        &[("SIMCACHE_ADMIN_PASSWORD", "admin-password-1")],
    )
    .await;
    let base = server.url.trim_end_matches("/ui/").to_string();
    let b = Browser::start().await;

    // Log in; the overview lists the simulation and the sweep.
    b.log_in(&base, "dev", "dev-password-1").await;
    b.wait_for("the overview", || async {
        let t = b.text("main").await?;
        (t.contains("thermal") && t.contains("local/thermal-grid")).then_some(())
    })
    .await;
    b.screenshot("01-overview").await;

    // The sweep: 40 points in the plot and 40 rows in the table.
    b.client
        .goto(&format!("{base}/ui/#/sweep/local/thermal-grid"))
        .await
        .unwrap();
    // The plot and the table load with separate requests: wait for both.
    let n = b
        .wait_for("40 points in the plot and 40 rows in the table", || async {
            let n = b.count("#plot svg circle").await;
            let rows = b.count("table.runs tr.data-row").await;
            (n == 40 && rows == 40).then_some(n)
        })
        .await;
    assert_eq!(n, 40);
    let status = b
        .client
        .find(Locator::Id("sweep-status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.contains("Succeeded") && status.contains("40/40"),
        "{status}"
    );
    // Every control is labelled (a screen reader can name it) and every
    // button says what it does.
    let unlabelled = b
        .client
        .execute(
            "return [...document.querySelectorAll('input, select')].filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.id || e.outerHTML);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]), "controls without a label");
    let mute = b
        .client
        .execute(
            "return [...document.querySelectorAll('button')].filter(e => !(e.textContent.trim() || e.getAttribute('aria-label'))).length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(mute, json!(0));
    b.screenshot("02-sweep").await;
    b.client
        .execute("document.getElementById('plot').scrollIntoView()", vec![])
        .await
        .unwrap();
    b.screenshot("02-sweep-plot").await;
    // Exports: the drawing as SVG and as PNG, saved by the browser.
    b.click("#export-svg").await;
    let svg = String::from_utf8(b.downloaded("plot.svg").await).unwrap();
    assert_eq!(svg.matches("<circle").count(), 40);
    b.click("#export-png").await;
    let png = b.downloaded("plot.png").await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Filter temperature ≥ 500 (typed, then Enter): the table and the plot
    // shrink to match.
    b.client
        .find(Locator::Id("f-min-input-temperature"))
        .await
        .unwrap()
        .send_keys(&format!("500{}", char::from(Key::Enter)))
        .await
        .unwrap();
    b.wait_for("the filtered plot and table", || async {
        let (p, t) = (
            b.count("#plot svg circle").await,
            b.count("table.runs tr.data-row").await,
        );
        (p == hot && t == hot).then_some(())
    })
    .await;
    let shown = texts(&b, ".pager .count").await.join(" ");
    assert!(shown.contains(&format!("of {hot}")), "{shown}");
    b.screenshot("03-sweep-filtered").await;
    // The same grid as a heatmap: one cell per point.
    b.client
        .execute(
            "const k = document.getElementById('plot-kind'); k.value = 'heatmap'; k.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .unwrap();
    b.wait_for("the heatmap", || async {
        let drawn = texts(&b, "main p[aria-live]").await.join(" ");
        drawn.contains("heatmap drawn").then_some(())
    })
    .await;
    assert_eq!(b.count("#plot svg circle").await, 0);
    b.client
        .execute("document.getElementById('plot').scrollIntoView()", vec![])
        .await
        .unwrap();
    b.screenshot("03-sweep-heatmap").await;

    // Sort by temperature, descending: the first row is the hottest.
    let sort = b
        .client
        .find(Locator::Css("button[aria-label='sort by temperature']"))
        .await
        .unwrap();
    // The temperature column (after run and status, inputs in name order:
    // length, material, reference_temperature, temperature).
    let first_temperature = || async { b.text("table.runs tr.data-row td:nth-child(6)").await };
    sort.click().await.unwrap();
    b.wait_for("rows sorted by temperature, ascending", || async {
        (first_temperature().await? == "500").then_some(())
    })
    .await;
    // Again from the keyboard: the header is a button that Enter presses.
    b.client
        .find(Locator::Css("button[aria-label='sort by temperature']"))
        .await
        .unwrap()
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    b.wait_for("rows sorted by temperature, descending", || async {
        (first_temperature().await? == "1000").then_some(())
    })
    .await;
    assert_eq!(
        b.count("table.runs tr.data-row").await,
        hot,
        "sorting keeps the filter"
    );

    // A run: outputs with their units, and the log from the run database.
    b.click("table.runs tr.data-row a").await;
    let outputs = b
        .wait_for("the run's outputs", || async {
            let t = b.text("table.outputs").await?;
            t.contains("max_stress").then_some(t)
        })
        .await;
    assert!(
        outputs.contains("Pa") && outputs.contains("elongation"),
        "{outputs}"
    );
    let log = b
        .client
        .find(Locator::Id("run-log"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!log.trim().is_empty(), "the run page shows the run's log");
    b.screenshot("04-run").await;

    // A developer invalidates an entry from the cache page and it is gone.
    let http = reqwest::Client::new();
    let (dev_cookie, dev_csrf) = api_login(&http, &base, "dev", "dev-password-1").await;
    let o: Value = http
        .get(format!("{base}/ui/api/overview"))
        .header("cookie", &dev_cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        o["saved_by_day"][0]["seconds"].as_f64().unwrap() > 0.0,
        "{o}"
    );
    assert!(o["cache"]["hit_rate"].as_f64().unwrap() > 0.0, "{o}");
    let by: Vec<(String, i64)> = o["runs_by_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_string(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        by.contains(&("cached".into(), 40)) && by.contains(&("completed".into(), 40)),
        "{by:?}"
    );
    let before = live_entries(&http, &base, &dev_cookie).await;
    b.client.goto(&format!("{base}/ui/#/cache")).await.unwrap();
    let first = b
        .wait_for("invalidate buttons", || async {
            b.client.find(Locator::Css("button.invalidate")).await.ok()
        })
        .await;
    let label = first.attr("aria-label").await.unwrap().unwrap();
    let key = label.trim_start_matches("invalidate ").to_string();
    assert!(before.contains(&key), "{key} in {before:?}");
    first.click().await.unwrap();
    b.wait_for("the entry to leave the page", || async {
        let msg = b.text("#cache-message").await?;
        msg.contains("invalidated 1").then_some(())
    })
    .await;
    let after = live_entries(&http, &base, &dev_cookie).await;
    assert!(!after.contains(&key) && after.len() == before.len() - 1);
    b.screenshot("05-cache-developer").await;

    // A user sees no invalidate button and no invalidation form.
    b.click("#logout").await;
    b.log_in(&base, "alice", "alice-password-1").await;
    b.client.goto(&format!("{base}/ui/#/cache")).await.unwrap();
    b.wait_for("the cache table", || async {
        (b.count("table.cache tr.entry").await > 0).then_some(())
    })
    .await;
    assert_eq!(b.count("button.invalidate").await, 0);
    assert_eq!(b.count("#inv-value").await, 0);
    b.screenshot("06-cache-user").await;
    b.close().await;

    // Forged POSTs: a developer's cookie without the CSRF token, or with a
    // wrong one, and a user's session with its own valid token: all 403,
    // and nothing is invalidated.
    let target = after[0].clone();
    let post = |cookie: &str, csrf: Option<&str>| {
        let mut r = http
            .post(format!("{base}/ui/api/cache/invalidate"))
            .header("cookie", cookie.to_string())
            .json(&json!({"key": target}));
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t.to_string());
        }
        r.send()
    };
    let r = post(&dev_cookie, None).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("X-CSRF-Token"),
        "{body}"
    );
    assert_eq!(
        post(&dev_cookie, Some("0".repeat(64).as_str()))
            .await
            .unwrap()
            .status(),
        403
    );
    let (user_cookie, user_csrf) = api_login(&http, &base, "alice", "alice-password-1").await;
    let r = post(&user_cookie, Some(&user_csrf)).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("invalidate_cache"),
        "{body}"
    );
    assert_eq!(live_entries(&http, &base, &dev_cookie).await, after);
    // With the token the developer's request goes through.
    let r = post(&dev_cookie, Some(&dev_csrf)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !live_entries(&http, &base, &dev_cookie)
            .await
            .contains(&target)
    );

    // Every page carries the strict policy; nothing without a session.
    let r = http.get(format!("{base}/ui/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let r = http
        .get(format!("{base}/ui/api/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    drop(server);
}
