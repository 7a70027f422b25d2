//! Checks `X-Session-ID` against the shared session store (with a short-lived
//! in-memory copy so a hot route costs no database round trip), and issues
//! sessions: by login, for anonymous callers, and from the CLI.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use simcache_store::clock::now_ms;
use simcache_store::sessions::{SessionRecord, SessionStore, UserRecord};
use simcache_web::ApiError;

use crate::limiter::LoginLimiter;
use crate::privileges::{Privilege, PrivilegeSet, Role};
use crate::session_cache::SessionCache;
use crate::{password, token};

pub const SESSION_HEADER: &str = "x-session-id";

/// Longest session a caller may ask for (one year).
pub const MAX_SESSION_TTL_HOURS: f64 = 24.0 * 366.0;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Disables every check. Only ever set from an explicit `--no-auth`.
    pub no_auth: bool,
    /// How long a validated session is trusted without asking the store again;
    /// bounds how late another process's logout is noticed.
    pub session_cache_ttl: Duration,
    pub default_session_ttl_hours: f64,
    pub trusted_proxies: Vec<IpAddr>,
    pub login_max_attempts: usize,
    pub login_window: Duration,
    /// Also accept the web console's session cookie where no `X-Session-ID`
    /// is sent. Only for servers that put [`crate::cookie::csrf_guard`] in
    /// front of every route (the operator); the sidecars never do.
    pub cookie_sessions: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            no_auth: false,
            session_cache_ttl: Duration::from_secs(5),
            default_session_ttl_hours: 24.0,
            trusted_proxies: Vec::new(),
            login_max_attempts: 5,
            login_window: Duration::from_secs(60),
            cookie_sessions: false,
        }
    }
}

/// A validated session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub token_hash: String,
    pub username: String,
    pub user_id: Option<i64>,
    pub role: Option<String>,
    pub privileges: PrivilegeSet,
    pub expires_at_ms: i64,
    /// What a run's session is limited to beyond its privileges; `None`:
    /// nothing more than the privileges say.
    pub scope: Option<Scope>,
}

impl Session {
    pub fn allows(&self, p: Privilege) -> bool {
        self.privileges.allows(p)
    }

    /// Whether this session may use SFM device `namespace/name`: reading
    /// (`control` false) needs the device in its scope's `sfm_devices`,
    /// control in `sfm_control`. An unscoped session is limited by its
    /// privileges alone.
    pub fn may_use_device(&self, namespace: &str, name: &str, control: bool) -> bool {
        let Some(scope) = &self.scope else {
            return true;
        };
        let listed = if control {
            &scope.sfm_control
        } else {
            &scope.sfm_devices
        };
        listed
            .iter()
            .any(|d| d.split_once('/') == Some((namespace, name)))
    }
}

/// The limits of a run's session (kept with it): the SFM devices its
/// Simulation lists, and those it declares control of. Devices are named
/// `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub sfm_devices: Vec<String>,
    #[serde(default)]
    pub sfm_control: Vec<String>,
}

/// A freshly issued session: the token is shown once, to its owner.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: String,
    pub session: Session,
}

/// Sessions the cache holds and login-limiter buckets at most.
pub const SESSION_CACHE_CAPACITY: usize = 100_000;

pub struct Authenticator {
    store: Arc<dyn SessionStore>,
    cfg: AuthConfig,
    cache: SessionCache<Session>,
    limiter: LoginLimiter,
    no_auth_session: Arc<Session>,
    /// A run pod's own credential: valid only at this sidecar, kept as a
    /// digest (the token itself is not held).
    pod_session: Option<([u8; 32], Arc<Session>)>,
}

/// What a run pod's own credential allows at its sidecar: the cache, its
/// systems of record and its SFM devices; nothing that manages anything.
pub fn pod_session_privileges() -> PrivilegeSet {
    PrivilegeSet::of(&[
        Privilege::ReadCache,
        Privilege::WriteCache,
        Privilege::ReadSor,
        Privilege::ReadSfm,
    ])
}

fn session_from_record(r: SessionRecord) -> Session {
    Session {
        // Stored names were validated when issued; an unknown one grants nothing.
        privileges: PrivilegeSet::parse(&r.privileges).unwrap_or_default(),
        token_hash: r.token_hash,
        username: r.username,
        user_id: r.user_id,
        role: r.role,
        expires_at_ms: r.expires_at_ms,
        // A scope that does not read grants nothing (no device).
        scope: r
            .metadata
            .as_ref()
            .and_then(|m| m.get("scope"))
            .map(|s| serde_json::from_value(s.clone()).unwrap_or_default()),
    }
}

fn ttl_ms(hours: f64) -> Result<i64, ApiError> {
    if !hours.is_finite() || hours <= 0.0 || hours > MAX_SESSION_TTL_HOURS {
        return Err(ApiError::bad_request(format!(
            "ttl_hours must be a number greater than 0 and at most {MAX_SESSION_TTL_HOURS}"
        )));
    }
    Ok((hours * 3_600_000.0) as i64)
}

/// A hash to verify against when the user does not exist, so that an unknown
/// name costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| password::hash("simcache-timing-equaliser").unwrap_or_default())
}

impl Authenticator {
    pub fn new(store: Arc<dyn SessionStore>, cfg: AuthConfig) -> Self {
        let cache = SessionCache::new(cfg.session_cache_ttl, SESSION_CACHE_CAPACITY);
        let limiter = LoginLimiter::new(cfg.login_max_attempts, cfg.login_window);
        let no_auth_session = Arc::new(Session {
            token_hash: String::new(),
            username: "no-auth".into(),
            user_id: None,
            role: Some("admin".into()),
            privileges: Role::Admin.privileges(),
            expires_at_ms: i64::MAX,
            scope: None,
        });
        Authenticator {
            store,
            cfg,
            cache,
            limiter,
            no_auth_session,
            pod_session: None,
        }
    }

    /// Also accepts `token` as the session of the run pod this sidecar
    /// serves (`who` names it in logs), with [`pod_session_privileges`].
    pub fn with_pod_session(mut self, token: &str, who: &str) -> Self {
        let session = Session {
            token_hash: hex::encode(token::digest(token)),
            username: who.to_string(),
            user_id: None,
            role: None,
            privileges: pod_session_privileges(),
            expires_at_ms: i64::MAX,
            // The tier holds the run's scope; at its own sidecar the pod
            // is limited by the sidecar's settings.
            scope: None,
        };
        self.pod_session = Some((token::digest(token), Arc::new(session)));
        self
    }

    /// The pod's own session, if `digest` is its credential.
    fn pod_session_for(&self, digest: &[u8; 32]) -> Option<Arc<Session>> {
        self.pod_session
            .as_ref()
            .filter(|(d, _)| d == digest)
            .map(|(_, s)| s.clone())
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// The session behind the request's `X-Session-ID`, if it may use `p`:
    /// 401 without a live session, 403 without the privilege.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        p: Privilege,
    ) -> Result<Arc<Session>, ApiError> {
        let session = self.authenticate(headers).await?;
        if !session.allows(p) {
            return Err(ApiError::forbidden(format!(
                "this session lacks the '{p}' privilege"
            )));
        }
        Ok(session)
    }

    /// Exports the sizes of its in-memory structures (read at scrape time).
    pub fn register_size_metrics(
        self: &Arc<Self>,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<()> {
        let (a, b) = (self.clone(), self.clone());
        simcache_web::metrics::register_auth_sizes(
            registry,
            move || a.cached_sessions() as i64,
            move || b.limiter_buckets() as i64,
        )
    }

    /// Sessions cached in memory (at most [`SESSION_CACHE_CAPACITY`]).
    pub fn cached_sessions(&self) -> usize {
        self.cache.len()
    }

    /// Login rate-limit buckets in memory (at most `LoginLimiter::CAPACITY`).
    pub fn limiter_buckets(&self) -> u64 {
        self.limiter.buckets()
    }

    /// The live session behind the request, whatever it may do.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Session>, ApiError> {
        if self.cfg.no_auth {
            return Ok(self.no_auth_session.clone());
        }
        let Some(value) = headers.get(SESSION_HEADER) else {
            if self.cfg.cookie_sessions
                && let Some(token) = crate::cookie::session_from_cookies(headers)
            {
                return self.session_for_token(token).await;
            }
            return Err(ApiError::unauthorized("missing X-Session-ID header"));
        };
        // Present but not visible ASCII: say so, not "missing".
        let token = value
            .to_str()
            .map(str::trim)
            .map_err(|_| ApiError::unauthorized("invalid X-Session-ID header"))?;
        self.session_for_token(token).await
    }

    /// The live session behind `value` if this process has already checked
    /// it against the store, without waiting on anything: the hot path's
    /// check. `None` means "ask `authenticate`", never "refused".
    pub fn recent_session(&self, value: Option<&HeaderValue>) -> Option<Arc<Session>> {
        if self.cfg.no_auth {
            return Some(self.no_auth_session.clone());
        }
        let token = value?.to_str().ok()?.trim();
        if !token::looks_valid(token) {
            return None;
        }
        let digest = token::digest(token);
        if let Some(s) = self.pod_session_for(&digest) {
            return Some(s);
        }
        self.cache
            .get(&digest)
            .filter(|s| s.expires_at_ms > now_ms())
    }

    pub async fn session_for_token(&self, token: &str) -> Result<Arc<Session>, ApiError> {
        let invalid = || ApiError::unauthorized("invalid or expired session");
        if !token::looks_valid(token) {
            return Err(invalid());
        }
        let digest = token::digest(token);
        if let Some(s) = self.pod_session_for(&digest) {
            return Ok(s);
        }
        let now = now_ms();
        if let Some(s) = self.cache.get(&digest) {
            if s.expires_at_ms > now {
                return Ok(s);
            }
            self.cache.invalidate(&digest);
            return Err(invalid());
        }
        let h = hex::encode(digest);
        let rec = self.store.find_session(&h).await?.ok_or_else(invalid)?;
        if rec.expires_at_ms <= now {
            return Err(invalid());
        }
        let s = Arc::new(session_from_record(rec));
        self.cache.insert(digest, s.clone());
        Ok(s)
    }

    /// Username/password login, rate-limited per client and name.
    pub async fn login(
        &self,
        client: IpAddr,
        username: &str,
        password_text: &str,
        ttl_hours: Option<f64>,
    ) -> Result<IssuedSession, ApiError> {
        let ttl = ttl_ms(ttl_hours.unwrap_or(self.cfg.default_session_ttl_hours))?;
        if !self.limiter.attempt(client, username) {
            return Err(ApiError::too_many_requests(
                "too many login attempts; wait a minute and try again",
            ));
        }
        let user = self.store.find_user(username).await?;
        let (phc, user) = match user {
            Some(u) if u.is_active => (u.password_hash.clone(), Some(u)),
            _ => (dummy_hash().to_string(), None),
        };
        // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
        let pw = password_text.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &phc))
            .await
            .unwrap_or(false);
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => return Err(ApiError::unauthorized("invalid username or password")),
        };
        self.limiter.reset(client, username);
        let role = Role::parse(&user.role).unwrap_or(Role::User);
        self.issue(
            Some(&user),
            &user.username,
            Some(role.name()),
            role.privileges(),
            ttl,
            None,
        )
        .await
    }

    /// A session that belongs to no user, with the given privileges.
    pub async fn create_anonymous(
        &self,
        privileges: PrivilegeSet,
        ttl_hours: Option<f64>,
    ) -> Result<IssuedSession, ApiError> {
        let ttl = ttl_ms(ttl_hours.unwrap_or(self.cfg.default_session_ttl_hours))?;
        self.issue(None, "anonymous", None, privileges, ttl, None)
            .await
    }

    /// [`Self::create_anonymous`] limited to `scope`.
    pub async fn create_anonymous_scoped(
        &self,
        privileges: PrivilegeSet,
        ttl_hours: Option<f64>,
        scope: &Scope,
    ) -> Result<IssuedSession, ApiError> {
        let ttl = ttl_ms(ttl_hours.unwrap_or(self.cfg.default_session_ttl_hours))?;
        self.issue(None, "anonymous", None, privileges, ttl, Some(scope))
            .await
    }

    /// A session for a service rather than a person (e.g. one simulation
    /// run), named so the sessions table says whose it is.
    pub async fn create_for_service(
        &self,
        name: &str,
        privileges: PrivilegeSet,
        ttl_hours: f64,
    ) -> Result<IssuedSession, ApiError> {
        self.issue(None, name, None, privileges, ttl_ms(ttl_hours)?, None)
            .await
    }

    /// [`Self::create_for_service`] limited to `scope` (a run's devices).
    pub async fn create_scoped(
        &self,
        name: &str,
        privileges: PrivilegeSet,
        ttl_hours: f64,
        scope: &Scope,
    ) -> Result<IssuedSession, ApiError> {
        self.issue(
            None,
            name,
            None,
            privileges,
            ttl_ms(ttl_hours)?,
            Some(scope),
        )
        .await
    }

    async fn issue(
        &self,
        user: Option<&UserRecord>,
        username: &str,
        role: Option<&str>,
        privileges: PrivilegeSet,
        ttl: i64,
        scope: Option<&Scope>,
    ) -> Result<IssuedSession, ApiError> {
        let token = token::generate().map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("no randomness: {e}"),
            )
        })?;
        let now = now_ms();
        let rec = SessionRecord {
            token_hash: token::hash(&token),
            user_id: user.map(|u| u.id),
            username: username.to_string(),
            role: role.map(str::to_string),
            privileges: privileges.names(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl),
            metadata: match (user, scope) {
                (Some(_), _) => None,
                (None, None) => Some(serde_json::json!({ "anonymous": true })),
                (None, Some(s)) => Some(serde_json::json!({ "anonymous": true, "scope": s })),
            },
        };
        self.store.insert_session(&rec).await?;
        Ok(IssuedSession {
            token,
            session: session_from_record(rec),
        })
    }

    /// Moves a live session's expiry to now + ttl.
    pub async fn refresh(
        &self,
        session: &Session,
        ttl_hours: Option<f64>,
    ) -> Result<i64, ApiError> {
        let ttl = ttl_ms(ttl_hours.unwrap_or(self.cfg.default_session_ttl_hours))?;
        let now = now_ms();
        let expires = now.saturating_add(ttl);
        if !self
            .store
            .extend_session(&session.token_hash, expires, now)
            .await?
        {
            return Err(ApiError::unauthorized("invalid or expired session"));
        }
        self.forget(session);
        Ok(expires)
    }

    pub async fn logout(&self, session: &Session) -> Result<bool, ApiError> {
        self.forget(session);
        Ok(self.store.delete_session(&session.token_hash).await?)
    }

    /// Drops a session from this process's cache (it is read again).
    fn forget(&self, session: &Session) {
        if let Some(d) = token::digest_of_hash(&session.token_hash) {
            self.cache.invalidate(&d);
        }
    }

    /// Creates a user with an argon2-hashed password.
    pub async fn create_user(
        &self,
        username: &str,
        password_text: &str,
        role: Role,
        email: Option<&str>,
    ) -> Result<i64, ApiError> {
        validate_username(username)?;
        if password_text.len() < 8 {
            return Err(ApiError::bad_request(
                "password must be at least 8 characters",
            ));
        }
        let pw = password_text.to_string();
        let phc = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|e| {
                ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?
            .map_err(|e| {
                ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?;
        self.store
            .create_user(username, &phc, role.name(), email)
            .await
            .map_err(|e| match e {
                simcache_store::StoreError::Conflict(_) => ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    format!("user {username:?} already exists"),
                ),
                other => other.into(),
            })
    }

    /// Creates user `admin` with `password` unless an admin exists already.
    /// Returns true when it created one.
    pub async fn bootstrap_admin(&self, password_text: &str) -> Result<bool, ApiError> {
        if self.store.count_users(Some("admin")).await? > 0 {
            return Ok(false);
        }
        match self
            .create_user("admin", password_text, Role::Admin, None)
            .await
        {
            Ok(_) => Ok(true),
            // Another replica won the race: that is fine.
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn purge_expired(&self) -> Result<u64, ApiError> {
        Ok(self.store.purge_expired_sessions(now_ms()).await?)
    }
}

pub fn validate_username(u: &str) -> Result<(), ApiError> {
    let ok = !u.is_empty()
        && u.len() <= 128
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username must be 1-128 characters of letters, digits, '.', '_', '@' or '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metadata: Option<serde_json::Value>) -> SessionRecord {
        SessionRecord {
            token_hash: "h".into(),
            user_id: None,
            username: "run:lab/r1".into(),
            role: None,
            privileges: vec!["read_sfm".into()],
            created_at_ms: 0,
            expires_at_ms: 1,
            metadata,
        }
    }

    #[test]
    fn a_runs_scope_names_the_devices_it_reads_and_controls() {
        let scope = Scope {
            sfm_devices: vec!["lab/unit-7".into()],
            sfm_control: vec![],
        };
        let s = session_from_record(record(Some(
            serde_json::json!({"anonymous": true, "scope": scope}),
        )));
        assert_eq!(s.scope.as_ref(), Some(&scope), "kept with the session");
        assert!(s.may_use_device("lab", "unit-7", false));
        assert!(
            !s.may_use_device("lab", "unit-7", true),
            "no control declared"
        );
        assert!(!s.may_use_device("lab", "unit-8", false));
        assert!(
            !s.may_use_device("other", "unit-7", false),
            "another namespace's"
        );
        // Unscoped sessions (people, the pod-local one) are limited by their
        // privileges alone; a scope that does not read grants no device.
        let person = session_from_record(record(None));
        assert!(person.may_use_device("any", "thing", true));
        let garbled = session_from_record(record(Some(serde_json::json!({"scope": 7}))));
        assert!(!garbled.may_use_device("lab", "unit-7", false));
    }
}
