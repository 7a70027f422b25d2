//! The documentation's promises that code can check: relative links lead to
//! files that exist, and the kind quick start builds exactly the images the
//! chart and the example Simulation name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// `](target)` links that are not URLs or anchors.
fn relative_links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_string());
        }
    }
    out
}

#[test]
fn relative_links_in_the_docs_lead_to_files() {
    let mut files = vec![PathBuf::from("README.md")];
    for e in std::fs::read_dir(repo("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(Path::new("docs").join(p.file_name().unwrap()));
        }
    }
    let mut broken = Vec::new();
    for f in &files {
        let text = read(f.to_str().unwrap());
        let dir = repo(f.to_str().unwrap()).parent().unwrap().to_path_buf();
        for l in relative_links(&text) {
            if !dir.join(&l).exists() {
                broken.push(format!("{}: {l}", f.display()));
            }
        }
    }
    assert!(files.len() > 10, "found the docs");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_kind_quick_start_builds_the_images_the_chart_and_the_example_name() {
    let qs = read("docs/quickstart-kind.md");
    let values: serde_json::Value =
        serde_yaml::from_str(&read("charts/simcache/values.yaml")).unwrap();
    let chart: serde_json::Value =
        serde_yaml::from_str(&read("charts/simcache/Chart.yaml")).unwrap();
    let sim: serde_json::Value =
        serde_yaml::from_str(&read("examples/thermal/simulation.yaml")).unwrap();
    let version = chart["appVersion"].as_str().unwrap();
    let wanted = [
        (
            "operator/Dockerfile",
            format!(
                "{}:{version}",
                values["image"]["repository"].as_str().unwrap()
            ),
        ),
        (
            "sidecar/Dockerfile",
            format!(
                "{}:{version}",
                values["sidecar"]["image"]["repository"].as_str().unwrap()
            ),
        ),
        (
            "examples/thermal/Dockerfile",
            sim["spec"]["image"].as_str().unwrap().to_string(),
        ),
    ];
    for (dockerfile, image) in &wanted {
        assert!(
            qs.contains(&format!("docker build -f {dockerfile}"))
                && qs.contains(&format!("-t {image} .")),
            "the quick start builds {image} from {dockerfile}"
        );
        assert!(qs.contains(image.as_str()), "{image} is loaded into kind");
        assert!(repo(dockerfile).exists(), "{dockerfile}");
    }
    // The example image: the program where the Simulation's command looks,
    // and a non-root user, as Pod Security `restricted` requires.
    let d = read("examples/thermal/Dockerfile");
    let cmd: Vec<&str> = sim["spec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd, ["python3", "/app/thermal.py"]);
    assert!(
        d.contains("COPY examples/run-api/thermal.py /app/thermal.py"),
        "{d}"
    );
    let user = d
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let uid: u32 = user.split(':').next().unwrap().trim().parse().unwrap();
    assert_ne!(uid, 0, "a non-root user");
    assert!(
        d.contains(&format!("-t {} .", wanted[2].1)),
        "its own build line"
    );
    assert!(qs.contains("-f charts/simcache/values-kind.yaml"));
}
