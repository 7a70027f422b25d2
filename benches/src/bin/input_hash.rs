//! Input hashing of a 1 MB input document (target < 5 ms):
//! cargo run --release -p simcache-benches --bin input-hash

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

fn main() {
    // ~1 MB: a mesh of 20,000 points plus scalar parameters and a nested config.
    let points: Vec<Value> = (0..20_000).map(|i| json!({"x": i as f64 * 0.001, "y": (i % 97) as f64 * 0.5, "z": -1.25, "tag": format!("p{i}")})).collect();
    let mut inputs: BTreeMap<String, Value> = BTreeMap::new();
    inputs.insert("mesh".into(), Value::Array(points));
    inputs.insert("temperature".into(), json!(350.0));
    inputs.insert("solver".into(), json!({"tolerance": 1e-9, "max_iterations": 10_000, "method": "gmres", "preconditioner": {"kind": "ilu", "fill": 2}}));
    let size = serde_json::to_string(&inputs).map(|s| s.len()).unwrap_or(0);
    let mut times = Vec::new();
    let mut h = String::new();
    for _ in 0..200 {
        let t = Instant::now();
        h = simcache_core::cache_key::input_hash(
            "thermal",
            "1.0.0",
            "ghcr.io/x/thermal@sha256:00",
            &inputs,
        );
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "input hash of a {:.2} MB document: median {:.2} ms, max {:.2} ms ({}…)",
        size as f64 / 1e6,
        times[100].as_secs_f64() * 1e3,
        times[199].as_secs_f64() * 1e3,
        &h[..12]
    );
}
