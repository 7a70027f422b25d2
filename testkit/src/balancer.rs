//! A TCP balancer in front of several servers, as a Kubernetes Service is
//! in front of a Deployment's replicas: each new connection goes to the
//! next server that accepts it, so a server that died is skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    /// Listens on a loopback port and spreads connections over `servers`.
    pub async fn start(servers: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (servers, next) = (servers.clone(), next.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..servers.len() {
                        let addr = servers[(first + i) % servers.len()];
                        if let Ok(mut server) = TcpStream::connect(addr).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Balancer { url, task })
    }
}
