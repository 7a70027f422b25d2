//! Applies other processes' cache changes (PostgreSQL LISTEN/NOTIFY) to the
//! memory tier. Own writes are skipped: they were applied when made.

use std::sync::Arc;

use simcache_store::events::{self, CacheEvent, Signal};
use tokio::sync::mpsc;

use super::CacheService;

pub fn spawn(
    service: Arc<CacheService>,
    config: simcache_store::postgres::PgConfig,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel(1024);
    let listener = events::listen(config, tx);
    tokio::spawn(async move {
        while let Some(sig) = rx.recv().await {
            apply(&service, sig);
        }
        listener.abort();
    })
}

pub fn apply(service: &CacheService, sig: Signal) {
    let hot = service.hot();
    match sig {
        Signal::Connected => {
            tracing::info!("cache event channel connected; memory tier enabled");
            hot.set_coherent(true);
            service.metrics().coherence_connected.set(1);
        }
        Signal::Lost => {
            hot.set_coherent(false);
            service.metrics().coherence_connected.set(0);
        }
        Signal::Event(env) if env.origin == service.origin() => {}
        Signal::Event(env) => match env.event {
            CacheEvent::Put { key } | CacheEvent::Delete { key } => hot.remove(&key),
            CacheEvent::Clear => hot.clear(),
            CacheEvent::Invalidate { filter } => hot.invalidate_remote(&filter),
        },
    }
}
