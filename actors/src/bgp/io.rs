//! The session's TCP connection: dialling (source address, TTL, timeout), a reader task that
//! cuts the stream into messages, and a writer task that drains a queue. Both report to the
//! session actor, tagged with the connection's id.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use super::codec::Frames;
use super::session::{BgpSession, Io};

/// Opens the TCP connection to a peer. The TTL is set before the SYN leaves, so a
/// directly-connected eBGP session (TTL 1) never reaches a router further away.
pub async fn dial(
    target: SocketAddr,
    source: Option<IpAddr>,
    ttl: u32,
    password: Option<&str>,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| format!("socket: {e}"))?;
    let set_ttl = if target.is_ipv4() {
        socket.set_ttl_v4(ttl)
    } else {
        socket.set_unicast_hops_v6(ttl)
    };
    set_ttl.map_err(|e| format!("setting TTL {ttl}: {e}"))?;
    if let Some(key) = password {
        super::md5::set_key(&socket, target.is_ipv6(), target.ip(), key.as_bytes())
            .map_err(|e| format!("TCP-MD5 key: {e}"))?;
    }
    if let Some(source) = source {
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| format!("binding source address {source}: {e}"))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("non-blocking: {e}"))?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(Ok(stream)) => {
            // Messages are whole when queued; waiting to coalesce them only adds delay.
            stream
                .set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            Ok(stream)
        }
        Ok(Err(e)) => Err(format!("connecting to {target}: {e}")),
        Err(_) => Err(format!(
            "connecting to {target}: no answer within {} s",
            timeout.as_secs()
        )),
    }
}

/// Starts the reader and writer of a connected stream. Returns the write queue and the reader
/// task (aborted when the session closes the connection).
pub(super) fn start(
    stream: TcpStream,
    id: u64,
    session: Addr<BgpSession>,
) -> (mpsc::UnboundedSender<Bytes>, tokio::task::JoinHandle<()>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let writer_session = session.clone();
    actix::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = wr.write_all(&bytes).await {
                writer_session.do_send(Io::Closed(id, format!("writing to peer: {e}")));
                return;
            }
        }
        // The session dropped the queue: everything queued (a closing NOTIFICATION) is out.
        let _ = wr.shutdown().await;
    });
    let reader = actix::spawn(async move {
        let mut frames = Frames::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => {
                    session.do_send(Io::Closed(id, "peer closed the connection".into()));
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    session.do_send(Io::Closed(id, format!("reading from peer: {e}")));
                    return;
                }
            };
            frames.push(&buf[..n]);
            loop {
                match frames.next_message() {
                    Ok(Some(m)) => session.do_send(Io::Received(id, Ok(m))),
                    Ok(None) => break,
                    Err(e) => {
                        // The stream is out of step: nothing after this can be read.
                        session.do_send(Io::Received(id, Err(e)));
                        return;
                    }
                }
            }
        }
    });
    (tx, reader)
}
