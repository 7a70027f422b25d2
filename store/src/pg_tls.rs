//! Connection settings for PostgreSQL, TLS included, with libpq's meaning of
//! `sslmode`: `disable`, `prefer` (the default: TLS when the server offers
//! it, unverified), `require` (TLS, unverified unless `sslrootcert` is
//! given, then as `verify-ca`), `verify-ca` (the chain must lead to a
//! trusted CA) and `verify-full` (and name the host). `sslrootcert`,
//! `sslcert` and `sslkey` name PEM files, typically a mounted Secret;
//! `sslrootcert=system` uses the machine's trust store.
//!
//! tokio-postgres itself knows only disable/prefer/require, so the libpq
//! parameters are taken off the connection string here and turned into a
//! rustls configuration.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(invalid(
                    "sslmode=allow is not supported; use disable, prefer, require, verify-ca or verify-full",
                ));
            }
            other => {
                return Err(invalid(&format!(
                    "unknown sslmode `{other}`; use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    pub root_cert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsParams {
    /// The verification actually done: libpq treats `require` with a root
    /// certificate as `verify-ca`.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (m, _) => m,
        }
    }
}

fn invalid(msg: &str) -> StoreError {
    StoreError::Misconfigured(format!("invalid database URL: {msg}"))
}

/// Splits the libpq TLS parameters off a connection string (URL or
/// `key=value` form), returning the rest for tokio-postgres.
pub fn split_tls_params(conn: &str) -> Result<(String, TlsParams)> {
    let mut params = TlsParams {
        mode: SslMode::Prefer,
        root_cert: None,
        cert: None,
        key: None,
    };
    let mut take = |k: &str, v: String| -> Result<bool> {
        match k {
            "sslmode" => params.mode = SslMode::parse(&v)?,
            "sslrootcert" => params.root_cert = Some(v),
            "sslcert" => params.cert = Some(PathBuf::from(v)),
            "sslkey" => params.key = Some(PathBuf::from(v)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            None => conn.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_encoding::percent_decode_str(v)
                        .decode_utf8()
                        .map_err(|_| invalid(&format!("`{k}` is not UTF-8")))?;
                    if !take(k, v.into_owned())? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in conn.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if !take(k.trim(), v.trim_matches('\'').to_string())? {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    if params.cert.is_some() != params.key.is_some() {
        return Err(invalid(
            "sslcert and sslkey go together: give both or neither",
        ));
    }
    Ok((rest, params))
}

/// A database's connection settings: what tokio-postgres needs, and the TLS
/// connector that carries out `sslmode`. Cheap to clone; every connection
/// (pool and LISTEN alike) is made from one.
#[derive(Clone)]
pub struct PgConfig {
    pub config: tokio_postgres::Config,
    pub tls: TlsParams,
    connector: MakeRustlsConnect,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config redacts the password in its Debug.
        f.debug_struct("PgConfig")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PgConfig {
    /// Parses a connection string and loads the certificates it names.
    pub fn parse(conn: &str) -> Result<PgConfig> {
        let (rest, tls) = split_tls_params(conn)?;
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e| invalid(&format!("{e}")))?;
        config.ssl_mode(match tls.mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            _ => WireMode::Require,
        });
        let connector = MakeRustlsConnect::new(client_config(&tls)?);
        Ok(PgConfig {
            config,
            tls,
            connector,
        })
    }

    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// The first host, for messages.
    pub fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }

    /// Opens one connection (for LISTEN): the client and the driver.
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, PgConnection)> {
        self.config
            .connect(self.connector())
            .await
            .map_err(|e| self.explain(&e.to_string()))
    }

    /// A connection error in words a user can act on. `Misconfigured` is
    /// what retrying cannot fix (the TLS settings disagree with the server).
    pub fn explain(&self, err: &str) -> StoreError {
        let mode = self.tls.effective_mode().as_str();
        let host = self.host();
        let fatal = StoreError::Misconfigured;
        if err.contains("no encryption") && self.tls.mode == SslMode::Disable {
            return fatal(format!(
                "the server at {host} accepts only TLS connections and sslmode=disable: set sslmode=require, or verify-full with sslrootcert ({err})"
            ));
        }
        if err.contains("server does not support TLS") {
            return fatal(format!(
                "sslmode={mode} needs TLS, but the server at {host} does not offer it ({err})"
            ));
        }
        if err.contains("TLS handshake") || err.contains("certificate") {
            let why = if err.contains("NotValidForName") || err.contains("not valid for name") {
                format!("its certificate does not name the host `{host}`")
            } else if err.contains("UnknownIssuer") || err.contains("unknown issuer") {
                "its certificate is not signed by a CA in sslrootcert".to_string()
            } else {
                "the TLS handshake failed".to_string()
            };
            return fatal(format!(
                "cannot verify the PostgreSQL server at {host} (sslmode={mode}): {why} ({err})"
            ));
        }
        StoreError::Unavailable(err.to_string().into())
    }
}

/// The driver half of a connection made by [`PgConfig::connect`].
pub type PgConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(tls: &TlsParams) -> Result<rustls::ClientConfig> {
    let tls_err = |what: &str, e: &dyn std::fmt::Display| invalid(&format!("{what}: {e}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS", &e))?;
    let mode = tls.effective_mode();
    let builder = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider()))),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(tls.root_cert.as_deref())?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| tls_err("sslrootcert", &e))?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            }
        }
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| tls_err(&format!("sslcert {}", cert.display()), &e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err(&format!("sslkey {}", key.display()), &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_err("sslcert/sslkey", &e))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn roots(root_cert: Option<&str>) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err(invalid(
                    "sslmode verify-ca/verify-full needs sslrootcert (no system CA certificates found)",
                ));
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| invalid(&format!("sslrootcert {path}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(invalid(&format!(
                    "sslrootcert {path} holds no usable certificate"
                )));
            }
        }
    }
    Ok(store)
}

/// `prefer` and `require`: encrypted, the server's certificate not checked
/// (libpq's meaning), the handshake's signatures still are.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not
/// checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_misconfigured(e: &StoreError) -> bool {
        matches!(e, StoreError::Misconfigured(_))
    }

    #[test]
    fn libpq_parameters_are_taken_off_the_url() {
        let (rest, p) = split_tls_params(
            "postgresql://u:p@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&application_name=a",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:p@db:5432/x?application_name=a");
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca.crt"));
        let (rest, p) = split_tls_params("postgres://db/x").unwrap();
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://db/x", SslMode::Prefer)
        );
        let (rest, p) =
            split_tls_params("host=db dbname=x sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=db dbname=x");
        assert_eq!(
            p.effective_mode(),
            SslMode::VerifyCa,
            "libpq: require + root = verify-ca"
        );
    }

    #[test]
    fn bad_tls_parameters_are_named() {
        for (url, want) in [
            ("postgres://db/x?sslmode=verify", "unknown sslmode `verify`"),
            (
                "postgres://db/x?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            (
                "postgres://db/x?sslcert=/c.pem",
                "sslcert and sslkey go together",
            ),
        ] {
            let e = split_tls_params(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
        let e =
            PgConfig::parse("postgres://db/x?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
                .unwrap_err()
                .to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn errors_say_what_to_change() {
        let c = PgConfig::parse("postgres://db.example/x?sslmode=disable").unwrap();
        let e = c.explain("db error: FATAL: no pg_hba.conf entry for host \"1.2.3.4\", user \"u\", database \"x\", no encryption");
        assert!(is_misconfigured(&e));
        assert!(
            e.to_string().contains("accepts only TLS connections"),
            "{e}"
        );
        let c = PgConfig::parse("postgres://db.example/x?sslmode=require").unwrap();
        let e =
            c.explain("error performing TLS handshake: invalid peer certificate: NotValidForName");
        assert!(is_misconfigured(&e));
        assert!(
            e.to_string()
                .contains("does not name the host `db.example`"),
            "{e}"
        );
        let c = PgConfig::parse("postgres://db.example/x").unwrap();
        assert!(!is_misconfigured(&c.explain("connection refused")));
    }
}
