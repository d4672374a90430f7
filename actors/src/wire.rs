//! ARP (RFC 826) and NDP (RFC 4861) frames: what a responder reads and what it sends.
//!
//! Parsing uses pnet's packet views, which bound-check every field; anything short,
//! malformed or not addressed to a question we answer is `None`, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use pnet_datalink::MacAddr;
use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::Packet;

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// "Who has `target`? Tell `sender_ip` at `sender_mac`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpQuestion {
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target: Ipv4Addr,
}

/// A neighbour solicitation for `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpQuestion {
    /// Where to send the answer: the source link-layer option, else the Ethernet source.
    pub sender_mac: MacAddr,
    /// `::` for duplicate address detection.
    pub sender_ip: Ipv6Addr,
    pub target: Ipv6Addr,
}

/// An ARP request over Ethernet for an IPv4 address. Gratuitous announcements (sender IP =
/// target) are not questions.
pub fn arp_question(frame: &[u8]) -> Option<ArpQuestion> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(eth.payload())?;
    if arp.get_operation() != ArpOperations::Request
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return None;
    }
    let q = ArpQuestion {
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target: arp.get_target_proto_addr(),
    };
    (q.sender_ip != q.target).then_some(q)
}

fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn arp(op: u16, smac: MacAddr, sip: Ipv4Addr, tmac: MacAddr, tip: Ipv4Addr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // Ethernet, IPv4, lengths
    out.extend_from_slice(&op.to_be_bytes());
    out.extend_from_slice(&smac.octets());
    out.extend_from_slice(&sip.octets());
    out.extend_from_slice(&tmac.octets());
    out.extend_from_slice(&tip.octets());
}

/// "`vip` is at `mac`", to the asker.
pub fn arp_reply(mac: MacAddr, vip: Ipv4Addr, to: &ArpQuestion) -> Vec<u8> {
    let mut out = Vec::with_capacity(42);
    ethernet(to.sender_mac, mac, ETHERTYPE_ARP, &mut out);
    arp(2, mac, vip, to.sender_mac, to.sender_ip, &mut out);
    out
}

/// Gratuitous ARP (a broadcast request with sender = target = `vip`): every host that has
/// `vip` in its cache moves it to `mac`.
pub fn gratuitous_arp(mac: MacAddr, vip: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::with_capacity(42);
    ethernet(MacAddr::broadcast(), mac, ETHERTYPE_ARP, &mut out);
    arp(1, mac, vip, MacAddr::zero(), vip, &mut out);
    out
}

/// A neighbour solicitation (ICMPv6 135, hop limit 255, valid checksum).
pub fn ndp_question(frame: &[u8]) -> Option<NdpQuestion> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new(eth.payload())?;
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 || ip.get_hop_limit() != 255 {
        return None;
    }
    let len = usize::from(ip.get_payload_length());
    let body = ip.payload().get(..len)?;
    let icmp = Icmpv6Packet::new(body)?;
    if icmp.get_icmpv6_type() != Icmpv6Types::NeighborSolicit || icmp.get_icmpv6_code().0 != 0 {
        return None;
    }
    let (src, dst) = (ip.get_source(), ip.get_destination());
    if pnet_packet::icmpv6::checksum(&icmp, &src, &dst) != icmp.get_checksum() {
        return None;
    }
    // type, code, checksum, reserved (8 bytes), then the target.
    let target: [u8; 16] = body.get(8..24)?.try_into().ok()?;
    let mut sender_mac = eth.get_source();
    let mut options = body.get(24..)?;
    while options.len() >= 8 {
        let (kind, units) = (options[0], usize::from(options[1]));
        if units == 0 || options.len() < units * 8 {
            return None; // RFC 4861 §7.1.1: a zero-length option invalidates the packet
        }
        if kind == 1 {
            sender_mac = MacAddr::new(
                options[2], options[3], options[4], options[5], options[6], options[7],
            );
        }
        options = &options[units * 8..];
    }
    Some(NdpQuestion {
        sender_mac,
        sender_ip: src,
        target: Ipv6Addr::from(target),
    })
}

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn neighbor_advert(
    mac: MacAddr,
    vip: Ipv6Addr,
    dst_mac: MacAddr,
    dst_ip: Ipv6Addr,
    solicited: bool,
) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]);
    let flags = if solicited { 0x40 | 0x20 } else { 0x20 }; // S, O
    icmp.extend_from_slice(&[flags, 0, 0, 0]);
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac.octets());
    let sum = Icmpv6Packet::new(&icmp)
        .map(|p| pnet_packet::icmpv6::checksum(&p, &vip, &dst_ip))
        .unwrap_or(0);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut out = Vec::with_capacity(14 + 40 + icmp.len());
    ethernet(dst_mac, mac, ETHERTYPE_IPV6, &mut out);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    out.extend_from_slice(&[58, 255]);
    out.extend_from_slice(&vip.octets());
    out.extend_from_slice(&dst_ip.octets());
    out.extend_from_slice(&icmp);
    out
}

/// The solicited answer: to the asker, or to all nodes when it asked from `::`.
pub fn ndp_reply(mac: MacAddr, vip: Ipv6Addr, to: &NdpQuestion) -> Vec<u8> {
    if to.sender_ip.is_unspecified() {
        return unsolicited_advert(mac, vip);
    }
    neighbor_advert(mac, vip, to.sender_mac, to.sender_ip, true)
}

/// An unsolicited neighbour advertisement with the override flag, to all nodes.
pub fn unsolicited_advert(mac: MacAddr, vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes_mac = MacAddr::new(0x33, 0x33, 0, 0, 0, 1);
    neighbor_advert(mac, vip, all_nodes_mac, ALL_NODES, false)
}

/// Everything the ARP responder does with a frame from the segment, for the `arp_frame` fuzz
/// target and its replay test: parse it, and answer what is a question. The answer must be an
/// ARP reply to the asker that names the VIP it asked for. Returns whether it was a question.
pub fn fuzz_arp(frame: &[u8]) -> bool {
    let Some(q) = arp_question(frame) else {
        return false;
    };
    let mac = MacAddr::new(0x02, 0, 0, 0, 0, 1);
    let reply = arp_reply(mac, q.target, &q);
    let eth = EthernetPacket::new(&reply).expect("a reply is a whole frame");
    assert_eq!(eth.get_destination(), q.sender_mac);
    let arp = ArpPacket::new(eth.payload()).expect("a reply carries ARP");
    assert_eq!(arp.get_operation(), ArpOperations::Reply);
    assert_eq!(arp.get_sender_proto_addr(), q.target);
    assert_eq!(arp.get_target_proto_addr(), q.sender_ip);
    assert!(arp_question(&reply).is_none(), "a reply is no question");
    true
}

/// The same for the NDP responder (`ndp_frame`): parse, answer a solicitation with an
/// advertisement of the target that is itself well formed (checksum included).
pub fn fuzz_ndp(frame: &[u8]) -> bool {
    let Some(q) = ndp_question(frame) else {
        return false;
    };
    let mac = MacAddr::new(0x02, 0, 0, 0, 0, 1);
    let reply = ndp_reply(mac, q.target, &q);
    let eth = EthernetPacket::new(&reply).expect("a reply is a whole frame");
    let ip = Ipv6Packet::new(eth.payload()).expect("a reply carries IPv6");
    assert_eq!(ip.get_source(), q.target);
    let icmp = Icmpv6Packet::new(ip.payload()).expect("a reply carries ICMPv6");
    assert_eq!(icmp.get_icmpv6_type(), Icmpv6Types::NeighborAdvert);
    assert_eq!(
        pnet_packet::icmpv6::checksum(&icmp, &ip.get_source(), &ip.get_destination()),
        icmp.get_checksum()
    );
    assert!(
        ndp_question(&reply).is_none(),
        "an advertisement is no question"
    );
    true
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
