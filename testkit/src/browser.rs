//! A real browser for console tests: Debian's headless Chromium driven
//! through its ChromeDriver over WebDriver (fantoccini). A missing browser
//! fails the test with the command that installs it; it never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use fantoccini;
use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const INSTALL_HINT: &str =
    "install them with: sudo apt-get install -y chromium chromium-driver (.ci/run does this)";

pub struct Browser {
    pub client: Client,
    _driver: Child,
    profile: tempfile::TempDir,
}

/// ChromeDriver on a free port, answering; started again on another port
/// if it exits at once (the port was taken meanwhile).
async fn start_driver() -> (Child, String) {
    let http = reqwest::Client::new();
    for _ in 0..crate::ports::ATTEMPTS {
        let port = crate::ports::free_port().unwrap_or_else(|e| panic!("{e}"));
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
        let url = format!("http://127.0.0.1:{port}");
        // Up to a minute: ChromeDriver starts slowly on a loaded machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                return (driver, url);
            }
            if let Ok(Some(_)) = driver.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if driver.try_wait().ok().flatten().is_none() {
            panic!("ChromeDriver did not answer on {url} within 60 s");
        }
    }
    panic!(
        "ChromeDriver exited at start on {} ports",
        crate::ports::ATTEMPTS
    )
}

impl Browser {
    /// Starts ChromeDriver and a fresh headless Chromium profile.
    pub async fn start() -> Browser {
        if ![CHROMIUM, CHROMEDRIVER]
            .iter()
            .all(|p| Path::new(p).exists())
        {
            // First use on a fresh machine: install, as the other harness
            // pieces do; the script says what to run when it cannot.
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/install-chromium.sh");
            let ok = std::process::Command::new("bash")
                .arg(&script)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "{CHROMIUM} or {CHROMEDRIVER} is missing: {INSTALL_HINT}"
            );
        }
        let (driver, url) = start_driver().await;
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads)
            .unwrap_or_else(|e| panic!("{}: {e}", downloads.display()));
        let mut caps = serde_json::Map::new();
        // The flags keep Chromium off the (closed) network and out of the
        // sandbox it cannot set up as root in a container.
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start Chromium through ChromeDriver: {e}; {INSTALL_HINT}")
            });
        Browser {
            client,
            _driver: driver,
            profile,
        }
    }

    /// Where the browser saves downloads.
    pub fn downloads(&self) -> PathBuf {
        self.profile.path().join("downloads")
    }

    /// Waits (up to 15 s) for a finished download named `name` and reads it.
    pub async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads().join(name);
        self.wait_for(&format!("the download {name}"), || {
            let path = path.clone();
            async move { std::fs::read(&path).ok().filter(|b| !b.is_empty()) }
        })
        .await
    }

    /// Saves a PNG of the page under `target/console-screenshots/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Polls `f` until it returns Some (a headless browser on a loaded
    /// machine is slow: up to a minute).
    pub async fn wait_for<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        crate::wait::eventually(what, 2 * crate::wait::PATIENCE, f).await
    }

    /// Logs in through the console's form at `base`, typing and pressing
    /// Enter, and waits for the name in the header.
    pub async fn log_in(&self, base: &str, user: &str, password: &str) {
        use fantoccini::Locator;
        self.client
            .goto(&format!("{base}/ui/"))
            .await
            .unwrap_or_else(|e| panic!("opening {base}/ui/: {e}"));
        let field = self
            .wait_for("the login form", || async {
                self.client.find(Locator::Id("login-user")).await.ok()
            })
            .await;
        let type_in = |e: fantoccini::elements::Element, text: String| async move {
            e.send_keys(&text)
                .await
                .unwrap_or_else(|e| panic!("typing: {e}"));
        };
        type_in(field, user.to_string()).await;
        let pw = self
            .client
            .find(Locator::Id("login-password"))
            .await
            .unwrap_or_else(|e| panic!("password field: {e}"));
        // From the keyboard, as people do: the password, then Enter.
        type_in(
            pw,
            format!("{password}{}", char::from(fantoccini::key::Key::Enter)),
        )
        .await;
        self.wait_for(&format!("{user} in the header"), || async {
            let t = self
                .client
                .find(Locator::Id("who"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            t.contains(user).then_some(())
        })
        .await;
    }

    /// Clicks the first element matching `css` (which must be there).
    pub async fn click(&self, css: &str) {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// How many elements match a CSS selector now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `target/console-screenshots` of the workspace (or CARGO_TARGET_DIR).
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("console-screenshots")
}
