//! A server binary run as a child process on an ephemeral port. The server
//! prints its URL as the last word of its first stdout line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct ServerProcess {
    pub url: String,
    child: Child,
}

impl ServerProcess {
    /// Starts `bin args...` with `envs` and waits (up to 30 s) for its URL line.
    pub async fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} printed no URL within 30 s", bin.display()))
            .expect("reading stdout")
            .unwrap_or_else(|| panic!("{} exited before printing its URL", bin.display()));
        let url = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(url.starts_with("http://"), "unexpected first line: {line}");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess { url, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("server did not exit within 30 s of SIGTERM")
            .expect("waiting for the server");
        status.code()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
