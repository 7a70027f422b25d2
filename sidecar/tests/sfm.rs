//! The SFM proxy against the SFM service simulator, over real HTTP, with
//! real PostgreSQL shared by several real sidecar processes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use simcache_testkit::ServerProcess;
use simcache_testkit::sfm_sim::{Fault, SfmSimulator, Unit};

const BIN: &str = env!("CARGO_BIN_EXE_simcache-sidecar");
const UNIT: &str = "tcp:10.0.0.1:12345";
const Q: &str = "host=10.0.0.1";

struct Rig {
    sim: SfmSimulator,
    db: String,
    dir: tempfile::TempDir,
    proxies: Vec<ServerProcess>,
    http: reqwest::Client,
}

/// The SFMDevice a rig's proxies serve, and how its simulated unit paces.
struct Device {
    sessions: i64,
    /// Scales the unit's transfer times (1.0 = a real unit's pace).
    time_factor: f64,
    timeout_secs: u32,
    stale_after_secs: u32,
    backoff_secs: u32,
}

impl Default for Device {
    fn default() -> Self {
        Device {
            sessions: 1,
            time_factor: 0.005,
            timeout_secs: 5,
            stale_after_secs: 3,
            backoff_secs: 2,
        }
    }
}

fn device_yaml(sim: &str, d: &Device) -> String {
    let Device {
        sessions,
        timeout_secs,
        stale_after_secs,
        backoff_secs,
        ..
    } = d;
    format!(
        "apiVersion: simcache.io/v1alpha1
kind: SFMDevice
metadata:
  name: unit-a
  namespace: field
spec:
  upstream:
    url: {sim}
    timeoutSeconds: {timeout_secs}
  address:
    tcp:
      host: 10.0.0.1
  maxConcurrentSessions: {sessions}
  cache:
    monitorStatusTtlSeconds: 1
    staleAfterSeconds: {stale_after_secs}
    unreachableBackoffSeconds: {backoff_secs}
"
    )
}

impl Rig {
    async fn new(hint: &str, proxies: usize, unit: Unit) -> Rig {
        Rig::with(hint, proxies, unit, Device::default()).await
    }

    async fn with(hint: &str, proxies: usize, unit: Unit, device: Device) -> Rig {
        let sim = SfmSimulator::start(device.time_factor).await;
        sim.add_unit(UNIT, unit);
        let db = simcache_testkit::fresh_database(hint).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("unit.yaml"),
            device_yaml(&sim.url(), &device),
        )
        .unwrap();
        let mut rig = Rig {
            sim,
            db,
            dir,
            proxies: Vec::new(),
            http: reqwest::Client::new(),
        };
        for _ in 0..proxies {
            rig.add_proxy().await;
        }
        rig
    }

    async fn add_proxy(&mut self) {
        let file = self.dir.path().join("unit.yaml");
        let p = ServerProcess::spawn(
            std::path::Path::new(BIN),
            &[
                "--backend",
                "postgresql",
                "--db-url",
                &self.db,
                "sfm-proxy",
                "--no-auth",
                "--port",
                "0",
                "--device-file",
                file.to_str().unwrap(),
            ],
            &[],
        )
        .await;
        self.proxies.push(p);
    }

    fn url(&self, proxy: usize, path: &str, query: &str) -> String {
        let base = &self.proxies[proxy % self.proxies.len()].url;
        if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        }
    }

    async fn get(&self, proxy: usize, path: &str, query: &str) -> Reply {
        Reply::of(
            self.http
                .get(self.url(proxy, path, query))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn post(&self, proxy: usize, path: &str, query: &str, body: Value) -> Reply {
        Reply::of(
            self.http
                .post(self.url(proxy, path, query))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

#[derive(Debug, Clone)]
struct Reply {
    status: StatusCode,
    source: String,
    etag: String,
    error: String,
    body: bytes::Bytes,
}

impl Reply {
    async fn of(r: reqwest::Response) -> Reply {
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (source, etag, error) = (
            h("x-simcache-sfm-source"),
            h("etag"),
            h("x-simcache-sfm-error"),
        );
        let status = r.status();
        Reply {
            status,
            source,
            etag,
            error,
            body: r.bytes().await.unwrap(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_twice_is_one_upstream_call() {
    let rig = Rig::new("sfm_info_twice", 1, Unit::new("BE11529", 2, 100)).await;
    let first = rig.get(0, "/device/info", Q).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.source, "device");
    assert_eq!(first.json()["serial"], "BE11529");
    let second = rig.get(0, "/device/info", Q).await;
    assert_eq!(second.source, "cache");
    assert_eq!(second.body, first.body, "replayed verbatim");
    assert_eq!(rig.sim.calls("info"), 1);
    // ETag is the body's SHA-256; If-None-Match gives 304 with no body.
    assert_eq!(first.etag.len(), 66);
    let r = rig
        .http
        .get(rig.url(0, "/device/info", Q))
        .header("if-none-match", &first.etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(r.bytes().await.unwrap().is_empty());
    // POST /device/connect is the same data.
    let c = rig.post(0, "/device/connect", Q, Value::Null).await;
    assert_eq!((c.status, c.source.as_str()), (StatusCode::OK, "cache"));
    assert_eq!(rig.sim.calls("info"), 1);
    // GET /health answers without device I/O.
    let h = rig.get(0, "/health", "").await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(rig.sim.total_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cold_waveform_reads_over_three_sidecars_cause_one_upstream_call() {
    // 60,000 samples per channel: about 1.3 MB, about 1.1 s of simulated airtime.
    let rig = Rig::new("sfm_hundred", 3, Unit::new("BE11529", 3, 60_000)).await;
    let reads = (0..100).map(|i| {
        let url = rig.url(i, "/device/event/1/waveform", Q);
        let http = rig.http.clone();
        tokio::spawn(async move { Reply::of(http.get(url).send().await.unwrap()).await })
    });
    let replies: Vec<Reply> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    let bodies: HashSet<&[u8]> = replies.iter().map(|r| r.body.as_ref()).collect();
    assert_eq!(bodies.len(), 1, "100 identical bodies");
    assert!(replies[0].body.len() > 1_000_000);
    assert_eq!(
        rig.sim.calls("waveform"),
        1,
        "exactly one upstream waveform call"
    );
    assert_eq!(rig.sim.max_sessions(UNIT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_forced_reads_costs_at_most_two_upstream_calls() {
    // The unit holds the first forced read's call until every read has
    // arrived (each proxy's later readers join its flight), so the burst
    // is one burst however slowly a loaded machine sends it; nobody is
    // served stale meanwhile, and the unit does not time out.
    let unit = Unit::new("BE11529", 1, 100);
    let device = Device {
        timeout_secs: 120,
        stale_after_secs: 120,
        ..Device::default()
    };
    let rig = Rig::with("sfm_forced", 3, unit, device).await;
    rig.get(0, "/device/info", Q).await;
    rig.sim.reset_counters();
    rig.sim.hold_next("info");
    let arrived = Instant::now();
    let reads = (0..100).map(|i| {
        let url = rig.url(i, "/device/info", &format!("{Q}&force=true"));
        let http = rig.http.clone();
        tokio::spawn(async move { Reply::of(http.get(url).send().await.unwrap()).await })
    });
    let reads: Vec<_> = reads.collect();
    // 100 reads over 3 proxies: all but each proxy's first join a flight.
    simcache_testkit::wait::eventually(
        "every forced read waiting on a flight",
        simcache_testkit::wait::PATIENCE,
        || async {
            let mut joined = 0.0;
            for p in 0..3 {
                joined += metric_of(&rig, p, "simcache_sfm_coalesced_total{")
                    .await
                    .unwrap_or(0.0);
            }
            (joined >= 97.0).then_some(())
        },
    )
    .await;
    rig.sim.release();
    let replies: Vec<Reply> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK && r.source == "device")
    );
    let n = rig.sim.calls("info");
    assert!((1..=2).contains(&n), "{n} upstream calls for one burst");
    assert!(arrived.elapsed() < Duration::from_secs(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_write_through_one_sidecar_makes_info_stale_on_another() {
    let rig = Rig::new("sfm_config", 2, Unit::new("BE11529", 2, 100)).await;
    assert_eq!(rig.get(1, "/device/info", Q).await.source, "device");
    assert_eq!(rig.get(1, "/device/info", Q).await.source, "cache");
    rig.get(1, "/device/events", Q).await;
    let w = rig
        .post(
            0,
            "/device/config",
            Q,
            serde_json::json!({"sample_rate": 2048}),
        )
        .await;
    assert_eq!((w.status, w.source.as_str()), (StatusCode::OK, "bypass"));
    // B drops its copy when the write's NOTIFY reaches it; until then it may
    // still answer from memory (no upstream call).
    let info = simcache_testkit::wait::eventually(
        "B's info going upstream after the write",
        simcache_testkit::wait::PATIENCE,
        || async {
            let info = rig.get(1, "/device/info", Q).await;
            (info.source == "device").then_some(info)
        },
    )
    .await;
    assert_eq!(info.json()["compliance_config"]["sample_rate"], 2048);
    assert_eq!(rig.sim.calls("info"), 2);
    // Upstream's 422 for a bad value passes through verbatim.
    let bad = rig
        .post(
            0,
            "/device/config",
            Q,
            serde_json::json!({"sample_rate": 999}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json()["detail"][0]["loc"][1], "sample_rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_status_lives_for_its_ttl_and_start_stop_drop_it() {
    let rig = Rig::new("sfm_status", 1, Unit::new("BE11529", 0, 100)).await;
    let a = rig.get(0, "/device/monitor/status", Q).await;
    assert_eq!(
        (a.source.as_str(), a.json()["is_monitoring"].clone()),
        ("device", Value::Bool(false))
    );
    assert_eq!(
        rig.get(0, "/device/monitor/status", Q).await.source,
        "cache"
    );
    assert_eq!(rig.sim.calls("monitor_status"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        rig.get(0, "/device/monitor/status", Q).await.source,
        "device"
    );
    assert_eq!(rig.sim.calls("monitor_status"), 2);
    let s = rig.post(0, "/device/monitor/start", Q, Value::Null).await;
    assert_eq!(s.status, StatusCode::OK);
    let after = rig.get(0, "/device/monitor/status", Q).await;
    assert_eq!(after.source, "device", "start dropped the cached status");
    assert_eq!(after.json()["is_monitoring"], true);
    assert_eq!(rig.sim.calls("monitor_status"), 3);
}

fn listed(r: &Reply) -> Vec<i64> {
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_append_only_and_old_waveforms_stay_cached() {
    let rig = Rig::new("sfm_append", 1, Unit::new("BE11529", 5, 500)).await;
    assert_eq!(
        listed(&rig.get(0, "/device/events", Q).await),
        [0, 1, 2, 3, 4]
    );
    let mut first = Vec::new();
    for i in 0..5 {
        first.push(
            rig.get(0, &format!("/device/event/{i}/waveform"), Q)
                .await
                .body,
        );
    }
    assert_eq!(rig.sim.calls("waveform"), 5);
    rig.sim.with_unit(UNIT, |u| {
        u.add_event(500);
        u.add_event(500);
    });
    let list = rig.get(0, "/device/events", Q).await;
    assert_eq!(listed(&list), [0, 1, 2, 3, 4, 5, 6], "5 cached + 2 new");
    for (i, body) in first.iter().enumerate() {
        let r = rig.get(0, &format!("/device/event/{i}/waveform"), Q).await;
        assert_eq!((r.source.as_str(), &r.body), ("cache", body));
    }
    assert_eq!(
        rig.sim.calls("waveform"),
        5,
        "old waveforms need no upstream call"
    );
    assert_eq!(
        rig.get(0, "/device/event/6/waveform", Q).await.source,
        "device"
    );
    assert_eq!(rig.sim.calls("waveform"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_never_lets_an_old_waveform_answer_for_a_reused_index() {
    let rig = Rig::new("sfm_erase", 1, Unit::new("BE11529", 3, 300)).await;
    rig.get(0, "/device/events", Q).await;
    let old0 = rig.get(0, "/device/event/0/waveform", Q).await.body;
    // Erased behind our back, then a new event at index 0: the next list shows it.
    rig.sim.erase(UNIT);
    rig.sim.with_unit(UNIT, |u| u.add_event(300));
    assert_eq!(listed(&rig.get(0, "/device/events", Q).await), [0]);
    let new0 = rig.get(0, "/device/event/0/waveform", Q).await;
    assert_eq!(new0.source, "device");
    assert_ne!(
        new0.body, old0,
        "the old waveform is not served for the re-used index"
    );
    assert_eq!(rig.sim.calls("waveform"), 2);
    // Erased through the proxy: unlinked at once, no list needed.
    let e = rig.post(0, "/device/events/erase", Q, Value::Null).await;
    assert_eq!(e.status, StatusCode::OK);
    rig.sim.with_unit(UNIT, |u| u.add_event(300));
    let newer0 = rig.get(0, "/device/event/0/waveform", Q).await;
    assert_eq!(newer0.source, "device");
    assert_ne!(newer0.body, new0.body);
    assert_eq!(listed(&rig.get(0, "/device/events", Q).await), [0]);
}

async fn metric(rig: &Rig, name: &str) -> Option<f64> {
    metric_of(rig, 0, name).await
}

/// A metric of proxy `p`.
async fn metric_of(rig: &Rig, p: usize, name: &str) -> Option<f64> {
    let text = rig
        .http
        .get(rig.url(p, "/metrics", ""))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_unit_gets_stale_copies_fast_503_without_and_one_probe_per_window() {
    // A backoff window long enough for a loaded machine to make every
    // "while backing off" read inside it.
    const BACKOFF: Duration = Duration::from_secs(6);
    let device = Device {
        backoff_secs: BACKOFF.as_secs() as u32,
        ..Device::default()
    };
    let rig = Rig::with("sfm_offline", 2, Unit::new("BE11529", 2, 100), device).await;
    let warm = rig.get(0, "/device/monitor/status", Q).await;
    rig.get(0, "/device/info", Q).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // status TTL over
    rig.sim.set_fault(UNIT, Fault::Offline);
    rig.sim.reset_counters();
    // The first read finds the unit offline and serves its copy, marked stale.
    let r = rig.get(0, "/device/monitor/status", Q).await;
    assert_eq!((r.status, r.source.as_str()), (StatusCode::OK, "stale"));
    assert_eq!(r.body, warm.body);
    assert!(!r.error.is_empty(), "the upstream error is in a header");
    assert_eq!(rig.sim.calls("monitor_status"), 1);
    let failed_at = Instant::now();
    // While backing off: copies at once, 503 without, and nobody asks the unit.
    for p in 0..2 {
        let s = rig.get(p, "/device/monitor/status", Q).await;
        assert_eq!(s.source, "stale");
        let none = rig.get(p, "/device/event/1", Q).await;
        assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            none.json()["detail"]
                .as_str()
                .unwrap()
                .contains("unreachable")
        );
    }
    assert!(
        failed_at.elapsed() < BACKOFF,
        "the reads fell inside the window"
    );
    assert_eq!(rig.sim.calls("monitor_status"), 1);
    assert_eq!(rig.sim.calls("event"), 0);
    assert_eq!(
        metric(&rig, "simcache_sfm_device_reachable{").await,
        Some(0.0)
    );
    assert_eq!(metric(&rig, "simcache_build_info{").await, Some(1.0));
    // Window over: of 20 reads at once, exactly one probes the unit.
    tokio::time::sleep(BACKOFF.saturating_sub(failed_at.elapsed()) + Duration::from_millis(100))
        .await;
    let reads = (0..20).map(|i| {
        let url = rig.url(i, "/device/monitor/status", Q);
        let http = rig.http.clone();
        tokio::spawn(async move { Reply::of(http.get(url).send().await.unwrap()).await })
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    assert_eq!(rig.sim.calls("monitor_status"), 2, "one probe per window");
    // Back online: the next probe succeeds and the unit is reachable again.
    rig.sim.set_fault(UNIT, Fault::None);
    // The next probe falls when the (grown) window ends; until then, copies.
    simcache_testkit::wait::eventually("a probe finds the unit back", 4 * BACKOFF, || async {
        let r = rig.get(0, "/device/monitor/status", Q).await;
        assert_eq!(r.status, StatusCode::OK);
        (r.source == "device").then_some(())
    })
    .await;
    assert_eq!(
        rig.get(0, "/device/event/1", Q).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_concurrent_requests_never_open_more_sessions_than_allowed() {
    let rig = Rig::new("sfm_sessions", 3, Unit::new("BE11529", 6, 2000)).await;
    let paths = [
        "/device/info",
        "/device/events",
        "/device/monitor/status",
        "/device/event/2",
        "/device/event/3/waveform",
        "/device/event/4/waveform",
        "/device/events/storage_range",
    ];
    let reads = (0..60).map(|i| {
        let url = rig.url(i, paths[i % paths.len()], Q);
        let http = rig.http.clone();
        tokio::spawn(async move { Reply::of(http.get(url).send().await.unwrap()).await })
    });
    let writes = (0..3).map(|i| {
        let url = rig.url(i, "/device/config/project", Q);
        let http = rig.http.clone();
        tokio::spawn(async move {
            Reply::of(
                http.post(url)
                    .json(&serde_json::json!({"project": format!("p{i}")}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    });
    let all: Vec<_> = futures_util::future::join_all(reads.chain(writes)).await;
    for r in all {
        let r = r.unwrap();
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(rig.sim.max_sessions(UNIT), 1, "maxConcurrentSessions is 1");
    assert_eq!(rig.sim.refused_busy(), 0, "the unit never saw two sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_allowing_two_sessions_gets_two_at_most() {
    let mut unit = Unit::new("BE11529", 8, 4000);
    unit.session_limit = 2;
    // Each waveform takes about a second, so two of them overlap even when
    // a loaded machine spreads the requests out.
    let device = Device {
        sessions: 2,
        time_factor: 0.06,
        ..Device::default()
    };
    let rig = Rig::with("sfm_two_sessions", 2, unit, device).await;
    let reads = (0..16).map(|i| {
        let url = rig.url(i, &format!("/device/event/{}/waveform", i % 8), Q);
        let http = rig.http.clone();
        tokio::spawn(async move { Reply::of(http.get(url).send().await.unwrap()).await })
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    assert_eq!(rig.sim.max_sessions(UNIT), 2, "two slots used, never three");
    assert_eq!(rig.sim.refused_busy(), 0);
    assert_eq!(rig.sim.calls("waveform"), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sidecar_serves_a_fetched_waveform_without_the_unit() {
    let mut rig = Rig::new("sfm_restart", 1, Unit::new("BE11529", 2, 3000)).await;
    let first = rig.get(0, "/device/event/1/waveform", Q).await;
    assert_eq!(first.source, "device");
    let old = rig.proxies.remove(0);
    old.kill().await;
    rig.add_proxy().await;
    let again = rig.get(0, "/device/event/1/waveform", Q).await;
    assert_eq!((again.source.as_str(), &again.body), ("cache", &first.body));
    assert_eq!(rig.sim.calls("waveform"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_clearing_pass_through_and_bad_input() {
    let rig = Rig::new("sfm_misc", 1, Unit::new("BE11529", 3, 200)).await;
    rig.get(0, "/device/info", Q).await;
    rig.get(0, "/device/events", Q).await;
    rig.get(0, "/device/event/0/waveform", Q).await;
    rig.get(0, "/device/event/1/waveform", Q).await;
    rig.get(0, "/device/monitor/status", Q).await;
    rig.get(0, "/device/info", Q).await;
    // Counters reach the store on the proxy's next flush (every second).
    let s = simcache_testkit::wait::eventually(
        "the counters flushed",
        simcache_testkit::wait::PATIENCE,
        || async {
            let s = rig.get(0, "/cache/stats", "").await.json();
            (s["upstream_calls"] == 5).then_some(s)
        },
    )
    .await;
    for k in ["devices", "events", "waveforms", "monitor_status"] {
        assert!(s.get(k).is_some(), "upstream's key {k} in {s}");
    }
    assert_eq!(s["devices"], 1);
    assert_eq!(s["waveforms"], 2);
    assert_eq!(s["monitor_status"], 1);
    assert_eq!(s["hits"], 1);
    assert_eq!(s["upstream_calls"], 5);
    // Unknown routes and upstream errors pass through verbatim.
    let unknown = rig.get(0, "/device/no_such_thing", Q).await;
    assert_eq!(
        (unknown.status, unknown.source.as_str()),
        (StatusCode::NOT_FOUND, "bypass")
    );
    assert_eq!(unknown.json(), serde_json::json!({"detail": "Not Found"}));
    let out_of_range = rig.get(0, "/device/event/99", Q).await;
    assert_eq!(out_of_range.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        out_of_range.json(),
        serde_json::json!({"detail": "event index out of range"})
    );
    // An address without an SFMDevice: 403, and the unit is never asked.
    let before = rig.sim.total_calls();
    let r = rig.get(0, "/device/info", "host=10.9.9.9").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.json(),
        serde_json::json!({"detail": "device not registered"})
    );
    // Bad query parameters: 422 naming the parameter, nothing stored or asked.
    for (path, q, param) in [
        ("/device/info", "", "host"),
        ("/device/info", "host=10.0.0.1&port=COM1", "port"),
        ("/device/info", "host=10.0.0.1&tcp_port=abc", "tcp_port"),
        ("/device/event/-1/waveform", Q, "idx"),
        ("/device/info", "host=10.0.0.1&force=perhaps", "force"),
    ] {
        let r = rig.get(0, path, q).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}?{q}");
        assert_eq!(
            r.json()["detail"][0]["loc"][1],
            param,
            "{path}?{q}: {}",
            r.json()
        );
    }
    assert_eq!(rig.sim.total_calls(), before);
    let s2 = rig.get(0, "/cache/stats", "").await.json();
    assert_eq!(
        (s2["events"].clone(), s2["waveforms"].clone()),
        (s["events"].clone(), s["waveforms"].clone())
    );
    // DELETE /cache/device: the counts of what it held, then nothing.
    let del = rig
        .http
        .delete(rig.url(0, "/cache/device", Q))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    let counts: Value = del.json().await.unwrap();
    assert_eq!(counts["device_info"], 1);
    assert_eq!(counts["waveforms"], 2);
    assert_eq!(counts["monitor_status"], 1);
    assert_eq!(counts["events"], 1);
    let s3 = rig.get(0, "/cache/stats", "").await.json();
    assert_eq!(s3["waveforms"], 0);
    assert_eq!(rig.get(0, "/device/info", Q).await.source, "device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_listener_checks_sfm_privileges() {
    let sim = SfmSimulator::start(0.005).await;
    sim.add_unit(UNIT, Unit::new("BE11529", 1, 100));
    let db = simcache_testkit::fresh_database("sfm_auth").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unit.yaml");
    std::fs::write(&file, device_yaml(&sim.url(), &Device::default())).unwrap();
    let common = ["--backend", "postgresql", "--db-url", db.as_str()];
    let proxy = ServerProcess::spawn(
        std::path::Path::new(BIN),
        &[
            &common[..],
            &[
                "sfm-proxy",
                "--port",
                "0",
                "--device-file",
                file.to_str().unwrap(),
            ],
        ]
        .concat(),
        &[],
    )
    .await;
    let session = |role: &'static str| {
        let db = db.clone();
        async move {
            let out = tokio::process::Command::new(BIN)
                .args([
                    "--backend",
                    "postgresql",
                    "--db-url",
                    &db,
                    "session",
                    "create",
                    "--role",
                    role,
                ])
                .output()
                .await
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    };
    let (user, dev) = (session("user").await, session("developer").await);
    let http = reqwest::Client::new();
    let info = format!("{}/device/info?{Q}", proxy.url);
    let r = http.get(&info).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<Value>().await.unwrap()["detail"].is_string());
    let r = http
        .get(&info)
        .header("X-Session-ID", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cfg = format!("{}/device/config?{Q}", proxy.url);
    let body = serde_json::json!({"record_time": 5});
    let r = http
        .post(&cfg)
        .header("X-Session-ID", &user)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "users read; developers control"
    );
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("control_sfm")
    );
    let r = http
        .post(&cfg)
        .header("X-Session-ID", &dev)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let del = format!("{}/cache/device?{Q}", proxy.url);
    let r = http
        .delete(&del)
        .header("X-Session-ID", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "clearing needs invalidate_cache"
    );
    let r = http
        .delete(&del)
        .header("X-Session-ID", &dev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        http.get(format!("{}/health", proxy.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_local_listener_serves_only_its_simulations_devices_on_loopback() {
    let sim = SfmSimulator::start(0.005).await;
    sim.add_unit(UNIT, Unit::new("BE11529", 1, 100));
    sim.add_unit("tcp:10.0.0.2:12345", Unit::new("BE22222", 1, 100));
    let db = simcache_testkit::fresh_database("sfm_pod").await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(&a, device_yaml(&sim.url(), &Device::default())).unwrap();
    let b = dir.path().join("b.yaml");
    std::fs::write(
        &b,
        device_yaml(&sim.url(), &Device::default())
            .replace("name: unit-a", "name: unit-b")
            .replace("host: 10.0.0.1", "host: 10.0.0.2"),
    )
    .unwrap();
    let common = ["--backend", "postgresql", "--db-url", db.as_str()];
    // Register both (a shared proxy with device files), then stop it.
    let reg = ServerProcess::spawn(
        std::path::Path::new(BIN),
        &[
            &common[..],
            &[
                "sfm-proxy",
                "--no-auth",
                "--port",
                "0",
                "--device-file",
                a.to_str().unwrap(),
                "--device-file",
                b.to_str().unwrap(),
            ],
        ]
        .concat(),
        &[],
    )
    .await;
    reg.kill().await;
    // A non-loopback pod listener is refused: it has no auth.
    let out = tokio::process::Command::new(BIN)
        .args(
            [
                &common[..],
                &[
                    "serve",
                    "--no-auth",
                    "--port",
                    "0",
                    "--sfm-listen",
                    "0.0.0.0:0",
                ],
            ]
            .concat(),
        )
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // The pod's sidecar: only unit-a is in its Simulation's list.
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(
        [
            &common[..],
            &[
                "serve",
                "--no-auth",
                "--port",
                "0",
                "--sfm-listen",
                "127.0.0.1:0",
                "--sfm-devices",
                "field/unit-a",
            ],
        ]
        .concat(),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the sidecar announces its SFM listener")
            .unwrap()
            .expect("sidecar exited");
        if let Some(u) = line.strip_prefix("SFM proxy (pod-local, no auth) on ") {
            break u.trim().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::new();
    let ok = http
        .get(format!("{url}/device/info?{Q}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let other = http
        .get(format!("{url}/device/info?host=10.0.0.2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::FORBIDDEN,
        "not in this Simulation's list"
    );
    assert_eq!(sim.calls("info"), 1);
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_serial_at_the_address_flushes_the_devices_cache() {
    let rig = Rig::new("sfm_serial_swap", 1, Unit::new("BE11529", 2, 200)).await;
    rig.get(0, "/device/info", Q).await;
    rig.get(0, "/device/events", Q).await;
    let old = rig.get(0, "/device/event/1/waveform", Q).await;
    // The modem now reaches another unit (same events at the same indexes).
    rig.sim.with_unit(UNIT, |u| u.serial = "BE99999".into());
    let info = rig.get(0, "/device/info", &format!("{Q}&force=true")).await;
    assert_eq!(info.json()["serial"], "BE99999");
    let again = rig.get(0, "/device/event/1/waveform", Q).await;
    assert_eq!(
        again.source, "device",
        "the old unit's waveform is not served"
    );
    assert_ne!(again.body, old.body);
    assert_eq!(rig.sim.calls("waveform"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_with_a_copy_waits_at_most_stale_after_and_the_fetch_goes_on() {
    // Status takes 4 s here; staleAfterSeconds is 3.
    let device = Device {
        time_factor: 2.0,
        ..Device::default()
    };
    let rig = Rig::with("sfm_stale_after", 1, Unit::new("BE11529", 0, 10), device).await;
    let warm = rig.get(0, "/device/monitor/status", Q).await;
    assert_eq!(warm.source, "device");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = Instant::now();
    let r = rig.get(0, "/device/monitor/status", Q).await;
    let waited = t.elapsed();
    assert_eq!((r.status, r.source.as_str()), (StatusCode::OK, "stale"));
    assert!(r.error.contains("in progress"), "{}", r.error);
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(3900),
        "{waited:?}"
    );
    // The fetch went on: the next read joins it and gets the fresh body.
    let next = rig.get(0, "/device/monitor/status", Q).await;
    assert_eq!(next.source, "device");
    assert_eq!(rig.sim.calls("monitor_status"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_process_form_works_on_sqlite() {
    let sim = SfmSimulator::start(0.005).await;
    sim.add_unit(UNIT, Unit::new("BE11529", 2, 100));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unit.yaml");
    std::fs::write(&file, device_yaml(&sim.url(), &Device::default())).unwrap();
    let db = dir.path().join("sfm.db");
    let args = [
        "--db-path",
        db.to_str().unwrap(),
        "sfm-proxy",
        "--no-auth",
        "--port",
        "0",
        "--device-file",
        file.to_str().unwrap(),
    ];
    let proxy = ServerProcess::spawn(std::path::Path::new(BIN), &args, &[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/device/event/1/waveform?{Q}", proxy.url);
    let reads = (0..20).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { Reply::of(http.get(url).send().await.unwrap()).await })
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    assert_eq!(sim.calls("waveform"), 1);
    // Restarted on the same file: still cached.
    proxy.kill().await;
    let proxy = ServerProcess::spawn(std::path::Path::new(BIN), &args, &[]).await;
    let r = Reply::of(
        http.get(format!("{}/device/event/1/waveform?{Q}", proxy.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.source, "cache");
    assert_eq!(sim.calls("waveform"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_device_file_is_refused_at_start_and_the_registration_kept() {
    let db = simcache_testkit::fresh_database("sfm_bad_file").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, device_yaml("http://127.0.0.1:9", &Device::default())).unwrap();
    let start = |file: std::path::PathBuf| {
        let db = db.clone();
        async move {
            tokio::process::Command::new(BIN)
                .args([
                    "--backend",
                    "postgresql",
                    "--db-url",
                    &db,
                    "sfm-proxy",
                    "--no-auth",
                    "--port",
                    "0",
                ])
                .arg("--device-file")
                .arg(&file)
                .stdout(std::process::Stdio::null())
                .output()
                .await
                .unwrap()
        }
    };
    // A valid file registers; its process is stopped.
    let reg = ServerProcess::spawn(
        std::path::Path::new(BIN),
        &[
            "--backend",
            "postgresql",
            "--db-url",
            &db,
            "sfm-proxy",
            "--no-auth",
            "--port",
            "0",
            "--device-file",
            good.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    reg.kill().await;
    // An upstream URL that is not http(s): refused, naming the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        device_yaml("ftp://x", &Device::default()).replace("name: unit-a", "name: unit-z"),
    )
    .unwrap();
    let out = start(bad).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.upstream.url") && err.contains("unit-z"),
        "{err}"
    );
    // Another SFMDevice at the same address: refused, naming the holder.
    let clash = dir.path().join("clash.yaml");
    std::fs::write(
        &clash,
        device_yaml("http://127.0.0.1:9", &Device::default())
            .replace("name: unit-a", "name: unit-b"),
    )
    .unwrap();
    let out = start(clash).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already registered by field/unit-a"), "{err}");
    // Not YAML: refused with the file named.
    let junk = dir.path().join("junk.yaml");
    std::fs::write(&junk, "kind: [unclosed").unwrap();
    let out = start(junk.clone()).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.yaml"));
    // The first registration is untouched.
    let (c, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = c.query("SELECT name FROM sfm_devices", &[]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["unit-a"]);
}
