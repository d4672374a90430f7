//! Announcement actors (DESIGN.md §3): one `ServiceActor` per Service, one `VipActor` per VIP
//! this node owns, and per interface an `ArpResponder` and an `NdpResponder`; in BGP mode one
//! `BgpSession` per peer ([`bgp`]), with a `BfdSession` per peer that asks for BFD ([`bfd`]).
//!
//! Sockets and the clock are injected ([`responder::FrameSink`], [`lease::Clock`]) so the
//! actors are tested without root; [`responder::open_interface`] binds the real AF_PACKET
//! socket (pnet) for an interface.

pub mod announce;
pub mod bfd;
pub mod bgp;
pub mod lease;
pub mod responder;
pub mod wire;
