//! openraft storage on sled: [`LogStore`] (vote, log, committed index, purge marker) and
//! [`StateMachine`] (the allocation table and its snapshot).
//!
//! Durability: every log append and vote is flushed (fsync) before it is acknowledged (appends
//! in groups: see [`LogStore`]); the committed index rides along with the next flush. The state machine lives in memory and is made durable by snapshots: the last
//! snapshot (table, last-applied log id, membership) is persisted in sled, and on restart
//! openraft re-applies the committed log after it. `apply` is deterministic, so the replay
//! rebuilds exactly the table that was lost.
//!
//! Never does anything here touch the network.

// openraft's storage traits dictate `StorageError` (224 bytes) as the error type; boxing it
// locally would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;

pub use log_store::{LogStore, UNSAFE_NO_FSYNC};
pub use state_machine::{fuzz_stored, Applied, SharedTable, StateMachine};

use std::path::Path;

/// Opens (or creates) the sled database under `dir` and returns both halves of the store.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), sled::Error> {
    let db = sled::Config::new()
        .path(dir)
        // Small cache: the table lives in memory already; sled only holds the log tail, the
        // snapshot and a few keys, and the kernel's page cache serves re-reads.
        .cache_capacity(8 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let log = LogStore::new(&db)?;
    let sm = StateMachine::new(&db)?;
    Ok((log, sm))
}

fn io_err(e: impl std::error::Error + 'static) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::*;
    use crate::{NodeId, TypeConfig};

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("temp dir");
            let (log, sm) = open(dir.path()).expect("open sled");
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage test suite against the sled store.
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
        Suite::test_all(SledBuilder)
    }
}

#[cfg(test)]
mod fuzz_tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, Vote};

    use super::state_machine::StoredSnapshot;
    use super::*;
    use crate::{codec, Command, TypeConfig};

    fn corpus() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join("stored")) else {
                continue;
            };
            for e in entries.flatten() {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
        out
    }

    /// Replays the `stored` corpus and its regressions under stable `cargo test`, each input
    /// also truncated and with every byte flipped (a damaged disk).
    #[test]
    fn the_store_decoders_survive_the_fuzz_corpus() {
        let inputs = corpus();
        assert!(inputs.len() >= 4, "no corpus for stored");
        assert!(inputs.iter().any(|b| fuzz_stored(b) > 0));
        for bytes in &inputs {
            fuzz_stored(bytes);
            for cut in 0..bytes.len() {
                fuzz_stored(&bytes[..cut]);
            }
            for i in 0..bytes.len().min(256) {
                let mut b = bytes.clone();
                b[i] ^= 0xff;
                fuzz_stored(&b);
            }
        }
    }

    /// Writes the seed corpus from real values
    /// (`cargo test -p raftlb-raft-store write_stored_seed_corpus -- --ignored`).
    #[test]
    #[ignore]
    fn write_stored_seed_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stored");
        std::fs::create_dir_all(&dir).unwrap();
        let save = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
        let log_id = LogId::new(CommittedLeaderId::new(2, 1), 5);
        let cmd = Command::SetLoadBalancerClass {
            class: Some("raftlb.io/lb".into()),
            now_ms: 1_700_000_000_000,
        };
        let normal = Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Normal(cmd),
        };
        let members = Membership::new(vec![[1, 2, 3].into()], None);
        let membership = Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Membership(members),
        };
        save("entry_normal", codec::encode(&normal).unwrap());
        save("entry_membership", codec::encode(&membership).unwrap());
        save("vote", codec::encode(&Vote::new_committed(2, 1)).unwrap());
        save("log_id", codec::encode(&log_id).unwrap());
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id),
                ..Default::default()
            },
            data: codec::encode(&Applied::default()).unwrap(),
        };
        save("snapshot", codec::encode(&snapshot).unwrap());
    }
}
