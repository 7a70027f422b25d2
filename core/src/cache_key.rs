//! What makes two runs "the same": the simulation, its version, the exact
//! image, and the inputs after defaults — hashed over canonical JSON.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use simcache_crds::run::SimulationRunSpec;
use simcache_crds::{ParameterSpec, ParameterType, Simulation, SimulationSpec};

use crate::record::RunKey;
use simcache_rundb::{ParamError, ParamSpec, RunSchema, ValueType, write_canonical};

fn value_type(t: ParameterType) -> ValueType {
    match t {
        ParameterType::Number => ValueType::Number,
        ParameterType::Integer => ValueType::Integer,
        ParameterType::Boolean => ValueType::Boolean,
        ParameterType::String => ValueType::String,
        ParameterType::Array => ValueType::Array,
        ParameterType::Object => ValueType::Object,
        ParameterType::File => ValueType::File,
    }
}

fn param_spec(p: &ParameterSpec) -> ParamSpec {
    ParamSpec {
        value_type: value_type(p.value_type),
        units: p.units.clone(),
        description: p.description.clone(),
        min: p.min,
        max: p.max,
        default: p.default.clone(),
        choices: None,
    }
}

/// The name a Simulation is catalogued (and cached) under: `spec.tool` when
/// given, else the object's name.
pub fn catalog_name(sim: &Simulation) -> String {
    sim.spec
        .tool
        .clone()
        .or_else(|| sim.metadata.name.clone())
        .unwrap_or_default()
}

/// The catalog's view of a Simulation version.
pub fn catalog_spec(sim: &Simulation) -> simcache_store::catalog::SimulationSpec {
    let s = &sim.spec;
    let command: Vec<&String> = s.command.iter().chain(s.args.iter()).collect();
    simcache_store::catalog::SimulationSpec {
        name: catalog_name(sim),
        version: s.version.clone(),
        description: s.description.clone(),
        author: None,
        tags: s.tags.clone(),
        input_schema: serde_json::to_value(&s.inputs).unwrap_or(Value::Null),
        output_schema: serde_json::to_value(&s.outputs).unwrap_or(Value::Null),
        image: Some(s.image.clone()),
        workflow_type: "container".into(),
        workflow_hash: None,
        visibility: "public".into(),
        metadata: (!command.is_empty()).then(|| serde_json::json!({ "command": command })),
    }
}

/// The run-database schema of a Simulation (what the sidecar checks too).
pub fn run_schema(sim: &SimulationSpec) -> RunSchema {
    RunSchema {
        inputs: sim
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), param_spec(v)))
            .collect(),
        outputs: sim
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), param_spec(v)))
            .collect(),
    }
}

/// Checks a run's inputs against the Simulation (unknown input, wrong type,
/// out of range, missing without default → an error naming the input) and
/// applies defaults. The same checks as the sidecar and local mode.
pub fn resolve_inputs(
    sim: &SimulationSpec,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, ParamError> {
    let schema = run_schema(sim);
    schema.check_self()?;
    let map: serde_json::Map<String, Value> = given.clone().into_iter().collect();
    schema.resolve_inputs(&map)
}

/// The image as it identifies a build: the digest when the reference has one.
pub fn image_identity(image: &str) -> &str {
    match image.split_once('@') {
        Some((_, digest)) if digest.starts_with("sha256:") => digest,
        _ => image,
    }
}

/// SHA-256 (hex) over canonical JSON of the simulation, version, image and
/// the resolved inputs. Key order and `300` vs `300.0` do not change it.
pub fn input_hash(
    simulation: &str,
    version: &str,
    image: &str,
    inputs: &BTreeMap<String, Value>,
) -> String {
    // The canonical form of {"image", "inputs", "simulation", "version"}
    // (keys in order), streamed into the hasher: the input document is never
    // copied whole.
    let envelope = [
        ("image", Value::from(image_identity(image))),
        ("simulation", Value::from(simulation)),
        ("version", Value::from(version)),
    ];
    let mut h = HashWriter(Sha256::new());
    let write = |h: &mut HashWriter| -> std::io::Result<()> {
        use std::io::Write;
        h.write_all(b"{\"image\":")?;
        write_canonical(&envelope[0].1, h)?;
        h.write_all(b",\"inputs\":{")?;
        for (i, (k, v)) in inputs.iter().enumerate() {
            if i > 0 {
                h.write_all(b",")?;
            }
            write_canonical(&Value::from(k.as_str()), h)?;
            h.write_all(b":")?;
            write_canonical(v, h)?;
        }
        h.write_all(b"},\"simulation\":")?;
        write_canonical(&envelope[1].1, h)?;
        h.write_all(b",\"version\":")?;
        write_canonical(&envelope[2].1, h)?;
        h.write_all(b"}")
    };
    // Writing into a hasher cannot fail.
    let _ = write(&mut h);
    hex::encode(h.0.finalize())
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The cache key of a run: readable prefix, hash for identity.
pub fn cache_key(simulation: &str, version: &str, hash: &str) -> String {
    format!("{simulation}/{version}/{hash}")
}

/// What identifies a run's result: the catalog name and version, the inputs
/// after defaults, their hash and the cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    pub name: String,
    pub version: String,
    pub inputs: BTreeMap<String, Value>,
    pub hash: String,
    pub key: String,
}

impl RunIdentity {
    /// The identity as the store names it, under the catalog's id.
    pub fn run_key(&self, simulation_id: i64) -> RunKey<'_> {
        RunKey {
            simulation_id,
            name: &self.name,
            version: &self.version,
            hash: &self.hash,
            cache_key: &self.key,
        }
    }
}

/// Why a run cannot be run at all (it fails without a pod).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("Simulation {simulation:?} is at version {have:?}; this run asks for {want:?}")]
    VersionMismatch {
        simulation: String,
        have: String,
        want: String,
    },
    #[error("invalid inputs: {0}")]
    InvalidInputs(ParamError),
}

impl Refusal {
    /// The reason its condition and event carry.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::VersionMismatch { .. } => "VersionMismatch",
            Refusal::InvalidInputs(_) => "InvalidInputs",
        }
    }
}

/// Identifies a run of `sim`: the version check, the inputs checked and
/// defaulted, the hash and the cache key. The controller and local mode both
/// call this, so a run is identified the same way wherever it runs.
pub fn identify(sim: &Simulation, run: &SimulationRunSpec) -> Result<RunIdentity, Refusal> {
    if let Some(want) = &run.simulation.version
        && want != &sim.spec.version
    {
        return Err(Refusal::VersionMismatch {
            simulation: run.simulation.name.clone(),
            have: sim.spec.version.clone(),
            want: want.clone(),
        });
    }
    let inputs = resolve_inputs(&sim.spec, &run.inputs).map_err(Refusal::InvalidInputs)?;
    let name = catalog_name(sim);
    let version = sim.spec.version.clone();
    let hash = input_hash(&name, &version, &sim.spec.image, &inputs);
    Ok(RunIdentity {
        key: cache_key(&name, &version, &hash),
        name,
        version,
        inputs,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_is_sha256_of_the_canonical_envelope() {
        let inputs = inputs(json!({"b": [1.0, {"y": 2, "x": "s"}], "a": true}));
        let doc = json!({"simulation": "t", "version": "1", "image": "img", "inputs": inputs});
        let want = hex::encode(Sha256::digest(
            simcache_rundb::canonical_json(&doc).as_bytes(),
        ));
        assert_eq!(input_hash("t", "1", "img", &inputs), want);
    }

    /// Every cache entry is found by this hash, so its bytes must not move
    /// with a dependency's formatting. The expected value is SHA-256 of the
    /// canonical text written out by hand (computed with Python's hashlib).
    #[test]
    fn the_hash_of_a_known_run_never_changes() {
        let inputs = inputs(json!({
            "temperature": 350.0,
            "mesh": [0.1, -1.25, 1e300, 2.5e-8],
            "label": "a\"b/é",
            "on": true
        }));
        assert_eq!(
            input_hash("thermal", "1.0.0", "ghcr.io/x/t@sha256:abc", &inputs),
            // {"image":"sha256:abc","inputs":{"label":"a\"b/é","mesh":[0.1,-1.25,1e+300,2.5e-8],"on":true,"temperature":350},"simulation":"thermal","version":"1.0.0"}
            "6fac061e28181b789c7f56a32e03c6968830fb4e0f8171fffac4a7e44d64da4c"
        );
    }

    fn sim() -> SimulationSpec {
        serde_json::from_value(json!({
            "version": "1.0.0",
            "image": "ghcr.io/x/thermal:1",
            "inputs": {
                "temperature": {"type": "number", "units": "K", "min": 0, "max": 2000},
                "material": {"type": "string", "default": "steel"},
                "steps": {"type": "integer", "default": 10}
            },
            "outputs": {"max_stress": {"type": "number"}}
        }))
        .unwrap()
    }

    fn inputs(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn inputs_are_checked_and_defaulted() {
        let r = resolve_inputs(&sim(), &inputs(json!({"temperature": 350}))).unwrap();
        assert_eq!(r["material"], json!("steel"));
        assert_eq!(r["steps"], json!(10));
        for (given, msg) in [
            (
                json!({"temperature": 350, "colour": "red"}),
                "unknown input \"colour\"",
            ),
            (
                json!({"temperature": "hot"}),
                "temperature: expected number, got string",
            ),
            (
                json!({"temperature": 5000}),
                "temperature: 5000 is above the maximum 2000",
            ),
            (
                json!({"temperature": 350, "steps": 2.5}),
                "steps: expected integer",
            ),
            (json!({}), "missing input \"temperature\""),
        ] {
            let e = resolve_inputs(&sim(), &inputs(given.clone()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{given}: {e}");
        }
    }

    #[test]
    fn the_hash_ignores_spelling_and_follows_identity() {
        let a = resolve_inputs(
            &sim(),
            &inputs(json!({"temperature": 350, "material": "steel"})),
        )
        .unwrap();
        let b = resolve_inputs(
            &sim(),
            &inputs(json!({"material": "steel", "temperature": 350.0})),
        )
        .unwrap();
        let c = resolve_inputs(&sim(), &inputs(json!({"temperature": 350}))).unwrap();
        let h = |i: &BTreeMap<String, Value>, v: &str, img: &str| input_hash("thermal", v, img, i);
        let base = h(&a, "1.0.0", "ghcr.io/x/thermal:1");
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            h(&b, "1.0.0", "ghcr.io/x/thermal:1"),
            "key order and 350 vs 350.0"
        );
        assert_eq!(
            base,
            h(&c, "1.0.0", "ghcr.io/x/thermal:1"),
            "an explicit default equals the default"
        );
        assert_ne!(base, h(&a, "1.0.1", "ghcr.io/x/thermal:1"), "version");
        assert_ne!(base, h(&a, "1.0.0", "ghcr.io/x/thermal:2"), "image");
        let other = resolve_inputs(&sim(), &inputs(json!({"temperature": 351}))).unwrap();
        assert_ne!(base, h(&other, "1.0.0", "ghcr.io/x/thermal:1"), "inputs");
        // The same digest under two tags is the same build.
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            h(&a, "1.0.0", &format!("ghcr.io/x/thermal:1@{d}")),
            h(&a, "1.0.0", &format!("registry.local/thermal:latest@{d}"))
        );
        assert_eq!(
            cache_key("thermal", "1.0.0", &base),
            format!("thermal/1.0.0/{base}")
        );
    }

    #[test]
    fn identify_checks_the_version_and_inputs_and_names_the_result() {
        let sim: Simulation = serde_json::from_value(json!({
            "apiVersion": "simcache.io/v1alpha1", "kind": "Simulation",
            "metadata": {"name": "thermal"}, "spec": sim()
        }))
        .unwrap();
        let run = |v: Value| -> SimulationRunSpec { serde_json::from_value(v).unwrap() };
        let id = identify(
            &sim,
            &run(json!({"simulation": {"name": "thermal"}, "inputs": {"temperature": 350}})),
        )
        .unwrap();
        assert_eq!(id.inputs["material"], json!("steel"));
        assert_eq!(id.key, format!("thermal/1.0.0/{}", id.hash));
        assert_eq!(
            id.hash,
            input_hash("thermal", "1.0.0", "ghcr.io/x/thermal:1", &id.inputs)
        );
        let wrong = identify(
            &sim,
            &run(json!({"simulation": {"name": "thermal", "version": "2.0.0"}})),
        )
        .unwrap_err();
        assert_eq!(wrong.reason(), "VersionMismatch");
        assert!(wrong.to_string().contains("\"2.0.0\""), "{wrong}");
        let bad = identify(
            &sim,
            &run(json!({"simulation": {"name": "thermal"}, "inputs": {"temperature": "hot"}})),
        )
        .unwrap_err();
        assert_eq!(bad.reason(), "InvalidInputs");
        assert!(
            bad.to_string()
                .starts_with("invalid inputs: temperature: expected number"),
            "{bad}"
        );
    }

    /// The API server hands inputs over as JSON text, local mode reads them
    /// from YAML: a number must parse to the same f64 either way, or the two
    /// hash to different keys. serde_json's default float parser was one ulp
    /// off for numbers like these until `float_roundtrip` was turned on.
    #[test]
    fn inputs_parsed_from_json_hash_like_the_numbers_they_spell() {
        for i in (0..10_000).step_by(5) {
            let t = 300.0 + f64::from(i) * 0.05;
            let text = format!("{{\"temperature\": {t}}}");
            let from_json: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
            let from_yaml: BTreeMap<String, Value> = serde_yaml::from_str(&text).unwrap();
            assert_eq!(from_json["temperature"].as_f64(), Some(t), "{text}");
            let h = |m: &BTreeMap<String, Value>| input_hash("t", "1", "i", m);
            assert_eq!(h(&from_json), h(&from_yaml), "{text}");
        }
    }
}
