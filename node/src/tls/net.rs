//! TLS on the wire: the accept loop of a peer's servers (a handshake per connection, with a
//! deadline, against the configuration in force) and the connector of its clients (which
//! checks the server against the name it must have).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::codegen::http::Uri;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::material::Files;
use super::{Security, Tls};

/// A client that has not finished its handshake by then is dropped (a slow or silent client
/// cannot hold a connection open).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `router` on `listener`: plaintext, or mTLS against the configuration in force at
/// each accept.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    security: &Security,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match security.tls() {
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(incoming(listener, tls.clone()), shutdown)
                .await
        }
    }
}

type Accepted = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>;

/// The handshaken connections of `listener`. Each handshake runs in its own task, so a slow
/// one delays nobody else.
fn incoming(listener: TcpListener, tls: Arc<Tls>) -> impl futures::Stream<Item = Accepted> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Accepted>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: do not spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.server_config());
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// Dials TLS with the client configuration in force, and requires the server to prove
/// `name`.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<Tls>,
    name: ServerName<'static>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, name) = (self.tls.clone(), self.name.clone());
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::other(format!("{uri} names no host")))?
                .to_string();
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                TlsConnector::from(tls.client_config()).connect(name, tcp),
            )
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The certificate a TLS server at `addr` (IP:PORT) shows on a new handshake, which must
/// prove `name` (`ctl`-less checks of a rotation).
pub async fn server_certificate(
    addr: &str,
    tls: &Arc<Tls>,
    name: &str,
) -> Result<super::identity::CertFacts, String> {
    let name = ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?}: {e}"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let stream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(tls.client_config()).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("{addr}: TLS handshake timed out"))?
    .map_err(|e| format!("{addr}: {e}"))?;
    let (_, conn) = stream.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("{addr}: no server certificate"))?;
    super::identity::facts(leaf)
}

/// A lazily connected channel to a peer's Raft port at `addr` (IP:PORT). With mTLS the peer
/// must prove `node-ID.CLUSTER.raftlb` for the id the membership gives that address, so an
/// address taken over by another machine cannot pass for it.
pub fn peer_channel(
    security: &Security,
    target: raftlb_raft_store::NodeId,
    addr: &str,
) -> Result<Channel, String> {
    // With mTLS the connector makes the TLS stream itself; tonic only needs an http:// URI.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true);
    Ok(match security.tls() {
        None => endpoint.connect_lazy(),
        Some(tls) => {
            let name = tls.naming.peer_name(target);
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} is not a server name: {e}"))?;
            endpoint.connect_with_connector_lazy(Connector {
                tls: tls.clone(),
                name,
            })
        }
    })
}

/// How an admin client (`ctl`, a joining peer) secures its connections.
#[derive(Clone, Default)]
pub enum ClientTls {
    /// Per endpoint: TLS with the client certificate `raftlb up` left for that endpoint, if
    /// any; `https://` requires one.
    #[default]
    Auto,
    /// `--insecure`: plaintext only.
    Insecure,
    /// Given material (`--tls-dir`, `--ca/--cert/--key`, a peer's own certificate).
    Given(Arc<Tls>),
}

/// The scheme, the host:port and the bare host of an endpoint URL (`http://h:p`, `https://h:p`
/// or `h:p`).
fn split_url(url: &str) -> Result<(Option<&str>, &str, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    if !matches!(scheme, None | Some("http") | Some("https")) {
        return Err(format!("{url}: the scheme is not http or https"));
    }
    let authority = rest.trim_end_matches('/');
    let uri: Uri = format!("http://{authority}")
        .parse()
        .map_err(|e| format!("{url}: not a URL ({e})"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((scheme, authority, host))
}

impl ClientTls {
    /// The TLS to use for `url`, if any.
    fn for_url(&self, url: &str) -> Result<Option<Arc<Tls>>, String> {
        let (scheme, authority, _) = split_url(url)?;
        match (self, scheme) {
            (_, Some("http")) => Ok(None),
            (ClientTls::Insecure, Some("https")) => Err(format!(
                "{url}: https:// with --insecure; give the endpoint as http://"
            )),
            (ClientTls::Insecure, _) => Ok(None),
            (ClientTls::Given(t), _) => Ok(Some(t.clone())),
            (ClientTls::Auto, scheme) => match recall(authority) {
                Some(dir) => {
                    let files = Files::client_in(&dir, None)?;
                    // The server's node name does not matter here: `up` named the
                    // endpoint, and the certificate is checked against the URL's host.
                    Tls::load(files, "local").map(Some)
                }
                None if scheme == Some("https") => Err(format!(
                    "{url}: no client certificate; give --tls-dir DIR or --ca/--cert/--key (or RAFTLB_TLS_DIR)"
                )),
                None => Ok(None),
            },
        }
    }
}

/// Connects to an admin endpoint: plaintext, or TLS in which the server must prove the URL's
/// host (a DNS name or an IP address in its certificate).
pub async fn dial(url: &str, tls: &ClientTls, timeout: Duration) -> Result<Channel, String> {
    dial_with(url, tls, timeout, None).await
}

/// [`dial`], with a deadline on every request of the channel.
pub async fn dial_with(
    url: &str,
    tls: &ClientTls,
    timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Channel, String> {
    let (_, authority, host) = split_url(url)?;
    let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("{url}: not a URL ({e})"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    let connected = match tls.for_url(url)? {
        None => endpoint.connect().await,
        Some(tls) => {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("{url}: {host:?} is not a server name: {e}"))?;
            endpoint
                .connect_with_connector(Connector { tls, name })
                .await
        }
    };
    connected.map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = s.to_string();
            source = s.source();
        }
        msg
    })
}

/// Where `raftlb up` notes, per admin endpoint, the directory with its client certificate:
/// under `$XDG_STATE_HOME`, else `$HOME/.local/state`, else the temporary directory (an image
/// with no home).
fn registry() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    Some(base.join("raftlb/endpoints"))
}

fn registry_entry(authority: &str) -> Option<PathBuf> {
    Some(registry()?.join(authority.replace([':', '/', '[', ']'], "_")))
}

/// Notes that the endpoint `authority` (host:port) takes the client certificate in `dir`.
pub fn remember(authority: &str, dir: &std::path::Path) -> Result<(), String> {
    let entry = registry_entry(authority).ok_or("no directory to note it in")?;
    if let Some(parent) = entry.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(&entry, dir.to_string_lossy().as_bytes())
        .map_err(|e| format!("{}: {e}", entry.display()))
}

/// The directory `raftlb up` noted for `authority`, if it still exists.
fn recall(authority: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(registry_entry(authority)?).ok()?;
    let dir = PathBuf::from(text.trim());
    dir.join("ca.crt").exists().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_split_into_scheme_authority_and_host() {
        assert_eq!(
            split_url("https://127.0.0.1:7471").unwrap(),
            (Some("https"), "127.0.0.1:7471", "127.0.0.1".to_string())
        );
        assert_eq!(
            split_url("[fd00::1]:7471").unwrap(),
            (None, "[fd00::1]:7471", "fd00::1".to_string())
        );
        assert_eq!(
            split_url("http://raftlb-0.raftlb.ns.svc:7471/").unwrap(),
            (
                Some("http"),
                "raftlb-0.raftlb.ns.svc:7471",
                "raftlb-0.raftlb.ns.svc".to_string()
            )
        );
        assert!(split_url("ftp://h:1").unwrap_err().contains("scheme"));
    }

    #[test]
    fn plaintext_is_chosen_only_by_http_or_insecure() {
        let url = "http://127.0.0.1:1";
        assert!(ClientTls::Auto.for_url(url).unwrap().is_none());
        assert!(ClientTls::Insecure
            .for_url("127.0.0.1:1")
            .unwrap()
            .is_none());
        assert!(ClientTls::Insecure
            .for_url("https://127.0.0.1:1")
            .unwrap_err()
            .contains("--insecure"));
    }
}
