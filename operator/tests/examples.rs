//! The example manifests in examples/ are valid resources, and every run in
//! them passes the same input checks the operator applies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::Path;

use simcache_core::cache_key::{input_hash, resolve_inputs};
use simcache_crds::{CachePolicy, Simulation, SimulationRun};

fn docs<T: serde::de::DeserializeOwned>(file: &str) -> Vec<T> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/thermal")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            <T as serde::Deserialize>::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}"))
        })
        .collect()
}

#[test]
fn example_manifests_parse_and_their_runs_are_valid() {
    let sim: Simulation = docs("simulation.yaml").remove(0);
    assert_eq!(sim.spec.version, "1.0.0");
    let policy: CachePolicy = docs("cache-policy.yaml").remove(0);
    assert_eq!(
        sim.spec.cache_policy_ref.as_deref(),
        policy.metadata.name.as_deref()
    );
    let mut runs: Vec<SimulationRun> = docs("run.yaml");
    runs.extend(docs::<SimulationRun>("sweep.yaml"));
    assert_eq!(runs.len(), 6);
    let mut hashes = std::collections::BTreeSet::new();
    for r in &runs {
        assert_eq!(r.spec.simulation.name, sim.metadata.name.clone().unwrap());
        let inputs = resolve_inputs(&sim.spec, &r.spec.inputs)
            .unwrap_or_else(|e| panic!("{:?}: {e}", r.metadata.name));
        hashes.insert(input_hash(
            "thermal",
            &sim.spec.version,
            &sim.spec.image,
            &inputs,
        ));
    }
    assert_eq!(hashes.len(), 6, "every example run has distinct inputs");
}

#[test]
fn the_pod_template_example_merges_without_a_refusal() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pod-template/simulation.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs = serde_yaml::Deserializer::from_str(&text);
    let sim = <Simulation as serde::Deserialize>::deserialize(docs.next().unwrap()).unwrap();
    let run = <SimulationRun as serde::Deserialize>::deserialize(docs.next().unwrap()).unwrap();
    let sidecar = simcache_core::pod::SidecarSettings {
        image: "ghcr.io/simcache/simcache-sidecar:0.1.0".into(),
        image_pull_policy: None,
        operator_url: "http://simcache:8080".into(),
        startup_probe: true,
        node_selector: Default::default(),
        shared_tier_url: None,
        resources: simcache_core::pod::default_sidecar_resources(),
        pod_security: Default::default(),
    };
    assert_eq!(
        simcache_core::pod::template::check_simulation(&sim.spec, &sidecar),
        Ok(())
    );
    assert!(
        sim.spec
            .pod_template
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .resources
            .is_some()
    );
    assert_eq!(run.spec.pod.unwrap().labels["sweep"], "heat-2026");
    resolve_inputs(&sim.spec, &run.spec.inputs).unwrap();
}

#[test]
fn the_sweep_example_spans_a_40_point_grid_the_simulation_accepts() {
    let sim: Simulation = docs("simulation.yaml").remove(0);
    let sweep: simcache_crds::SimulationSweep = docs("simulationsweep.yaml").remove(0);
    assert_eq!(
        sweep.spec.simulation.name,
        sim.metadata.name.clone().unwrap()
    );
    let points = simcache_core::sweep::points::expand(&sweep.spec).unwrap();
    assert_eq!(points.len(), 40);
    for p in &points {
        resolve_inputs(&sim.spec, p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    }
    assert_eq!(points[0]["temperature"], serde_json::json!(300));
    assert_eq!(points[39]["temperature"], serde_json::json!(1000));
}
