//! BFD's sockets (RFC 5881): every session sends from its own UDP socket (source port in
//! 49152–65535, TTL 255) to the peer's port 3784; one pair of listening sockets per node
//! (IPv4 and IPv6) receives for all sessions and reports each datagram with the TTL it arrived
//! with, so single-hop packets that crossed a router (TTL below 255) are dropped.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The single-hop control port (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// The TTL every single-hop packet is sent and must arrive with (RFC 5881 §5).
pub const TTL: u32 = 255;

/// A listening socket for one family on `port`, reporting received TTLs.
pub fn bind_rx(v6: bool, port: u16) -> Result<UdpSocket, String> {
    let (domain, any) = if v6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let socket =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    if v6 {
        socket.set_only_v6(true).map_err(|e| e.to_string())?;
        setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
            .map_err(|e| format!("IPV6_RECVHOPLIMIT: {e}"))?;
    } else {
        setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).map_err(|e| format!("IP_RECVTTL: {e}"))?;
    }
    socket.set_reuse_address(true).map_err(|e| e.to_string())?;
    socket
        .bind(&SocketAddr::new(any, port).into())
        .map_err(|e| format!("binding UDP port {port}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(socket.into()).map_err(|e| e.to_string())
}

/// One datagram: its length, sender and the TTL (hop limit) it arrived with.
pub async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u8>)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut space = nix::cmsg_space!(libc::c_int);
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)?;
            let mut ttl = None;
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                match c {
                    ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).ok(),
                    _ => {}
                }
            }
            let from = msg
                .address
                .and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|s| SocketAddr::from(std::net::SocketAddrV4::from(*s)))
                        .or_else(|| {
                            a.as_sockaddr_in6()
                                .map(|s| SocketAddr::from(std::net::SocketAddrV6::from(*s)))
                        })
                })
                .ok_or_else(|| std::io::Error::other("datagram without a sender address"))?;
            Ok((msg.bytes, from, ttl))
        })
        .await
}

/// The sending socket of one session: from `source` (or the address the kernel picks), a
/// port in 49152–65535, TTL 255, connected to the peer's control port.
pub fn bind_tx(peer: IpAddr, source: Option<IpAddr>, seed: u32) -> Result<UdpSocket, String> {
    let domain = if peer.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    if peer.is_ipv4() {
        socket.set_ttl_v4(TTL).map_err(|e| e.to_string())?;
    } else {
        socket.set_unicast_hops_v6(TTL).map_err(|e| e.to_string())?;
    }
    let local = source.unwrap_or(if peer.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    // RFC 5881 §4: the source port is in 49152–65535; start somewhere the seed picks.
    let span = 65535 - 49152 + 1;
    let start = seed % span;
    let mut bound = false;
    for i in 0..span {
        let port = 49152 + ((start + i) % span) as u16;
        if socket.bind(&SocketAddr::new(local, port).into()).is_ok() {
            bound = true;
            break;
        }
    }
    if !bound {
        return Err("no free UDP source port in 49152-65535".into());
    }
    socket
        .connect(&SocketAddr::new(peer, CONTROL_PORT).into())
        .map_err(|e| format!("connecting to {peer}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(socket.into()).map_err(|e| e.to_string())
}
