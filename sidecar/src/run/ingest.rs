//! In a simulation pod, the sidecar is stopped (SIGTERM) once the simulation
//! container has ended. It then finishes the run database — outputs file
//! collected, `completed` when every declared output is there, else `failed`
//! with the reason — and uploads a consistent snapshot of it to the
//! operator's ingest route with the run's ingest token, retrying with
//! backoff within the pod's termination grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;

use super::{RunError, RunService};

pub struct IngestTarget {
    pub url: String,
    pub token: String,
    /// Give up after this long (stay inside the termination grace period).
    pub timeout: Duration,
}

/// Finishes the run (unless the program already completed it) and uploads it.
pub async fn finish_and_upload(run: Arc<RunService>, target: &IngestTarget) -> anyhow::Result<()> {
    let summary = run
        .finish(None)
        .await
        .context("finishing the run database")?;
    tracing::info!(execution_id = run.execution_id, status = %summary.status, "run finished; uploading");
    let dir = tempfile::tempdir().context("creating a directory for the snapshot")?;
    let snap = dir.path().join("run.db");
    let dest = snap.clone();
    run.with_db(move |db| db.snapshot_to(&dest).map_err(RunError::from))
        .await
        .context("taking a snapshot of the run database")?;
    upload(&snap, target).await
}

async fn upload(path: &std::path::Path, target: &IngestTarget) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let start = Instant::now();
    let mut delays =
        simcache_store::retry::delays(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let sent = client
            .put(&target.url)
            .bearer_auth(&target.token)
            .header("content-type", "application/vnd.sqlite3")
            .header("content-length", len)
            .body(body)
            .send()
            .await;
        let retry_why = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(url = target.url, bytes = len, status = %r.status(), "run database uploaded");
                return Ok(());
            }
            // The operator refused this database: retrying cannot help.
            Ok(r)
                if r.status().is_client_error() && r.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                bail!("the operator refused the run database ({status}): {text}");
            }
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        let wait = delays.next().unwrap_or(Duration::from_secs(5));
        if start.elapsed() + wait > target.timeout {
            bail!(
                "could not upload the run database to {}: {retry_why}",
                target.url
            );
        }
        tracing::warn!(
            error = retry_why,
            retry_in_ms = wait.as_millis() as u64,
            "upload failed; retrying"
        );
        tokio::time::sleep(wait).await;
    }
}
