use super::*;

/// An Up packet with P, multiplier 3, discriminators 1 and 2, 300 ms both ways: written out
/// field by field from RFC 5880 §4.1.
const UP_POLL: [u8; 24] = [
    0x20, // version 1, diag 0
    0xe0, // state 3 (Up) << 6 | P
    0x03, // detect mult
    0x18, // length 24
    0, 0, 0, 1, // my discriminator
    0, 0, 0, 2, // your discriminator
    0x00, 0x04, 0x93, 0xe0, // desired min TX 300,000 us
    0x00, 0x04, 0x93, 0xe0, // required min RX 300,000 us
    0, 0, 0, 0, // required min echo RX
];

fn up_poll() -> Packet {
    Packet {
        diag: Diag::None,
        state: State::Up,
        poll: true,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 1,
        your_discriminator: 2,
        desired_min_tx_us: 300_000,
        required_min_rx_us: 300_000,
        required_min_echo_rx_us: 0,
    }
}

#[test]
fn encodes_the_rfc_layout_byte_for_byte() {
    assert_eq!(up_poll().encode(), UP_POLL);
    let down = Packet {
        diag: Diag::ControlDetectionTimeExpired,
        state: State::Down,
        poll: false,
        final_: true,
        your_discriminator: 0,
        ..up_poll()
    };
    let b = down.encode();
    assert_eq!(b[0], 0x21, "version 1, diag 1");
    assert_eq!(b[1], 0x50, "state 1 << 6 | F");
    assert_eq!(&b[8..12], &[0, 0, 0, 0]);
}

#[test]
fn decodes_what_it_encodes_and_what_peers_send() {
    assert_eq!(Packet::decode(&UP_POLL), Ok(up_poll()));
    // BIRD and FRR send exactly 24 bytes; a longer datagram with length 24 is fine too.
    let mut longer = UP_POLL.to_vec();
    longer.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(Packet::decode(&longer), Ok(up_poll()));
    for diag in 0..32u8 {
        for state in 0..4u8 {
            let mut b = UP_POLL;
            b[0] = 0x20 | diag;
            b[1] = state << 6;
            let p = Packet::decode(&b).expect("valid");
            assert_eq!(Packet::decode(&p.encode()), Ok(p));
        }
    }
}

#[test]
fn discards_what_rfc_5880_says_to_discard() {
    let with = |f: &dyn Fn(&mut [u8; 24])| {
        let mut b = UP_POLL;
        f(&mut b);
        Packet::decode(&b)
    };
    assert_eq!(Packet::decode(&UP_POLL[..23]), Err(Discard::Short));
    assert_eq!(with(&|b| b[0] = 0x40), Err(Discard::Version(2)));
    assert_eq!(with(&|b| b[0] = 0x00), Err(Discard::Version(0)));
    assert_eq!(with(&|b| b[3] = 23), Err(Discard::Length(23)));
    assert_eq!(with(&|b| b[3] = 25), Err(Discard::Length(25)));
    assert_eq!(with(&|b| b[1] |= 0x04), Err(Discard::Authentication));
    assert_eq!(with(&|b| b[1] |= 0x01), Err(Discard::Multipoint));
    assert_eq!(with(&|b| b[2] = 0), Err(Discard::DetectMult));
    assert_eq!(
        with(&|b| b[4..8].copy_from_slice(&[0; 4])),
        Err(Discard::MyDiscriminator)
    );
}

#[test]
fn the_fuzz_body_survives_random_and_mutated_input() {
    let mut rng = 0x9e37_79b9u32;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let mut decoded = 0;
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 24 && next() % 2 == 0 {
            // Mostly-valid packets reach the deeper paths.
            b[..24].copy_from_slice(&UP_POLL);
            let i = (next() % 24) as usize;
            b[i] ^= next() as u8;
        }
        if fuzz_packet(&b) {
            decoded += 1;
        }
    }
    assert!(decoded > 1000, "only {decoded} inputs decoded");
}

/// Replays the fuzz corpus under stable `cargo test`: every input decodes or is discarded,
/// and what decodes re-encodes to itself.
#[test]
fn the_decoder_survives_the_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bfd_packet");
    let inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).ok()?,
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    assert!(inputs.len() >= 8, "no corpus in {}", dir.display());
    let seed = |name: &str| {
        inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    // The seeds say what they are (the replay is not vacuous).
    assert!(fuzz_packet(&seed("up")));
    assert!(fuzz_packet(&seed("admin_down")));
    assert!(!fuzz_packet(&seed("auth")));
    assert!(!fuzz_packet(&seed("short")));
    for (_, input) in &inputs {
        fuzz_packet(input);
    }
}
