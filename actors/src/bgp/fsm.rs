//! The RFC 4271 session state machine: `rustbgpd-fsm` (pure: events in, actions out, no
//! sockets, no clock), configured from raftlb's own session settings. The only module besides
//! `codec` that names the crate.
//!
//! Which settings the OPEN carries matters to operators: changing one of them (see
//! [`SessionConfig::resets_session`]) has to restart the session; every other edit of a
//! BGPPeer or BGPAdvertisement only changes what is announced.

use std::net::Ipv4Addr;

use rustbgpd_wire::{Afi, Safi};

pub use rustbgpd_fsm::{Action, Event, NegotiatedSession, Session, SessionState, TimerType};

/// The peer's AS: a number, or MetalLB's `dynamicASN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAsn {
    Fixed(u32),
    /// `dynamicASN: internal`: the peer's AS is ours.
    Internal,
    /// `dynamicASN: external`: any AS but ours.
    External,
}

/// Everything that goes into the OPEN message, and the session timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub peer_asn: PeerAsn,
    pub router_id: Ipv4Addr,
    /// Proposed hold time, seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Keepalive interval, seconds; None: a third of the negotiated hold time.
    pub keepalive: Option<u16>,
    /// Base of the connect-retry timer, seconds (the FSM doubles it per failure, capped).
    pub connect_retry: u16,
    pub ipv4: bool,
    pub ipv6: bool,
    pub graceful_restart: bool,
}

/// MetalLB's native speaker holds 90 s; a load balancer wants a dead speaker's routes gone
/// much sooner, and BIRD, FRR and GoBGP all accept 9/3.
pub const DEFAULT_HOLD_TIME: u16 = 9;
pub const DEFAULT_CONNECT_RETRY: u16 = 2;
/// Graceful restart (RFC 4724): how long a router keeps this node's routes while it restarts.
pub const GR_RESTART_TIME: u16 = 120;

impl SessionConfig {
    /// The FSM's configuration.
    pub fn peer_config(&self) -> rustbgpd_fsm::PeerConfig {
        let remote = match self.peer_asn {
            PeerAsn::Fixed(asn) => asn,
            PeerAsn::Internal => self.local_asn,
            PeerAsn::External => 0,
        };
        let mut c = rustbgpd_fsm::PeerConfig::new(self.local_asn, remote, self.router_id);
        c.remote_asn_external = self.peer_asn == PeerAsn::External;
        c.hold_time = self.hold_time;
        c.send_hold_time = rustbgpd_fsm::default_send_hold_time(self.hold_time);
        c.connect_retry_secs = u32::from(self.connect_retry.max(1));
        c.families = Vec::new();
        if self.ipv4 {
            c.families.push((Afi::Ipv4, Safi::Unicast));
        }
        if self.ipv6 {
            c.families.push((Afi::Ipv6, Safi::Unicast));
        }
        c.disable_ipv4_unicast = !self.ipv4;
        c.graceful_restart = self.graceful_restart;
        c.gr_restart_time = GR_RESTART_TIME;
        c
    }

    /// Whether going from `self` to `next` changes the OPEN (AS numbers, router ID, hold
    /// time, families, graceful restart): only such an edit resets the session. Keepalive and
    /// connect-retry are local timers and apply from the next tick.
    pub fn resets_session(&self, next: &SessionConfig) -> bool {
        let open = |c: &SessionConfig| {
            (
                c.local_asn,
                c.peer_asn,
                c.router_id,
                c.hold_time,
                c.ipv4,
                c.ipv6,
                c.graceful_restart,
            )
        };
        open(self) != open(next)
    }

    /// The keepalive interval for a negotiated hold time: the configured one if it fits
    /// inside it, else a third of it (RFC 4271 §10's suggestion).
    pub fn keepalive_for(&self, negotiated_hold: u16) -> u16 {
        match self.keepalive {
            Some(k) if k > 0 && k <= negotiated_hold => k,
            _ => negotiated_hold / 3,
        }
    }

    /// Whether this session is iBGP (same AS on both ends).
    pub fn ibgp(&self, peer_asn: u32) -> bool {
        peer_asn == self.local_asn
    }
}

/// The label a state is shown with (MetalLB's and FRR's words).
pub fn state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Idle => "Idle",
        SessionState::Connect => "Connect",
        SessionState::Active => "Active",
        SessionState::OpenSent => "OpenSent",
        SessionState::OpenConfirm => "OpenConfirm",
        SessionState::Established => "Established",
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rustbgpd_wire::{Capability, NotificationCode, OpenMessage};

    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            local_asn: 4_200_000_001,
            peer_asn: PeerAsn::Fixed(64512),
            router_id: Ipv4Addr::new(10, 77, 0, 11),
            hold_time: 9,
            keepalive: None,
            connect_retry: 2,
            ipv4: true,
            ipv6: true,
            graceful_restart: false,
        }
    }

    fn peer_open(asn: u32, hold: u16) -> OpenMessage {
        OpenMessage {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(23456),
            hold_time: hold,
            bgp_identifier: Ipv4Addr::new(10, 77, 0, 100),
            capabilities: vec![
                Capability::FourOctetAs { asn },
                Capability::MultiProtocol {
                    afi: Afi::Ipv4,
                    safi: Safi::Unicast,
                },
                Capability::MultiProtocol {
                    afi: Afi::Ipv6,
                    safi: Safi::Unicast,
                },
            ],
        }
    }

    fn established(c: &SessionConfig, peer_asn: u32, hold: u16) -> (Session, Vec<Action>) {
        let mut s = Session::new(c.peer_config());
        let start = s.handle_event(Event::ManualStart);
        assert!(start.contains(&Action::InitiateTcpConnection));
        let connected = s.handle_event(Event::TcpConnectionConfirmed);
        let Some(Action::SendOpen(open)) =
            connected.iter().find(|a| matches!(a, Action::SendOpen(_)))
        else {
            panic!("no OPEN sent: {connected:?}");
        };
        // 4-byte AS: AS_TRANS in the 2-byte field, the real AS in the capability.
        assert_eq!(open.my_as, 23456);
        assert!(open
            .capabilities
            .contains(&Capability::FourOctetAs { asn: 4_200_000_001 }));
        let mut actions = s.handle_event(Event::OpenReceived(peer_open(peer_asn, hold)));
        actions.extend(s.handle_event(Event::KeepaliveReceived));
        (s, actions)
    }

    #[test]
    fn a_session_reaches_established_with_both_families_and_the_lower_hold_time() {
        let (s, actions) = established(&config(), 64512, 90);
        assert_eq!(s.state(), SessionState::Established);
        let neg = actions
            .iter()
            .find_map(|a| match a {
                Action::SessionEstablished(n) => Some(n.clone()),
                _ => None,
            })
            .expect("SessionEstablished");
        assert_eq!(neg.hold_time, 9);
        assert!(neg.four_octet_as);
        assert!(neg
            .negotiated_families
            .contains(&(Afi::Ipv6, Safi::Unicast)));
        assert_eq!(config().keepalive_for(neg.hold_time), 3);
    }

    #[test]
    fn a_wrong_peer_as_is_refused_with_bad_peer_as() {
        let mut s = Session::new(config().peer_config());
        s.handle_event(Event::ManualStart);
        s.handle_event(Event::TcpConnectionConfirmed);
        let actions = s.handle_event(Event::OpenReceived(peer_open(64999, 90)));
        let notification = actions.iter().find_map(|a| match a {
            Action::SendNotification(n) => Some(n.clone()),
            _ => None,
        });
        let n = notification.expect("a NOTIFICATION");
        // OPEN Message Error, Bad Peer AS (RFC 4271 §6.2).
        assert_eq!((n.code, n.subcode), (NotificationCode::OpenMessage, 2));
        assert!(actions.contains(&Action::CloseTcpConnection));
        assert_eq!(s.state(), SessionState::Idle);
    }

    #[test]
    fn dynamic_asn_accepts_the_kind_it_names() {
        let internal = SessionConfig {
            peer_asn: PeerAsn::Internal,
            ..config()
        };
        let (s, _) = established(&internal, 4_200_000_001, 9);
        assert_eq!(s.state(), SessionState::Established);
        let external = SessionConfig {
            peer_asn: PeerAsn::External,
            ..config()
        };
        let (s, _) = established(&external, 65010, 9);
        assert_eq!(s.state(), SessionState::Established);
        let (s, _) = established(&external, 4_200_000_001, 9);
        assert_ne!(s.state(), SessionState::Established);
    }

    #[test]
    fn a_manual_stop_sends_cease_with_the_reason() {
        let (mut s, _) = established(&config(), 64512, 9);
        let reason = Bytes::from_static(b"\x08draining");
        let actions = s.handle_event(Event::ManualStop {
            reason: Some(reason.clone()),
        });
        let n = actions
            .iter()
            .find_map(|a| match a {
                Action::SendNotification(n) => Some(n.clone()),
                _ => None,
            })
            .expect("a Cease");
        assert_eq!(n.code, NotificationCode::Cease);
        assert_eq!(n.data, reason);
        assert!(actions.contains(&Action::SessionDown));
    }

    #[test]
    fn only_open_fields_reset_a_session() {
        let c = config();
        let keepalive = SessionConfig {
            keepalive: Some(1),
            connect_retry: 30,
            ..c.clone()
        };
        assert!(!c.resets_session(&keepalive));
        for changed in [
            SessionConfig {
                local_asn: 64600,
                ..c.clone()
            },
            SessionConfig {
                hold_time: 30,
                ..c.clone()
            },
            SessionConfig {
                ipv6: false,
                ..c.clone()
            },
            SessionConfig {
                router_id: Ipv4Addr::new(10, 77, 0, 12),
                ..c.clone()
            },
        ] {
            assert!(c.resets_session(&changed), "{changed:?}");
        }
    }
}
