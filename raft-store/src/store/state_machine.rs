//! The state machine: the allocation table in memory, shared read-only with the admin API, and
//! its snapshot persisted in sled.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::table::{AllocationTable, Response};
use crate::{NodeId, TypeConfig};

const KEY_SNAPSHOT: &[u8] = b"snapshot";

type StorageResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// The applied state: what the admin API reads.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: Membership,
    pub table: AllocationTable,
}

impl Applied {
    /// A digest of the table (CRC-32 of its log encoding) with the index it was applied up
    /// to: replicas at one index hold byte-identical tables, so their digests are equal.
    pub fn digest(&self) -> (u64, u32) {
        let bytes = crate::codec::encode(&self.table).unwrap_or_default();
        (
            self.last_applied.map_or(0, |l| l.index),
            crc32fast::hash(&bytes),
        )
    }
}

/// Read access to the applied state for the admin API (never held across an await).
pub type SharedTable = Arc<RwLock<Applied>>;

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    pub(crate) data: Vec<u8>,
}

/// Everything the store decodes from its own disk, for the `stored` fuzz target
/// (`raft-store/fuzz`) and its replay test: log entries, the vote and log ids, a stored
/// snapshot and the table inside it. A damaged store must give an error, never a panic; a
/// table that decodes must answer its digest. Returns how many of the types took the bytes.
pub fn fuzz_stored(data: &[u8]) -> usize {
    let mut took = 0;
    if let Ok(e) = codec::decode::<Entry<TypeConfig>>(data) {
        took += 1;
        let again: Entry<TypeConfig> =
            codec::decode(&codec::encode(&e).expect("encodes")).expect("an encoded entry decodes");
        assert_eq!(again.log_id, e.log_id);
    }
    took += usize::from(codec::decode::<openraft::Vote<NodeId>>(data).is_ok());
    took += usize::from(codec::decode::<LogId<NodeId>>(data).is_ok());
    let table = |bytes: &[u8]| {
        codec::decode::<Applied>(bytes).map(|a| {
            a.digest();
        })
    };
    if let Ok(stored) = codec::decode::<StoredSnapshot>(data) {
        took += 1;
        let _ = table(&stored.data);
    }
    took += usize::from(table(data).is_ok());
    took
}

#[derive(Clone)]
pub struct StateMachine {
    db: sled::Db,
    tree: sled::Tree,
    state: SharedTable,
    /// Distinguishes snapshots built at the same log id.
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, &e).into()
}

impl StateMachine {
    pub(super) fn new(db: &sled::Db) -> Result<StateMachine, sled::Error> {
        let tree = db.open_tree("state_machine")?;
        let mut applied = Applied::default();
        if let Some(bytes) = tree.get(KEY_SNAPSHOT)? {
            // A snapshot that cannot be decoded is a corrupt store: refuse to start rather than
            // serve from an empty table.
            let stored: StoredSnapshot = codec::decode(&bytes)
                .map_err(|e| sled::Error::Unsupported(format!("snapshot in store: {e}")))?;
            applied = codec::decode(&stored.data)
                .map_err(|e| sled::Error::Unsupported(format!("snapshot data: {e}")))?;
            applied
                .table
                .restored(applied.last_applied.map_or(0, |l| l.index));
        }
        Ok(StateMachine {
            db: db.clone(),
            tree,
            state: Arc::new(RwLock::new(applied)),
            snapshot_seq: Arc::default(),
        })
    }

    pub fn shared(&self) -> SharedTable {
        self.state.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn persist(&self, stored: &StoredSnapshot) -> StorageResult<()> {
        let bytes = codec::encode(stored).map_err(sm_err)?;
        self.tree.insert(KEY_SNAPSHOT, bytes).map_err(sm_err)?;
        self.db.flush_async().await.map_err(sm_err)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, last_applied, membership) = {
            let state = self.read();
            let data = codec::encode(&*state).map_err(sm_err)?;
            (data, state.last_applied, state.membership.clone())
        };
        let seq = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist(&stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut state = self.write();
        let mut replies = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Response::Ok,
                EntryPayload::Normal(ref command) => state.table.apply(entry.log_id.index, command),
                EntryPayload::Membership(ref m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Response::Ok
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let mut applied: Applied = codec::decode(&data).map_err(snap_err)?;
        // The meta is authoritative for what the snapshot covers.
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied
            .table
            .restored(meta.last_log_id.map_or(0, |l| l.index));
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: codec::encode(&applied).map_err(sm_err)?,
        };
        self.persist(&stored).await?;
        *self.write() = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        match self.tree.get(KEY_SNAPSHOT).map_err(snap_err)? {
            None => Ok(None),
            Some(bytes) => {
                let stored: StoredSnapshot = codec::decode(&bytes).map_err(snap_err)?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: Box::new(Cursor::new(stored.data)),
                }))
            }
        }
    }
}
