//! Checks an SFMDevice spec beyond what the schema can say, and registers
//! it in the shared store. The operator and the stand-alone proxy's
//! `--device-file` use the same code.

use simcache_crds::sfm::{SFMDevice, SFMDeviceSpec};
use simcache_store::StoreError;
use simcache_store::sfm::{Registration, SfmStore};

/// Why a spec cannot be served, in words for a condition message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.address must set exactly one of tcp or serial")]
    NotOneAddress,
    #[error("spec.upstream.url must be an http:// or https:// URL, not {0:?}")]
    UrlScheme(String),
    #[error("spec.upstream.url needs a host and no user info, not {0:?}")]
    UrlHost(String),
    #[error("spec.upstream.url must not carry a query or fragment")]
    UrlQuery,
    #[error("spec.address.tcp.host is empty")]
    EmptyHost,
    #[error("spec.address.tcp.port {0} is not 1-65535")]
    TcpPort(i64),
    #[error("spec.address.serial.port is empty")]
    EmptySerialPort,
    #[error("spec.maxConcurrentSessions {0} is not 1-16")]
    Sessions(i64),
}

/// Why a device could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The spec is wrong: a condition message, not a retry.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error("cannot encode the device's settings: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The device's connection key, or why its spec cannot be served.
pub fn validate(spec: &SFMDeviceSpec) -> Result<String, SpecError> {
    let key = spec.conn_key().ok_or(SpecError::NotOneAddress)?;
    let url = spec.upstream.url.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| SpecError::UrlScheme(url.to_string()))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(SpecError::UrlHost(url.to_string()));
    }
    if rest.contains(['?', '#']) {
        return Err(SpecError::UrlQuery);
    }
    if let Some(t) = &spec.address.tcp {
        if t.host.trim().is_empty() {
            return Err(SpecError::EmptyHost);
        }
        if !(1..=65535).contains(&t.port) {
            return Err(SpecError::TcpPort(t.port));
        }
    }
    if let Some(s) = &spec.address.serial
        && s.port.trim().is_empty()
    {
        return Err(SpecError::EmptySerialPort);
    }
    if !(1..=16).contains(&spec.max_concurrent_sessions) {
        return Err(SpecError::Sessions(spec.max_concurrent_sessions));
    }
    Ok(key)
}

/// The transport parameters that name the unit, as SFM clients send them.
pub fn query_for(spec: &SFMDeviceSpec) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    match (&spec.address.tcp, &spec.address.serial) {
        (Some(t), _) => format!("host={}&tcp_port={}", enc(&t.host), t.port),
        (None, Some(s)) => format!("port={}&baud={}", enc(&s.port), s.baud),
        (None, None) => String::new(),
    }
}

/// Validates and registers a device under its connection key.
pub async fn register(
    store: &SfmStore,
    dev: &SFMDevice,
    now_ms: i64,
) -> Result<(String, Registration), RegisterError> {
    let key = validate(&dev.spec)?;
    let ns = dev
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = dev.metadata.name.clone().unwrap_or_default();
    let uid = dev
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("local:{ns}/{name}"));
    let settings = serde_json::to_string(&dev.spec)?;
    let r = store
        .register(&key, &ns, &name, &uid, &settings, now_ms)
        .await?;
    Ok((key, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_crds::sfm::*;

    fn spec() -> SFMDeviceSpec {
        serde_json::from_value(serde_json::json!({
            "upstream": {"url": "http://sfm.field:8200"},
            "address": {"tcp": {"host": "10.1.2.3"}}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_the_connection_key() {
        let s = spec();
        assert_eq!(s.upstream.timeout_seconds, 120);
        assert_eq!(s.max_concurrent_sessions, 1);
        assert_eq!(s.cache.monitor_status_ttl_seconds, 30);
        assert_eq!(s.cache.events_fresh_seconds, 0);
        assert_eq!(validate(&s).unwrap(), "tcp:10.1.2.3:12345");
        let mut s = spec();
        s.address = Address {
            tcp: None,
            serial: Some(SerialAddress {
                port: "/dev/ttyUSB0".into(),
                baud: 38400,
            }),
        };
        assert_eq!(validate(&s).unwrap(), "serial:/dev/ttyUSB0:38400");
        // The probe's query names the same unit the proxy's parser reads.
        let (t, _) = crate::route::parse_query(&query_for(&s)).unwrap();
        assert_eq!(t.conn_key(), "serial:/dev/ttyUSB0:38400");
        let (t, _) = crate::route::parse_query(&query_for(&spec())).unwrap();
        assert_eq!(t.conn_key(), "tcp:10.1.2.3:12345");
    }

    #[test]
    fn bad_specs_are_explained() {
        let mut s = spec();
        s.address.serial = Some(SerialAddress {
            port: "COM1".into(),
            baud: 9600,
        });
        assert_eq!(validate(&s), Err(SpecError::NotOneAddress));
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        let mut s = spec();
        s.upstream.url = "ftp://x".into();
        assert_eq!(validate(&s), Err(SpecError::UrlScheme("ftp://x".into())));
        let mut s = spec();
        s.upstream.url = "http://user:pw@x".into();
        let e = validate(&s).unwrap_err();
        assert_eq!(e, SpecError::UrlHost("http://user:pw@x".into()));
        assert!(e.to_string().contains("user info"));
        let mut s = spec();
        s.max_concurrent_sessions = 0;
        assert_eq!(validate(&s), Err(SpecError::Sessions(0)));
        assert!(e.to_string().contains("spec.upstream.url"));
    }
}
