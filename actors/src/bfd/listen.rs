//! The node's BFD receiver: UDP 3784 for IPv4 and IPv6. A datagram must carry a valid Control
//! packet and arrive with TTL 255 (RFC 5881 §5); it goes to the session its Your
//! Discriminator names, or, while that is 0, to the session of its source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::Addr;
use tracing::{debug, warn};

use super::io;
use super::packet::Packet;
use super::session::{BfdSession, Discarded, Rx};

#[derive(Default)]
struct Registry {
    by_discriminator: HashMap<u32, Addr<BfdSession>>,
    by_peer: HashMap<IpAddr, Addr<BfdSession>>,
}

/// Datagrams dropped before reaching a session, by reason (for metrics and tests).
#[derive(Debug, Default)]
pub struct Drops {
    pub malformed: AtomicU64,
    pub ttl: AtomicU64,
    pub unknown: AtomicU64,
}

pub struct BfdListener {
    registry: Arc<Mutex<Registry>>,
    drops: Arc<Drops>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BfdListener {
    /// Listens on `port` (3784 in production) for both families; a family that cannot be
    /// bound is logged and left out. Must be called inside a Tokio runtime.
    pub fn bind(port: u16) -> Result<BfdListener, String> {
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let drops: Arc<Drops> = Arc::default();
        let mut tasks = Vec::new();
        let mut errors = Vec::new();
        for v6 in [false, true] {
            match io::bind_rx(v6, port) {
                Ok(socket) => {
                    let (registry, drops) = (registry.clone(), drops.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut buf = [0u8; 512];
                        loop {
                            let (n, from, ttl) = match io::recv(&socket, &mut buf).await {
                                Ok(r) => r,
                                Err(e) => {
                                    debug!(error = %e, "BFD receive failed");
                                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                    continue;
                                }
                            };
                            // A discarded datagram from a peer's address counts on its session.
                            let discard = |reason: String| {
                                debug!(%from, %reason, "BFD packet discarded");
                                let r = registry.lock().unwrap_or_else(|p| p.into_inner());
                                if let Some(s) = r.by_peer.get(&from.ip().to_canonical()) {
                                    s.do_send(Discarded(reason));
                                }
                            };
                            if ttl != Some(255) {
                                drops.ttl.fetch_add(1, Ordering::Relaxed);
                                discard(format!("arrived with TTL {ttl:?}, not 255 (RFC 5881 §5)"));
                                continue;
                            }
                            let p = match Packet::decode(&buf[..n]) {
                                Ok(p) => p,
                                Err(e) => {
                                    drops.malformed.fetch_add(1, Ordering::Relaxed);
                                    discard(e.to_string());
                                    continue;
                                }
                            };
                            let session = {
                                let r = registry.lock().unwrap_or_else(|p| p.into_inner());
                                if p.your_discriminator != 0 {
                                    r.by_discriminator.get(&p.your_discriminator).cloned()
                                } else {
                                    r.by_peer.get(&from.ip().to_canonical()).cloned()
                                }
                            };
                            match session {
                                Some(s) => s.do_send(Rx(p)),
                                None => {
                                    drops.unknown.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }));
                }
                Err(e) => errors.push(format!("{}: {e}", if v6 { "IPv6" } else { "IPv4" })),
            }
        }
        if tasks.is_empty() {
            return Err(errors.join("; "));
        }
        for e in errors {
            warn!(error = %e, "BFD: one family not received");
        }
        Ok(BfdListener {
            registry,
            drops,
            tasks,
        })
    }

    pub fn register(&self, peer: IpAddr, discriminator: u32, session: Addr<BfdSession>) {
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.by_discriminator.insert(discriminator, session.clone());
        r.by_peer.insert(peer.to_canonical(), session);
    }

    pub fn unregister(&self, peer: IpAddr, discriminator: u32) {
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.by_discriminator.remove(&discriminator);
        r.by_peer.remove(&peer.to_canonical());
    }

    pub fn drops(&self) -> &Drops {
        &self.drops
    }
}

impl Drop for BfdListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
