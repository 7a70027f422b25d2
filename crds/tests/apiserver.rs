//! The generated CRDs against a real Kubernetes API server (a private
//! kube-apiserver, or any cluster via SIMCACHE_TEST_KUBECONFIG): accepted,
//! usable with `kubectl`, and invalid resources rejected with readable
//! messages.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::Path;

use simcache_testkit::k8s::cluster;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn crds_are_accepted_and_validate_resources() {
    let k = cluster();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = k.kubectl(&["apply", "-f", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for crd in [
        "simulations.simcache.io",
        "simulationruns.simcache.io",
        "cachepolicies.simcache.io",
    ] {
        let out = k.kubectl(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ]);
        assert!(out.status.success(), "{crd}: {}", text(&out));
    }
    let ns = k.namespace("crds");
    let examples = root.join("../examples/thermal");
    // Discovery lags a moment behind "Established": retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = k.kubectl(&["apply", "-n", &ns.name, "-f", examples.to_str().unwrap()]);
        if out.status.success() {
            break;
        }
        if std::time::Instant::now() >= deadline || !text(&out).contains("couldn't find resource") {
            let res = k.kubectl(&["api-resources", "--api-group=simcache.io"]);
            let crd = k.kubectl(&["get", "crd", "-o", "name"]);
            panic!(
                "{}\napi-resources: {}\ncrds: {}",
                text(&out),
                text(&res),
                text(&crd)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = k.kubectl(&["get", "simcache", "-n", &ns.name]);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    for name in [
        "simulation.simcache.io/thermal",
        "simulationrun.simcache.io/thermal-350k",
        "cachepolicy.simcache.io/results-one-week",
    ] {
        assert!(
            listing.contains(name),
            "kubectl get simcache lacks {name}:\n{listing}"
        );
    }
    assert!(
        listing.contains("SIMULATION") && listing.contains("PHASE") && listing.contains("CACHE"),
        "{listing}"
    );
    let out = k.kubectl(&[
        "get",
        "simrun",
        "thermal-350k",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.cacheMode}",
    ]);
    assert_eq!(
        text(&out),
        "Use",
        "the default cache mode is filled in by the API server"
    );
    // The API server publishes a new CRD's OpenAPI a moment after it serves
    // the kind; until then `kubectl explain` cannot find it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = k.kubectl(&["explain", "simulationrun.spec.cacheMode"]);
        if text(&out).contains("Use (default), Refresh or Bypass") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && text(&out).contains("couldn't find resource"),
            "{}",
            text(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // Invalid resources are refused by the server, naming each problem.
    for (doc, wants) in [
        (
            "apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: bad-run}\nspec: {simulation: {name: thermal}, cacheMode: Sometimes, retryLimit: 50, timeoutSeconds: 0}\n",
            vec![
                "spec.cacheMode: Unsupported value: \"Sometimes\"",
                "spec.retryLimit",
                "less than or equal to 10",
                "spec.timeoutSeconds",
            ],
        ),
        (
            "apiVersion: simcache.io/v1alpha1\nkind: Simulation\nmetadata: {name: bad-sim}\nspec: {version: \"not a version!\", image: x, inputs: {t: {type: complex}}}\n",
            vec![
                "spec.version",
                "should match",
                "spec.inputs.t.type: Unsupported value: \"complex\"",
            ],
        ),
        (
            "apiVersion: simcache.io/v1alpha1\nkind: Simulation\nmetadata: {name: no-image}\nspec: {version: \"1\"}\n",
            vec!["spec.image: Required value"],
        ),
        (
            "apiVersion: simcache.io/v1alpha1\nkind: CachePolicy\nmetadata: {name: bad-policy}\nspec: {ttlSeconds: 0, eviction: FIFO}\n",
            vec![
                "spec.ttlSeconds",
                "spec.eviction: Unsupported value: \"FIFO\"",
            ],
        ),
    ] {
        // Server-side validation only: the client must not pre-empt it.
        let out = k.kubectl_stdin(
            &["apply", "--validate=false", "-n", &ns.name, "-f", "-"],
            Some(doc),
        );
        let msg = text(&out);
        assert!(
            !out.status.success(),
            "accepted an invalid resource:\n{doc}"
        );
        for w in wants {
            assert!(msg.contains(w), "expected {w:?} in:\n{msg}");
        }
    }
    let out = k.kubectl(&["get", "simrun,sim,simcp", "-n", &ns.name, "-o", "name"]);
    let names = text(&out);
    assert!(
        !names.contains("bad-") && !names.contains("no-image"),
        "{names}"
    );
}
