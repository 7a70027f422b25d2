//! Running the simulation program as a child process (local mode and
//! `simcache-sidecar exec`): hand it its inputs, capture its stdout/stderr
//! lines as logs, and finish the run when it exits.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use simcache_rundb::{LogLevel, LogLine, RunSummary};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::values::{input_env_name, input_env_value};
use super::{RunError, RunService};

/// How to start the program.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    pub command: Vec<String>,
    pub workdir: Option<PathBuf>,
    /// Extra environment for the program (the sidecar URL and token go here).
    pub env: Vec<(String, String)>,
    /// Kill the program after this long (the run fails).
    pub timeout: Option<Duration>,
}

/// Sidecar settings the program must not inherit.
const SIDECAR_SECRETS: &[&str] = &[
    simcache_core::pod_env::CACHE_DB_URL,
    "SIM2L_CACHE_DB_URL",
    "SIMCACHE_ADMIN_PASSWORD",
    "SIMCACHE_USER_PASSWORD",
    "DATABASE_URL",
];

/// Lines are written in batches of at most this many, or every `FLUSH_EVERY`.
const LOG_BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Runs the program to its end and finishes the run. The run's outcome is in
/// the returned summary; `Err` means the run could not be recorded.
pub async fn run_program(
    run: Arc<RunService>,
    spec: &ProgramSpec,
) -> Result<(RunSummary, Option<i32>), RunError> {
    let Some((program, args)) = spec.command.split_first() else {
        return Err(RunError::Invalid("no command to run".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.workdir {
        cmd.current_dir(dir);
    }
    if let Some(p) = &run.inputs_file {
        cmd.env(simcache_core::pod_env::INPUTS, p);
    }
    if let Some(p) = &run.outputs_file {
        cmd.env(simcache_core::pod_env::OUTPUTS, p);
    }
    // The program gets its own credential (the run token), never the sidecar's.
    for k in SIDECAR_SECRETS {
        cmd.env_remove(k);
    }
    cmd.env(simcache_core::pod_env::EXECUTION_ID, &run.execution_id);
    for w in &run.inputs {
        cmd.env(input_env_name(&w.name), input_env_value(&w.value));
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot start {program:?}: {e}");
            let summary = run.finish(Some(why)).await?;
            return Ok((summary, None));
        }
    };
    let (tx, rx) = mpsc::channel::<LogLine>(4096);
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(read_lines(s, LogLevel::Info, "stdout", tx.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(read_lines(s, LogLevel::Warning, "stderr", tx.clone()))),
    ];
    drop(tx);
    let writer = tokio::spawn(write_logs(run.clone(), rx));

    let waited = match spec.timeout {
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(r) => r.map(Some),
            Err(_) => {
                let _ = child.kill().await;
                Ok(None)
            }
        },
        None => child.wait().await.map(Some),
    };
    // Every line the program wrote is stored before the run is finished.
    for r in readers.into_iter().flatten() {
        let _ = r.await;
    }
    if let Ok(Err(e)) = writer.await {
        tracing::error!(error = %e, "could not store the program's output lines");
    }
    let (failure, code) = match waited {
        Ok(Some(status)) if status.success() => (None, status.code()),
        Ok(Some(status)) => (Some(describe_exit(status)), status.code()),
        Ok(None) => (
            Some(format!(
                "timed out after {}s and was killed",
                spec.timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0)
            )),
            None,
        ),
        Err(e) => (Some(format!("waiting for the program failed: {e}")), None),
    };
    let summary = run.finish(failure).await?;
    Ok((summary, code))
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("the program was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("the program exited with status {c}"),
        None => "the program ended abnormally".into(),
    }
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    level: LogLevel,
    logger: &'static str,
    tx: mpsc::Sender<LogLine>,
) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let mut l = LogLine::new(level, line);
                l.logger = Some(logger.to_string());
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                // Non-UTF-8 output: note it and stop reading this stream.
                let mut l = LogLine::new(
                    LogLevel::Warning,
                    format!("unreadable {logger} output: {e}"),
                );
                l.logger = Some(logger.to_string());
                let _ = tx.send(l).await;
                return;
            }
        }
    }
}

async fn write_logs(run: Arc<RunService>, mut rx: mpsc::Receiver<LogLine>) -> Result<(), RunError> {
    let mut batch = Vec::with_capacity(LOG_BATCH);
    loop {
        let next = tokio::time::timeout(FLUSH_EVERY, rx.recv()).await;
        let done = matches!(next, Ok(None));
        let idle = next.is_err();
        if let Ok(Some(l)) = next {
            batch.push(l);
            while batch.len() < LOG_BATCH {
                match rx.try_recv() {
                    Ok(l) => batch.push(l),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() && (batch.len() >= LOG_BATCH || done || idle) {
            let lines = std::mem::take(&mut batch);
            run.with_db(move |db| Ok(db.log_batch(&lines)?)).await?;
        }
        if done {
            return Ok(());
        }
    }
}
