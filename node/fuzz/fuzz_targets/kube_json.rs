//! An object as the Kubernetes API server sends it, read with the manifest rules.
//! `cargo +nightly fuzz run kube_json` (from node/); the corpus is replayed under stable
//! `cargo test` by `fuzz::tests::every_target_survives_its_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raftlb_node::fuzz::kube_json(data);
});
