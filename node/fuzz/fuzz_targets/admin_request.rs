//! An admin request body, decoded as each message the service validates itself, then validated.
//! `cargo +nightly fuzz run admin_request` (from node/); the corpus is replayed under stable
//! `cargo test` by `fuzz::tests::every_target_survives_its_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_node::fuzz::admin_request(data);
});
