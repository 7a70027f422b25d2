//! Loopback ports for servers that cannot bind port 0 and report it
//! (etcd, kube-apiserver, PostgreSQL, ChromeDriver, Prometheus, SeaweedFS).
//!
//! A port found free here can be taken by another process before the server
//! binds it, so every caller starts its server in a loop that tries again on
//! new ports when the server exits early.

/// One loopback port free at the time of the call.
pub fn free_port() -> Result<u16, String> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct loopback ports free at the time of the call (all held until
/// all are found, so none repeats).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("no free loopback port: {e}"))?;
        ports.push(
            l.local_addr()
                .map_err(|e| format!("no free loopback port: {e}"))?
                .port(),
        );
        held.push(l);
    }
    Ok(ports)
}

/// How many times a server is started on fresh ports before giving up.
pub const ATTEMPTS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let p = free_ports(4).unwrap();
        let mut sorted = p.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{p:?}");
        for port in p {
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
