//! Cache change events shared between processes on one PostgreSQL database.
//!
//! Every write to the cache tables publishes an event with `pg_notify` inside
//! the writing transaction, so it is delivered exactly when the write becomes
//! visible. Memory tiers subscribe with [`listen`] and drop what changed.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::cache::InvalidationFilter;
use crate::error::{Result, StoreError};

pub const CHANNEL: &str = "simcache_cache_events";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CacheEvent {
    Put { key: String },
    Delete { key: String },
    Clear,
    Invalidate { filter: InvalidationFilter },
}

/// What travels on the channel: the event and the process that caused it, so a
/// process can skip the echo of its own writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: String,
    #[serde(flatten)]
    pub event: CacheEvent,
}

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal<T = Envelope> {
    /// LISTEN is in place: from now on every change is reported.
    Connected,
    /// The channel is gone; changes may be missed until the next `Connected`.
    Lost,
    Event(T),
}

/// Keeps a LISTEN connection on the cache channel open for the life of the
/// returned task, reconnecting with backoff, and forwards what it hears to
/// `tx`. Ends when `tx` is closed.
pub fn listen(
    config: crate::postgres::PgConfig,
    tx: mpsc::Sender<Signal>,
) -> tokio::task::JoinHandle<()> {
    listen_on(config, CHANNEL, tx)
}

/// [`listen`] on any channel whose payloads are JSON of `T`.
pub fn listen_on<T>(
    config: crate::postgres::PgConfig,
    channel: &'static str,
    tx: mpsc::Sender<Signal<T>>,
) -> tokio::task::JoinHandle<()>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    tokio::spawn(async move {
        let mut delays = crate::retry::delays(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match listen_once(&config, channel, &tx).await {
                Ok(()) => return, // subscriber gone
                Err(e) => {
                    tracing::warn!(error = %e, "cache event channel lost; memory tier bypassed until it is back");
                    if tx.send(Signal::<T>::Lost).await.is_err() {
                        return;
                    }
                }
            }
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
        }
    })
}

async fn listen_once<T: serde::de::DeserializeOwned>(
    config: &crate::postgres::PgConfig,
    channel: &str,
    tx: &mpsc::Sender<Signal<T>>,
) -> Result<()> {
    let (client, mut conn) = config.connect().await?;
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if msg_tx.send(Ok(n.payload().to_string())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = msg_tx.send(Err(StoreError::from(e)));
                    return;
                }
            }
        }
        let _ = msg_tx.send(Err(StoreError::Unavailable(
            "listen connection closed".into(),
        )));
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        if tx.send(Signal::Connected).await.is_err() {
            return Ok(());
        }
        loop {
            tokio::select! {
                m = msg_rx.recv() => match m {
                    Some(Ok(payload)) => match serde_json::from_str::<T>(&payload) {
                        Ok(env) => if tx.send(Signal::Event(env)).await.is_err() { return Ok(()) },
                        Err(e) => tracing::warn!(error = %e, "ignoring malformed cache event"),
                    },
                    Some(Err(e)) => return Err(e),
                    None => return Err(StoreError::Unavailable("listen connection closed".into())),
                },
                _ = tx.closed() => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    result
}
