//! The catalog/results figures (issue: catalog, results and files):
//!   catalog search over 10,000 simulations × 5 versions, results search with
//!   two range filters over 100,000 runs, parameter statistics, and the
//!   introspection of a typical run database — through the operator's HTTP
//!   API on loopback, on PostgreSQL (default) or SQLite.
//!
//! cargo run --release -p simcache-benches --bin records [-- sqlite]

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use simcache_api::server::{self, ApiConfig};
use simcache_auth::Role;
use simcache_rundb::{
    ArtifactCategory, LogLevel, LogLine, Metric, ParamSpec, RunDb, RunInit, RunStatus, ValueType,
};
use simcache_store::postgres::PgOptions;
use simcache_store::sql::{Param, Stmt};
use simcache_store::{Backend, Stores};

const WORDS: &[&str] = &[
    "thermal",
    "stress",
    "fluid",
    "beam",
    "plasma",
    "quantum",
    "seismic",
    "heat",
    "flow",
    "wave",
    "crack",
    "fatigue",
    "creep",
    "diffusion",
    "combustion",
    "turbulence",
    "acoustic",
    "magnetic",
    "orbital",
    "lattice",
    "membrane",
    "porous",
    "granular",
    "viscous",
    "elastic",
    "optical",
    "neutron",
    "climate",
    "ocean",
    "glacier",
];
const TAGS: &[&str] = &[
    "heat", "solid", "fluid", "cfd", "fem", "md", "dft", "climate", "geo", "optics", "nuclear",
    "bio",
];

/// 3,000 pronounceable words, so a query word matches what it would in a
/// real catalog (a few entries to a few percent), not a fifth of it.
fn vocabulary() -> Vec<String> {
    const SYL: &[&str] = &[
        "ther", "mal", "flu", "id", "bea", "plas", "ma", "quan", "tum", "seis", "mic", "vis",
        "cous", "elas", "tic", "pho", "ton", "neu", "tron", "cli", "mate", "gla", "cier", "oce",
        "an", "po", "rous", "gran", "ul", "ar", "ten", "sor", "mag", "net", "orb", "it",
    ];
    let mut out = Vec::new();
    let mut r = Rng(7);
    while out.len() < 3000 {
        let n = 2 + (r.next() % 2) as usize;
        let w: String = (0..n)
            .map(|_| SYL[(r.next() % SYL.len() as u64) as usize])
            .collect();
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// A tiny deterministic generator (xorshift) so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    /// Zipf-like: low indexes are picked much more often.
    fn zipf<'a>(&mut self, xs: &'a [String]) -> &'a str {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        let i = ((xs.len() as f64).powf(u) - 1.0) as usize;
        &xs[i.min(xs.len() - 1)]
    }
    fn f(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() % 1_000_000) as f64 / 1_000_000.0 * (hi - lo)
    }
}

fn pct(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| {
        v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  (n={})",
        at(0.5),
        at(0.99),
        at(1.0),
        v.len()
    )
}

/// Multi-row INSERTs, `rows` at a time, each batch its own transaction.
async fn bulk(
    stores: &Stores,
    head: &str,
    cols: usize,
    rows: Vec<Vec<Param>>,
) -> anyhow::Result<()> {
    for chunk in rows.chunks(400) {
        let mut sql = String::from(head);
        let mut params = Vec::with_capacity(chunk.len() * cols);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let ph: Vec<String> = (0..cols)
                .map(|c| format!("${}", i * cols + c + 1))
                .collect();
            sql.push_str(&format!("({})", ph.join(",")));
            params.extend(r.iter().cloned());
        }
        stores.sql.script(vec![Stmt::new(sql, params)]).await?;
    }
    Ok(())
}

async fn load_catalog(stores: &Stores, rng: &mut Rng, vocab: &[String]) -> anyhow::Result<()> {
    let mut sims = Vec::new();
    let mut tags = Vec::new();
    // Explicit ids far above what the identity sequences hand out.
    let mut id = 1_000_000i64;
    for n in 0..10_000 {
        let name = format!("{}-{}-{n}", rng.zipf(vocab), rng.zipf(vocab));
        let desc = format!(
            "{} {} {} model of a {} {} system",
            rng.zipf(vocab),
            rng.zipf(vocab),
            rng.pick(WORDS),
            rng.zipf(vocab),
            rng.zipf(vocab)
        );
        let t: Vec<&str> = (0..3).map(|_| rng.pick(TAGS)).collect();
        for v in 1..=5 {
            id += 1;
            let mut tt = t.clone();
            tt.sort();
            tt.dedup();
            let search = format!("{name} {desc} {}", tt.join(" "));
            sims.push(vec![
                Param::from(id),
                name.as_str().into(),
                format!("{v}.0.0").into(),
                desc.as_str().into(),
                serde_json::to_string(&tt)?.into(),
                "{}".into(),
                "{}".into(),
                search.into(),
                format!("h{id}").into(),
                (1_700_000_000_000 + id).into(),
            ]);
            for tag in tt {
                tags.push(vec![Param::from(id), tag.into()]);
            }
        }
    }
    bulk_sims(stores, sims).await?;
    bulk(
        stores,
        "INSERT INTO simulation_tags (simulation_id, tag) VALUES ",
        2,
        tags,
    )
    .await?;
    Ok(())
}

async fn bulk_sims(stores: &Stores, rows: Vec<Vec<Param>>) -> anyhow::Result<()> {
    // created_at_ms doubles as updated_at_ms.
    let rows: Vec<Vec<Param>> = rows
        .into_iter()
        .map(|mut r| {
            let c = r[9].clone();
            r.push(c);
            r
        })
        .collect();
    bulk(stores, "INSERT INTO simulations (id, name, version, description, tags, input_schema, output_schema, search_text, content_hash, created_at_ms, updated_at_ms) VALUES ", 11, rows).await
}

async fn load_results(stores: &Stores, rng: &mut Rng) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let mut params = Vec::new();
    for id in 1_000_001..=1_100_000i64 {
        let sim = format!("sim{}", id % 10);
        let t = rng.f(200.0, 1000.0);
        let p = rng.f(1.0, 100.0);
        let m = rng.pick(&["steel", "copper", "aluminium", "titanium", "nickel"]);
        let s = t * 2.4e6 + p * 1e3;
        results.push(vec![
            Param::from(id),
            format!("e{id}").into(),
            sim.as_str().into(),
            "1.0.0".into(),
            json!({"temperature": t, "pressure": p, "material": m})
                .to_string()
                .into(),
            json!({"max_stress": s}).to_string().into(),
            "completed".into(),
            1.0f64.into(),
            (1_700_000_000_000 + id).into(),
        ]);
        for (class, name, ty, num, st) in [
            ("input", "temperature", "number", Some(t), None),
            ("input", "pressure", "number", Some(p), None),
            ("input", "material", "string", None, Some(m)),
            ("output", "max_stress", "number", Some(s), None),
        ] {
            params.push(vec![
                Param::from(id),
                sim.as_str().into(),
                class.into(),
                name.into(),
                ty.into(),
                num.into(),
                st.map(str::to_string).into(),
            ]);
        }
    }
    bulk(stores, "INSERT INTO execution_results (id, execution_id, simulation_name, simulation_version, input_params, output_params, status, duration_seconds, created_at_ms) VALUES ", 9, results).await?;
    bulk(stores, "INSERT INTO result_params (result_id, simulation_name, class, name, value_type, num_value, str_value) VALUES ", 7, params).await?;
    // Declared types, as introspection would have recorded them.
    for i in 0..10 {
        let rec = simcache_store::results::ResultRecord {
            execution_id: format!("decl{i}"),
            simulation_name: format!("sim{i}"),
            simulation_version: "1.0.0".into(),
            inputs: [
                ("temperature".to_string(), json!(300.0)),
                ("pressure".to_string(), json!(1.0)),
                ("material".to_string(), json!("steel")),
            ]
            .into(),
            outputs: [("max_stress".to_string(), json!(1.0))].into(),
            definitions: ["temperature", "pressure", "material", "max_stress"]
                .iter()
                .map(|n| simcache_store::results::ParamDef {
                    class: if *n == "max_stress" {
                        simcache_store::results::filter::ParamClass::Output
                    } else {
                        simcache_store::results::filter::ParamClass::Input
                    },
                    name: n.to_string(),
                    param_type: if *n == "material" { "string" } else { "number" }.into(),
                    description: None,
                    units: None,
                    min: None,
                    max: None,
                    default: None,
                })
                .collect(),
            status: "completed".into(),
            ..Default::default()
        };
        stores
            .results
            .register(&rec, simcache_store::results::Upsert::Replace)
            .await?;
    }
    Ok(())
}

fn typical_run_db(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let mut db = RunDb::open_in(dir, "typical")?;
    db.initialize_run(&RunInit::new("thermal", "1.0.0"))?;
    let mut spec = ParamSpec::of_type(ValueType::Number);
    spec.units = Some("K".into());
    spec.min = Some(0.0);
    let ins: Vec<(String, serde_json::Value)> = (0..25)
        .map(|i| (format!("input_{i}"), json!(i as f64)))
        .collect();
    let rows: Vec<_> = ins.iter().map(|(k, v)| (k.as_str(), v, &spec)).collect();
    db.save_inputs(&rows)?;
    let outs: Vec<(String, serde_json::Value)> = (0..25)
        .map(|i| (format!("output_{i}"), json!(i as f64 * 2.0)))
        .collect();
    let rows: Vec<_> = outs.iter().map(|(k, v)| (k.as_str(), v, &spec)).collect();
    db.save_outputs(&rows)?;
    db.log_batch(
        &(0..10_000)
            .map(|i| LogLine::new(LogLevel::Info, format!("step {i}")))
            .collect::<Vec<_>>(),
    )?;
    db.record_metrics(
        &(0..10_000)
            .map(|i| Metric::new("residual", 1.0 / (i as f64 + 1.0)))
            .collect::<Vec<_>>(),
    )?;
    let blob = vec![7u8; 100_000];
    for i in 0..5 {
        db.add_artifact_bytes(
            &format!("field_{i}.bin"),
            &blob,
            None,
            ArtifactCategory::Data,
        )?;
    }
    db.complete_run(RunStatus::Completed, Some(12.0), None, None)?;
    db.checkpoint()?;
    Ok(db.path().to_path_buf())
}

async fn run(backend: Backend, label: &str) -> anyhow::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocab = vocabulary();
    let stores = Stores::open(&backend, "bench").await?;
    let t = Instant::now();
    load_catalog(&stores, &mut rng, &vocab)
        .await
        .context("loading the catalog")?;
    load_results(&stores, &mut rng)
        .await
        .map_err(|e| anyhow::anyhow!("loading results: {e:?}"))?;
    if let Some(pg) = &stores.pg {
        // What autovacuum does after a bulk load (insert-triggered vacuum,
        // PostgreSQL 13+): statistics, and the visibility map that lets
        // index-only scans skip the table. Measuring before it ran would
        // time a state the catalog only passes through.
        pg.client().await?.batch_execute("VACUUM ANALYZE").await?;
    }
    eprintln!(
        "{label}: loaded 50,000 simulations and 100,000 results in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    if let (Some(pg), Ok(q)) = (&stores.pg, std::env::var("BENCH_EXPLAIN")) {
        let c = pg.client().await?;
        for r in c.query(&format!("EXPLAIN ANALYZE {q}"), &[]).await? {
            eprintln!("{}", r.get::<_, String>(0));
        }
    }
    let runs = tempfile::tempdir()?;
    let api = server::start(
        ApiConfig::new(backend.clone(), runs.path().to_path_buf()),
        Vec::new(),
        std::future::pending(),
    )
    .await?;
    let token = api
        .auth
        .create_anonymous(Role::Developer.privileges(), None)
        .await?
        .token;
    let http = reqwest::Client::new();
    let url = api.url();
    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let t = Instant::now();
            let r = http.get(path).header("X-Session-ID", token).send().await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            let _ = r.bytes().await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        }
    };
    // Warm up connections and caches.
    for _ in 0..20 {
        get(format!("{url}/simulations/search?query=thermal")).await?;
    }
    let mut lat = Vec::new();
    let mut by_kind: [Vec<Duration>; 3] = Default::default();
    for i in 0..500 {
        // Query words follow the catalog's own word frequencies.
        let q = match i % 3 {
            0 => format!(
                "{url}/simulations/search?query={}&tags={}",
                rng.zipf(&vocab),
                rng.pick(TAGS)
            ),
            1 => format!(
                "{url}/simulations/search?query={}%20{}",
                rng.zipf(&vocab),
                rng.zipf(&vocab)
            ),
            _ => format!("{url}/simulations/search?query={}", rng.pick(WORDS)),
        };
        let d = get(q.clone()).await?;
        if std::env::var_os("BENCH_SLOW").is_some() && d > Duration::from_millis(15) {
            eprintln!("slow {:.1} ms {q}", d.as_secs_f64() * 1e3);
        }
        by_kind[i % 3].push(d);
        lat.push(d);
    }
    println!(
        "{label:<10} catalog search (50,000 versions)            {}",
        pct(lat)
    );
    for (k, v) in ["word + tag", "two words", "one word"].iter().zip(by_kind) {
        println!("{label:<10}   {k:<40} {}", pct(v));
    }

    let mut lat = Vec::new();
    for _ in 0..500 {
        let t0 = rng.f(200.0, 900.0);
        let p0 = rng.f(1.0, 80.0);
        let body = json!({"simulation_name": format!("sim{}", rng.next() % 10), "limit": 100,
            "input_filters": {"temperature": {"$gte": t0, "$lt": t0 + 100.0}, "pressure": {"$gte": p0, "$lt": p0 + 20.0}}});
        let t = Instant::now();
        let r = http
            .post(format!("{url}/search"))
            .header("X-Session-ID", &token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "status {}", r.status());
        let _ = r.bytes().await?;
        lat.push(t.elapsed());
    }
    println!(
        "{label:<10} results search, two ranges (100,000 runs) {}",
        pct(lat)
    );

    let mut lat = Vec::new();
    for _ in 0..100 {
        lat.push(
            get(format!(
                "{url}/stats/sim{}/temperature?class=input",
                rng.next() % 10
            ))
            .await?,
        );
    }
    println!(
        "{label:<10} parameter stats (10,000 runs each)       {}",
        pct(lat)
    );

    let path = typical_run_db(runs.path())?;
    let mut intro = Vec::new();
    let mut full = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let rec = simcache_core::introspect::introspect(&path, Some("typical"))?;
        intro.push(t.elapsed());
        stores
            .results
            .register(&rec, simcache_store::results::Upsert::Replace)
            .await?;
        full.push(t.elapsed());
    }
    println!(
        "{label:<10} introspect a typical run DB              {}",
        pct(intro)
    );
    println!(
        "{label:<10} introspect + register it                 {}",
        pct(full)
    );
    api.shutdown().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    match which.as_str() {
        "sqlite" => rt.block_on(run(
            Backend::Sqlite {
                path: dir.path().join("catalog.db"),
            },
            "sqlite",
        )),
        _ => {
            let srv = simcache_testkit::PgServer::start(false).map_err(anyhow::Error::msg)?;
            let url = simcache_testkit::pg::with_database(&srv.admin_url, "postgres");
            rt.block_on(run(Backend::Postgres(PgOptions::new(url)), "postgresql"))
        }
    }
}
