//! Frames against byte vectors written out by hand, both directions; the ICMPv6 checksum is
//! checked against an RFC 1071 sum written here, not pnet's.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const CLIENT_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x64);
const OUR_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0b);

/// Who has 10.77.0.200? Tell 10.77.0.100 (02:00:00:00:00:64).
fn who_has() -> Vec<u8> {
    hex("ffffffffffff 020000000064 0806
         0001 0800 06 04 0001 020000000064 0a4d0064 000000000000 0a4d00c8")
}

#[test]
fn arp_request_parses_and_the_reply_is_byte_exact() {
    let q = arp_question(&who_has()).expect("a question");
    assert_eq!(
        q,
        ArpQuestion {
            sender_mac: CLIENT_MAC,
            sender_ip: Ipv4Addr::new(10, 77, 0, 100),
            target: Ipv4Addr::new(10, 77, 0, 200),
        }
    );
    let reply = arp_reply(OUR_MAC, q.target, &q);
    let want = hex("020000000064 02000000000b 0806
                    0001 0800 06 04 0002 02000000000b 0a4d00c8 020000000064 0a4d0064");
    assert_eq!(reply, want);
}

#[test]
fn gratuitous_arp_is_a_broadcast_request_for_itself() {
    let g = gratuitous_arp(OUR_MAC, Ipv4Addr::new(10, 77, 0, 200));
    let want = hex("ffffffffffff 02000000000b 0806
                    0001 0800 06 04 0001 02000000000b 0a4d00c8 000000000000 0a4d00c8");
    assert_eq!(g, want);
    assert_eq!(arp_question(&g), None, "an announcement is not a question");
}

#[test]
fn arp_garbage_is_ignored() {
    let good = who_has();
    for n in 0..good.len() {
        assert_eq!(arp_question(&good[..n]), None, "truncated to {n}");
    }
    let mut reply = good.clone();
    reply[21] = 2; // operation: reply
    assert_eq!(arp_question(&reply), None);
    let mut v6 = good.clone();
    v6[16] = 0x86; // protocol type 0x86dd
    v6[17] = 0xdd;
    assert_eq!(arp_question(&v6), None);
    // Pseudo-random frames: no panic, and nothing that is not ARP parses as ARP.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 90) as usize;
        let frame: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
        let _ = arp_question(&frame);
        let _ = ndp_question(&frame);
    }
}

/// RFC 1071 over the IPv6 pseudo-header (RFC 8200 §8.1) and the ICMPv6 message.
fn oracle_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 58]);
    let mut msg = icmp.to_vec();
    msg[2] = 0;
    msg[3] = 0;
    bytes.extend_from_slice(&msg);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const CLIENT6: &str = "fd00:77::64";
const VIP6: &str = "fd00:77::c8";

/// Neighbour solicitation for fd00:77::c8 from fd00:77::64 with a source link-layer option.
fn solicitation(hop_limit: u8, corrupt: bool) -> Vec<u8> {
    let src: Ipv6Addr = CLIENT6.parse().unwrap();
    let dst: Ipv6Addr = "ff02::1:ff00:c8".parse().unwrap();
    let mut icmp = hex("87 00 0000 00000000");
    icmp.extend_from_slice(&VIP6.parse::<Ipv6Addr>().unwrap().octets());
    icmp.extend_from_slice(&hex("01 01 020000000064")); // source link-layer address
    let sum = oracle_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&(if corrupt { sum ^ 1 } else { sum }).to_be_bytes());
    let mut f = hex("3333ff0000c8 020000000064 86dd 60000000");
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn neighbour_solicitation_parses_and_the_advert_is_byte_exact() {
    let ns = solicitation(255, false);
    let q = ndp_question(&ns).expect("a solicitation");
    assert_eq!(q.sender_mac, CLIENT_MAC);
    assert_eq!(q.sender_ip, CLIENT6.parse::<Ipv6Addr>().unwrap());
    assert_eq!(q.target, VIP6.parse::<Ipv6Addr>().unwrap());

    let na = ndp_reply(OUR_MAC, q.target, &q);
    let vip: Ipv6Addr = VIP6.parse().unwrap();
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&hex("0201 02000000000b"));
    let sum = oracle_checksum(vip, q.sender_ip, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut want = hex("020000000064 02000000000b 86dd 60000000 0020 3a ff");
    want.extend_from_slice(&vip.octets());
    want.extend_from_slice(&q.sender_ip.octets());
    want.extend_from_slice(&icmp);
    assert_eq!(na, want);
}

#[test]
fn unsolicited_advert_goes_to_all_nodes_with_override_only() {
    let vip: Ipv6Addr = VIP6.parse().unwrap();
    let na = unsolicited_advert(OUR_MAC, vip);
    assert_eq!(&na[..6], &hex("333300000001")[..]);
    assert_eq!(
        &na[38..54],
        &"ff02::1".parse::<Ipv6Addr>().unwrap().octets()
    );
    let icmp = &na[54..];
    assert_eq!(icmp[4], 0x20, "override, not solicited");
    assert_eq!(
        u16::from_be_bytes([icmp[2], icmp[3]]),
        oracle_checksum(vip, "ff02::1".parse().unwrap(), icmp)
    );
}

#[test]
fn bad_solicitations_are_ignored() {
    assert_eq!(ndp_question(&solicitation(64, false)), None, "hop limit");
    assert_eq!(ndp_question(&solicitation(255, true)), None, "checksum");
    let good = solicitation(255, false);
    for n in 0..good.len() {
        assert_eq!(ndp_question(&good[..n]), None, "truncated to {n}");
    }
    // A zero-length option invalidates the packet (RFC 4861 §7.1.1).
    let mut zero = good.clone();
    let opt = 14 + 40 + 24;
    zero[opt + 1] = 0;
    assert_eq!(ndp_question(&zero), None);
}

/// Replays the `arp_frame` and `ndp_frame` fuzz corpora (and their regressions) under stable
/// `cargo test`, plus every truncation and single-byte change of the hand-written frames.
#[test]
fn the_parsers_survive_the_fuzz_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, body) in [
        ("arp_frame", fuzz_arp as fn(&[u8]) -> bool),
        ("ndp_frame", fuzz_ndp),
    ] {
        let mut questions = 0;
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap();
                inputs += 1;
                questions += usize::from(body(&bytes));
            }
        }
        assert!(
            inputs >= 4,
            "no corpus for {target} under {}",
            root.display()
        );
        assert!(questions >= 1, "no question in the {target} corpus");
    }
    for frame in [who_has(), solicitation(255, false)] {
        for len in 0..frame.len() {
            fuzz_arp(&frame[..len]);
            fuzz_ndp(&frame[..len]);
        }
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut f = frame.clone();
                f[i] ^= 1 << bit;
                fuzz_arp(&f);
                fuzz_ndp(&f);
            }
        }
    }
}
