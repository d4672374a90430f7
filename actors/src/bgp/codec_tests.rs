use std::io::Cursor;

use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;
use rustbgpd_wire::nlri::Prefix;

use super::*;

fn ebgp() -> Encoding {
    Encoding {
        local_asn: 64513,
        ibgp: false,
        four_octet_as: true,
        next_hop_v4: Some(Ipv4Addr::new(10, 77, 0, 11)),
        next_hop_v6: Some("fd00:77::11".parse().unwrap()),
        ipv4: true,
        ipv6: true,
        max_len: MAX_MESSAGE_LEN,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Decodes with the fallback codec and writes it back: both codecs must agree byte for byte.
fn through_netgauze(bytes: &[u8]) -> BgpMessage {
    let msg = BgpMessage::parse(
        &mut SliceReader::new(bytes),
        &mut BgpParsingContext::default(),
    )
    .unwrap_or_else(|e| panic!("netgauze cannot parse {bytes:02x?}: {e:?}"));
    let mut again: Vec<u8> = Vec::new();
    msg.write(&mut Cursor::new(&mut again)).unwrap();
    assert_eq!(again, bytes, "netgauze writes the message back differently");
    msg
}

/// Decodes with rustbgpd and returns the announced and withdrawn prefixes.
fn prefixes(bytes: &Bytes) -> (Vec<IpNet>, Vec<IpNet>, Vec<PathAttribute>) {
    let mut frames = Frames::new();
    frames.push(bytes);
    let Some(Message::Update(update)) = frames.next_message().unwrap() else {
        panic!("not an UPDATE");
    };
    let parsed = update.parse(true, false, &[]).unwrap();
    let to_net = |p: &Prefix| -> IpNet {
        match p {
            Prefix::V4(p) => IpNet::new(IpAddr::V4(p.addr), p.len).unwrap(),
            Prefix::V6(p) => IpNet::new(IpAddr::V6(p.addr), p.len).unwrap(),
        }
    };
    let mut announced: Vec<IpNet> = parsed
        .announced
        .iter()
        .map(|e| to_net(&Prefix::V4(e.prefix)))
        .collect();
    let mut withdrawn: Vec<IpNet> = parsed
        .withdrawn
        .iter()
        .map(|e| to_net(&Prefix::V4(e.prefix)))
        .collect();
    let mut others = Vec::new();
    for attr in parsed.attributes {
        match attr {
            PathAttribute::MpReachNlri(mp) => {
                announced.extend(mp.announced.iter().map(|e| to_net(&e.prefix)))
            }
            PathAttribute::MpUnreachNlri(mp) => {
                withdrawn.extend(mp.withdrawn.iter().map(|e| to_net(&e.prefix)))
            }
            other => others.push(other),
        }
    }
    (announced, withdrawn, others)
}

#[test]
fn keepalive_bytes_both_ways() {
    let bytes = encode(&Message::Keepalive).unwrap();
    let mut want = vec![0xff; 16];
    want.extend_from_slice(&[0x00, 0x13, 0x04]);
    assert_eq!(&bytes[..], &want[..]);
    let mut frames = Frames::new();
    frames.push(&want);
    assert_eq!(frames.next_message().unwrap(), Some(Message::Keepalive));
    assert_eq!(frames.next_message().unwrap(), None);
}

#[test]
fn one_ebgp_prefix_is_the_bytes_rfc_4271_describes() {
    let attrs = PathAttrs::default();
    let out = ebgp().announce(&attrs, &[net("198.51.100.10/32")]).unwrap();
    assert_eq!(out.len(), 1);
    let mut want = vec![0xff; 16];
    want.extend_from_slice(&[0x00, 48, 0x02]); // length 48, UPDATE
    want.extend_from_slice(&[0x00, 0x00]); // no withdrawn routes
    want.extend_from_slice(&[0x00, 20]); // 20 octets of attributes
    want.extend_from_slice(&[0x40, 0x01, 0x01, 0x00]); // ORIGIN IGP
    want.extend_from_slice(&[0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfc, 0x01]); // AS_PATH [64513]
    want.extend_from_slice(&[0x40, 0x03, 0x04, 10, 77, 0, 11]); // NEXT_HOP
    want.extend_from_slice(&[32, 198, 51, 100, 10]); // NLRI 198.51.100.10/32
    assert_eq!(&out[0][..], &want[..]);
    through_netgauze(&out[0]);
}

#[test]
fn ibgp_attributes_round_trip_through_the_fallback_codec() {
    let enc = Encoding {
        ibgp: true,
        ..ebgp()
    };
    let attrs = PathAttrs {
        local_pref: Some(250),
        communities: vec![(64512 << 16) | 100, 0xFFFF_FF01],
        large_communities: vec![[64512, 1, 2]],
    };
    let v4 = enc
        .announce(&attrs, &[net("198.51.100.10/32"), net("198.51.100.0/24")])
        .unwrap();
    let v6 = enc.announce(&attrs, &[net("2001:db8::10/128")]).unwrap();
    for bytes in v4.iter().chain(&v6) {
        let msg = through_netgauze(bytes);
        let json = format!("{msg:?}");
        assert!(json.contains("250"), "{json}");
    }
    let (announced, _, others) = prefixes(&v4[0]);
    assert_eq!(
        announced,
        vec![net("198.51.100.10/32"), net("198.51.100.0/24")]
    );
    assert!(others.contains(&PathAttribute::LocalPref(250)));
    assert!(others.contains(&PathAttribute::Communities(attrs.communities.clone())));
    assert!(
        others.contains(&PathAttribute::LargeCommunities(vec![LargeCommunity::new(
            64512, 1, 2
        )]))
    );
    // iBGP: no AS prepended.
    assert!(others.contains(&PathAttribute::AsPath(AsPath { segments: vec![] })));
    let (announced, _, _) = prefixes(&v6[0]);
    assert_eq!(announced, vec![net("2001:db8::10/128")]);
}

#[test]
fn withdrawals_and_end_of_rib_round_trip() {
    let enc = ebgp();
    let w4 = enc
        .withdraw(&[net("198.51.100.10/32"), net("198.51.100.11/32")])
        .unwrap();
    let w6 = enc.withdraw(&[net("2001:db8::10/128")]).unwrap();
    assert_eq!(
        prefixes(&w4[0]).1,
        vec![net("198.51.100.10/32"), net("198.51.100.11/32")]
    );
    assert_eq!(prefixes(&w6[0]).1, vec![net("2001:db8::10/128")]);
    through_netgauze(&w4[0]);
    through_netgauze(&w6[0]);
    for (v6, family) in [(false, "Ipv4Unicast"), (true, "Ipv6Unicast")] {
        let eor = enc.end_of_rib(v6).unwrap();
        let BgpMessage::Update(update) = through_netgauze(&eor) else {
            panic!("End-of-RIB is not an UPDATE");
        };
        assert_eq!(
            format!("{:?}", update.end_of_rib()),
            format!("Some({family})")
        );
    }
    assert_eq!(enc.end_of_rib(false).unwrap().len(), 23);
}

#[test]
fn ten_thousand_prefixes_pack_into_few_updates_under_the_limit() {
    let enc = ebgp();
    let attrs = PathAttrs {
        communities: vec![(64512 << 16) | 1],
        ..PathAttrs::default()
    };
    for n in [1usize, 800, 10_000] {
        let list: Vec<IpNet> = (0..n as u32)
            .map(|i| IpNet::new(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)), 32).unwrap())
            .collect();
        let out = enc.announce(&attrs, &list).unwrap();
        assert!(
            out.len() <= n.div_ceil(800) + 1,
            "{n} prefixes took {} UPDATEs",
            out.len()
        );
        assert!(out.iter().all(|m| m.len() <= usize::from(MAX_MESSAGE_LEN)));
        let back: Vec<IpNet> = out.iter().flat_map(|m| prefixes(m).0).collect();
        assert_eq!(back, list);
        let v6: Vec<IpNet> = (0..n as u128)
            .map(|i| {
                IpNet::new(IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) + i)), 128).unwrap()
            })
            .collect();
        let out = enc.announce(&attrs, &v6).unwrap();
        assert!(out.iter().all(|m| m.len() <= usize::from(MAX_MESSAGE_LEN)));
        let back: Vec<IpNet> = out.iter().flat_map(|m| prefixes(m).0).collect();
        assert_eq!(back, v6);
        let out = enc.withdraw(&list).unwrap();
        assert!(out.len() <= n.div_ceil(800) + 1);
        let back: Vec<IpNet> = out.iter().flat_map(|m| prefixes(m).1).collect();
        assert_eq!(back, list);
    }
}

#[test]
fn a_stream_cut_anywhere_yields_the_same_messages() {
    let mut stream = Vec::new();
    stream.extend_from_slice(&encode(&Message::Keepalive).unwrap());
    let update = &ebgp()
        .announce(&PathAttrs::default(), &[net("198.51.100.10/32")])
        .unwrap()[0];
    stream.extend_from_slice(update);
    stream.extend_from_slice(&encode(&Message::Keepalive).unwrap());
    for cut in 0..stream.len() {
        let mut frames = Frames::new();
        let mut got = Vec::new();
        for part in [&stream[..cut], &stream[cut..]] {
            frames.push(part);
            while let Some(m) = frames.next_message().unwrap() {
                got.push(m.message_type());
            }
        }
        assert_eq!(got.len(), 3, "cut at {cut}");
    }
}

#[test]
fn broken_input_names_the_notification_rfc_4271_asks_for() {
    // (input, NOTIFICATION code, subcode)
    let mut bad_marker = vec![0xff; 16];
    bad_marker[3] = 0;
    bad_marker.extend_from_slice(&[0x00, 0x13, 0x04]);
    let mut bad_length = vec![0xff; 16];
    bad_length.extend_from_slice(&[0x00, 0x12, 0x04]);
    let mut bad_type = vec![0xff; 16];
    bad_type.extend_from_slice(&[0x00, 0x13, 0x09]);
    let mut long_keepalive = vec![0xff; 16];
    long_keepalive.extend_from_slice(&[0x00, 0x14, 0x04, 0x00]);
    let cases: [(&[u8], NotificationCode, u8); 4] = [
        (&bad_marker, NotificationCode::MessageHeader, 1),
        (&bad_length, NotificationCode::MessageHeader, 2),
        (&bad_type, NotificationCode::MessageHeader, 3),
        (&long_keepalive, NotificationCode::MessageHeader, 2),
    ];
    for (input, code, subcode) in cases {
        let mut frames = Frames::new();
        frames.push(input);
        let error = frames.next_message().unwrap_err();
        let n = notification_for(&error);
        assert_eq!(
            (n.code, n.subcode),
            (code, subcode),
            "{input:02x?}: {error}"
        );
    }
}

#[test]
fn cease_text_is_length_prefixed_and_cut_at_a_character() {
    assert_eq!(&cease_text("bye")[..], b"\x03bye");
    let long = "é".repeat(200);
    let data = cease_text(&long);
    assert_eq!(usize::from(data[0]), data.len() - 1);
    assert!(data.len() - 1 <= 255);
    assert!(std::str::from_utf8(&data[1..]).is_ok());
}

/// Replays the fuzz corpus (and seeded random inputs) under stable `cargo test`: the decoder
/// returns an error or a message for every input, never panics.
#[test]
fn the_decoder_survives_the_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bgp_frames");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    // The seeds that are whole messages decode as such (the replay is not vacuous).
    let seed = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(fuzz_frames(&seed("stream")), 7);
    assert_eq!(fuzz_frames(&seed("update_v6")), 1);
    assert_eq!(fuzz_frames(&seed("bad_marker")), 0);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 200) as usize;
        let mut v = vec![0xff; 16];
        v.extend((0..len).map(|i| (seed.rotate_left(i as u32) & 0xff) as u8));
        inputs.push(v);
    }
    for input in &inputs {
        fuzz_frames(input);
    }
}
