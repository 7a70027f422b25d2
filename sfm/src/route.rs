//! What a request to the proxy asks for: the unit (from the transport
//! parameters, exactly as the SFM service reads them) and the operation
//! (from the method and path). Pure; bad parameters become FastAPI-shaped
//! 422 details naming the parameter.

use serde_json::{Value, json};

/// How the SFM service reaches the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp { host: String, port: u16 },
    Serial { port: String, baud: u32 },
}

impl Transport {
    /// The SFM service's own key for the unit.
    pub fn conn_key(&self) -> String {
        match self {
            Transport::Tcp { host, port } => format!("tcp:{host}:{port}"),
            Transport::Serial { port, baud } => format!("serial:{port}:{baud}"),
        }
    }
}

/// The query flags the proxy acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub force: bool,
    pub debug: bool,
}

/// A parameter the proxy refuses, as FastAPI would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub location: &'static str,
    pub param: String,
    pub message: String,
    pub kind: &'static str,
}

impl ParamError {
    fn query(param: &str, message: impl Into<String>, kind: &'static str) -> Self {
        ParamError {
            location: "query",
            param: param.into(),
            message: message.into(),
            kind,
        }
    }

    /// `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`
    pub fn body(&self) -> Value {
        json!({ "detail": [{
            "loc": [self.location, self.param],
            "msg": self.message,
            "type": self.kind,
        }]})
    }
}

fn parse_bool(param: &str, v: &str) -> Result<bool, ParamError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ParamError::query(
            param,
            "value could not be parsed to a boolean",
            "type_error.bool",
        )),
    }
}

fn parse_int<T: std::str::FromStr>(param: &str, v: &str) -> Result<T, ParamError> {
    v.trim().parse::<T>().map_err(|_| {
        ParamError::query(
            param,
            format!("value is not a valid integer in range: {v:?}"),
            "type_error.integer",
        )
    })
}

/// Reads the transport parameters and flags from a query string.
pub fn parse_query(query: &str) -> Result<(Transport, Flags), ParamError> {
    let pairs: Vec<(String, String)> = url_pairs(query);
    let get = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
    let mut flags = Flags::default();
    if let Some(v) = get("force") {
        flags.force = parse_bool("force", v)?;
    }
    if let Some(v) = get("debug") {
        flags.debug = parse_bool("debug", v)?;
    }
    let host = get("host").filter(|h| !h.is_empty());
    let port = get("port").filter(|p| !p.is_empty());
    let transport = match (host, port) {
        (Some(_), Some(_)) => {
            return Err(ParamError::query(
                "port",
                "give either host (TCP) or port (serial), not both",
                "value_error.conflict",
            ));
        }
        (None, None) => {
            return Err(ParamError::query(
                "host",
                "field required: host (TCP) or port (serial) names the unit",
                "value_error.missing",
            ));
        }
        (Some(h), None) => {
            if !valid_host(h) {
                return Err(ParamError::query(
                    "host",
                    "not a host name or IP address",
                    "value_error.host",
                ));
            }
            let port = match get("tcp_port") {
                Some(p) => parse_int::<u16>("tcp_port", p)?,
                None => 12345,
            };
            if port == 0 {
                return Err(ParamError::query(
                    "tcp_port",
                    "ensure this value is between 1 and 65535",
                    "value_error.number",
                ));
            }
            Transport::Tcp {
                host: h.clone(),
                port,
            }
        }
        (None, Some(p)) => {
            let baud = match get("baud") {
                Some(b) => parse_int::<u32>("baud", b)?,
                None => 38400,
            };
            Transport::Serial {
                port: p.clone(),
                baud,
            }
        }
    };
    Ok((transport, flags))
}

fn valid_host(h: &str) -> bool {
    h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Decodes `a=b&c=d` (percent-decoding, `+` as space).
pub fn url_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// What a `/device/*` request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /device/info`, `POST /device/connect`.
    Info,
    /// `GET /device/events`.
    Events,
    /// `GET /device/event/{idx}`.
    Event(i64),
    /// `GET /device/event/{idx}/waveform`.
    Waveform(i64),
    /// `GET /device/monitor/status`.
    Status,
    /// `POST /device/monitor/start|stop`: drops the cached status.
    Monitor,
    /// `POST /device/config[/project]`: makes info and events stale.
    Config,
    /// `POST /device/events/erase`: unlinks every event index.
    Erase,
    /// Any other `/device/*` route: passed through uncached.
    PassThrough,
}

impl Op {
    /// The route label of metrics (a fixed set, never the raw path).
    pub fn route(self) -> &'static str {
        match self {
            Op::Info => "info",
            Op::Events => "events",
            Op::Event(_) => "event",
            Op::Waveform(_) => "waveform",
            Op::Status => "monitor_status",
            Op::Monitor => "monitor_control",
            Op::Config => "config",
            Op::Erase => "erase",
            Op::PassThrough => "other",
        }
    }

    /// Whether the operation writes to the unit.
    pub fn is_write(self) -> bool {
        matches!(self, Op::Monitor | Op::Config | Op::Erase)
    }

    /// Whether it is answered from the cache.
    pub fn is_cached_read(self) -> bool {
        matches!(
            self,
            Op::Info | Op::Events | Op::Event(_) | Op::Waveform(_) | Op::Status
        )
    }
}

/// Classifies a request under `/device/`. `Err` for a path no SFM client
/// sends (a traversal, an index that is not a non-negative integer).
pub fn classify(method: &http::Method, path: &str) -> Result<Op, ParamError> {
    let rest = path.strip_prefix("/device/").unwrap_or("");
    if rest.is_empty()
        || rest
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('%'))
    {
        return Err(ParamError {
            location: "path",
            param: "path".into(),
            message: format!("not an SFM device route: {path}"),
            kind: "value_error.path",
        });
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let get = method == http::Method::GET;
    let post = method == http::Method::POST;
    let index = |s: &str| -> Result<i64, ParamError> {
        match s.parse::<i64>() {
            Ok(i) if i >= 0 => Ok(i),
            _ => Err(ParamError {
                location: "path",
                param: "idx".into(),
                message: format!("event index must be a non-negative integer, not {s:?}"),
                kind: "value_error.number.not_ge",
            }),
        }
    };
    Ok(match (segs.as_slice(), get, post) {
        (["info"], true, _) | (["connect"], _, true) => Op::Info,
        (["events"], true, _) => Op::Events,
        (["event", i], true, _) => Op::Event(index(i)?),
        (["event", i, "waveform"], true, _) => Op::Waveform(index(i)?),
        (["monitor", "status"], true, _) => Op::Status,
        (["monitor", "start" | "stop"], _, true) => Op::Monitor,
        (["config"] | ["config", "project"], _, true) => Op::Config,
        (["events", "erase"], _, true) => Op::Erase,
        _ => Op::PassThrough,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn connection_keys_match_the_sfm_service() {
        let (t, f) = parse_query("host=10.0.0.5").unwrap();
        assert_eq!(t.conn_key(), "tcp:10.0.0.5:12345");
        assert_eq!(f, Flags::default());
        let (t, f) = parse_query("port=%2Fdev%2FttyUSB0&baud=9600&force=true").unwrap();
        assert_eq!(t.conn_key(), "serial:/dev/ttyUSB0:9600");
        assert!(f.force);
        let (t, _) = parse_query("port=COM5").unwrap();
        assert_eq!(t.conn_key(), "serial:COM5:38400");
        let (t, _) = parse_query("host=modem.example&tcp_port=9000&debug=1").unwrap();
        assert_eq!(t.conn_key(), "tcp:modem.example:9000");
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        let param = |q: &str| parse_query(q).unwrap_err().param;
        assert_eq!(param(""), "host");
        assert_eq!(param("force=true"), "host");
        assert_eq!(param("host=a&port=COM1"), "port");
        assert_eq!(param("host=a&tcp_port=abc"), "tcp_port");
        assert_eq!(param("host=a&tcp_port=70000"), "tcp_port");
        assert_eq!(param("host=a&tcp_port=0"), "tcp_port");
        assert_eq!(param("port=COM1&baud=fast"), "baud");
        assert_eq!(param("host=a&force=maybe"), "force");
        assert_eq!(param("host=a/b"), "host");
        let body = parse_query("host=a&tcp_port=x").unwrap_err().body();
        assert_eq!(body["detail"][0]["loc"], json!(["query", "tcp_port"]));
    }

    #[test]
    fn routes_are_classified_and_bad_indexes_refused() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(classify(&get, "/device/info").unwrap(), Op::Info);
        assert_eq!(classify(&post, "/device/connect").unwrap(), Op::Info);
        assert_eq!(classify(&get, "/device/events").unwrap(), Op::Events);
        assert_eq!(classify(&get, "/device/event/7").unwrap(), Op::Event(7));
        assert_eq!(
            classify(&get, "/device/event/7/waveform").unwrap(),
            Op::Waveform(7)
        );
        assert_eq!(
            classify(&get, "/device/monitor/status").unwrap(),
            Op::Status
        );
        assert_eq!(
            classify(&post, "/device/monitor/stop").unwrap(),
            Op::Monitor
        );
        assert_eq!(
            classify(&post, "/device/config/project").unwrap(),
            Op::Config
        );
        assert_eq!(classify(&post, "/device/events/erase").unwrap(), Op::Erase);
        assert_eq!(
            classify(&get, "/device/call_home").unwrap(),
            Op::PassThrough
        );
        assert_eq!(classify(&get, "/device/event/-1").unwrap_err().param, "idx");
        assert_eq!(
            classify(&get, "/device/event/x/waveform")
                .unwrap_err()
                .param,
            "idx"
        );
        assert!(classify(&get, "/device/../admin").is_err());
        assert!(classify(&get, "/device//info").is_err());
        assert!(classify(&get, "/device/%2e%2e/x").is_err());
    }

    #[test]
    fn percent_decoding() {
        let pairs = url_pairs("host=a%20b+c&x=100%&y=%zz&&flag");
        let want = [("host", "a b c"), ("x", "100%"), ("y", "%zz"), ("flag", "")];
        assert_eq!(
            pairs,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
    }
}
