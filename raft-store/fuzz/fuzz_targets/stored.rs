//! Bytes read back from a peer's own sled store (log entries, vote, snapshot, the table in
//! it): a damaged disk must give an error, never a panic. `cargo +nightly fuzz run stored`
//! (from raft-store/); the corpus is replayed under stable `cargo test` by
//! `store::fuzz_tests::the_store_decoders_survive_the_fuzz_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_raft_store::store::fuzz_stored(data);
});
