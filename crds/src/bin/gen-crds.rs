//! Writes the CRD YAML files into `crds/` (or checks them with `--check`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let check = std::env::args().any(|a| a == "--check");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (file, crd) in simcache_crds::all() {
        let yaml = simcache_crds::to_yaml(&crd)?;
        let path = dir.join(&file);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(file);
            }
        } else {
            std::fs::write(&path, yaml)?;
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
