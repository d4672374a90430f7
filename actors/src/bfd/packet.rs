//! The BFD Control packet (RFC 5880 §4.1): the 24-byte mandatory section, encoded and decoded
//! with the reception checks of §6.8.6 that need no session. Authentication is not
//! supported: a packet with the A bit is refused, as §6.8.6 asks of a session without it.

use std::fmt;

/// Length of the mandatory section; the whole packet without authentication.
pub const LEN: usize = 24;

/// RFC 5880 §4.1 `Sta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RFC 5880 §4.1 `Diag`: why the session last left Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    None = 0,
    ControlDetectionTimeExpired = 1,
    EchoFunctionFailed = 2,
    NeighborSignaledSessionDown = 3,
    ForwardingPlaneReset = 4,
    PathDown = 5,
    ConcatenatedPathDown = 6,
    AdministrativelyDown = 7,
    ReverseConcatenatedPathDown = 8,
    /// 9–31: reserved, carried as received.
    Reserved = 31,
}

impl Diag {
    fn from_bits(b: u8) -> Diag {
        match b & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            _ => Diag::Reserved,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved => "reserved diagnostic",
        }
    }
}

/// One Control packet. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    /// C: the transmitting system's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("shorter than the 24-byte Control packet")]
    Short,
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {0} below 24 or beyond the datagram")]
    Length(u8),
    #[error("authentication present (A bit) and none is configured")]
    Authentication,
    #[error("detect multiplier 0")]
    DetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    MyDiscriminator,
}

impl Packet {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag as u8 & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.control_plane_independent) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Decodes a datagram's payload, applying every check of §6.8.6 that needs no session
    /// (the discriminator and state checks are the session's).
    pub fn decode(data: &[u8]) -> Result<Packet, Discard> {
        if data.len() < LEN {
            return Err(Discard::Short);
        }
        let version = data[0] >> 5;
        if version != 1 {
            return Err(Discard::Version(version));
        }
        let length = data[3];
        if usize::from(length) < LEN || usize::from(length) > data.len() {
            return Err(Discard::Length(length));
        }
        let flags = data[1];
        if flags & 0x04 != 0 {
            return Err(Discard::Authentication);
        }
        if flags & 0x01 != 0 {
            return Err(Discard::Multipoint);
        }
        if data[2] == 0 {
            return Err(Discard::DetectMult);
        }
        let word =
            |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let my_discriminator = word(4);
        if my_discriminator == 0 {
            return Err(Discard::MyDiscriminator);
        }
        Ok(Packet {
            diag: Diag::from_bits(data[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            control_plane_independent: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult: data[2],
            my_discriminator,
            your_discriminator: word(8),
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        })
    }
}

/// Everything the BFD decoder does with bytes from outside, for the fuzz target and its
/// replay test: decode, and re-encode what decoded (which must decode to the same packet).
pub fn fuzz_packet(input: &[u8]) -> bool {
    match Packet::decode(input) {
        Ok(p) => {
            let again = Packet::decode(&p.encode());
            assert_eq!(again, Ok(p), "a decoded packet re-encodes to itself");
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
