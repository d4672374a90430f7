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
pub use state_machine::{Applied, SharedTable, StateMachine};

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
