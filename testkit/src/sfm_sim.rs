//! A simulator of the SFM REST service (seismo-relay's FastAPI service), for
//! tests and benchmarks: a real HTTP server on an ephemeral loopback port
//! that speaks the routes and JSON shapes in `shared/reference/sfm-service.md`.
//!
//! - **Units** by connection key: serial, firmware, compliance config,
//!   events, and deterministic waveforms (up to several MiB).
//! - **Latency** like a unit on a cellular modem, scaled by `time_factor`
//!   (info 1 s, count probe 2 s, event list 2 s + 0.5 s per event, event 2 s,
//!   waveform 2 s + 1 s per 266 sample sets, status 2 s, start/stop 40 s).
//! - **One session at a time per unit**: a second concurrent call for a
//!   unit gets 503, and the simulator remembers the most it ever saw.
//! - **Faults**: offline, hang, flaky, erase, a new event, a serial swap.
//! - **Counters** per route at `GET /_sim/calls`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct SimEvent {
    pub index: i64,
    /// Seconds since 2026-01-01, shown as a broken-down timestamp.
    pub second: i64,
    /// Samples per channel.
    pub samples: usize,
    pub waveform_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// The unit does not answer: 503 "connection refused" at once.
    Offline,
    /// Calls hang until the client gives up.
    Hang,
    /// Every other call fails with 502.
    Flaky,
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub serial: String,
    pub firmware: String,
    pub config: BTreeMap<String, Value>,
    pub events: Vec<SimEvent>,
    pub monitoring: bool,
    pub fault: Fault,
    /// Sessions the unit takes at once (a real unit: 1).
    pub session_limit: usize,
    flaky_toggle: bool,
    next_second: i64,
}

impl Unit {
    pub fn new(serial: &str, events: usize, samples: usize) -> Unit {
        let mut u = Unit {
            serial: serial.into(),
            firmware: "S338.17".into(),
            config: BTreeMap::from([
                ("record_time".into(), json!(3)),
                ("sample_rate".into(), json!(1024)),
                ("trigger_level_geo".into(), json!(0.5)),
                ("alarm_level_geo".into(), json!(1.0)),
                ("max_range_geo".into(), json!(10.0)),
                ("project".into(), json!("Bridge 7")),
            ]),
            events: Vec::new(),
            monitoring: false,
            fault: Fault::None,
            session_limit: 1,
            flaky_toggle: false,
            next_second: 1000,
        };
        for _ in 0..events {
            u.add_event(samples);
        }
        u
    }

    /// Records a new event at the next index.
    pub fn add_event(&mut self, samples: usize) -> i64 {
        let index = self.events.len() as i64;
        self.next_second += 37;
        self.events.push(SimEvent {
            index,
            second: self.next_second,
            samples,
            waveform_key: None,
        });
        index
    }
}

#[derive(Default)]
struct Counters {
    calls: BTreeMap<String, u64>,
    active: HashMap<String, usize>,
    max_active: HashMap<String, usize>,
    refused_busy: u64,
}

pub struct SimState {
    units: Mutex<HashMap<String, Unit>>,
    counters: Mutex<Counters>,
    time_factor: f64,
    /// The route whose next call waits for `gate` (see `hold_next`).
    hold: Mutex<Option<&'static str>>,
    gate: tokio::sync::watch::Sender<bool>,
}

pub struct SfmSimulator {
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SfmSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SfmSimulator {
    /// Starts on an ephemeral loopback port. `time_factor` scales every
    /// latency (0.01: a 35 s waveform takes 0.35 s).
    pub async fn start(time_factor: f64) -> SfmSimulator {
        let state = Arc::new(SimState {
            units: Mutex::new(HashMap::new()),
            counters: Mutex::new(Counters::default()),
            time_factor,
            hold: Mutex::new(None),
            gate: tokio::sync::watch::channel(false).0,
        });
        let app = Router::new()
            .route(
                "/health",
                axum::routing::get(|| async {
                    axum::Json(json!({"status": "ok", "heartbeat": 1}))
                }),
            )
            .route("/_sim/calls", axum::routing::get(calls))
            .route(
                "/cache/stats",
                axum::routing::get(|| async {
                    axum::Json(
                        json!({"devices": 0, "events": 0, "waveforms": 0, "monitor_status": 0}),
                    )
                }),
            )
            .fallback(device)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SFM simulator");
        let addr = listener.local_addr().expect("simulator address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SfmSimulator { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds (or replaces) the unit at `conn_key` (e.g. `tcp:10.0.0.1:12345`).
    pub fn add_unit(&self, conn_key: &str, unit: Unit) {
        self.state.units.lock().insert(conn_key.into(), unit);
    }

    /// Changes a unit in place.
    pub fn with_unit<R>(&self, conn_key: &str, f: impl FnOnce(&mut Unit) -> R) -> R {
        let mut units = self.state.units.lock();
        f(units.get_mut(conn_key).expect("no such simulated unit"))
    }

    pub fn set_fault(&self, conn_key: &str, fault: Fault) {
        self.with_unit(conn_key, |u| u.fault = fault);
    }

    /// Erases the unit's events (their indexes will be re-used).
    pub fn erase(&self, conn_key: &str) {
        self.with_unit(conn_key, |u| u.events.clear());
    }

    /// Holds the next call of `route` (e.g. `info`) until [`Self::release`]:
    /// a test can then know that every request arrived while that call was
    /// under way, however slowly a loaded machine sends them.
    pub fn hold_next(&self, route: &'static str) {
        self.state.gate.send_replace(false);
        *self.state.hold.lock() = Some(route);
    }

    /// Lets a held call (and any later one) go on.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Calls of one route (e.g. `waveform`, `events`, `info`).
    pub fn calls(&self, route: &str) -> u64 {
        self.state
            .counters
            .lock()
            .calls
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.state.counters.lock().calls.values().sum()
    }

    /// The most sessions ever open at once with the unit.
    pub fn max_sessions(&self, conn_key: &str) -> usize {
        self.state
            .counters
            .lock()
            .max_active
            .get(conn_key)
            .copied()
            .unwrap_or(0)
    }

    /// Calls refused because the unit was busy with another session.
    pub fn refused_busy(&self) -> u64 {
        self.state.counters.lock().refused_busy
    }

    pub fn reset_counters(&self) {
        let mut c = self.state.counters.lock();
        c.calls.clear();
        c.max_active.clear();
        c.refused_busy = 0;
    }
}

async fn calls(State(s): State<Arc<SimState>>) -> Response {
    let c = s.counters.lock();
    axum::Json(json!({
        "calls": c.calls,
        "max_sessions": c.max_active,
        "refused_busy": c.refused_busy,
    }))
    .into_response()
}

fn detail(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "detail": msg }))).into_response()
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%2f", "/")))
        .collect()
}

/// Ends a session when dropped (also when the client gives up).
struct Session {
    state: Arc<SimState>,
    key: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut c = self.state.counters.lock();
        if let Some(n) = c.active.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn timestamp(second: i64) -> Value {
    let (d, rem) = (second / 86400, second % 86400);
    json!({"year": 2026, "month": 1 + (d / 28) % 12, "day": 1 + d % 28,
        "hour": rem / 3600, "minute": (rem / 60) % 60, "second": rem % 60})
}

fn event_json(u: &Unit, e: &SimEvent) -> Value {
    let mut v = json!({
        "index": e.index,
        "timestamp": timestamp(e.second),
        "peak_values": {"tran": 0.01 * (e.index + 1) as f64, "vert": 0.02, "long": 0.015, "micl": 0.0003,
            "peak_vector_sum": 0.03},
        "project_info": {"project": u.config.get("project").cloned().unwrap_or(Value::Null)},
        "record_type": "waveform",
        "total_samples": e.samples,
        "pretrig_samples": e.samples / 4,
        "rectime_seconds": 3,
    });
    if let Some(k) = &e.waveform_key {
        v["waveform_key"] = json!(k);
    }
    v
}

/// Deterministic int16 samples from the unit, event and channel.
fn samples(serial: &str, e: &SimEvent, channel: u64) -> String {
    let mut x: u64 = serial.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    }) ^ ((e.second as u64) << 8)
        ^ channel;
    let mut out = String::with_capacity(e.samples * 6 + 2);
    out.push('[');
    for i in 0..e.samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&((x % 20000) as i64 - 10000).to_string());
    }
    out.push(']');
    out
}

fn waveform_body(u: &Unit, e: &SimEvent) -> String {
    let ch: Vec<String> = (0..4).map(|c| samples(&u.serial, e, c)).collect();
    let head = json!({"index": e.index, "timestamp": timestamp(e.second), "total_samples": e.samples,
        "pretrig_samples": e.samples / 4, "rectime_seconds": 3});
    let head = head.to_string();
    format!(
        "{},\"raw_samples\":{{\"Tran\":{},\"Vert\":{},\"Long\":{},\"Mic\":{}}}}}",
        &head[..head.len() - 1],
        ch[0],
        ch[1],
        ch[2],
        ch[3]
    )
}

async fn device(State(s): State<Arc<SimState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query_map(req.uri().query().unwrap_or(""));
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let Some(rest) = path.strip_prefix("/device/") else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    let key = match (q.get("host"), q.get("port")) {
        (Some(h), None) => format!("tcp:{h}:{}", q.get("tcp_port").map_or("12345", |p| p)),
        (None, Some(p)) => format!("serial:{p}:{}", q.get("baud").map_or("38400", |b| b)),
        _ => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"detail": [{"loc": ["query", "host"], "msg": "field required", "type": "value_error.missing"}]})),
            )
                .into_response();
        }
    };
    let route = route_name(&method, rest);
    *s.counters
        .lock()
        .calls
        .entry(route.to_string())
        .or_default() += 1;
    let (fault, exists, limit) = {
        let mut units = s.units.lock();
        match units.get_mut(&key) {
            Some(u) => {
                let f = u.fault;
                if f == Fault::Flaky {
                    u.flaky_toggle = !u.flaky_toggle;
                }
                let f = if f == Fault::Flaky && !u.flaky_toggle {
                    Fault::None
                } else {
                    f
                };
                (f, true, u.session_limit)
            }
            None => (Fault::None, false, 1),
        }
    };
    if !exists || fault == Fault::Offline {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Connection refused by the unit's modem",
        );
    }
    if fault == Fault::Flaky {
        return detail(StatusCode::BAD_GATEWAY, "protocol error: checksum mismatch");
    }
    // One session per unit: the modem drops a second one.
    let _session = {
        let mut c = s.counters.lock();
        let n = c.active.entry(key.clone()).or_default();
        if *n >= limit {
            c.refused_busy += 1;
            return detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unit busy: another session is open",
            );
        }
        *n += 1;
        let now = *n;
        let m = c.max_active.entry(key.clone()).or_default();
        *m = (*m).max(now);
        Session {
            state: s.clone(),
            key: key.clone(),
        }
    };
    let held = {
        let mut hold = s.hold.lock();
        let this = route_name(&method, rest);
        (*hold == Some(this)).then(|| hold.take()).is_some()
    };
    if held {
        let mut open = s.gate.subscribe();
        while !*open.borrow_and_update() {
            if open.changed().await.is_err() {
                break;
            }
        }
    }
    if fault == Fault::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let snapshot = s.units.lock().get(&key).cloned();
    let Some(u) = snapshot else {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Connection refused by the unit's modem",
        );
    };
    let info = || {
        json!({"serial": u.serial, "firmware": u.firmware, "dsp": "10.72", "calibration_date": "2025-11-02",
            "compliance_config": u.config, "event_count": u.events.len()})
    };
    let wait = |secs: f64| tokio::time::sleep(Duration::from_secs_f64(secs * s.time_factor));
    let find = |i: &str| -> Option<SimEvent> {
        let i: i64 = i.parse().ok()?;
        u.events.iter().find(|e| e.index == i).cloned()
    };
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["info"]) | (Method::POST, ["connect"]) => {
            wait(1.0).await;
            axum::Json(info()).into_response()
        }
        (Method::GET, ["events"]) => {
            wait(2.0 + 0.5 * u.events.len() as f64).await;
            let events: Vec<Value> = u.events.iter().map(|e| event_json(&u, e)).collect();
            axum::Json(json!({"device": info(), "events": events, "event_count": u.events.len()}))
                .into_response()
        }
        (Method::GET, ["event", i]) => match find(i) {
            Some(e) => {
                wait(2.0).await;
                axum::Json(event_json(&u, &e)).into_response()
            }
            None => detail(StatusCode::UNPROCESSABLE_ENTITY, "event index out of range"),
        },
        (Method::GET, ["event", i, "waveform"]) => match find(i) {
            Some(e) => {
                wait(2.0 + e.samples as f64 / 266.0).await;
                (
                    [("content-type", "application/json")],
                    waveform_body(&u, &e),
                )
                    .into_response()
            }
            None => detail(StatusCode::UNPROCESSABLE_ENTITY, "event index out of range"),
        },
        (Method::GET, ["monitor", "status"]) => {
            wait(2.0).await;
            if u.monitoring {
                axum::Json(json!({"is_monitoring": true})).into_response()
            } else {
                axum::Json(json!({"is_monitoring": false, "battery_v": 12.6, "memory_total": 1048576, "memory_free": 900000 - 1000 * u.events.len()})).into_response()
            }
        }
        (Method::POST, ["monitor", op @ ("start" | "stop")]) => {
            wait(40.0).await;
            let on = *op == "start";
            if let Some(u) = s.units.lock().get_mut(&key) {
                u.monitoring = on;
            }
            axum::Json(json!({"is_monitoring": on})).into_response()
        }
        (Method::POST, ["config"] | ["config", "project"]) => {
            let fields: BTreeMap<String, Value> = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(_) => {
                    return detail(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "body must be a JSON object",
                    );
                }
            };
            if let Some(r) = fields.get("sample_rate")
                && ![1024, 2048, 4096].contains(&r.as_i64().unwrap_or(0))
            {
                return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        axum::Json(json!({"detail": [{"loc": ["body", "sample_rate"], "msg": "sample_rate must be 1024, 2048 or 4096", "type": "value_error"}]})),
                    )
                        .into_response();
            }
            wait(3.0).await;
            let mut units = s.units.lock();
            let Some(u) = units.get_mut(&key) else {
                return detail(StatusCode::SERVICE_UNAVAILABLE, "gone");
            };
            for (k, v) in fields {
                u.config.insert(k, v);
            }
            axum::Json(json!({"ok": true, "compliance_config": u.config})).into_response()
        }
        (Method::POST, ["events", "erase"]) => {
            wait(5.0).await;
            if let Some(u) = s.units.lock().get_mut(&key) {
                u.events.clear()
            }
            axum::Json(json!({"erased": true})).into_response()
        }
        (Method::GET, ["events", "storage_range"]) => {
            wait(2.0).await;
            axum::Json(json!({"first": 0, "last": u.events.len()})).into_response()
        }
        (Method::GET, ["call_home"]) | (Method::POST, ["call_home"]) => {
            wait(1.0).await;
            axum::Json(json!({"call_home": {"enabled": false}})).into_response()
        }
        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn route_name(method: &Method, rest: &str) -> &'static str {
    let segs: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["info"]) | ("POST", ["connect"]) => "info",
        ("GET", ["events"]) => "events",
        ("GET", ["event", _]) => "event",
        ("GET", ["event", _, "waveform"]) => "waveform",
        ("GET", ["monitor", "status"]) => "monitor_status",
        ("POST", ["monitor", _]) => "monitor_control",
        ("POST", ["config"] | ["config", "project"]) => "config",
        ("POST", ["events", "erase"]) => "erase",
        _ => "other",
    }
}
