//! Bytes from a BGP peer: framing, decoding and UPDATE parsing must never panic.
//! `cargo +nightly fuzz run bgp_frames` (from actors/); the corpus is replayed under stable
//! `cargo test` by `bgp::codec::tests::the_decoder_survives_the_fuzz_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_actors::bgp::fuzz_frames(data);
});
