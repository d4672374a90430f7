//! The Raft log, vote and committed index in sled trees. Appends are acknowledged to openraft
//! only after sled has flushed them to disk.
//!
//! Group commit: `append` writes the entries and returns at once, handing its acknowledgement
//! to one flusher thread; a flush acknowledges every append written before it, in order. So
//! openraft keeps accepting writes while the disk syncs, and one fsync carries every append
//! that arrived during the previous one (etcd batches its WAL syncs the same way).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};

use crate::codec;
use crate::{NodeId, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Set in a node's environment, the log store acknowledges appends and votes without flushing
/// them (sled still writes in the background every half second): a negative control for the
/// chaos harness, which must see committed writes lost when every node is killed at once.
/// Never in production.
pub const UNSAFE_NO_FSYNC: &str = "RAFTLB_UNSAFE_NO_FSYNC";

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    /// index (big-endian u64) -> encoded entry
    log: sled::Tree,
    meta: sled::Tree,
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
    /// False only under [`UNSAFE_NO_FSYNC`].
    durable: bool,
}

/// The flusher thread: waits for an acknowledgement to give, flushes once for it and every
/// other one queued meanwhile, then gives them in the order their appends were made. Ends when
/// the last handle of the store is dropped.
fn start_flusher(
    db: sled::Db,
    durable: bool,
) -> std::io::Result<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
    std::thread::Builder::new()
        .name("raftlb-log-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                let flushed = if durable {
                    db.flush().map(|_| ()).map_err(|e| e.to_string())
                } else {
                    Ok(())
                };
                for callback in waiting {
                    callback.log_io_completed(flushed.clone().map_err(std::io::Error::other));
                }
            }
        })?;
    Ok(tx)
}

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub(super) fn new(db: &sled::Db) -> Result<LogStore, sled::Error> {
        let durable = std::env::var_os(UNSAFE_NO_FSYNC).is_none();
        if !durable {
            tracing::warn!(
                "{UNSAFE_NO_FSYNC} is set: the Raft log is acknowledged WITHOUT flushing it (a negative control; never in production)"
            );
        }
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("log")?,
            meta: db.open_tree("log_meta")?,
            flusher: start_flusher(db.clone(), durable)?,
            durable,
        })
    }

    /// Flushes sled to disk (skipped under [`UNSAFE_NO_FSYNC`]).
    async fn flush(&self) -> StorageResult<()> {
        if self.durable {
            self.db.flush_async().await.map_err(write_err)?;
        }
        Ok(())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
        }
    }

    async fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> StorageResult<()> {
        let bytes = codec::encode(value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(write_err)?;
        self.flush().await?;
        Ok(())
    }

    fn last_purged(&self) -> StorageResult<Option<LogId<NodeId>>> {
        self.get_meta(KEY_LAST_PURGED)
    }

    /// Removes the log entries whose index (as a big-endian key) falls in `range`.
    fn remove_entries(&self, range: impl RangeBounds<[u8; 8]>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(range) {
            let (k, _) = kv.map_err(write_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(write_err)
    }
}

fn bound(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let range = (bound(range.start_bound()), bound(range.end_bound()));
        self.log
            .range::<[u8; 8], _>(range)
            .map(|kv| {
                let (_, v) = kv.map_err(read_err)?;
                codec::decode(&v).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => {
                let entry: Entry<TypeConfig> = codec::decode(&v).map_err(read_err)?;
                Some(*entry.get_log_id())
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(KEY_VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    /// Read once, at startup. The vote comes back as cast but never as committed: openraft
    /// restores a peer whose own vote was committed as leader of its old term at once, and such
    /// a leader takes its read index from the committed index on disk, which is not flushed
    /// with each commit, so a linearizable read could miss a write acknowledged before the
    /// crash. Uncommitted, the vote still binds the peer in its term, and it must win an
    /// election and commit a blank entry before it leads (Raft thesis §6.4).
    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self
            .get_meta::<Vote<NodeId>>(KEY_VOTE)?
            .map(|v| Vote::new(v.leader_id.term, v.leader_id.node_id)))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed here: the committed index only spares a restarted peer some waiting
        // (openraft may lose it), and it reaches the disk with the next append's flush. sled
        // recovers a prefix of its writes, so a committed index on disk never runs ahead of
        // the entries written before it.
        let bytes = codec::encode(&committed).map_err(write_err)?;
        self.meta.insert(KEY_COMMITTED, bytes).map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(write_err)?;
            batch.insert(&entry.get_log_id().index.to_be_bytes(), bytes);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        // Acknowledged once the entries are on disk, by the flusher.
        if let Err(std::sync::mpsc::SendError(callback)) = self.flusher.send(callback) {
            // No flusher (it cannot end while this store lives): flush here.
            let flushed = self.db.flush().map(|_| ()).map_err(super::io_err);
            callback.log_io_completed(flushed);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.remove_entries(log_id.index.to_be_bytes()..)?;
        self.flush().await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Record the purge point first: a crash between the two steps leaves extra entries,
        // never a hole.
        self.put_meta(KEY_LAST_PURGED, &log_id).await?;
        self.remove_entries(..=log_id.index.to_be_bytes())
    }
}
