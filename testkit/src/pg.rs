//! A throwaway PostgreSQL cluster, started once per test binary from the
//! machine's PostgreSQL server binaries on a free loopback port, and removed by
//! a watcher process when the test binary exits. `DATABASE_URL` points the
//! tests at an existing server instead. Each test gets a database of its own.
//!
//! If neither works the tests FAIL, saying how to install PostgreSQL: a test
//! that cannot reach its database has not passed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PgServer {
    /// URL of the server's maintenance database (`postgres`).
    pub admin_url: String,
    pub port: u16,
    pub data_dir: Option<PathBuf>,
    /// How to stop and start it again (a private cluster only).
    control: Option<Control>,
}

struct Control {
    bin: PathBuf,
    opts: String,
    ids: Option<(u32, u32)>,
}

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl) are needed for these tests. \
    Install them with `sudo apt-get install postgresql` (Debian/Ubuntu), or set DATABASE_URL to a \
    server where this user may CREATE DATABASE.";

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();

/// The shared server for this test binary; panics with instructions when none can be had.
pub fn server() -> &'static PgServer {
    match SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(PgServer {
            admin_url: url,
            port: 0,
            data_dir: None,
            control: None,
        }),
        _ => PgServer::start(false),
    }) {
        Ok(s) => s,
        Err(e) => panic!("{e}\n{INSTALL_HINT}"),
    }
}

/// The TLS-only cluster for this test binary ([`PgServer::start_tls`]);
/// panics with instructions when none can be had.
pub fn tls_server() -> &'static (PgServer, PgTls) {
    static TLS: OnceLock<Result<(PgServer, PgTls), String>> = OnceLock::new();
    match TLS.get_or_init(PgServer::start_tls) {
        Ok(s) => s,
        Err(e) => panic!("cannot start PostgreSQL with ssl=on: {e}\n{INSTALL_HINT}"),
    }
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database(hint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let srv = tokio::task::spawn_blocking(server)
        .await
        .expect("harness thread");
    let clean: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!(
        "t_{}_{}_{}",
        clean,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (client, conn) = tokio_postgres::connect(&srv.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}\n{INSTALL_HINT}", srv.admin_url));
    let driver = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
    drop(client);
    let _ = driver.await;
    with_database(&srv.admin_url, &name)
}

/// The same URL with another database name.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(&p));
            if let Some(dir) = real.parent().filter(|d| d.join("initdb").exists()) {
                return Some(dir.to_path_buf());
            }
        }
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}

/// PostgreSQL refuses to run as root; under root, run it as this account.
fn unprivileged_ids() -> Option<(u32, u32)> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                return Some((f[2].parse().ok()?, f[3].parse().ok()?));
            }
        }
    }
    None
}

fn run(cmd: &mut Command, ids: Option<(u32, u32)>, what: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    if let Some((u, g)) = ids {
        cmd.uid(u).gid(g);
    }
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The certificates of a TLS-only cluster ([`PgServer::start_tls`]).
pub struct PgTls {
    /// The CA that signed the server's certificate (PEM file).
    pub ca: PathBuf,
    /// A CA that signed nothing here, for "unknown CA" cases.
    pub other_ca: PathBuf,
    /// The names in the server's certificate.
    pub names: Vec<String>,
    /// A client certificate and key (PEM) for the role `certuser`, which
    /// may log in only with it.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write_tls_files(dir: &Path, ids: Option<(u32, u32)>) -> Result<PgTls, String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "simcache test CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let names = vec!["localhost".to_string()];
    let server_key = KeyPair::generate().map_err(e)?;
    let server = CertificateParams::new(names.clone())
        .map_err(e)?
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(e)?;
    let client_key = KeyPair::generate().map_err(e)?;
    let mut client = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "certuser");
    let client = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .map_err(e)?;
    let other_key = KeyPair::generate().map_err(e)?;
    let mut other = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other.self_signed(&other_key).map_err(e)?;
    let w = |name: &str, body: String| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    w("server.crt", server.pem())?;
    let key = w("server.key", server_key.serialize_pem())?;
    // PostgreSQL refuses a key others can read, or one it does not own.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    if let Some((u, g)) = ids {
        std::os::unix::fs::chown(&key, Some(u), Some(g)).map_err(|e| e.to_string())?;
    }
    Ok(PgTls {
        ca: w("ca.crt", ca_cert.pem())?,
        other_ca: w("other-ca.crt", other.pem())?,
        names,
        client_cert: w("client.crt", client.pem())?,
        client_key: w("client.key", client_key.serialize_pem())?,
    })
}

impl PgServer {
    /// Starts a private cluster. `durable` keeps fsync on (for benchmarks that
    /// should measure what production would see); tests turn it off for speed.
    pub fn start(durable: bool) -> Result<PgServer, String> {
        Self::start_with(durable, false).map(|(s, _)| s)
    }

    /// Starts a private cluster with `ssl=on` that accepts only TLS
    /// connections over TCP, its certificate (for `localhost`) signed by a
    /// CA generated here. `admin_url` says `localhost` and `sslmode=require`.
    pub fn start_tls() -> Result<(PgServer, PgTls), String> {
        let (s, tls) = Self::start_with(false, true)?;
        tls.map(|t| (s, t))
            .ok_or_else(|| "no TLS files were made".to_string())
    }

    fn start_with(durable: bool, tls: bool) -> Result<(PgServer, Option<PgTls>), String> {
        let bin = find_bin_dir().ok_or_else(|| {
            "PostgreSQL server binaries not found on PATH or under /usr/lib/postgresql/*/bin"
                .to_string()
        })?;
        let ids = unprivileged_ids();
        let dir = tempfile::Builder::new()
            .prefix("simcache-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if let Some((u, g)) = ids {
            std::os::unix::fs::chown(&dir, Some(u), Some(g))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        run(
            Command::new(bin.join("initdb"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
            ids,
            "initdb",
        )?;
        let tls_files = if tls {
            let t = write_tls_files(&dir, ids)?;
            // TCP only with TLS; the socket stays for pg_ctl.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all certuser 127.0.0.1/32 cert\nhostssl all certuser ::1/128 cert\n\
                 hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            )
            .map_err(|e| e.to_string())?;
            Some(t)
        } else {
            None
        };
        let fsync = if durable { "on" } else { "off" };
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = crate::ports::free_port()?;
            let mut opts = format!(
                "-p {port} -h 127.0.0.1 -k {} -c fsync={fsync} -c synchronous_commit={fsync} -c full_page_writes={fsync} -c max_connections=300",
                dir.display()
            );
            if tls {
                opts.push_str(&format!(
                    " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key -c ssl_ca_file={d}/ca.crt",
                    d = dir.display()
                ));
            }
            let r = run(
                Command::new(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(dir.join("log"))
                    .args(["-w", "-t", "60", "-o", &opts, "start"]),
                ids,
                "pg_ctl start",
            );
            match r {
                Ok(()) => {
                    spawn_reaper(&bin, &dir, ids)?;
                    let admin_url = if tls {
                        format!("postgresql://postgres@localhost:{port}/postgres?sslmode=require")
                    } else {
                        format!("postgresql://postgres@127.0.0.1:{port}/postgres")
                    };
                    return Ok((
                        PgServer {
                            admin_url,
                            port,
                            data_dir: Some(dir),
                            control: Some(Control { bin, opts, ids }),
                        },
                        tls_files,
                    ));
                }
                Err(e) => {
                    last_err = format!(
                        "{e}\n{}",
                        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
                    )
                }
            }
        }
        Err(last_err)
    }
}

impl PgServer {
    /// Stops a private cluster (fast shutdown: clients are disconnected).
    pub fn stop(&self) -> Result<(), String> {
        let (c, dir) = self.controls()?;
        run(
            Command::new(c.bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-w", "-m", "fast", "stop"]),
            c.ids,
            "pg_ctl stop",
        )
    }

    /// Starts a stopped private cluster again, on the same port.
    pub fn start_again(&self) -> Result<(), String> {
        let (c, dir) = self.controls()?;
        run(
            Command::new(c.bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-w", "-t", "60", "-o", &c.opts, "start"]),
            c.ids,
            "pg_ctl start",
        )
    }

    fn controls(&self) -> Result<(&Control, &Path), String> {
        match (&self.control, &self.data_dir) {
            (Some(c), Some(d)) => Ok((c, d)),
            _ => Err("only a private cluster (PgServer::start) can be stopped".into()),
        }
    }
}

/// A watcher that outlives nothing: when this process is gone, it stops the
/// cluster and deletes its directory.
fn spawn_reaper(bin: &Path, dir: &Path, ids: Option<(u32, u32)>) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; '{pg_ctl}' -D '{dir}/data' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        dir = dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some((u, g)) = ids {
        cmd.uid(u).gid(g);
    }
    cmd.spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the cleanup watcher: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn swaps_the_database_name() {
        assert_eq!(
            super::with_database("postgresql://u@h:1/postgres", "x"),
            "postgresql://u@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
