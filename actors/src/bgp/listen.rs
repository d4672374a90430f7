//! The passive side (RFC 4271 §8.2.1): one listening socket per node for every session. A
//! connection from a configured peer's address goes to that peer's session, which adopts it
//! or resolves the collision with its own connection (§6.8); a connection from any other
//! address is closed at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use actix::Addr;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tracing::debug;

use super::session::{BgpSession, Inbound};

type Registry = Arc<Mutex<HashMap<IpAddr, Addr<BgpSession>>>>;

/// The listening socket and the sessions it hands connections to. Dropping it stops
/// listening.
pub struct Listener {
    sessions: Registry,
    /// The listening socket again (a duplicate descriptor), for TCP-MD5 keys per peer.
    keys: Socket,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Listens on `port` of every address of the node, IPv4 and IPv6 on one socket. Must be
    /// called inside a Tokio runtime.
    pub fn bind(port: u16) -> Result<Listener, String> {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_only_v6(false)
            .map_err(|e| format!("dual-stack socket: {e}"))?;
        // A restarted node rebinds at once, before the old connections' TIME_WAIT ends.
        socket
            .set_reuse_address(true)
            .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        socket
            .bind(&addr.into())
            .map_err(|e| format!("binding port {port}: {e}"))?;
        socket
            .listen(64)
            .map_err(|e| format!("listening on port {port}: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("non-blocking: {e}"))?;
        let keys = socket.try_clone().map_err(|e| e.to_string())?;
        let listener = TcpListener::from_std(socket.into()).map_err(|e| e.to_string())?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let sessions: Registry = Arc::default();
        let registry = sessions.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        debug!(error = %e, "BGP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let from = from.ip().to_canonical();
                let session = registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&from)
                    .cloned();
                match session {
                    Some(s) => s.do_send(Inbound(stream)),
                    None => debug!(%from, "BGP connection from an address that is no peer: closed"),
                }
            }
        });
        Ok(Listener {
            sessions,
            keys,
            local,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections from `peer` go to `session` from now on, signed with `password` (TCP-MD5)
    /// if there is one: the kernel then refuses unsigned or wrongly signed SYNs from it.
    pub fn register(
        &self,
        peer: IpAddr,
        session: Addr<BgpSession>,
        password: Option<&str>,
    ) -> Result<(), String> {
        if let Some(key) = password {
            super::md5::set_key(&self.keys, true, peer, key.as_bytes())
                .map_err(|e| format!("TCP-MD5 key for {peer} on the listener: {e}"))?;
        }
        self.registry().insert(peer.to_canonical(), session);
        Ok(())
    }

    /// Connections from `peer` are refused again, unless another session took the address;
    /// its TCP-MD5 key goes with it.
    pub fn unregister(&self, peer: IpAddr, session: &Addr<BgpSession>, had_password: bool) {
        let mut r = self.registry();
        if r.get(&peer.to_canonical()) == Some(session) {
            r.remove(&peer.to_canonical());
            if had_password {
                let _ = super::md5::set_key(&self.keys, true, peer, b"");
            }
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Addr<BgpSession>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
