//! The YAML in crds/ is what the types generate, and the schemas carry the
//! validation, documentation and printer columns users rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use serde_json::Value;

#[test]
fn the_yaml_files_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in simcache_crds::all() {
        let want = simcache_crds::to_yaml(&crd).unwrap();
        let have = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{file} is out of date with the Rust types; run `cargo run -p simcache-crds --bin gen-crds`"
        );
        // Helm installs (and upgrades) the chart's template of the same CRD.
        let chart = dir.join("../charts/simcache/templates/crds").join(&file);
        let have = std::fs::read_to_string(&chart).unwrap_or_default();
        assert!(
            have == simcache_crds::to_chart_template(&crd).unwrap(),
            "charts/simcache/templates/crds/{file} is out of date; run `cargo run -p simcache-crds --bin gen-crds`"
        );
        assert!(
            have.starts_with("{{- if .Values.crds.install }}")
                && have.contains("helm.sh/resource-policy: keep")
        );
    }
}

#[test]
fn the_crd_reference_matches_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let crds: Vec<_> = simcache_crds::all().into_iter().map(|(_, c)| c).collect();
    let want = simcache_crds::reference::markdown(&crds);
    let have = std::fs::read_to_string(dir.join("../docs/reference/crds.md")).unwrap_or_default();
    assert!(
        have == want,
        "docs/reference/crds.md is out of date; run `cargo run -p simcache-crds --bin gen-crds`"
    );
    // It documents the fields users set most.
    for f in [
        "`.spec.inputs`",
        "`.spec.cacheMode`",
        "`.status.phase`",
        "`.spec.ttlSeconds`",
    ] {
        assert!(want.contains(f), "the reference lacks {f}");
    }
}

fn schema(file: &str) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let y: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
    y["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every property at every depth has a description (so `kubectl explain` helps).
fn undocumented(path: &str, s: &Value, out: &mut Vec<String>) {
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            // metadata/apiVersion/kind come from Kubernetes itself.
            if !matches!(k.as_str(), "metadata" | "apiVersion" | "kind")
                && v.get("description").is_none()
            {
                out.push(p.clone());
            }
            undocumented(&p, v, out);
        }
    }
    if let Some(items) = s.get("items") {
        undocumented(&format!("{path}[]"), items, out);
    }
    if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
        undocumented(&format!("{path}{{}}"), ap, out);
    }
}

#[test]
fn every_field_is_documented_and_validated() {
    for file in [
        "simulations.simcache.io.yaml",
        "simulationruns.simcache.io.yaml",
        "cachepolicies.simcache.io.yaml",
        "simulationsweeps.simcache.io.yaml",
    ] {
        let s = schema(file);
        let mut missing = Vec::new();
        undocumented("", &s, &mut missing);
        // Kubernetes' own types (Condition, ResourceRequirements, and what a
        // pod template embeds) are documented upstream; the field holding
        // one has a description of its own.
        let upstream = [
            ".conditions[]",
            ".resources.",
            ".spec.securityContext.",
            ".spec.sidecarResources.",
            ".spec.podTemplate.spec.tolerations[]",
            ".spec.podTemplate.spec.affinity.",
            ".spec.podTemplate.spec.topologySpreadConstraints[]",
            ".spec.podTemplate.spec.imagePullSecrets[]",
            ".spec.podTemplate.spec.securityContext.",
            ".spec.podTemplate.spec.volumes[]",
            ".spec.podTemplate.spec.containers[].env[]",
            ".spec.podTemplate.spec.containers[].envFrom[]",
            ".spec.podTemplate.spec.containers[].volumeMounts[]",
            ".spec.podTemplate.spec.containers[].securityContext.",
            ".spec.pod.tolerations[]",
        ];
        missing.retain(|p| !upstream.iter().any(|u| p.contains(u)));
        assert!(
            missing.is_empty(),
            "{file}: undocumented fields {missing:?}"
        );
    }
    let run = schema("simulationruns.simcache.io.yaml");
    let spec = &run["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["simulation"]));
    assert_eq!(
        spec["properties"]["cacheMode"]["enum"],
        serde_json::json!(["Use", "Refresh", "Bypass"])
    );
    assert_eq!(
        spec["properties"]["retryLimit"]["maximum"],
        serde_json::json!(10.0)
    );
    let mut phases: Vec<&str> = run["properties"]["status"]["properties"]["phase"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    phases.sort();
    assert_eq!(
        phases,
        [
            "Cached",
            "Failed",
            "Pending",
            "Running",
            "Succeeded",
            "WaitingForCache"
        ]
    );
    let sim = schema("simulations.simcache.io.yaml");
    assert_eq!(
        sim["properties"]["spec"]["properties"]["version"]["pattern"],
        serde_json::json!("^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    );
    let types = &sim["properties"]["spec"]["properties"]["inputs"]["additionalProperties"]["properties"]
        ["type"]["enum"];
    assert_eq!(
        types,
        &serde_json::json!([
            "number", "integer", "boolean", "string", "array", "object", "file"
        ])
    );
}

#[test]
fn names_short_names_categories_and_columns() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, short, columns) in [
        (
            "simulations.simcache.io.yaml",
            "sim",
            vec!["Version", "Registered", "Runs", "Success", "Age"],
        ),
        (
            "simulationruns.simcache.io.yaml",
            "simrun",
            vec!["Simulation", "Phase", "Cache", "Duration", "Age", "Message"],
        ),
        (
            "cachepolicies.simcache.io.yaml",
            "simcp",
            vec!["TTL", "Entries", "Hit rate", "Age"],
        ),
    ] {
        let y: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        assert_eq!(y["spec"]["group"], "simcache.io");
        assert_eq!(y["spec"]["names"]["shortNames"], serde_json::json!([short]));
        assert_eq!(
            y["spec"]["names"]["categories"],
            serde_json::json!(["simcache"])
        );
        let v = &y["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["subresources"]["status"], serde_json::json!({}));
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, columns, "{file}");
        // Short names share one namespace with every other CRD installed
        // (kubectl picks one silently): none of the common ones.
        for taken in [
            "cpol", "pol", "polr", "cpolr", "sc", "svc", "cm", "po", "pv", "pvc", "sa", "ns", "no",
            "ep", "ev", "ds", "rs", "sts", "hpa", "pdb", "pc", "psp", "cs", "crd", "netpol", "ing",
            "vs", "dr", "gw", "se", "sp", "sm", "pm", "cert", "issuer",
        ] {
            assert_ne!(
                short, taken,
                "{file}: short name {short} is taken by a common CRD"
            );
        }
    }
    // The Message column only with -o wide.
    let y: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("simulationruns.simcache.io.yaml")).unwrap(),
    )
    .unwrap();
    let message = &y["spec"]["versions"][0]["additionalPrinterColumns"][5];
    assert_eq!(message["jsonPath"], ".status.message");
    assert_eq!(message["priority"], 1);
}

#[test]
fn the_chart_readme_matches_its_values() {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/simcache");
    let read = |f: &str| std::fs::read_to_string(chart.join(f)).unwrap();
    let want = simcache_crds::chart_readme::markdown(&read("Chart.yaml"), &read("values.yaml"));
    assert!(
        read("README.md") == want,
        "charts/simcache/README.md is out of date with values.yaml; run `cargo run -p simcache-crds --bin gen-crds`"
    );
    // Every top-level value is in it.
    let values: serde_yaml::Mapping = serde_yaml::from_str(&read("values.yaml")).unwrap();
    for k in values.keys() {
        let k = k.as_str().unwrap();
        assert!(
            want.contains(&format!("| `{k}")),
            "{k} missing from the README"
        );
    }
}

#[test]
fn artifact_hub_lists_every_crd() {
    let chart =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/simcache/Chart.yaml");
    let meta: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart).unwrap()).unwrap();
    let listed: Vec<serde_yaml::Value> =
        serde_yaml::from_str(meta["annotations"]["artifacthub.io/crds"].as_str().unwrap()).unwrap();
    let mut listed: Vec<(String, String)> = listed
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut ours: Vec<(String, String)> = simcache_crds::all()
        .into_iter()
        .map(|(_, c)| (c.metadata.name.unwrap(), c.spec.names.kind))
        .collect();
    listed.sort();
    ours.sort();
    assert_eq!(listed, ours);
}

/// A client-side `kubectl apply -f crds/` keeps each CRD's JSON in an
/// annotation, which holds at most 256 KiB: the embedded Kubernetes types
/// keep their field names and types but not their texts, to stay well
/// under it.
#[test]
fn every_crd_fits_kubectls_last_applied_annotation() {
    for (file, crd) in simcache_crds::all() {
        let n = serde_json::to_string(&crd).unwrap().len();
        assert!(n < 200 * 1024, "{file}: {n} bytes of JSON");
    }
}
