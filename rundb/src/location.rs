//! Where run databases live and which execution ids are allowed to name one.

use std::path::{Path, PathBuf};

use crate::error::{Result, RunDbError};

/// Environment variable that overrides the base directory.
pub const BASE_PATH_ENV: &str = "SIMCACHE_RUN_DB_BASE_PATH";

/// Longest execution id accepted.
pub const MAX_EXECUTION_ID_LEN: usize = 128;

/// Accepts ids matching `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$` without `..`: an
/// id becomes a file name, so nothing in it may climb out of the base path.
pub fn validate_execution_id(id: &str) -> Result<()> {
    let bytes = id.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_EXECUTION_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(RunDbError::InvalidExecutionId(
            id.chars().take(200).collect(),
        ))
    }
}

/// The directory run databases are created in: `SIMCACHE_RUN_DB_BASE_PATH`
/// when set, else `~/.simcache/runs`.
pub fn default_base_path() -> PathBuf {
    if let Some(p) = std::env::var_os(BASE_PATH_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".simcache").join("runs")
}

/// `{base}/{execution_id}.db` after validating the id.
pub fn run_db_path(base: &Path, execution_id: &str) -> Result<PathBuf> {
    validate_execution_id(execution_id)?;
    Ok(base.join(format!("{execution_id}.db")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids_pass_and_traversal_fails() {
        for ok in ["run-1", "a", "Thermal_sim.350K-7", &"x".repeat(128)] {
            validate_execution_id(ok).unwrap();
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "-flag",
            "a..b",
            "run 1",
            "naïve",
            &"x".repeat(129),
        ] {
            assert!(validate_execution_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn path_is_under_the_base() {
        let p = run_db_path(Path::new("/data/runs"), "r1").unwrap();
        assert_eq!(p, Path::new("/data/runs/r1.db"));
        assert!(run_db_path(Path::new("/data/runs"), "../r1").is_err());
    }
}
