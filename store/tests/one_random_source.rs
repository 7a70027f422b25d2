//! Every secret token and random id comes from `simcache_store::random`,
//! which fails closed. A call to the OS's random source anywhere else could
//! ignore its failure and hand out an all-zero token, as six places once did.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_the_random_module_calls_the_os_random_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found the workspace's sources");
    let needle = ["getrandom", "::"].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("store/src/random.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(&needle))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "use simcache_store::random instead of the OS random source in {offenders:?}"
    );
}
