//! The system-of-record cache, end to end: real sidecar processes serving
//! real HTTP, in front of a real S3 server (SeaweedFS) and a real directory.
//! Each acceptance test runs on both kinds of SOR.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use simcache_testkit::ServerProcess;
use simcache_testkit::s3::{self, S3Server};

const BIN: &str = env!("CARGO_BIN_EXE_simcache-sidecar");

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Dir,
    S3,
}

/// Where the tests write the SOR's data.
enum Sor {
    Dir(tempfile::TempDir),
    S3 {
        server: &'static S3Server,
        prefix: String,
    },
    PrivateS3 {
        server: Box<S3Server>,
        prefix: String,
    },
}

impl Sor {
    fn new(kind: Kind, name: &str) -> Sor {
        match kind {
            Kind::Dir => Sor::Dir(tempfile::tempdir().unwrap()),
            Kind::S3 => {
                let server = s3::server();
                Sor::S3 {
                    prefix: server.prefix(name),
                    server,
                }
            }
        }
    }

    fn private_s3(name: &str) -> Sor {
        let server = S3Server::start("private")
            .unwrap_or_else(|e| panic!("a private S3 server for this test: {e}"));
        let prefix = server.prefix(name);
        Sor::PrivateS3 {
            server: Box::new(server),
            prefix,
        }
    }

    fn s3(&self) -> Option<(&S3Server, &str)> {
        match self {
            Sor::Dir(_) => None,
            Sor::S3 { server, prefix } => Some((server, prefix)),
            Sor::PrivateS3 { server, prefix } => Some((server, prefix)),
        }
    }

    fn url(&self) -> String {
        match self {
            Sor::Dir(d) => format!("file://{}", d.path().display()),
            _ => {
                let (s, p) = self.s3().unwrap();
                s.url(p)
            }
        }
    }

    async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        let body: Vec<u8> = body.into();
        match self {
            Sor::Dir(d) => {
                let path = d.path().join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                // Replace, as a writer of immutable data would: a new inode.
                let tmp = d.path().join(format!(".tmp-{}", key.replace('/', "_")));
                std::fs::write(&tmp, &body).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            _ => {
                let (s, p) = self.s3().unwrap();
                s.put(&format!("{p}{key}"), body).await;
            }
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        match self.s3() {
            Some((s, _)) => vec![
                ("AWS_ACCESS_KEY_ID".into(), s.access_key.clone()),
                ("AWS_SECRET_ACCESS_KEY".into(), s.secret_key.clone()),
            ],
            None => vec![],
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec!["--sor".to_string(), format!("data={}", self.url())];
        if let Some((s, _)) = self.s3() {
            a.extend([
                "--sor-endpoint".into(),
                s.endpoint.clone(),
                "--sor-allow-http".into(),
            ]);
        }
        a
    }
}

struct Rig {
    sor: Sor,
    cache: tempfile::TempDir,
    db: PathBuf,
    _db_dir: tempfile::TempDir,
    args: Vec<String>,
    sidecar: Option<ServerProcess>,
    http: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn cache(&self) -> &str {
        self.header("x-simcache-cache")
    }
}

impl Rig {
    async fn new(kind: Kind, name: &str, extra: &[&str]) -> Rig {
        Rig::on(Sor::new(kind, name), extra).await
    }

    async fn on(sor: Sor, extra: &[&str]) -> Rig {
        let db_dir = tempfile::tempdir().unwrap();
        let mut rig = Rig {
            sor,
            cache: tempfile::tempdir().unwrap(),
            db: db_dir.path().join("cache.db"),
            _db_dir: db_dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            sidecar: None,
            http: reqwest::Client::new(),
        };
        rig.start().await;
        rig
    }

    fn sidecar_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--backend".into(),
            "sqlite".into(),
            "--db-path".into(),
            self.db.display().to_string(),
            "serve".into(),
            "--no-auth".into(),
            "--port".into(),
            "0".into(),
            "--sor-cache-dir".into(),
            self.cache.path().display().to_string(),
        ];
        a.extend(self.sor.args());
        a.extend(self.args.iter().cloned());
        a
    }

    async fn start(&mut self) {
        let args = self.sidecar_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = self.sor.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.sidecar = Some(ServerProcess::spawn(Path::new(BIN), &args, &env).await);
    }

    async fn restart(&mut self) {
        if let Some(s) = self.sidecar.take() {
            s.terminate().await;
        }
        self.start().await;
    }

    fn base(&self) -> &str {
        &self.sidecar.as_ref().unwrap().url
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.unwrap();
        Reply {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut r = self.http.get(format!("{}{path}", self.base()));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r).await
    }

    async fn object(&self, key: &str) -> Reply {
        self.get(&format!("/sor/data/objects/{key}")).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base())).json(&body))
            .await
    }

    async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await.body).unwrap()
    }

    /// The value of one series of the sidecar's metrics (0 when absent).
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    async fn sor_gets(&self) -> f64 {
        self.metric(
            "simcache_sor_fetch_total",
            &[("sor", "data"), ("kind", "get"), ("status", "ok")],
        )
        .await
    }

    /// Bytes of blobs in the disk tier, read off the disk.
    fn disk_bytes(&self) -> u64 {
        let blobs = self.cache.path().join("blobs");
        std::fs::read_dir(blobs)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let series = l.split_whitespace().next().unwrap_or("");
            (series == name || series.starts_with(&format!("{name}{{")))
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

macro_rules! on_both_sors {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dir() {
                super::$name(super::Kind::Dir).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(super::Kind::S3).await
            }
        }
    )*};
}

on_both_sors!(
    fills_then_hits_memory_and_disk_with_identical_bytes,
    an_overwrite_is_seen_by_the_validation_rules,
    a_304_revalidation_is_counted,
    concurrent_cold_reads_fetch_once,
    ranges_and_conditionals,
    a_replaced_object_never_yields_mixed_bytes,
    byte_caps_hold_under_a_fill_storm,
    path_attacks_are_refused_before_any_io,
    cache_api_examples_work_unchanged,
    functions_equal_values_computed_from_every_row,
    function_bounds_answer_422_and_429,
);

async fn fills_then_hits_memory_and_disk_with_identical_bytes(kind: Kind) {
    let mut rig = Rig::new(kind, "fill", &["--sor-memory-object-bytes", "4096"]).await;
    let small = br#"{"temperature": 300.5, "runs": [1, 2, 3]}"#.to_vec();
    let big = body(200_000, 7);
    rig.sor.put("inputs/small.json", small.clone()).await;
    rig.sor.put("inputs/big.bin", big.clone()).await;

    let r = rig.object("inputs/small.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache(), "miss");
    assert_eq!(r.body, small);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("content-length"), small.len().to_string());
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert!(r.header("etag").starts_with('"'), "{}", r.header("etag"));
    assert!(r.header("last-modified").ends_with(" GMT"));
    assert!(!r.header("age").is_empty());
    let r = rig.object("inputs/small.json").await;
    assert_eq!(
        (r.cache(), r.body.as_slice()),
        ("hit-memory", small.as_slice())
    );

    let r = rig.object("inputs/big.bin").await;
    assert_eq!((r.status.as_u16(), r.cache()), (200, "miss"));
    assert!(r.body == big);
    let r = rig.object("inputs/big.bin").await;
    assert_eq!(r.cache(), "hit-disk");
    assert!(r.body == big, "identical bytes from disk");
    assert_eq!(rig.sor_gets().await, 2.0);

    // HEAD: the headers without the body.
    let h = rig
        .send(
            rig.http
                .head(format!("{}/sor/data/objects/inputs/big.bin", rig.base())),
        )
        .await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), "200000");
    assert!(h.body.is_empty());

    // Meta, listing, entries, stats.
    let m = rig.get("/sor/data/meta/inputs/big.bin").await.json();
    assert_eq!(m["size"], 200_000);
    assert_eq!(m["cache"], "hit-disk");
    let l = rig.get("/sor/data/objects?prefix=inputs/").await.json();
    let keys: Vec<&str> = l["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["inputs/big.bin", "inputs/small.json"]);
    let l = rig
        .get("/sor/data/objects?prefix=inputs/&limit=1")
        .await
        .json();
    assert_eq!(l["truncated"], true);
    assert_eq!(l["next_start_after"], "inputs/big.bin");
    let l = rig
        .get("/sor/data/objects?prefix=inputs/&start_after=inputs/big.bin")
        .await
        .json();
    assert_eq!(l["objects"].as_array().unwrap().len(), 1);
    let e = rig.get("/sor/data/cache/entries").await.json();
    assert_eq!(e["entries"].as_array().unwrap().len(), 2);
    let s = rig.get("/sor/data/cache/stats").await.json();
    assert_eq!(s["disk"]["objects"], 2);
    assert!(s["hits"].as_u64().unwrap() >= 2, "{s}");
    let text = rig.metrics().await;
    assert!(metric_value(&text, "simcache_sor_cache_bytes", &[("tier", "disk")]) >= 200_000.0);
    assert_eq!(
        metric_value(
            &text,
            "simcache_sor_requests_total",
            &[("route", "object"), ("result", "hit-disk")]
        ),
        2.0,
        "the GET and the HEAD"
    );

    // A restart rebuilds the disk index: no SOR GET for either object.
    rig.restart().await;
    let r = rig.object("inputs/big.bin").await;
    assert_eq!((r.cache(), r.body == big), ("hit-disk", true));
    let r = rig.object("inputs/small.json").await;
    assert_eq!((r.cache(), r.body == small), ("hit-disk", true));
    let r = rig.object("inputs/small.json").await;
    assert_eq!(r.cache(), "hit-memory");
    assert_eq!(rig.sor_gets().await, 0.0, "no fetch after a restart");

    // A missing object: 404 naming it, nothing cached.
    let r = rig.object("inputs/none.json").await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no such object")
    );
    // An unknown SOR: 404 naming it.
    let r = rig.get("/sor/nope/objects/a.json").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("\"nope\""));
}

async fn an_overwrite_is_seen_by_the_validation_rules(kind: Kind) {
    for (mode, seen_at_once, seen_after_ttl) in [
        ("ttl", false, true),
        ("always", true, true),
        ("never", false, false),
    ] {
        let rig = Rig::new(
            kind,
            &format!("overwrite-{mode}"),
            &["--sor-validation", mode, "--sor-ttl-secs", "5"],
        )
        .await;
        // A TTL of seconds: "right after" must stay within it even when an
        // S3 write takes a second on a loaded machine.
        rig.sor.put("a.json", b"{\"v\": 1}".to_vec()).await;
        assert_eq!(rig.object("a.json").await.body, b"{\"v\": 1}");
        rig.sor.put("a.json", b"{\"v\": 22}".to_vec()).await;
        let now = rig.object("a.json").await;
        assert_eq!(
            now.body == b"{\"v\": 22}",
            seen_at_once,
            "{mode}: right after"
        );
        tokio::time::sleep(Duration::from_millis(5300)).await;
        let later = rig.object("a.json").await;
        assert_eq!(
            later.body == b"{\"v\": 22}",
            seen_after_ttl,
            "{mode}: after the TTL"
        );
        if seen_after_ttl && !seen_at_once {
            assert_eq!(later.cache(), "miss", "a changed object is refilled");
        }
    }
}

async fn a_304_revalidation_is_counted(kind: Kind) {
    // A TTL a loaded machine cannot outrun between two reads.
    let rig = Rig::new(kind, "reval", &["--sor-ttl-secs", "3"]).await;
    rig.sor.put("a.json", b"[1, 2]".to_vec()).await;
    assert_eq!(rig.object("a.json").await.cache(), "miss");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = rig.object("a.json").await;
    assert_eq!(
        (r.cache(), r.body.as_slice()),
        ("revalidated", b"[1, 2]".as_slice())
    );
    assert_eq!(r.header("age"), "0");
    // Fresh again: served without asking.
    assert_eq!(rig.object("a.json").await.cache(), "hit-memory");
    assert_eq!(
        rig.metric(
            "simcache_sor_fetch_total",
            &[("kind", "revalidate"), ("status", "not-modified")]
        )
        .await,
        1.0
    );
    // cache_api's update revalidates now, whatever the TTL.
    let u = rig
        .get("/cache/api/v1.0/?command=update&path=a.json&storage=data")
        .await;
    assert_eq!(u.status, 200);
    assert!(
        u.json()["return"]["value"]
            .as_str()
            .unwrap()
            .contains("revalidated")
    );
}

async fn concurrent_cold_reads_fetch_once(kind: Kind) {
    let rig = Rig::new(kind, "flight", &["--sor-memory-object-bytes", "1024"]).await;
    let data = body(8 << 20, 3);
    rig.sor.put("big.bin", data.clone()).await;
    let url = format!("{}/sor/data/objects/big.bin", rig.base());
    // A leader that gives up at once: the fill goes on for the others.
    let quitter = reqwest::Client::builder()
        .timeout(Duration::from_millis(2))
        .build()
        .unwrap();
    let _ = quitter.get(&url).send().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (c, u) = (rig.http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = c.get(&u).send().await.unwrap();
            (r.status(), r.bytes().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, bytes) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            bytes.as_ref() == data.as_slice(),
            "every follower gets the whole object"
        );
    }
    assert_eq!(rig.sor_gets().await, 1.0, "exactly one SOR GET");
}

async fn ranges_and_conditionals(kind: Kind) {
    // One object cached (small), one read through (over the fill limit).
    let rig = Rig::new(kind, "ranges", &["--sor-max-object-bytes", "100000"]).await;
    let cached = body(1000, 1);
    let through = body(150_000, 2);
    rig.sor.put("c.bin", cached.clone()).await;
    rig.sor.put("t.bin", through.clone()).await;
    for (key, data) in [("c.bin", &cached), ("t.bin", &through)] {
        let size = data.len();
        let full = rig.object(key).await;
        assert_eq!(full.status, 200, "{key}");
        assert!(full.body == *data);
        let etag = full.header("etag").to_string();
        let lm = full.header("last-modified").to_string();
        let path = format!("/sor/data/objects/{key}");

        let r = rig.get_with(&path, &[("range", "bytes=10-19")]).await;
        assert_eq!(r.status, 206, "{key}");
        assert_eq!(r.body, data[10..20]);
        assert_eq!(r.header("content-range"), format!("bytes 10-19/{size}"));
        let r = rig.get_with(&path, &[("range", "bytes=-5")]).await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_slice()),
            (206, &data[size - 5..])
        );
        let r = rig
            .get_with(&path, &[("range", &format!("bytes={size}-"))])
            .await;
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), format!("bytes */{size}"));
        // Several ranges: the whole object.
        let r = rig.get_with(&path, &[("range", "bytes=0-1,5-6")]).await;
        assert_eq!(r.status, 200);
        let r = rig.get_with(&path, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, 304, "{key}");
        assert!(r.body.is_empty());
        let r = rig.get_with(&path, &[("if-match", "\"another\"")]).await;
        assert_eq!(r.status, 412);
        assert!(r.json()["error"].as_str().unwrap().contains("If-Match"));
        let r = rig
            .get_with(&path, &[("if-match", &etag), ("range", "bytes=0-3")])
            .await;
        assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &data[..4]));
        let r = rig
            .get_with(&path, &[("if-range", "\"old\""), ("range", "bytes=0-3")])
            .await;
        assert_eq!(
            r.status, 200,
            "If-Range that does not match: the whole object"
        );
        let r = rig
            .get_with(&path, &[("if-range", &lm), ("range", "bytes=0-3")])
            .await;
        assert_eq!(r.status, 206);
    }
}

async fn a_replaced_object_never_yields_mixed_bytes(kind: Kind) {
    let rig = Rig::new(
        kind,
        "mixed",
        &["--sor-ttl-secs", "1", "--sor-max-object-bytes", "100000"],
    )
    .await;
    for key in ["c.bin", "t.bin"] {
        let size = if key == "c.bin" { 50_000 } else { 150_000 };
        let v1 = body(size, 1);
        let v2 = body(size, 9);
        rig.sor.put(key, v1.clone()).await;
        let path = format!("/sor/data/objects/{key}");
        let first = rig.get_with(&path, &[("range", "bytes=0-999")]).await;
        assert_eq!(
            (first.status.as_u16(), first.body.as_slice()),
            (206, &v1[..1000])
        );
        let e1 = first.header("etag").to_string();
        rig.sor.put(key, v2.clone()).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // The client continues with If-Range: it gets the whole new object.
        let second = rig
            .get_with(&path, &[("range", "bytes=1000-1999"), ("if-range", &e1)])
            .await;
        assert_eq!(second.status, 200, "{key}");
        assert!(
            second.body == v2,
            "{key}: the whole new version, not a piece of it"
        );
        assert_ne!(second.header("etag"), e1);
        // With If-Match: 412, no bytes of the new version under the old tag.
        let third = rig
            .get_with(&path, &[("range", "bytes=1000-1999"), ("if-match", &e1)])
            .await;
        assert_eq!(third.status, 412, "{key}");
    }
}

async fn byte_caps_hold_under_a_fill_storm(kind: Kind) {
    let cap = 1_000_000u64;
    let rig = Rig::new(
        kind,
        "storm",
        &[
            "--sor-disk-bytes",
            &cap.to_string(),
            "--sor-memory-bytes",
            "300000",
            "--sor-memory-object-bytes",
            "100000",
        ],
    )
    .await;
    let mut objects = BTreeMap::new();
    for i in 0..24u8 {
        let size = if i % 2 == 0 { 180_000 } else { 40_000 };
        let data = body(size, i);
        rig.sor.put(&format!("o{i}.bin"), data.clone()).await;
        objects.insert(format!("o{i}.bin"), data);
    }
    let mut tasks = Vec::new();
    for round in 0..2 {
        for (k, v) in &objects {
            let (c, u, v) = (
                rig.http.clone(),
                format!("{}/sor/data/objects/{k}", rig.base()),
                v.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let r = c.get(&u).send().await.unwrap();
                assert_eq!(r.status(), 200, "round {round}");
                assert!(r.bytes().await.unwrap().as_ref() == v.as_slice());
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        rig.disk_bytes() <= cap,
        "{} bytes on disk, cap {cap}",
        rig.disk_bytes()
    );
    let s = rig.get("/sor/data/cache/stats").await.json();
    assert!(s["disk"]["bytes"].as_u64().unwrap() <= cap, "{s}");
    assert!(s["memory"]["bytes"].as_u64().unwrap() <= 300_000, "{s}");
    // Under the storm a fill that cannot fit beside fills still in flight is
    // served unfilled rather than evicting them, so how many evictions the
    // storm itself makes depends on timing. Read once more one at a time:
    // 2.6 MB through a 1 MB disk must now evict, and the cap still holds.
    for (k, v) in &objects {
        let r = rig.object(k).await;
        assert!(r.status == 200 && &r.body == v, "{k}");
    }
    assert!(rig.disk_bytes() <= cap);
    assert!(
        rig.metric(
            "simcache_sor_evictions_total",
            &[("tier", "disk"), ("reason", "capacity")]
        )
        .await
            > 0.0
    );
    // A single object over the disk cap is served, never filled.
    let huge = body(cap as usize + 10, 5);
    rig.sor.put("huge.bin", huge.clone()).await;
    let r = rig.object("huge.bin").await;
    assert!(r.status == 200 && r.body == huge);
    assert!(rig.disk_bytes() <= cap);
}

/// Sends exactly these bytes as the request target (clients normalise `..`).
async fn raw_get(base: &str, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

async fn path_attacks_are_refused_before_any_io(kind: Kind) {
    let rig = Rig::new(kind, "attacks", &[]).await;
    rig.sor.put("ok.json", b"{}".to_vec()).await;
    if let Sor::Dir(d) = &rig.sor {
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("passwd.json")).unwrap();
    }
    let long = "a".repeat(1100);
    let attacks = [
        "/sor/data/objects/../../etc/passwd".to_string(),
        "/sor/data/objects/a/../../../etc/passwd".to_string(),
        "/sor/data/objects/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/sor/data/objects/%252e%252e/etc/passwd".to_string(),
        "/sor/data/objects//etc/passwd".to_string(),
        "/sor/data/objects/%2Fetc%2Fpasswd".to_string(),
        "/sor/data/objects/..%5C..%5Cetc%5Cpasswd".to_string(),
        "/sor/data/objects/a%00b".to_string(),
        format!("/sor/data/objects/{long}"),
        "/sor/data/meta/../x".to_string(),
        "/sor/data/functions/object.sha256/%2e%2e/x".to_string(),
        "/cache/api/v1.0/?command=read&path=../../etc/passwd".to_string(),
        "/cache/api/v1.0/?command=read&path=/etc/passwd".to_string(),
        "/cache/api/v1.0/?command=read&path=%2e%2e%2fetc%2fpasswd".to_string(),
        "/cache/api/v1.0/?command=delete&path=../x".to_string(),
        "/sor/data/objects?prefix=../".to_string(),
    ];
    for a in &attacks {
        let (status, body) = raw_get(rig.base(), a).await;
        assert!((400..500).contains(&status), "{a}: {status} {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{a}: not JSON: {body}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{a}: {body}"
        );
        assert!(!body.contains("root:"), "{a} leaked a file");
    }
    if kind == Kind::Dir {
        for a in [
            "/sor/data/objects/etc/passwd",
            "/sor/data/objects/passwd.json",
        ] {
            let (status, body) = raw_get(rig.base(), a).await;
            assert_eq!(status, 403, "{a}: {body}");
            assert!(body.contains("outside"), "{body}");
            assert!(!body.contains("root:"));
        }
    }
    let (status, body) = raw_get(
        rig.base(),
        "/cache/api/v1.0/?function=function_create&function_name=x&function_body=import%20os",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Nothing was read or written.
    assert_eq!(rig.sor_gets().await, 0.0);
    assert_eq!(rig.disk_bytes(), 0);
    assert!(
        rig.get("/sor/data/cache/entries").await.json()["entries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The legitimate file is still served, and its answer names no local path.
    let r = rig.get("/cache/api/v1.0/?command=read&path=ok.json").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains(&rig.cache.path().display().to_string()));
    if let Sor::Dir(d) = &rig.sor {
        assert!(!text.contains(&d.path().display().to_string()));
        let nf = rig.object("missing.json").await;
        assert!(!String::from_utf8_lossy(&nf.body).contains(&d.path().display().to_string()));
    }
}

fn cusip_table() -> Vec<u8> {
    use simcache_testkit::parquet_gen::{Column, write};
    let n = 781;
    let cusip: Vec<Option<String>> = (0..n).map(|i| Some(format!("row{i}"))).collect();
    let price: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if i < 4 {
                None
            } else {
                Some(2.0 + (i % 50) as f64 / 100.0)
            }
        })
        .collect();
    let security_type: Vec<Option<f64>> = vec![None; n];
    let trade_date: Vec<Option<String>> = vec![None; n];
    write(
        &[
            Column::Text("cusip".into(), cusip),
            Column::Double("price".into(), price),
            Column::Double("security_type".into(), security_type),
            Column::Text("trade_date".into(), trade_date),
        ],
        10_000,
    )
}

async fn cache_api_examples_work_unchanged(kind: Kind) {
    let rig = Rig::new(kind, "compat", &[]).await;
    rig.sor.put("file1.snappy.parquet", cusip_table()).await;
    rig.sor
        .put(
            "file1.json",
            br#"{"a": 1, "b": [true, null], "c": "x"}"#.to_vec(),
        )
        .await;
    // Seed 002: curl http://127.0.0.1:5000/cache/api/v1.0/?command=create\&path=file1.snappy.parquet
    let r = rig
        .get("/cache/api/v1.0/?command=create&path=file1.snappy.parquet")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body.clone()).unwrap(),
        r#"{"return": {"uri": "/cache/api/v1.0/", "path": "file1.snappy.parquet", "value": "{'result': 'success'}"}}"#
    );
    // Seed 002: function=cache_item_stats&key=... (no path key in that style).
    let r = rig
        .get("/cache/api/v1.0/?function=cache_item_stats&key=file1.snappy.parquet")
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["return"].get("path").is_none(), "{v}");
    let text = v["return"]["value"].as_str().unwrap();
    assert!(text.contains("RangeIndex: 781 entries, 0 to 780"), "{text}");
    assert!(text.contains("Data columns (total 4 columns):"), "{text}");
    assert!(text.contains("777 non-null"), "{text}");
    assert!(text.contains("float64"), "{text}");
    // Seed 003 style, and the storage names a configured SOR.
    for q in [
        "function=cache_create&path=file1.json",
        "function=data_read&path=file1.json&storage=data",
        "function=create&path=file1.json",
    ] {
        let r = rig.get(&format!("/cache/api/v1.0/?{q}")).await;
        assert_eq!(r.status, 200, "{q}");
        let val = r.json()["return"]["value"].as_str().unwrap().to_string();
        assert!(
            val.starts_with("{'result': 'success ") && val.contains(" seconds ("),
            "{q}: {val}"
        );
    }
    let r = rig
        .get("/cache/api/v1.0/?function=data_read&path=file1.json&return=data&time=false")
        .await;
    assert_eq!(
        r.json()["return"]["value"],
        "{'a': 1, 'b': [True, None], 'c': 'x'}"
    );
    let r = rig
        .get("/cache/api/v1.0/?command=read&path=file1.snappy.parquet&return=data")
        .await;
    assert!(
        r.json()["return"]["value"]
            .as_str()
            .unwrap()
            .starts_with("[{'cusip': 'row0'")
    );
    // The README's POST form, and a plain form post.
    let r = rig
        .post(
            "/cache/api/v1.0/",
            json!({"data": {"command": "read", "path": "file1.json"}}),
        )
        .await;
    assert_eq!(r.json()["return"]["value"], "{'result': 'success'}");
    let r = rig
        .send(
            rig.http
                .post(format!("{}/cache/api/v1.0/", rig.base()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("function=read&path=file1.json&time=false"),
        )
        .await;
    assert_eq!(r.json()["return"]["value"], "{'result': 'success'}");
    // head lists logical keys only.
    let r = rig.get("/cache/api/v1.0/?function=cache_head").await;
    assert_eq!(
        r.json()["return"]["value"],
        "['file1.json', 'file1.snappy.parquet']"
    );
    let r = rig.get("/cache/api/v1.0/?function=stats_cache").await;
    assert_eq!(
        r.json()["return"]["value"],
        "['file1.json', 'file1.snappy.parquet']"
    );
    let r = rig
        .get("/cache/api/v1.0/?function=stats_cache_item&key=file1.json")
        .await;
    assert_eq!(
        r.json()["return"]["value"],
        "{'keys': ['a', 'b', 'c'], 'pointer': ''}"
    );
    // Functions by name through the compatibility route.
    let r = rig
        .get("/cache/api/v1.0/?function=json.get&path=file1.json&pointer=/b/0")
        .await;
    assert_eq!(
        r.json()["return"]["value"],
        "{'pointer': '/b/0', 'value': True}"
    );
    // delete evicts here only; the SOR keeps the object.
    let r = rig
        .get("/cache/api/v1.0/?command=delete&path=file1.json")
        .await;
    assert_eq!(
        r.json()["return"]["value"],
        "{'result': 'success', 'evicted': True}"
    );
    let r = rig.get("/cache/api/v1.0/?command=head").await;
    assert_eq!(r.json()["return"]["value"], "['file1.snappy.parquet']");
    let again = rig.object("file1.json").await;
    assert_eq!(
        (again.status.as_u16(), again.cache()),
        (200, "miss"),
        "the SOR still has it"
    );
    // Refusals.
    let r = rig
        .get("/cache/api/v1.0/?function=function_create&function_name=f&function_body=x")
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("built-in functions only")
    );
    let r = rig
        .get("/cache/api/v1.0/?function=pi&path=file1.json")
        .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("\"pi\""));
    let r = rig
        .get("/cache/api/v1.0/?command=read&path=file1.json&storage=s3bucket")
        .await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("configured: data")
    );
    let r = rig.get("/cache/api/v1.0/?command=read").await;
    assert_eq!(r.status, 400);
    let r = rig.get("/cache/api/v1.0/?path=x").await;
    assert_eq!(r.status, 400);
}

async fn functions_equal_values_computed_from_every_row(kind: Kind) {
    use simcache_testkit::parquet_gen::{Column, numeric_table};
    let rig = Rig::new(kind, "functions", &["--sor-memory-object-bytes", "1024"]).await;
    let (file, cols) = numeric_table(40_000);
    rig.sor.put("t.parquet", file.clone()).await;
    rig.sor
        .put(
            "doc.json",
            br#"{"runs": [{"t": 300}, {"t": 310}], "name": "sweep"}"#.to_vec(),
        )
        .await;

    let call = |name: &str, args: Value| {
        let rig = &rig;
        let name = name.to_string();
        async move {
            rig.post(
                &format!("/sor/data/functions/{name}"),
                json!({"path": "t.parquet", "args": args}),
            )
            .await
        }
    };
    let r = call("parquet.row_count", json!({})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["result"]["rows"], 40_000);
    assert_eq!(v["cached"], false);
    assert_eq!(v["result"]["row_groups"], 3);
    let object_etag = v["etag"].as_str().unwrap().to_string();
    assert_eq!(
        call("parquet.row_count", json!({})).await.json()["cached"],
        true
    );

    let schema = call("parquet.schema", json!({})).await.json();
    let names: Vec<&str> = schema["result"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "temperature", "stress", "strain"]);

    let stats = call(
        "parquet.column_stats",
        json!({"columns": ["temperature", "strain"]}),
    )
    .await
    .json();
    let describe = call("parquet.describe", json!({})).await.json();
    for c in &cols {
        let Column::Double(name, vals) = c else {
            continue;
        };
        let present: Vec<f64> = vals.iter().flatten().copied().collect();
        let min = present.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = present.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mean = present.iter().sum::<f64>() / present.len() as f64;
        let std = (present.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
            / (present.len() - 1) as f64)
            .sqrt();
        let mut sorted = present.clone();
        sorted.sort_by(f64::total_cmp);
        let median = {
            let pos = 0.5 * (sorted.len() - 1) as f64;
            let lo = pos.floor() as usize;
            sorted[lo] + (sorted[pos.ceil() as usize] - sorted[lo]) * (pos - lo as f64)
        };
        let d = &describe["result"]["columns"][name];
        assert_eq!(d["count"], present.len(), "{name}");
        let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(
            close(&d["mean"], mean),
            "{name} mean {} vs {mean}",
            d["mean"]
        );
        assert!(close(&d["std"], std), "{name} std");
        assert!(close(&d["50%"], median), "{name} median");
        assert_eq!(d["min"], min);
        assert_eq!(d["max"], max);
        if name == "temperature" || name == "strain" {
            let s = &stats["result"]["columns"][name];
            assert_eq!(s["min"], min, "{name}");
            assert_eq!(s["max"], max, "{name}");
            assert_eq!(s["null_count"], vals.len() - present.len(), "{name}");
            assert_eq!(s["row_groups"].as_array().unwrap().len(), 3);
        }
    }
    assert_eq!(describe["result"]["columns"]["id"]["max"], 39_999.0);
    let head = call("parquet.head", json!({"n": 3, "columns": ["id", "strain"]}))
        .await
        .json();
    assert_eq!(
        head["result"]["rows"][1],
        json!({"id": 1, "strain": match &cols[3] { Column::Double(_, v) => v[1].unwrap(), _ => unreachable!() }})
    );
    assert_eq!(
        head["result"]["rows"][0]["strain"],
        Value::Null,
        "row 0 has a null strain"
    );
    let info = call("parquet.info", json!({})).await.json();
    assert!(
        info["result"]["text"]
            .as_str()
            .unwrap()
            .contains("RangeIndex: 40000 entries")
    );
    let sha = call("object.sha256", json!({})).await.json();
    use sha2::Digest;
    assert_eq!(
        sha["result"]["sha256"],
        hex::encode(sha2::Sha256::digest(&file))
    );
    let st = call("object.stat", json!({})).await.json();
    assert_eq!(st["result"]["size"], file.len());

    // GET form: arguments in the query, an ETag bound to function, arguments and version.
    let g = rig
        .get("/sor/data/functions/parquet.head/t.parquet?n=2&columns=id")
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["result"]["count"], 2);
    let etag = g.header("etag").to_string();
    assert_ne!(etag, object_etag);
    let same = rig
        .get_with(
            "/sor/data/functions/parquet.head/t.parquet?columns=id&n=2",
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(same.status, 304, "canonical arguments give the same ETag");
    let other = rig
        .get("/sor/data/functions/parquet.head/t.parquet?n=3&columns=id")
        .await;
    assert_ne!(other.header("etag"), etag);

    // JSON functions.
    let j = |name: &str, pointer: &str| {
        let rig = &rig;
        let (name, pointer) = (name.to_string(), pointer.to_string());
        async move {
            rig.post(
                &format!("/sor/data/functions/{name}"),
                json!({"path": "doc.json", "args": {"pointer": pointer}}),
            )
            .await
        }
    };
    assert_eq!(
        j("json.get", "/runs/1/t").await.json()["result"]["value"],
        310
    );
    assert_eq!(
        j("json.keys", "").await.json()["result"]["keys"],
        json!(["name", "runs"])
    );
    assert_eq!(j("json.len", "/runs").await.json()["result"]["len"], 2);
    assert_eq!(j("json.get", "/nope").await.status, 404);
    assert_eq!(j("json.keys", "/runs").await.status, 422);

    // Bad calls: named clearly.
    let r = call("parquet.head", json!({"n": 5000})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("maximum"));
    let r = call("parquet.describe", json!({"columns": ["nope"]})).await;
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no column \"nope\"")
    );
    let r = rig
        .post(
            "/sor/data/functions/parquet.schema",
            json!({"path": "doc.json"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a readable Parquet file")
    );
    let r = call("python.eval", json!({})).await;
    assert_eq!(r.status, 404);
    let list = rig.get("/sor/functions").await.json();
    let fns = list["functions"].as_array().unwrap();
    assert_eq!(fns.len(), 11);
    assert!(fns.iter().all(|f| f["arguments"]["type"] == "object"));
}

async fn function_bounds_answer_422_and_429(kind: Kind) {
    use simcache_testkit::parquet_gen::numeric_table;
    let decl = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        decl.path(),
        "- name: temperature-head\n  builtin: parquet.head\n  fixed: {columns: [temperature]}\n  parameters:\n    type: object\n    properties: {n: {type: integer, maximum: 50}}\n    additionalProperties: false\n",
    )
    .unwrap();
    let rig = Rig::new(
        kind,
        "bounds",
        &[
            "--sor-function-memory-bytes",
            "1000000",
            "--sor-function-output-bytes",
            "1000",
            "--sor-function-concurrency",
            "1",
            "--sor-function-queue",
            "0",
            "--sor-functions",
            decl.path().to_str().unwrap(),
        ],
    )
    .await;
    let (file, _) = numeric_table(100_000);
    rig.sor.put("big.parquet", file).await;
    // describe needs every value in memory: refused up front, naming the budget.
    let r = rig
        .post(
            "/sor/data/functions/parquet.describe",
            json!({"path": "big.parquet"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("memory budget")
    );
    // The answer's cap.
    let r = rig
        .post(
            "/sor/data/functions/temperature-head",
            json!({"path": "big.parquet", "args": {"n": 50}}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("cap"));
    let r = rig
        .post(
            "/sor/data/functions/temperature-head",
            json!({"path": "big.parquet", "args": {"n": 2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["result"]["rows"].as_array().unwrap()[0]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    let r = rig
        .post(
            "/sor/data/functions/temperature-head",
            json!({"path": "big.parquet", "args": {"columns": ["id"]}}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("fixed"));
    // One at a time, no queue: a burst gets 429 with Retry-After.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (c, u) = (
            rig.http.clone(),
            format!("{}/sor/data/functions/object.sha256", rig.base()),
        );
        tasks.push(tokio::spawn(async move {
            // Each call names a different argument set? sha256 has none: vary the
            // object instead is not needed; cached results skip the runner, so
            // evict nothing and count what the runner refused.
            let r = c
                .post(&u)
                .json(&json!({"path": "big.parquet"}))
                .send()
                .await
                .unwrap();
            (i, r.status(), r.headers().get("retry-after").is_some())
        }));
    }
    let mut refused = 0;
    for t in tasks {
        let (_, status, retry) = t.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        if status == 429 {
            assert!(retry);
            refused += 1;
        }
    }
    let rejected = rig
        .metric(
            "simcache_sor_function_rejections_total",
            &[("reason", "queue-full")],
        )
        .await;
    assert_eq!(rejected, refused as f64);
    assert!(
        rig.metric(
            "simcache_sor_function_rejections_total",
            &[("reason", "budget")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_killed_mid_fill_leaves_no_partial_file_and_a_restart_rebuilds_the_index() {
    let sor = Sor::private_s3("kill");
    let mut rig = Rig::on(sor, &["--sor-fetch-timeout-secs", "5"]).await;
    rig.sor.put("keep.bin", body(300_000, 4)).await;
    assert_eq!(rig.object("keep.bin").await.status, 200);
    let data = body(60 << 20, 8);
    rig.sor.put("big.bin", data.clone()).await;
    let url = format!("{}/sor/data/objects/big.bin", rig.base());
    let client = rig.http.clone();
    let reader = tokio::spawn(async move {
        let r = client.get(&url).send().await;
        match r {
            Ok(r) => {
                let status = r.status();
                (status, r.bytes().await.map(|b| b.len()).ok())
            }
            Err(_) => (StatusCode::BAD_GATEWAY, None),
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let Sor::PrivateS3 { server, .. } = &rig.sor else {
        unreachable!()
    };
    server.kill();
    let (status, len) = reader.await.unwrap();
    // Either the fill finished before the kill, or the read failed: never a
    // short body passed off as the object.
    assert!(
        (status == 200 && len == Some(data.len())) || status == 503 || len.is_none(),
        "{status} {len:?}"
    );
    let entries = rig.get("/sor/data/cache/entries").await.json();
    let keys: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    if status != 200 {
        assert_eq!(keys, ["keep.bin"], "no partial object in the index");
        assert!(
            rig.disk_bytes() <= 300_000 + 1,
            "no partial blob: {}",
            rig.disk_bytes()
        );
    }
    assert_eq!(
        std::fs::read_dir(rig.cache.path().join("tmp"))
            .unwrap()
            .count(),
        0,
        "no temporary file left"
    );
    // A restart (S3 still down) rebuilds the index from disk and serves it.
    rig.restart().await;
    let r = rig.object("keep.bin").await;
    assert_eq!((r.status.as_u16(), r.cache()), (200, "hit-disk"));
    let Sor::PrivateS3 { server, .. } = &rig.sor else {
        unreachable!()
    };
    server.start_again().unwrap();
    let r = rig.object("big.bin").await;
    assert!(r.status == 200 && r.body == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_serves_stale_within_the_window_then_503_and_wrong_credentials_get_502() {
    let sor = Sor::private_s3("down");
    let rig = Rig::on(
        sor,
        &[
            "--sor-ttl-secs",
            "1",
            // Wide enough that the stale read below lands inside it on a
            // loaded machine.
            "--sor-stale-if-error-secs",
            "4",
            "--sor-fetch-timeout-secs",
            "2",
        ],
    )
    .await;
    rig.sor.put("a.json", b"{\"v\": 1}".to_vec()).await;
    assert_eq!(rig.object("a.json").await.cache(), "miss");
    let Sor::PrivateS3 { server, .. } = &rig.sor else {
        unreachable!()
    };
    server.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = rig.object("a.json").await;
    assert_eq!((r.status.as_u16(), r.cache()), (200, "stale"));
    assert_eq!(r.body, b"{\"v\": 1}");
    assert!(
        rig.metric("simcache_sor_stale_served_total", &[("sor", "data")])
            .await
            >= 1.0
    );
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let r = rig.object("a.json").await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("unavailable"));
    assert!(r.header("retry-after") == "1");
    // Never cached and the SOR down: 503 at once.
    assert_eq!(rig.object("b.json").await.status, 503);
    server.start_again().unwrap();

    // Wrong credentials: 502, naming the refusal; the secret is never echoed.
    let (srv, prefix) = rig.sor.s3().unwrap();
    let wrong = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "--backend",
            "sqlite",
            "--db-path",
            rig.db.with_extension("other").to_str().unwrap(),
            "serve",
            "--no-auth",
            "--port",
            "0",
            "--sor-cache-dir",
            rig.cache.path().join("other").to_str().unwrap(),
            "--sor",
            &format!("data={}", srv.url(prefix)),
            "--sor-endpoint",
            &srv.endpoint,
            "--sor-allow-http",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", &srv.access_key),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all"),
        ],
    )
    .await;
    let r = reqwest::get(format!("{}/sor/data/objects/a.json", wrong.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("not-the-secret-at-all"));
}

#[tokio::test]
async fn an_s3_sor_without_credentials_is_refused_at_start() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--backend",
            "sqlite",
            "--db-path",
            "/nonexistent/none.db",
            "serve",
            "--no-auth",
            "--port",
            "0",
            "--sor",
            "data=s3://bucket/prefix",
            "--sor-endpoint",
            "http://127.0.0.1:9",
            "--sor-allow-http",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AWS_ACCESS_KEY_ID") && err.contains("--sor-anonymous"),
        "{err}"
    );
    for (args, want) in [
        (vec!["--sor", "Data=s3://bucket"], "lowercase"),
        (vec!["--sor", "d=file://relative"], "absolute"),
        (
            vec![
                "--sor",
                "d=s3://bucket",
                "--sor-endpoint",
                "http://10.1.2.3:9000",
                "--sor-allow-http",
                "--sor-anonymous",
            ],
            "loopback",
        ),
        (
            vec![
                "--sor",
                "d=s3://bucket",
                "--sor-endpoint",
                "http://127.0.0.1:9000",
                "--sor-anonymous",
            ],
            "--sor-allow-http",
        ),
        (
            vec!["--sor", "d=file:///tmp", "--sor-validation", "sometimes"],
            "ttl, always or never",
        ),
    ] {
        let mut full = vec![
            "--backend",
            "sqlite",
            "--db-path",
            "/tmp/simcache-sor-refused.db",
            "serve",
            "--no-auth",
            "--port",
            "0",
        ];
        full.extend(args.iter().copied());
        let out = tokio::process::Command::new(BIN)
            .args(&full)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sor_routes_check_privileges() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.json"), b"{}").unwrap();
    let db = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let db_path = db.path().join("c.db");
    let sidecar = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "--backend",
            "sqlite",
            "--db-path",
            db_path.to_str().unwrap(),
            "serve",
            "--port",
            "0",
            "--sor-cache-dir",
            cache.path().to_str().unwrap(),
            "--sor",
            &format!("data=file://{}", dir.path().display()),
        ],
        &[],
    )
    .await;
    let session = |role: &str| {
        let out = std::process::Command::new(BIN)
            .args([
                "--backend",
                "sqlite",
                "--db-path",
                db_path.to_str().unwrap(),
                "session",
                "create",
                "--role",
                role,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let user = session("user");
    let developer = session("developer");
    let c = reqwest::Client::new();
    let u = |p: &str| format!("{}{p}", sidecar.url);
    assert_eq!(
        c.get(u("/sor/data/objects/a.json"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(u("/cache/api/v1.0/?command=read&path=a.json"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(u("/sor/data/objects/a.json"))
        .header("x-session-id", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (method, path) in [
        (reqwest::Method::POST, "/sor/data/invalidate"),
        (reqwest::Method::DELETE, "/sor/data/cache/a.json"),
        (reqwest::Method::POST, "/sor/data/prefetch"),
    ] {
        let r = c
            .request(method.clone(), u(path))
            .header("x-session-id", &user)
            .json(&json!({"path": "a.json", "paths": ["a.json"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("manage_sor"), "{v}");
    }
    let r = c
        .get(u("/cache/api/v1.0/?command=delete&path=a.json"))
        .header("x-session-id", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(u("/sor/data/prefetch"))
        .header("x-session-id", &developer)
        .json(&json!({"paths": ["a.json", "missing.json"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    let r = c
        .post(u("/sor/data/invalidate"))
        .header("x-session-id", &developer)
        .json(&json!({"prefix": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["evicted_here"], 1);
    assert_eq!(v["announced"], false, "SQLite: no other sidecar to tell");
    // Bad bodies name the problem.
    let r = c
        .post(u("/sor/data/invalidate"))
        .header("x-session-id", &developer)
        .json(&json!({"path": "a", "prefix": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(u("/sor/data/prefetch"))
        .header("x-session-id", &developer)
        .json(&json!({"paths": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_reaches_every_sidecar_on_one_postgresql() {
    let db = simcache_testkit::fresh_database("sor_invalidate").await;
    let sor = Sor::new(Kind::S3, "broadcast");
    sor.put("shared/a.json", b"{\"v\": 1}".to_vec()).await;
    sor.put("shared/b.json", b"{\"v\": 2}".to_vec()).await;
    let mut sidecars = Vec::new();
    let mut caches = Vec::new();
    for _ in 0..2 {
        let cache = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "--backend".into(),
            "postgresql".into(),
            "--db-url".into(),
            db.clone(),
            "serve".into(),
            "--no-auth".into(),
            "--port".into(),
            "0".into(),
            "--sor-cache-dir".into(),
            cache.path().display().to_string(),
            "--sor-validation".into(),
            "never".into(),
        ];
        args.extend(sor.args());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = sor.env();
        let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        sidecars.push(ServerProcess::spawn(Path::new(BIN), &a, &e).await);
        caches.push(cache);
    }
    let c = reqwest::Client::new();
    for s in &sidecars {
        for k in ["shared/a.json", "shared/b.json"] {
            let r = c
                .get(format!("{}/sor/data/objects/{k}", s.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    sor.put("shared/a.json", b"{\"v\": 11}".to_vec()).await;
    let r = c
        .post(format!("{}/sor/data/invalidate", sidecars[0].url))
        .json(&json!({"path": "shared/a.json"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["evicted_here"].as_u64(), v["announced"].as_bool()),
        (Some(1), Some(true))
    );
    // The other sidecar drops it too (validation is `never`: only the
    // invalidation can make it read the SOR again).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e: Value = c
            .get(format!("{}/sor/data/cache/entries", sidecars[1].url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys: Vec<String> = e["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["key"].as_str().unwrap().to_string())
            .collect();
        if keys == ["shared/b.json"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second sidecar still holds {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .get(format!(
            "{}/sor/data/objects/shared/a.json",
            sidecars[1].url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"{\"v\": 11}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_past_its_deadline_answers_503_naming_it() {
    use simcache_testkit::parquet_gen::numeric_table;
    let rig = Rig::new(
        Kind::Dir,
        "deadline",
        &["--sor-function-timeout-secs", "0.000001"],
    )
    .await;
    let (file, _) = numeric_table(50_000);
    rig.sor.put("t.parquet", file).await;
    for f in ["parquet.describe", "parquet.head", "object.sha256"] {
        let r = rig
            .post(
                &format!("/sor/data/functions/{f}"),
                json!({"path": "t.parquet"}),
            )
            .await;
        assert_eq!(r.status, 503, "{f}: {}", String::from_utf8_lossy(&r.body));
        assert!(
            r.json()["error"].as_str().unwrap().contains("deadline"),
            "{f}"
        );
    }
    assert_eq!(
        rig.metric(
            "simcache_sor_function_rejections_total",
            &[("reason", "timeout")]
        )
        .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_problem_and_drop_nothing_cached() {
    let rig = Rig::new(Kind::Dir, "bad-requests", &[]).await;
    rig.sor.put("a.json", b"{\"v\": 1}".to_vec()).await;
    assert_eq!(rig.object("a.json").await.status, 200);
    let raw_post = |path: &str, body: &'static str| {
        rig.http
            .post(format!("{}{path}", rig.base()))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(Reply, &str)> = vec![
        (rig.get("/sor/data/objects?limit=0").await, "limit"),
        (rig.get("/sor/data/objects?limit=5000").await, "limit"),
        (
            rig.get("/sor/data/objects?start_after=../x").await,
            "start_after",
        ),
        (
            rig.send(rig.http.delete(format!("{}/sor/data/cache", rig.base())))
                .await,
            "prefix",
        ),
        (
            rig.send(raw_post("/sor/data/prefetch", "{not json")).await,
            "paths",
        ),
        (
            rig.send(raw_post("/sor/data/invalidate", "[1]")).await,
            "prefix",
        ),
        (
            rig.send(raw_post("/sor/data/functions/json.keys", "{\"args\": {}}"))
                .await,
            "path",
        ),
        (
            rig.send(raw_post("/cache/api/v1.0/", "[1, 2]")).await,
            "JSON object",
        ),
        (
            rig.send(raw_post("/cache/api/v1.0/", "{\"data\": 5}"))
                .await,
            "data",
        ),
        (
            rig.get("/cache/api/v1.0/?command=read&path=a.json&return=xml")
                .await,
            "return",
        ),
    ];
    for (r, want) in &cases {
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    // Nothing cached was dropped by the refused requests.
    let r = rig.object("a.json").await;
    assert_eq!((r.status.as_u16(), r.cache()), (200, "hit-memory"));
    assert_eq!(rig.sor_gets().await, 1.0);
}
