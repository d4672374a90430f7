//! BFD (RFC 5880 asynchronous mode, RFC 5881 single hop, RFC 5882 for what a client does with
//! it): a node runs one session per BGP peer whose BGPPeer names a BFDProfile, and a failed
//! path takes the BGP session down at once instead of after the hold time.
//!
//! ```text
//!   packet   the Control packet: bytes <-> Packet, the stateless reception checks
//!   fsm      the session state machine: events in, actions and microsecond timers out
//!   session  the actor: owns the FSM, the sending socket and the timers; tells subscribers
//!   listen   the node's receiver on UDP 3784 (TTL 255 only), handing packets to sessions
//!   io       the sockets (source port range, TTL, received TTL)
//! ```
//!
//! Dependencies run down the list from `listen` and `session`; `fsm` uses only `packet`.

pub mod fsm;
mod io;
pub mod listen;
pub mod packet;
pub mod session;

pub use fsm::Config;
pub use io::CONTROL_PORT;
pub use listen::BfdListener;
pub use packet::{fuzz_packet, Diag, Packet, State};
pub use session::{BfdChanged, BfdSession, BfdStatus};
