//! The accept loop (docs/security.md, "Connections"). `axum::serve` has no timer, no global
//! connection cap and no per-address cap, so a few thousand half-sent requests could hold
//! every file descriptor. Here every TCP connection holds a [`ConnectionPermit`] (global and
//! per-address), request heads must arrive within `header_read_timeout`, and a websocket
//! keeps its permit for as long as it lives (the permit rides in the request's extensions).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::client_addr::TrustedProxies;

/// Limits of the accept loop.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub connections_per_address: u32,
    pub header_read_timeout: Duration,
}

/// Counts open TCP connections per peer address. Trusted proxies are not counted: behind
/// one, every visitor shares its address, and the per-visitor limits use the forwarded one.
pub struct AddressCounts {
    per_address: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl AddressCounts {
    pub fn new(per_address: u32) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection from one address; released on drop, whatever path ends it.
struct AddressSlot {
    counts: Arc<AddressCounts>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What one accepted TCP connection holds. Cloned (as an `Arc`) into a websocket's task, so
/// an upgraded connection keeps counting after hyper has handed its socket over.
pub struct ConnectionPermit {
    _global: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
}

/// Raises the soft open-file limit to the hard one and returns the usable connection cap:
/// the configured one, or fewer when descriptors would run out first (the database, the
/// model files and logs need some too).
pub fn connection_cap(configured: usize) -> usize {
    const RESERVED_FDS: u64 = 128;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
    let fds = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
            limit.rlim_cur
        } else {
            1024
        }
    };
    let usable = fds.saturating_sub(RESERVED_FDS).max(16) as usize;
    if usable < configured {
        tracing::warn!(
            configured,
            usable,
            open_file_limit = fds,
            "the open-file limit caps connections below limits.max_connections"
        );
    }
    configured.min(usable)
}

/// Serves `app` until `shutdown` turns true, then asks every connection to finish (idle
/// keep-alive connections close at once; websockets are closed by their own tasks).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    trusted: Arc<TrustedProxies>,
    counts: Arc<AddressCounts>,
    mut shutdown: watch::Receiver<bool>,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE/ENFILE: wait a little instead of spinning; the cap should prevent it.
                tracing::warn!(error = %e, "accept failed");
                metrics::counter!("kizuna_accept_errors_total").increment(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(global_permit) = global.clone().try_acquire_owned() else {
            metrics::counter!("kizuna_rejected_connections_total", "reason" => "global")
                .increment(1);
            drop(tcp);
            continue;
        };
        let address_slot = if trusted.contains(peer.ip()) {
            None
        } else {
            match counts.try_open(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!("kizuna_rejected_connections_total", "reason" => "per_address")
                        .increment(1);
                    drop(tcp);
                    continue;
                }
            }
        };
        let permit = Arc::new(ConnectionPermit {
            _global: global_permit,
            _address: address_slot,
        });
        // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle's algorithm and
        // the client's delayed ACK add ~40 ms to every turn.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let mut stop = shutdown.clone();
        let header_read_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(permit.clone());
                    app.clone().oneshot(request)
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result, peer),
                _ = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection.as_mut()).await;
                }
            }
        });
    }
    drop(listener);
    // Connections still finishing a response get a moment; websockets were closed by the hub.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Resolves once shutdown is signalled (the borrow of the flag is not held across awaits).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        if e.is_timeout() {
            metrics::counter!("kizuna_header_timeouts_total").increment(1);
        }
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_are_released_on_drop() {
        let counts = AddressCounts::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = counts.try_open(ip).unwrap();
        let _b = counts.try_open(ip).unwrap();
        assert!(counts.try_open(ip).is_none());
        drop(a);
        assert_eq!(counts.open_from(ip), 1);
        assert!(counts.try_open(ip).is_some());
    }
}
