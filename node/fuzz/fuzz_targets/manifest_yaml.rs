//! A manifest as `ctl apply -f` reads it: errors name the source, alias and nesting bombs end
//! in an error, two parses agree.
//! `cargo +nightly fuzz run manifest_yaml` (from node/); the corpus is replayed under stable
//! `cargo test` by `fuzz::tests::every_target_survives_its_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_node::fuzz::manifest_yaml(data);
});
