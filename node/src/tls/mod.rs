//! Mutual TLS on the Raft and admin ports (CHAOS-SECURITY.md part B).
//!
//! * [`material`]: certificate files, checked before use.
//! * [`identity`]: who a certificate names and what it may do.
//! * [`net`]: the TLS accept loop of both servers and the connector of every client.
//! * [`mint`]: certificates without openssl (`raftlb cert`, `raftlb up`); [`store`]: their
//!   files.
//!
//! [`Tls`] holds the configurations built from the current files. [`watch`] rebuilds them on
//! SIGHUP and when the files change; new files that do not check out leave the old ones in
//! place, with an error in the log. Connections already open keep their handshake; new ones
//! use the new certificate.

pub mod identity;
pub mod material;
pub mod mint;
pub mod net;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use tracing::{error, info};

use self::identity::{CertFacts, Naming};
use self::material::{Files, Material};

/// The cluster name in node certificates (`node-ID.CLUSTER.raftlb`) unless `--cluster` says.
pub const DEFAULT_CLUSTER: &str = "raftlb";

/// How often the files are compared with what was loaded (Kubernetes swaps a mounted Secret
/// atomically, and the kubelet takes up to a minute to do so).
const POLL: Duration = Duration::from_secs(2);

/// The configurations in force and the bytes they were built from.
struct Current {
    bytes: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    facts: CertFacts,
    cas: Vec<CertFacts>,
}

/// One identity's TLS, reloadable.
pub struct Tls {
    /// How peers' certificates name them (`node-ID.CLUSTER.raftlb`, a StatefulSet's pods).
    pub naming: Naming,
    files: Files,
    current: RwLock<Current>,
    /// Reloads that took effect.
    pub reloads: AtomicU64,
    /// Reloads refused because the new files did not check out.
    pub reload_errors: AtomicU64,
    /// Handshakes that failed or timed out on this peer's servers.
    pub handshake_failures: AtomicU64,
    /// RPCs refused for the caller's identity or role.
    pub denied: AtomicU64,
}

fn build(files: &Files, bytes: [Vec<u8>; 3]) -> Result<Current, String> {
    from_material(Material::check(files, &bytes)?, bytes)
}

fn from_material(m: Material, bytes: [Vec<u8>; 3]) -> Result<Current, String> {
    Ok(Current {
        server: m.server_config()?,
        client: m.client_config()?,
        facts: m.facts,
        cas: m.cas,
        bytes,
    })
}

impl Tls {
    /// Loads and checks `files`, for peers of `cluster`.
    pub fn load(files: Files, cluster: &str) -> Result<Arc<Tls>, String> {
        Tls::load_named(files, Naming::cluster(cluster))
    }

    /// Loads and checks `files`, for peers named by `naming`.
    pub fn load_named(files: Files, naming: Naming) -> Result<Arc<Tls>, String> {
        let current = build(&files, files.read()?)?;
        Ok(Tls::with(files, naming, current))
    }

    /// Loads `files` without checking them ([`Material::unchecked`]): only for a client that
    /// shows what must be refused.
    pub fn load_unchecked(files: Files, cluster: &str) -> Result<Arc<Tls>, String> {
        let bytes = files.read()?;
        let current = from_material(Material::unchecked(&files, &bytes)?, bytes)?;
        Ok(Tls::with(files, Naming::cluster(cluster), current))
    }

    fn with(files: Files, naming: Naming, current: Current) -> Arc<Tls> {
        Arc::new(Tls {
            naming,
            files,
            current: RwLock::new(current),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        })
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// The certificate in force.
    pub fn facts(&self) -> CertFacts {
        self.current().facts.clone()
    }

    /// The CA bundle in force.
    pub fn cas(&self) -> Vec<CertFacts> {
        self.current().cas.clone()
    }

    /// Reloads if the files changed: Ok(true) when new material took effect, Ok(false) when
    /// nothing changed, Err (the old material stays) when the new files do not check out.
    pub fn reload(&self) -> Result<bool, String> {
        let bytes = self.files.read()?;
        if self.current().bytes == bytes {
            return Ok(false);
        }
        let next = build(&self.files, bytes)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// [`Tls::reload`], logged; a refused reload is counted and logged once per change of
    /// the files.
    fn reload_logged(&self, last_error: &mut Option<String>) {
        match self.reload() {
            Ok(true) => {
                *last_error = None;
                let f = self.facts();
                info!(cert = %self.files.cert.display(), serial = %f.serial, not_after = f.not_after, "TLS certificates reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    self.reload_errors.fetch_add(1, Ordering::Relaxed);
                    error!(error = %e, "new TLS files refused; the certificates in force stay");
                    *last_error = Some(e);
                }
            }
        }
    }
}

/// Reloads `tls` on SIGHUP and whenever its files change; runs until the task is dropped.
pub async fn watch(tls: Arc<Tls>) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_error = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => info!("SIGHUP: reloading the TLS files"),
        }
        tls.reload_logged(&mut last_error);
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("naming", &self.naming)
            .field("files", &self.files)
            .field("serial", &self.facts().serial)
            .finish()
    }
}

/// How a peer's ports are protected.
#[derive(Clone, Debug)]
pub enum Security {
    /// `--insecure`: plaintext, nobody authenticated.
    Insecure,
    Mtls(Arc<Tls>),
}

impl Security {
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        match self {
            Security::Insecure => None,
            Security::Mtls(t) => Some(t),
        }
    }

    /// How peers' certificates name them, with mTLS.
    pub fn naming(&self) -> Option<&Naming> {
        self.tls().map(|t| &t.naming)
    }

    /// Counts a refusal (for `/metrics`).
    pub fn denied(&self) {
        if let Some(t) = self.tls() {
            t.denied.fetch_add(1, Ordering::Relaxed);
        }
    }
}
