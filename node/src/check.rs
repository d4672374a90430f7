//! `raftlb check`: what can be known about manifests without a cluster.
//!
//! Each file is parsed (field errors, with document, object, field and reason), then the files
//! are applied in order to an empty table, as `raftlb up -f` does (overlapping pools, a name
//! used by two pools, bad references between the files). A name that an advertisement or a
//! peer refers to and that none of the files defines is not an error here: the cluster may
//! hold it, and MetalLB's documentation shows a pool and the advertisement naming it as
//! separate snippets. It is reported as a note and, for the rules between objects, read as
//! MetalLB reads a name that resolves to nothing: it selects nothing.

use std::collections::BTreeSet;

use raftlb_raft_store::table::objects::{Kind, LabelSelector, Object, ObjectSpec};
use raftlb_raft_store::table::{AllocationTable, ApplyBatch, Command, Response};

use crate::manifest::Manifest;

/// The files, and a note for every name they use but do not define.
#[derive(Debug)]
pub struct Checked {
    pub manifests: Vec<Manifest>,
    pub notes: Vec<String>,
}

/// Names the files define, by what refers to them.
#[derive(Default)]
struct Defined {
    pools: BTreeSet<String>,
    peers: BTreeSet<String>,
    bfd_profiles: BTreeSet<String>,
    community_aliases: BTreeSet<String>,
}

impl Defined {
    fn of(manifests: &[Manifest]) -> Defined {
        let mut d = Defined::default();
        for o in manifests
            .iter()
            .flat_map(|(_, objs)| objs.iter().map(|(_, o)| o))
        {
            let name = o.name.clone();
            match &o.spec {
                ObjectSpec::IpAddressPool(_) | ObjectSpec::Eip(_) => {
                    d.pools.insert(name);
                }
                ObjectSpec::BgpPeer(_) | ObjectSpec::OpenElbBgpPeer(_) => {
                    d.peers.insert(name);
                }
                ObjectSpec::BfdProfile(_) => {
                    d.bfd_profiles.insert(name);
                }
                ObjectSpec::Community(c) => {
                    d.community_aliases
                        .extend(c.communities.iter().map(|a| a.name.clone()));
                }
                _ => {}
            }
        }
        d
    }
}

/// Matches no pool: what a list of pool names that all resolve to nothing selects.
fn nothing() -> LabelSelector {
    LabelSelector {
        match_labels: [(
            "raftlb.io/check".to_string(),
            "names-outside-these-files".to_string(),
        )]
        .into(),
        ..Default::default()
    }
}

/// Drops the names of `list` that `known` lacks, with a note for each.
fn keep_known(
    list: &mut Vec<String>,
    known: impl Fn(&str) -> bool,
    field: &str,
    kind: Kind,
    note: &mut dyn FnMut(String, String),
) {
    let mut i = 0;
    list.retain(|n| {
        let ok = known(n);
        if !ok {
            note(format!("{field}[{i}]"), format!("{kind} {n:?}"));
        }
        i += 1;
        ok
    });
}

/// An advertisement's pool names: those defined elsewhere dropped; if none is left (and no
/// selector), a selector matching nothing, since an empty list would mean every pool.
fn keep_known_pools(
    names: &mut Vec<String>,
    selectors: &mut Vec<LabelSelector>,
    d: &Defined,
    note: &mut dyn FnMut(String, String),
) {
    let named = !names.is_empty();
    keep_known(
        names,
        |n| d.pools.contains(n),
        "spec.ipAddressPools",
        Kind::IPAddressPool,
        note,
    );
    if named && names.is_empty() && selectors.is_empty() {
        selectors.push(nothing());
    }
}

/// The object as the rules between objects read it, noting the names defined elsewhere.
fn resolve(o: &Object, d: &Defined, note: &mut dyn FnMut(String, String)) -> Object {
    let mut o = o.clone();
    match &mut o.spec {
        ObjectSpec::L2Advertisement(s) => {
            keep_known_pools(
                &mut s.ip_address_pools,
                &mut s.ip_address_pool_selectors,
                d,
                note,
            );
        }
        ObjectSpec::BgpAdvertisement(s) => {
            keep_known_pools(
                &mut s.ip_address_pools,
                &mut s.ip_address_pool_selectors,
                d,
                note,
            );
            keep_known(
                &mut s.peers,
                |n| d.peers.contains(n),
                "spec.peers",
                Kind::BGPPeer,
                note,
            );
            keep_known(
                &mut s.communities,
                |c| {
                    raftlb_raft_store::table::validate::is_community_value(c)
                        || d.community_aliases.contains(c)
                },
                "spec.communities",
                Kind::Community,
                note,
            );
        }
        ObjectSpec::BgpPeer(s) => {
            if let Some(p) = s
                .bfd_profile
                .take_if(|p| !d.bfd_profiles.contains(p.as_str()))
            {
                note(
                    "spec.bfdProfile".into(),
                    format!("{} {p:?}", Kind::BFDProfile),
                );
            }
        }
        _ => {}
    }
    o
}

/// The rules between objects: the files applied in order to an empty table.
pub fn together(manifests: Vec<Manifest>) -> Result<Checked, String> {
    let defined = Defined::of(&manifests);
    let mut notes = Vec::new();
    let mut table = AllocationTable::new();
    for (index, (source, objects)) in (1..).zip(&manifests) {
        let mut resolved = Vec::with_capacity(objects.len());
        for (doc, o) in objects {
            let mut note = |field: String, what: String| {
                notes.push(format!(
                    "{source}: document {doc} ({}/{}): {field}: {what} is not in these files; it must exist in the cluster (until it does, this name selects nothing)",
                    o.spec.kind(),
                    o.name
                ));
            };
            resolved.push((*doc, resolve(o, &defined, &mut note)));
        }
        let batch = ApplyBatch {
            objects: resolved,
            strict: true,
            ..Default::default()
        };
        if let Response::Rejected(e) = table.apply(index, &Command::Apply(batch)) {
            return Err(format!("{source}: {e}"));
        }
    }
    Ok(Checked { manifests, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> Manifest {
        (
            name.to_string(),
            crate::manifest::parse(text, name).unwrap(),
        )
    }

    const POOL: &str = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
        metadata: {name: first-pool, namespace: metallb-system}\n\
        spec: {addresses: [192.168.10.0/24]}\n";
    const L2_BY_LIST: &str = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\n\
        metadata: {name: example, namespace: metallb-system}\n\
        spec: {ipAddressPools: [first-pool]}\n";

    #[test]
    fn a_name_defined_in_none_of_the_files_is_a_note_not_an_error() {
        let c = together(vec![file("l2.yaml", L2_BY_LIST)]).unwrap();
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(
            c.notes[0].starts_with(
                "l2.yaml: document 1 (L2Advertisement/example): spec.ipAddressPools[0]: IPAddressPool \"first-pool\" is not in these files"
            ),
            "{}",
            c.notes[0]
        );
        // Given with the file that defines it, nothing to say; the object is checked as written.
        let c = together(vec![file("pool.yaml", POOL), file("l2.yaml", L2_BY_LIST)]).unwrap();
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn pools_peers_and_community_aliases_from_outside_are_each_noted() {
        let text = format!(
            "{}---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
             metadata: {{name: single}}\nspec: {{addresses: [10.1.1.1/32]}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: agg}}\n\
             spec: {{ipAddressPools: [elsewhere], peers: [p1], communities: [gold, \"65000:1\"]}}\n",
            POOL
        );
        let c = together(vec![file("bgp.yaml", &text)]).unwrap();
        let fields: Vec<&str> = c
            .notes
            .iter()
            .filter_map(|n| n.split(": ").nth(2))
            .collect();
        assert_eq!(
            fields,
            [
                "spec.ipAddressPools[0]",
                "spec.peers[0]",
                "spec.communities[0]"
            ],
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn rules_between_the_files_still_fail() {
        let overlap = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
            metadata: {name: second}\nspec: {addresses: [192.168.10.128/25]}\n";
        let e = together(vec![file("a.yaml", POOL), file("b.yaml", overlap)]).unwrap_err();
        assert!(e.starts_with("b.yaml: ") && e.contains("overlaps"), "{e}");
    }
}
