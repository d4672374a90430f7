//! BGP mode (DESIGN.md §3): one [`session::BgpSession`] per (node, peer) announces the VIPs
//! this node carries; the router spreads traffic over the announcing nodes by ECMP.
//!
//! ```text
//!   codec    bytes <-> messages (rustbgpd-wire behind one adapter); packed UPDATEs
//!   fsm      the RFC 4271 state machine (rustbgpd-fsm), configured from raftlb's settings
//!   rib      Adj-RIB-Out: what the peer should have, what it was sent, the difference
//!   session  the actor: owns the FSM, the RIB, the timers and the connection
//!   io       dial (source address, TTL), the reader and writer tasks
//!   listen   the passive side: one listening socket hands peers' connections to sessions
//!   md5      TCP-MD5 keys on the dialling and listening sockets (the crate's only unsafe)
//! ```
//!
//! Dependencies run down the list: `session` uses the four others; `rib` uses `codec`;
//! `codec` and `fsm` are the only modules that name the BGP crates.

pub mod codec;
pub mod fsm;
mod io;
pub mod listen;
pub mod md5;
pub mod rib;
pub mod session;

pub use codec::{fuzz_frames, PathAttrs};
pub use fsm::{PeerAsn, SessionConfig};
pub use listen::Listener;
pub use session::{
    BgpSession, GetSent, GetStatus, Inbound, Peer, ReplaceRoutes, RouteChange, Routes,
    SessionStatus, Shutdown,
};
