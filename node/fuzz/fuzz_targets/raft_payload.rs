//! A payload on the Raft port, decoded as every request and reply type of the peer protocol:
//! never a panic, and what decodes re-encodes stably.
//! `cargo +nightly fuzz run raft_payload` (from node/); the corpus is replayed under stable
//! `cargo test` by `fuzz::tests::every_target_survives_its_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_node::fuzz::raft_payload(data);
});
