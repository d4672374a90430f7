//! Datagrams on UDP 3784: the BFD Control packet decoder must never panic, and what it
//! accepts must re-encode to itself. `cargo +nightly fuzz run bfd_packet` (from actors/); the
//! corpus is replayed under stable `cargo test` by
//! `bfd::packet::tests::the_decoder_survives_the_fuzz_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_actors::bfd::fuzz_packet(data);
});
