//! The one HTTP server every simcache listener runs on: hyper's HTTP/1 with
//! the limits a server facing hostile or broken clients needs.
//!
//! - **Header read timeout**: a request's headers must arrive within it
//!   (hyper's own timer), so half-sent requests do not hold a socket forever.
//! - **Idle timeout**: a connection with no bytes in either direction for
//!   this long is closed (keep-alive connections included).
//! - **Body read timeout**: a request body must arrive whole within it.
//! - **Connection cap**: beyond it a new connection gets an immediate 503
//!   and is closed; nothing queues.
//!
//! Graceful shutdown stops accepting, lets in-flight requests finish and
//! closes idle connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

/// The limits of one listener. Defaults are what a user would choose for
/// an API on a cluster network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// The limits as flags (and environment variables), the same for every
/// binary.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "SIMCACHE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay silent (keep-alive included) before it is closed.
    #[arg(long, env = "SIMCACHE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a whole request body.
    #[arg(long, env = "SIMCACHE_BODY_READ_TIMEOUT_SECS", default_value_t = 60)]
    pub body_read_timeout_secs: u64,
    /// Open connections at most; beyond it new ones get 503 at once.
    #[arg(long, env = "SIMCACHE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }
}

/// Connection metrics of a listener.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounter,
    timed_out: IntCounter,
}

impl ConnectionMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let open = IntGauge::new("simcache_http_connections", "Open HTTP connections")?;
        let refused = IntCounter::new(
            "simcache_http_connections_refused_total",
            "Connections refused because --max-connections were open",
        )?;
        let timed_out = IntCounter::new(
            "simcache_http_connections_timed_out_total",
            "Connections closed for silence (--idle-timeout-secs)",
        )?;
        r.register(Box::new(open.clone()))?;
        r.register(Box::new(refused.clone()))?;
        r.register(Box::new(timed_out.clone()))?;
        Ok(ConnectionMetrics {
            open,
            refused,
            timed_out,
        })
    }
}

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 45\r\nconnection: close\r\n\r\n{\"error\":\"too many connections; retry later\"}";

/// Serves `listener` until `shutdown` resolves; `make` gives the service of
/// each connection from its peer's address.
pub async fn serve<M, S>(
    listener: TcpListener,
    limits: Limits,
    metrics: Option<ConnectionMetrics>,
    make: M,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: Service<axum::extract::Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: back off, keep serving.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(m) = &metrics {
                m.refused.inc();
            }
            // Best effort, never waiting: the socket buffer takes it or not.
            let _ = stream.try_write(REFUSED);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = make(peer);
        let body_timeout = limits.body_read_timeout;
        let hyper_svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            // A request without a body (most GETs) needs no timer.
            let req = req.map(|b| {
                if http_body::Body::is_end_stream(&b) {
                    Body::new(b)
                } else {
                    Body::new(TimedBody::new(b, body_timeout))
                }
            });
            svc.clone().oneshot(req)
        });
        let activity = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
            started,
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(io, hyper_svc);
        let conn = graceful.watch(conn);
        let metrics = metrics.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            if let Some(m) = &metrics {
                m.open.inc();
            }
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = silent_for(idle, &activity, started) => {
                    if let Some(m) = &metrics {
                        m.timed_out.inc();
                    }
                    tracing::debug!(%peer, "connection idle; closed");
                }
            }
            if let Some(m) = &metrics {
                m.open.dec();
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Resolves once no byte moved for `idle`.
async fn silent_for(idle: Duration, activity: &AtomicU64, started: Instant) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let quiet = started.elapsed().saturating_sub(last);
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// A router (or any service) with the peer's address in each request's
/// extensions, as axum's `ConnectInfo` extractor reads it.
pub fn with_peer(router: axum::Router, peer: SocketAddr) -> WithPeer {
    WithPeer { router, peer }
}

#[derive(Clone)]
pub struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
}

impl Service<axum::extract::Request> for WithPeer {
    type Response = Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(req)
    }
}

/// A socket that notes when bytes last moved (ms since `started`).
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole before a deadline. The timer is
/// armed only when the body is not already there.
struct TimedBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, within: Duration) -> Self {
        TimedBody {
            inner,
            deadline: tokio::time::Instant::now() + within,
            timer: None,
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
pub struct BodyTimeout;

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
