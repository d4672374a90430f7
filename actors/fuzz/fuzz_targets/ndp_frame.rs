//! An Ethernet frame from the segment: the NDP responder's parser must never panic (option
//! loops end, DAD from :: is handled), and what it answers must be a well-formed advertisement.
//! `cargo +nightly fuzz run ndp_frame` (from actors/); the corpus is replayed under stable
//! `cargo test` by `wire::tests::the_parsers_survive_the_fuzz_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_actors::wire::fuzz_ndp(data);
});
