//! An Ethernet frame from the segment: the ARP responder's parser must never panic, and what it
//! answers must be a well-formed reply to the asker.
//! `cargo +nightly fuzz run arp_frame` (from actors/); the corpus is replayed under stable
//! `cargo test` by `wire::tests::the_parsers_survive_the_fuzz_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_actors::wire::fuzz_arp(data);
});
