//! The one place raftlb turns values into bytes and back: postcard over serde.
//!
//! Log entries, votes, snapshots and sled values all go through here, so the encoding can be
//! changed in one place. (Not bincode: its last release is a tombstone that does not compile.)

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] postcard::Error);

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_allocvec(value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}
