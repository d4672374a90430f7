//! Configuration checks: whether a batch may be applied, decided before anything changes (reads
//! only). A refusal names the document, the object, the field and the reason.

use std::collections::{BTreeMap, BTreeSet};

use super::intent::Intent;
use super::objects::*;
use super::pool::{AddressRange, PoolState};
use super::{
    config_ref, does_not_exist, service_key, validate, AllocationTable, ApplyBatch, ApplyError,
};

impl AllocationTable {
    pub(super) fn validate_batch(&self, batch: &ApplyBatch) -> Result<(), ApplyError> {
        let error = |doc: u32, r: &ObjectRef, (field, reason): (String, String)| ApplyError {
            document: doc,
            object: r.to_string(),
            field,
            reason,
        };
        let mut seen = BTreeSet::new();
        for (doc, obj) in &batch.objects {
            let r = obj.reference().normalized();
            validate::object(obj).map_err(|e| error(*doc, &r, e))?;
            if !seen.insert(r.clone()) {
                return Err(error(
                    *doc,
                    &r,
                    (
                        "metadata.name".into(),
                        "the same object appears twice in this batch".into(),
                    ),
                ));
            }
        }
        for (doc, r) in &batch.deletes {
            let r = r.clone().normalized();
            let exists = if r.kind == Kind::Service {
                self.services.contains_key(&service_key(&r))
            } else {
                self.objects.contains_key(&r)
            };
            if batch.strict && !exists {
                return Err(error(
                    *doc,
                    &r,
                    ("metadata.name".into(), "not found".into()),
                ));
            }
        }

        // The configuration as it would be after this batch.
        let mut config: BTreeMap<ObjectRef, (u32, &Object)> = self
            .objects
            .iter()
            .map(|(r, o)| (r.clone(), (0, o)))
            .collect();
        for (_, r) in &batch.deletes {
            config.remove(&r.clone().normalized());
        }
        for (doc, obj) in &batch.objects {
            if obj.spec.kind() != Kind::Service {
                config.insert(obj.reference().normalized(), (*doc, obj));
            }
        }
        // Pools (IPAddressPools and Eips): one name space, and no address in two pools.
        let mut ranges: Vec<(AddressRange, &ObjectRef, String)> = Vec::new();
        // The resulting pools, kept for the requested-IP check below.
        let mut resulting_pools: Vec<PoolState> = Vec::new();
        let mut pool_names: BTreeMap<&str, &ObjectRef> = BTreeMap::new();
        for (r, (doc, obj)) in &config {
            let Some(spec) = obj.spec.pool_spec() else {
                continue;
            };
            if let Some(other) = pool_names.insert(&r.name, r) {
                // Report it on the object this batch brings (document 0 is the stored one).
                let (doc, r, other) = if *doc == 0 {
                    (config[other].0, other, r)
                } else {
                    (*doc, r, other)
                };
                return Err(error(
                    doc,
                    r,
                    (
                        "metadata.name".into(),
                        format!(
                            "{} {} exists: IPAddressPools and Eips are both pools and share one name space",
                            other.kind, other.name
                        ),
                    ),
                ));
            }
            let parsed = validate::pool_ranges(&spec).map_err(|e| error(*doc, r, e))?;
            resulting_pools.push(PoolState::new(&r.name, &parsed, spec.avoid_buggy_ips));
            for (i, range) in parsed.into_iter().enumerate() {
                if let Some((_, other, other_text)) =
                    ranges.iter().find(|(o, _, _)| o.overlaps(&range))
                {
                    return Err(error(
                        *doc,
                        r,
                        (
                            validate::address_field(r.kind, i),
                            format!(
                                "{} overlaps {other_text} of {} {}",
                                spec.addresses[i], other.kind, other.name
                            ),
                        ),
                    ));
                }
                ranges.push((range, r, spec.addresses[i].clone()));
            }
        }
        // BGPPeers and OpenELB's BgpPeers: one name space (an advertisement's `peers` and a
        // route's peer name either).
        for (r, (doc, _)) in config.range(config_ref(Kind::BgpPeer, "")..) {
            if r.kind != Kind::BgpPeer {
                break;
            }
            if config.contains_key(&config_ref(Kind::BGPPeer, &r.name)) {
                return Err(error(
                    *doc,
                    r,
                    (
                        "metadata.name".into(),
                        format!("BGPPeer {} exists: BGPPeers and BgpPeers are both peers and share one name space", r.name),
                    ),
                ));
            }
        }
        // A pool named by an advertisement may be either kind of pool, a peer either kind of
        // peer.
        let exists = |kind: Kind, name: &str| {
            if kind.is_pool() {
                pool_names.contains_key(name)
            } else if kind == Kind::BGPPeer {
                config.contains_key(&config_ref(kind, name))
                    || config.contains_key(&config_ref(Kind::BgpPeer, name))
            } else {
                config.contains_key(&config_ref(kind, name))
            }
        };
        let bgp_conf = match config.get(&config_ref(Kind::BgpConf, super::openelb::BGP_CONF_NAME)) {
            Some((
                _,
                Object {
                    spec: ObjectSpec::BgpConf(c),
                    ..
                },
            )) => Some(c),
            _ => None,
        };
        let aliases: BTreeSet<&str> = config
            .values()
            .filter_map(|(_, o)| match &o.spec {
                ObjectSpec::Community(c) => Some(c.communities.iter().map(|a| a.name.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        for (r, (doc, obj)) in &config {
            // Every name in `names` must be an object of `kind` in the resulting config.
            let all_exist = |field: &str, kind: Kind, names: &[String]| -> Result<(), ApplyError> {
                match names.iter().position(|n| !exists(kind, n)) {
                    None => Ok(()),
                    Some(i) => Err(error(
                        *doc,
                        r,
                        (format!("{field}[{i}]"), does_not_exist(kind, &names[i])),
                    )),
                }
            };
            match &obj.spec {
                ObjectSpec::L2Advertisement(s) => {
                    all_exist(
                        "spec.ipAddressPools",
                        Kind::IPAddressPool,
                        &s.ip_address_pools,
                    )?;
                }
                ObjectSpec::BgpAdvertisement(s) => {
                    all_exist(
                        "spec.ipAddressPools",
                        Kind::IPAddressPool,
                        &s.ip_address_pools,
                    )?;
                    all_exist("spec.peers", Kind::BGPPeer, &s.peers)?;
                    for (i, c) in s.communities.iter().enumerate() {
                        if !validate::is_community_value(c) && !aliases.contains(c.as_str()) {
                            return Err(error(
                                *doc,
                                r,
                                (
                                    format!("spec.communities[{i}]"),
                                    format!("{c:?} is neither a community value (a:b, large:a:b:c, a well-known name) nor an alias defined by a Community"),
                                ),
                            ));
                        }
                    }
                }
                ObjectSpec::OpenElbBgpPeer(s) => {
                    let Some(mapped) = s.bgp_peer(bgp_conf) else {
                        return Err(error(
                            *doc,
                            r,
                            (
                                "spec.conf.localAs".into(),
                                format!(
                                    "missing, and there is no BgpConf {:?} to take the local AS (spec.as) from",
                                    super::openelb::BGP_CONF_NAME
                                ),
                            ),
                        ));
                    };
                    validate::openelb_bgp_peer(&mapped).map_err(|e| error(*doc, r, e))?;
                }
                ObjectSpec::BgpPeer(s) => {
                    if let Some(p) = s
                        .bfd_profile
                        .as_ref()
                        .filter(|p| !exists(Kind::BFDProfile, p))
                    {
                        let reason = does_not_exist(Kind::BFDProfile, p);
                        return Err(error(*doc, r, ("spec.bfdProfile".into(), reason)));
                    }
                }
                _ => {}
            }
        }
        self.check_local_prefs(&config, &pool_names)
            .map_err(|(doc, r, e)| error(doc, &r, e))?;
        if batch.strict {
            // A requested IP must lie in some pool of the resulting configuration.
            for (doc, obj) in &batch.objects {
                let ObjectSpec::Service(spec) = &obj.spec else {
                    continue;
                };
                if spec.service_type != "LoadBalancer" || !self.class_matches(spec) {
                    continue;
                }
                let Ok(intent) = Intent::of(spec) else {
                    continue; // already reported by validate::object
                };
                for ip in &intent.requested {
                    if !resulting_pools.iter().any(|p| p.admits(ip)) {
                        return Err(error(
                            *doc,
                            &obj.reference(),
                            (
                                "spec.loadBalancerIP".into(),
                                format!("requested IP {ip} is not in any IPAddressPool"),
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Two BGPAdvertisements that may announce one prefix to one peer must not ask for two
    /// different LOCAL_PREFs (MetalLB refuses it too): they overlap when they select a common
    /// pool and a common peer (an empty list selects all).
    fn check_local_prefs(
        &self,
        config: &BTreeMap<ObjectRef, (u32, &Object)>,
        pools: &BTreeMap<&str, &ObjectRef>,
    ) -> Result<(), (u32, ObjectRef, (String, String))> {
        let labels = |name: &str| {
            pools
                .get(name)
                .and_then(|r| config.get(*r))
                .map(|(_, o)| &o.labels)
        };
        let mut ads: Vec<(u32, &ObjectRef, &BgpAdvertisementSpec, u32, BTreeSet<&str>)> =
            Vec::new();
        for (r, (doc, obj)) in config {
            let ObjectSpec::BgpAdvertisement(ad) = &obj.spec else {
                continue;
            };
            let Some(pref) = ad.local_pref else { continue };
            let selected: BTreeSet<&str> = pools
                .keys()
                .copied()
                .filter(|p| {
                    (ad.ip_address_pools.is_empty() && ad.ip_address_pool_selectors.is_empty())
                        || ad.ip_address_pools.iter().any(|n| n == p)
                        || labels(p).is_some_and(|l| {
                            ad.ip_address_pool_selectors
                                .iter()
                                .any(|s| super::selector::matches(s, l))
                        })
                })
                .collect();
            ads.push((*doc, r, ad, pref, selected));
        }
        for (i, (doc, r, ad, pref, selected)) in ads.iter().enumerate() {
            for (odoc, other, oad, opref, oselected) in &ads[..i] {
                let peers_meet = ad.peers.is_empty()
                    || oad.peers.is_empty()
                    || ad.peers.iter().any(|p| oad.peers.contains(p));
                let shared = selected.intersection(oselected).next();
                if let (true, Some(pool), true) = (peers_meet, shared, pref != opref) {
                    // Report it on the object this batch brings.
                    let (doc, r, other, pref, opref) = if *doc == 0 {
                        (*odoc, *other, *r, opref, pref)
                    } else {
                        (*doc, *r, *other, pref, opref)
                    };
                    return Err((
                        doc,
                        r.clone(),
                        (
                            "spec.localPref".into(),
                            format!(
                                "{pref} conflicts with localPref {opref} of {} {}: both advertise pool {pool} to the same peers",
                                other.kind, other.name
                            ),
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn class_matches(&self, spec: &ServiceSpec) -> bool {
        spec.load_balancer_class == self.load_balancer_class
    }
}
