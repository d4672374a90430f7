//! The session actor against a scripted peer on loopback: the real TCP path, the real timers,
//! a peer that misbehaves on purpose. (Real routers judge it in tests/bgp.)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use raftlb_actors::bgp::codec::{self, Frames, Message, NotificationCode};
use raftlb_actors::bgp::{
    BgpSession, GetStatus, Listener, PathAttrs, Peer, PeerAsn, ReplaceRoutes, Routes,
    SessionConfig, Shutdown,
};
use rustbgpd_wire::{Afi, Capability, OpenMessage, Safi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PEER_ASN: u32 = 64512;
const MY_ASN: u32 = 64513;

fn peer(port: u16) -> Peer {
    Peer {
        name: "scripted".into(),
        address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        source: None,
        ttl: 255,
        password: None,
        config: SessionConfig {
            local_asn: MY_ASN,
            peer_asn: PeerAsn::Fixed(PEER_ASN),
            router_id: Ipv4Addr::new(10, 77, 0, 11),
            hold_time: 9,
            keepalive: None,
            connect_retry: 1,
            ipv4: true,
            ipv6: false,
            graceful_restart: false,
        },
        next_hop_v4: None,
        next_hop_v6: None,
    }
}

fn open(asn: u32) -> Message {
    Message::Open(OpenMessage {
        version: 4,
        my_as: u16::try_from(asn).unwrap_or(23456),
        hold_time: 9,
        bgp_identifier: Ipv4Addr::new(10, 77, 0, 100),
        capabilities: vec![
            Capability::FourOctetAs { asn },
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
        ],
    })
}

/// The peer's end of one connection.
struct Wire {
    stream: TcpStream,
    frames: Frames,
}

impl Wire {
    async fn accept(listener: &TcpListener) -> Wire {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the session dials within 10 s")
            .unwrap();
        Wire {
            stream,
            frames: Frames::new(),
        }
    }

    async fn send(&mut self, m: &Message) {
        self.stream
            .write_all(&codec::encode(m).unwrap())
            .await
            .unwrap();
    }

    /// The next message, or None when the session closed the connection.
    async fn next(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.frames.next_message().unwrap() {
                return Some(m);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("the session says something within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.frames.push(&buf[..n]);
        }
    }

    /// OPEN and KEEPALIVE both ways.
    async fn establish(&mut self) {
        assert!(matches!(self.next().await, Some(Message::Open(_))));
        self.send(&open(PEER_ASN)).await;
        self.send(&Message::Keepalive).await;
        assert!(matches!(self.next().await, Some(Message::Keepalive)));
    }

    /// Prefixes announced and withdrawn in UPDATEs up to and including the first End-of-RIB
    /// or until `want` prefixes were announced.
    async fn updates(&mut self, want: usize) -> (Vec<IpNet>, Vec<IpNet>, usize) {
        let (mut announced, mut withdrawn, mut messages) = (Vec::new(), Vec::new(), 0);
        while announced.len() + withdrawn.len() < want {
            match self.next().await {
                Some(Message::Update(u)) => {
                    messages += 1;
                    let p = u.parse(true, false, &[]).unwrap();
                    let net = |e: &rustbgpd_wire::nlri::Ipv4NlriEntry| {
                        IpNet::new(IpAddr::V4(e.prefix.addr), e.prefix.len).unwrap()
                    };
                    announced.extend(p.announced.iter().map(net));
                    withdrawn.extend(p.withdrawn.iter().map(net));
                }
                Some(Message::Keepalive) => {}
                other => panic!("expected UPDATEs, got {other:?}"),
            }
        }
        (announced, withdrawn, messages)
    }
}

fn routes(n: u32) -> BTreeMap<IpNet, Arc<PathAttrs>> {
    let attrs = Arc::new(PathAttrs {
        communities: vec![(64512 << 16) | 7],
        ..PathAttrs::default()
    });
    (0..n)
        .map(|i| {
            (
                IpNet::new(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)), 32).unwrap(),
                attrs.clone(),
            )
        })
        .collect()
}

#[actix::test]
async fn announces_packed_then_withdraws_and_ends_with_a_cease_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let session = actix::Actor::start(BgpSession::new(peer(port)));
    session.do_send(ReplaceRoutes(routes(2000)));
    let mut wire = Wire::accept(&listener).await;
    wire.establish().await;
    let (announced, _, messages) = wire.updates(2000).await;
    assert_eq!(announced.len(), 2000);
    assert!(messages <= 4, "2000 prefixes in {messages} UPDATEs");
    // End-of-RIB follows the initial table.
    match wire.next().await {
        Some(Message::Update(u)) => assert!(u.nlri.is_empty() && u.withdrawn_routes.is_empty()),
        other => panic!("expected End-of-RIB, got {other:?}"),
    }
    let status = session.send(GetStatus).await.unwrap();
    assert_eq!(status.state, "Established");
    assert_eq!(status.prefixes_sent, 2000);
    assert_eq!(status.hold_time, 9);
    assert_eq!(status.keepalive, 3);

    let gone: Vec<_> = routes(10).into_keys().map(|p| (p, None)).collect();
    session.do_send(Routes(gone));
    let (_, withdrawn, messages) = wire.updates(10).await;
    assert_eq!((withdrawn.len(), messages), (10, 1));

    session.do_send(Shutdown {
        reason: "node draining".into(),
    });
    match wire.next().await {
        Some(Message::Notification(n)) => {
            assert_eq!(n.code, NotificationCode::Cease);
            assert_eq!(&n.data[..], b"\x0dnode draining");
        }
        other => panic!("expected a Cease, got {other:?}"),
    }
    assert!(
        wire.next().await.is_none(),
        "connection closed after the Cease"
    );
}

#[actix::test]
async fn a_peer_that_breaks_protocol_gets_the_right_notification_and_the_session_comes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let session = actix::Actor::start(BgpSession::new(peer(port)));
    session.do_send(ReplaceRoutes(routes(3)));

    // A wrong AS in the OPEN: OPEN Message Error / Bad Peer AS.
    let mut wire = Wire::accept(&listener).await;
    assert!(matches!(wire.next().await, Some(Message::Open(_))));
    wire.send(&open(65000)).await;
    match wire.next().await {
        Some(Message::Notification(n)) => {
            assert_eq!((n.code, n.subcode), (NotificationCode::OpenMessage, 2))
        }
        other => panic!("expected Bad Peer AS, got {other:?}"),
    }
    assert!(wire.next().await.is_none());

    // It dials again; this time the peer sends garbage after a good start.
    let mut wire = Wire::accept(&listener).await;
    wire.establish().await;
    let _ = wire.updates(3).await;
    let mut bad = vec![0xffu8; 16];
    bad[0] = 0;
    bad.extend_from_slice(&[0, 19, 4]);
    wire.stream.write_all(&bad).await.unwrap();
    loop {
        match wire.next().await {
            Some(Message::Notification(n)) => {
                // Message Header Error / Connection Not Synchronized.
                assert_eq!((n.code, n.subcode), (NotificationCode::MessageHeader, 1));
                break;
            }
            Some(Message::Update(_) | Message::Keepalive) => {}
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    }
    assert!(wire.next().await.is_none());
    let status = session.send(GetStatus).await.unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("NOTIFICATION")),
        "{status:?}"
    );

    // A truncated message then a closed connection: the session goes down and returns, and
    // the peer gets the whole table again.
    let mut wire = Wire::accept(&listener).await;
    wire.establish().await;
    let (announced, _, _) = wire.updates(3).await;
    assert_eq!(announced.len(), 3);
    let mut cut = codec::encode(&Message::Keepalive).unwrap().to_vec();
    cut.truncate(10);
    wire.stream.write_all(&cut).await.unwrap();
    drop(wire);
    let mut wire = Wire::accept(&listener).await;
    wire.establish().await;
    let (announced, _, _) = wire.updates(3).await;
    assert_eq!(announced.len(), 3);
    let status = session.send(GetStatus).await.unwrap();
    assert!(status.downs >= 2, "{status:?}");
}

/// The scripted peer's address for the passive-side tests: another loopback address, so the
/// node's listener can tell it apart.
const PEER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn open_with_id(id: Ipv4Addr) -> Message {
    match open(PEER_ASN) {
        Message::Open(o) => Message::Open(OpenMessage {
            bgp_identifier: id,
            ..o
        }),
        m => m,
    }
}

/// The peer opens a connection to the node's listener, from `PEER_IP`.
async fn dial_in(listener: &Listener) -> Wire {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(PEER_IP), 0))
        .unwrap();
    let to = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        listener.local_addr().port(),
    );
    Wire {
        stream: socket.connect(to).await.unwrap(),
        frames: Frames::new(),
    }
}

/// A session for a peer at `PEER_IP:port`, registered with a fresh listener.
fn passive_pair(port: u16) -> (Listener, actix::Addr<BgpSession>) {
    let listener = Listener::bind(0).unwrap();
    let mut p = peer(port);
    p.address = SocketAddr::new(IpAddr::V4(PEER_IP), port);
    let session = actix::Actor::start(BgpSession::new(p));
    listener
        .register(IpAddr::V4(PEER_IP), session.clone(), None)
        .unwrap();
    session.do_send(ReplaceRoutes(routes(3)));
    (listener, session)
}

fn is_collision_cease(m: &Option<Message>) -> bool {
    matches!(m, Some(Message::Notification(n))
        if (n.code, n.subcode) == (NotificationCode::Cease, codec::cease_subcode::CONNECTION_COLLISION_RESOLUTION))
}

#[actix::test]
async fn the_session_adopts_the_peers_connection_when_its_own_dials_fail() {
    // Nothing listens at the peer's port: every dial fails, the peer's connection is the one.
    let closed = TcpListener::bind((PEER_IP, 0)).await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (listener, session) = passive_pair(port);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut wire = dial_in(&listener).await;
    wire.establish().await;
    let (announced, _, _) = wire.updates(3).await;
    assert_eq!(announced.len(), 3);
    let status = session.send(GetStatus).await.unwrap();
    assert_eq!(
        (status.state, status.connection),
        ("Established", "inbound"),
        "{status:?}"
    );

    // A connection from an address that is no peer is closed without a word.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 0))
        .unwrap();
    let to = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        listener.local_addr().port(),
    );
    let mut stranger = Wire {
        stream: socket.connect(to).await.unwrap(),
        frames: Frames::new(),
    };
    assert!(stranger.next().await.is_none());
}

#[actix::test]
async fn a_collision_keeps_the_connection_the_higher_identifier_opened() {
    // The peer's identifier (10.77.0.100) is above the node's (10.77.0.11): its connection
    // stays, the node's own ends with Cease / Connection Collision Resolution.
    let peer_side = TcpListener::bind((PEER_IP, 0)).await.unwrap();
    let (listener, session) = passive_pair(peer_side.local_addr().unwrap().port());
    let mut outbound = Wire::accept(&peer_side).await;
    assert!(matches!(outbound.next().await, Some(Message::Open(_))));
    let mut inbound = dial_in(&listener).await;
    assert!(
        matches!(inbound.next().await, Some(Message::Open(_))),
        "the colliding connection gets an OPEN too"
    );
    inbound
        .send(&open_with_id(Ipv4Addr::new(10, 77, 0, 100)))
        .await;
    assert!(is_collision_cease(&outbound.next().await));
    assert!(outbound.next().await.is_none());
    assert!(matches!(inbound.next().await, Some(Message::Keepalive)));
    inbound.send(&Message::Keepalive).await;
    let (announced, _, _) = inbound.updates(3).await;
    assert_eq!(announced.len(), 3);
    let status = session.send(GetStatus).await.unwrap();
    assert_eq!(
        (status.state, status.connection),
        ("Established", "inbound"),
        "{status:?}"
    );
}

#[actix::test]
async fn a_collision_with_a_lower_identifier_keeps_the_nodes_connection_and_established_refuses() {
    let peer_side = TcpListener::bind((PEER_IP, 0)).await.unwrap();
    let (listener, session) = passive_pair(peer_side.local_addr().unwrap().port());
    let mut outbound = Wire::accept(&peer_side).await;
    assert!(matches!(outbound.next().await, Some(Message::Open(_))));
    let mut inbound = dial_in(&listener).await;
    assert!(matches!(inbound.next().await, Some(Message::Open(_))));
    let low = Ipv4Addr::new(10, 0, 0, 1);
    inbound.send(&open_with_id(low)).await;
    assert!(is_collision_cease(&inbound.next().await));
    assert!(inbound.next().await.is_none());
    outbound.send(&open_with_id(low)).await;
    outbound.send(&Message::Keepalive).await;
    assert!(matches!(outbound.next().await, Some(Message::Keepalive)));
    let (announced, _, _) = outbound.updates(3).await;
    assert_eq!(announced.len(), 3);
    let status = session.send(GetStatus).await.unwrap();
    assert_eq!(
        (status.state, status.connection),
        ("Established", "outbound"),
        "{status:?}"
    );

    // Established: a new connection from the peer is refused the same way, the session
    // stays.
    let mut late = dial_in(&listener).await;
    assert!(is_collision_cease(&late.next().await));
    assert!(late.next().await.is_none());
    let status = session.send(GetStatus).await.unwrap();
    assert_eq!(
        (status.state, status.downs),
        ("Established", 0),
        "{status:?}"
    );
}
