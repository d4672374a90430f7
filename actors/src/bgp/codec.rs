//! Bytes to BGP messages and back: the one module that speaks `rustbgpd-wire` (pinned exactly;
//! a wire round-trip test against `netgauze-bgp-pkt` keeps a swap possible).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Marker (16 x 0xff)                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length (19..4096)    |      Type     |  body ...     |    RFC 4271 §4.1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! UPDATE body: withdrawn length (2), withdrawn IPv4 prefixes, path attribute length (2),
//! path attributes (IPv6 travels inside MP_REACH_NLRI / MP_UNREACH_NLRI), IPv4 NLRI.
//! ```
//!
//! Outbound UPDATEs are packed: prefixes with the same attributes share one message, as many
//! as fit under the negotiated maximum length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use rustbgpd_wire::attribute::{
    AsPath, AsPathSegment, LargeCommunity, MpReachNlri, MpUnreachNlri, Origin, PathAttribute,
};
use rustbgpd_wire::nlri::{Ipv4NlriEntry, Ipv4Prefix, Ipv6Prefix, NlriEntry, Prefix};
use rustbgpd_wire::{Afi, Ipv4UnicastMode, Safi, UpdateMessage};

pub use rustbgpd_wire::notification::cease_subcode;
pub use rustbgpd_wire::{
    DecodeError, Message, NotificationCode, NotificationMessage, OpenMessage, MAX_MESSAGE_LEN,
};

/// What one announced prefix carries besides its next hop: the BGPAdvertisement's attributes.
/// Ordered so that prefixes with equal attributes are packed into one UPDATE.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathAttrs {
    /// LOCAL_PREF; sent on iBGP sessions only (100 when unset), as MetalLB does.
    pub local_pref: Option<u32>,
    /// Standard communities (RFC 1997), `AA:NN` as `AA << 16 | NN`, sorted, no duplicates.
    pub communities: Vec<u32>,
    /// Large communities (RFC 8092), sorted, no duplicates.
    pub large_communities: Vec<[u32; 3]>,
}

/// How this session encodes UPDATEs, fixed when it reaches Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub local_asn: u32,
    /// Same AS on both ends: no AS_PATH prepend, LOCAL_PREF sent.
    pub ibgp: bool,
    pub four_octet_as: bool,
    /// Next hop for IPv4 prefixes (the session's own address when it is IPv4); None: IPv4
    /// prefixes cannot be sent on this session.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 prefixes (MP_REACH_NLRI); None: IPv6 prefixes cannot be sent.
    pub next_hop_v6: Option<Ipv6Addr>,
    pub ipv4: bool,
    pub ipv6: bool,
    pub max_len: u16,
}

impl Encoding {
    /// Whether a prefix can go out on this session (its family was negotiated and has a next
    /// hop).
    pub fn carries(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(_) => self.ipv4 && self.next_hop_v4.is_some(),
            IpNet::V6(_) => self.ipv6 && self.next_hop_v6.is_some(),
        }
    }

    fn attributes(&self, attrs: &PathAttrs) -> Vec<PathAttribute> {
        let mut out = vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath {
                segments: if self.ibgp {
                    Vec::new()
                } else {
                    vec![AsPathSegment::AsSequence(vec![self.local_asn])]
                },
            }),
        ];
        if self.ibgp {
            out.push(PathAttribute::LocalPref(attrs.local_pref.unwrap_or(100)));
        }
        if !attrs.communities.is_empty() {
            out.push(PathAttribute::Communities(attrs.communities.clone()));
        }
        if !attrs.large_communities.is_empty() {
            out.push(PathAttribute::LargeCommunities(
                attrs
                    .large_communities
                    .iter()
                    .map(|[a, b, c]| LargeCommunity::new(*a, *b, *c))
                    .collect(),
            ));
        }
        out
    }
}

/// Why an UPDATE could not be built (a bug or an attribute set too large for one message).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode UPDATE: {0}")]
pub struct EncodeError(String);

/// Wire bytes of one IPv4 or IPv6 prefix in NLRI form: length octet plus the prefix octets.
fn nlri_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

/// IPv6 prefixes travel inside MP_(UN)REACH_NLRI, whose length field takes a second octet
/// (extended length) once the attribute passes 255 octets.
fn mp_growth(first: &IpNet) -> usize {
    usize::from(first.addr().is_ipv6())
}

fn v4(prefix: &IpNet) -> Option<Ipv4Prefix> {
    match prefix {
        IpNet::V4(p) => Some(Ipv4Prefix::new(p.network(), p.prefix_len())),
        IpNet::V6(_) => None,
    }
}

fn v6_entry(prefix: &IpNet) -> Option<NlriEntry> {
    match prefix {
        IpNet::V6(p) => Some(NlriEntry {
            path_id: 0,
            prefix: Prefix::V6(Ipv6Prefix::new(p.network(), p.prefix_len())),
        }),
        IpNet::V4(_) => None,
    }
}

fn v4_entries(prefixes: &[IpNet]) -> Vec<Ipv4NlriEntry> {
    prefixes
        .iter()
        .filter_map(v4)
        .map(|prefix| Ipv4NlriEntry { path_id: 0, prefix })
        .collect()
}

fn mp_reach_v6(next_hop: Ipv6Addr, prefixes: &[IpNet]) -> PathAttribute {
    PathAttribute::MpReachNlri(Box::new(MpReachNlri {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
        next_hop: IpAddr::V6(next_hop),
        link_local_next_hop: None,
        announced: prefixes.iter().filter_map(v6_entry).collect(),
        flowspec_announced: Vec::new(),
        evpn_announced: Vec::new(),
        bgpls_announced: Vec::new(),
        vpn_announced: Vec::new(),
        labeled_announced: Vec::new(),
        rtc_announced: Vec::new(),
    }))
}

fn mp_unreach_v6(prefixes: &[IpNet]) -> PathAttribute {
    PathAttribute::MpUnreachNlri(Box::new(MpUnreachNlri {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
        withdrawn: prefixes.iter().filter_map(v6_entry).collect(),
        flowspec_withdrawn: Vec::new(),
        evpn_withdrawn: Vec::new(),
        bgpls_withdrawn: Vec::new(),
        vpn_withdrawn: Vec::new(),
        labeled_withdrawn: Vec::new(),
        rtc_withdrawn: Vec::new(),
    }))
}

fn encode_update(update: &UpdateMessage, max_len: u16) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(update.encoded_len());
    update
        .encode_with_limit(&mut buf, max_len)
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf.freeze())
}

/// Splits `prefixes` into runs whose NLRI fit in `room` bytes each.
fn chunks(prefixes: &[IpNet], room: usize) -> Vec<&[IpNet]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let n = nlri_len(p);
        if used + n > room && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            used = 0;
        }
        used += n;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

impl Encoding {
    /// UPDATEs that announce `prefixes` (all of one family) with `attrs`, packed.
    pub fn announce(
        &self,
        attrs: &PathAttrs,
        prefixes: &[IpNet],
    ) -> Result<Vec<Bytes>, EncodeError> {
        let Some(first) = prefixes.first() else {
            return Ok(Vec::new());
        };
        let base = self.attributes(attrs);
        let build = |run: &[IpNet]| -> Result<UpdateMessage, EncodeError> {
            let result = match first {
                IpNet::V4(_) => {
                    let mut attributes = base.clone();
                    let next_hop = self
                        .next_hop_v4
                        .ok_or_else(|| EncodeError("no IPv4 next hop on this session".into()))?;
                    attributes.push(PathAttribute::NextHop(next_hop));
                    UpdateMessage::try_build(
                        &v4_entries(run),
                        &[],
                        &attributes,
                        self.four_octet_as,
                        false,
                        Ipv4UnicastMode::Body,
                    )
                }
                IpNet::V6(_) => {
                    let next_hop = self
                        .next_hop_v6
                        .ok_or_else(|| EncodeError("no IPv6 next hop on this session".into()))?;
                    let mut attributes = base.clone();
                    attributes.push(mp_reach_v6(next_hop, run));
                    UpdateMessage::try_build(
                        &[],
                        &[],
                        &attributes,
                        self.four_octet_as,
                        false,
                        Ipv4UnicastMode::Body,
                    )
                }
            };
            result.map_err(|e| EncodeError(e.to_string()))
        };
        self.pack(prefixes, build)
    }

    /// As many UPDATEs as `prefixes` need, each built by `build` from a run that fits: the
    /// size of a message with one prefix, less that prefix, is the part every message of this
    /// kind carries.
    fn pack(
        &self,
        prefixes: &[IpNet],
        build: impl Fn(&[IpNet]) -> Result<UpdateMessage, EncodeError>,
    ) -> Result<Vec<Bytes>, EncodeError> {
        let Some(first) = prefixes.first() else {
            return Ok(Vec::new());
        };
        let fixed = build(&prefixes[..1])?.encoded_len() - nlri_len(first) + mp_growth(first);
        let room = usize::from(self.max_len).saturating_sub(fixed).max(17);
        chunks(prefixes, room)
            .into_iter()
            .map(|run| encode_update(&build(run)?, self.max_len))
            .collect()
    }

    /// UPDATEs that withdraw `prefixes` (all of one family), packed.
    pub fn withdraw(&self, prefixes: &[IpNet]) -> Result<Vec<Bytes>, EncodeError> {
        let Some(first) = prefixes.first() else {
            return Ok(Vec::new());
        };
        let build = |run: &[IpNet]| -> Result<UpdateMessage, EncodeError> {
            let result = match first {
                IpNet::V4(_) => UpdateMessage::try_build(
                    &[],
                    &v4_entries(run),
                    &[],
                    self.four_octet_as,
                    false,
                    Ipv4UnicastMode::Body,
                ),
                IpNet::V6(_) => UpdateMessage::try_build(
                    &[],
                    &[],
                    &[mp_unreach_v6(run)],
                    self.four_octet_as,
                    false,
                    Ipv4UnicastMode::Body,
                ),
            };
            result.map_err(|e| EncodeError(e.to_string()))
        };
        self.pack(prefixes, build)
    }

    /// End-of-RIB for a family (RFC 4724 §2): an UPDATE with nothing in it for IPv4, an
    /// empty MP_UNREACH_NLRI for IPv6.
    pub fn end_of_rib(&self, ipv6: bool) -> Result<Bytes, EncodeError> {
        let attributes = if ipv6 {
            vec![mp_unreach_v6(&[])]
        } else {
            Vec::new()
        };
        let update = UpdateMessage::try_build(
            &[],
            &[],
            &attributes,
            self.four_octet_as,
            false,
            Ipv4UnicastMode::Body,
        )
        .map_err(|e| EncodeError(e.to_string()))?;
        encode_update(&update, self.max_len)
    }
}

/// Encodes one message that is not an UPDATE (OPEN, KEEPALIVE, NOTIFICATION).
pub fn encode(message: &Message) -> Result<Bytes, EncodeError> {
    rustbgpd_wire::encode_message(message)
        .map(BytesMut::freeze)
        .map_err(|e| EncodeError(e.to_string()))
}

/// Cuts a TCP byte stream into BGP messages. A framing error (bad marker, length out of range,
/// unknown type) is fatal for the session: the caller ends it with the NOTIFICATION the error
/// names; nothing here panics on any input.
#[derive(Debug, Default)]
pub struct Frames {
    buf: BytesMut,
    max_len: Option<u16>,
}

impl Frames {
    pub fn new() -> Frames {
        Frames::default()
    }

    /// Raises the accepted length to 65535 once Extended Messages (RFC 8654) is negotiated.
    pub fn set_max_len(&mut self, max_len: u16) {
        self.max_len = Some(max_len);
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, None while more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        let max = self.max_len.unwrap_or(MAX_MESSAGE_LEN);
        let Some(len) = rustbgpd_wire::peek_message_length(&self.buf, max)? else {
            return Ok(None);
        };
        let len = usize::from(len);
        if self.buf.len() < len {
            return Ok(None);
        }
        let mut message = self.buf.split_to(len).freeze();
        rustbgpd_wire::decode_message(&mut message, max).map(Some)
    }
}

/// The NOTIFICATION a decode error calls for (RFC 4271 §6).
pub fn notification_for(error: &DecodeError) -> NotificationMessage {
    let (code, subcode, data) = error.to_notification();
    NotificationMessage::new(code, subcode, data)
}

/// The Cease that closes the losing connection of a collision (RFC 4271 §6.8, RFC 4486
/// subcode 7).
pub fn collision_cease() -> Message {
    cease(cease_subcode::CONNECTION_COLLISION_RESOLUTION, Bytes::new())
}

/// A Cease NOTIFICATION (RFC 4486) with its subcode and data.
pub fn cease(subcode: u8, data: Bytes) -> Message {
    Message::Notification(NotificationMessage::new(
        NotificationCode::Cease,
        subcode,
        data,
    ))
}

/// A Cease (RFC 4486 subcode 2, administrative shutdown) with an RFC 9003 reason text.
pub fn cease_text(reason: &str) -> Bytes {
    // RFC 9003: one length octet, then up to 255 octets of UTF-8.
    let mut text = reason.as_bytes();
    if text.len() > 255 {
        let mut end = 255;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    let mut data = Vec::with_capacity(text.len() + 1);
    data.push(text.len() as u8);
    data.extend_from_slice(text);
    Bytes::from(data)
}

/// Everything the decoder does with bytes from a peer, for the fuzz target and its replay test:
/// frame, decode, parse UPDATEs. Returns how many messages decoded before the first error.
pub fn fuzz_frames(input: &[u8]) -> usize {
    let mut frames = Frames::new();
    frames.push(input);
    let mut n = 0;
    while let Ok(Some(message)) = frames.next_message() {
        if let Message::Update(update) = &message {
            let _ = update.parse(true, false, &[]);
        }
        n += 1;
    }
    n
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
