//! A map kept as a sorted `Vec`, for the few entries an address's users or a Service's selector
//! hold. A `BTreeMap`'s
//! first leaf has room for eleven entries whatever it holds (about 560 bytes with `String`
//! keys), ten times what one or two entries need; at 100,000 addresses that was 50 MB a peer.
//! It encodes exactly as a `BTreeMap` does (a serde map in key order), so logs and snapshots
//! written with either decode as the other.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    pub fn new() -> Self {
        SmallMap::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                // Grow by one: a Vec's first push reserves room for four, and most of these
                // maps hold one entry for good (an address's single user).
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SmallMap<K, V> {
    /// Later entries replace earlier ones with the same key, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = SmallMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SmallMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K: Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for SmallMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
            type Value = SmallMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = SmallMap(Vec::with_capacity(access.size_hint().unwrap_or(0).min(64)));
                // Through insert: key order and one entry per key, whatever the input.
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::codec;

    type Users = Vec<(String, u16)>;

    #[test]
    fn behaves_as_a_btreemap_and_encodes_the_same_bytes() {
        let mut small: SmallMap<String, Users> = SmallMap::new();
        let mut btree: BTreeMap<String, Users> = BTreeMap::new();
        for (i, key) in ["ns/b", "ns/a", "ns/c", "ns/a", "ns/d"].iter().enumerate() {
            let ports = vec![("TCP".to_string(), i as u16)];
            assert_eq!(
                small.insert(key.to_string(), ports.clone()),
                btree.insert(key.to_string(), ports)
            );
        }
        assert_eq!(small.remove("ns/c"), btree.remove("ns/c"));
        assert_eq!(small.remove("ns/x"), None);
        assert_eq!(small.len(), btree.len());
        assert_eq!(small.get("ns/a"), btree.get("ns/a"));
        assert!(small.contains_key("ns/d") && !small.contains_key("ns/c"));
        let pairs: Vec<_> = small.iter().collect();
        assert_eq!(pairs, btree.iter().collect::<Vec<_>>());

        let bytes = codec::encode(&small).unwrap();
        assert_eq!(bytes, codec::encode(&btree).unwrap(), "same wire format");
        let back: BTreeMap<String, Users> = codec::decode(&bytes).unwrap();
        assert_eq!(back, btree);
        let back: SmallMap<String, Users> = codec::decode(&codec::encode(&btree).unwrap()).unwrap();
        assert_eq!(back, small);
    }

    /// The table keeps short strings (names, namespaces, pools, Service keys) inline as
    /// `CompactString`: logs and snapshots written with `String` must decode unchanged.
    #[test]
    fn compact_strings_encode_as_strings() {
        type Compact = compact_str::CompactString;
        let long = "a-namespace-longer-than-twenty-four-bytes/and-a-name";
        let plain: SmallMap<String, Users> =
            [("ns/a", 80), (long, 443)]
                .into_iter()
                .fold(SmallMap::new(), |mut m, (k, p)| {
                    m.insert(k.to_string(), vec![("TCP".to_string(), p)]);
                    m
                });
        let compact: SmallMap<Compact, Vec<(Compact, u16)>> = [("ns/a", 80), (long, 443)]
            .into_iter()
            .fold(SmallMap::new(), |mut m, (k, p)| {
                m.insert(k.into(), vec![("TCP".into(), p)]);
                m
            });
        let bytes = codec::encode(&plain).unwrap();
        assert_eq!(codec::encode(&compact).unwrap(), bytes, "same wire format");
        let back: SmallMap<Compact, Vec<(Compact, u16)>> = codec::decode(&bytes).unwrap();
        assert_eq!(back, compact);
    }
}
