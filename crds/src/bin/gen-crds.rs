//! Writes the CRD YAML files into `crds/` and the Helm chart's templates
//! (`templates/crds/`), the CRD reference and the chart's README from its
//! values.yaml (or checks them all with `--check`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let check = std::env::args().any(|a| a == "--check");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chart = dir.join("../charts/simcache/templates/crds");
    std::fs::create_dir_all(&chart)?;
    let mut stale = Vec::new();
    for (file, crd) in simcache_crds::all() {
        let yaml = simcache_crds::to_yaml(&crd)?;
        let template = simcache_crds::to_chart_template(&crd)?;
        for (path, text) in [(dir.join(&file), &yaml), (chart.join(&file), &template)] {
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    stale.push(path.display().to_string());
                }
            } else {
                std::fs::write(&path, text)?;
                println!("wrote {}", path.display());
            }
        }
    }
    let crds: Vec<_> = simcache_crds::all().into_iter().map(|(_, c)| c).collect();
    let chart_dir = dir.join("../charts/simcache");
    let readme = simcache_crds::chart_readme::markdown(
        &std::fs::read_to_string(chart_dir.join("Chart.yaml"))?,
        &std::fs::read_to_string(chart_dir.join("values.yaml"))?,
    );
    std::fs::create_dir_all(dir.join("../docs/reference"))?;
    for (path, doc) in [
        (
            dir.join("../docs/reference/crds.md"),
            simcache_crds::reference::markdown(&crds),
        ),
        (chart_dir.join("README.md"), readme),
    ] {
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(doc.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, doc)?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        anyhow::bail!(
            "out of date: {} (run `cargo run -p simcache-crds --bin gen-crds`)",
            stale.join(", ")
        );
    }
    Ok(())
}
