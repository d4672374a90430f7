//! Eligibility: whether a node may announce a VIP, and on which interfaces (L2Advertisements
//! and the layer-2 Eips, their pool, Service and node selectors, `externalTrafficPolicy:
//! Local` endpoints, excluded nodes).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::objects::{Kind, L2AdvertisementSpec, ObjectSpec};
use super::{selector, AllocationTable};

/// What eligibility needs from the table, gathered once per plan (the advertisements only:
/// its cost does not grow with the number of Services).
pub(super) struct Eligibility<'a> {
    table: &'a AllocationTable,
    /// L2Advertisements, and the one each layer2/vip Eip implies.
    advertisements: Vec<(&'a str, Cow<'a, L2AdvertisementSpec>)>,
    /// Each pool's labels (for `ipAddressPoolSelectors`), looked up once per plan rather than
    /// once per VIP and node.
    pool_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> Eligibility<'a> {
    pub(super) fn new(table: &'a AllocationTable) -> Eligibility<'a> {
        let mut advertisements = Vec::new();
        for obj in table.objects_of(Kind::L2Advertisement) {
            if let ObjectSpec::L2Advertisement(spec) = &obj.spec {
                advertisements.push((obj.name.as_str(), Cow::Borrowed(spec)));
            }
        }
        for obj in table.objects_of(Kind::Eip) {
            if let ObjectSpec::Eip(eip) = &obj.spec {
                advertisements.extend(
                    eip.l2_advertisement(&obj.name)
                        .map(|a| (obj.name.as_str(), Cow::Owned(a))),
                );
            }
        }
        let pool_labels = table
            .pools
            .keys()
            .filter_map(|name| Some((name.as_str(), &table.pool_object(name)?.labels)))
            .collect();
        Eligibility {
            table,
            advertisements,
            pool_labels,
        }
    }

    pub(super) fn check(&self, vip: &IpAddr, node: &str) -> Result<Vec<String>, String> {
        let t = self.table;
        let usage = t
            .addresses
            .get(vip)
            .ok_or_else(|| "no Service holds this address".to_string())?;
        let record = t
            .nodes
            .get(node)
            .ok_or_else(|| format!("node {node} is not registered"))?;
        if let Some(why) = &record.facts.excluded {
            return Err(format!("node {node} is excluded: {why}"));
        }
        let no_labels = BTreeMap::new();
        let pool_labels = self
            .pool_labels
            .get(usage.pool.as_str())
            .copied()
            .unwrap_or(&no_labels);
        let users: Vec<&super::ServiceEntry> = usage
            .users
            .keys()
            .filter_map(|k| t.services.get(k.as_str()).map(|e| &**e))
            .collect();
        for entry in &users {
            if entry.spec.external_traffic_policy == "Local" {
                let key = entry.spec.key();
                if !t.ready_nodes(&key).contains(node) {
                    return Err(format!(
                        "externalTrafficPolicy Local and no ready endpoint of {key} here"
                    ));
                }
            }
        }
        let mut selecting = 0;
        let mut accepted = false;
        let mut interfaces: BTreeSet<String> = BTreeSet::new();
        let mut why = String::new();
        for (name, adv) in &self.advertisements {
            let reach = AdReach {
                pools: &adv.ip_address_pools,
                pool_selectors: &adv.ip_address_pool_selectors,
                service_selectors: &adv.service_selectors,
            };
            if !reach.selects(&usage.pool, pool_labels, &users) {
                continue;
            }
            selecting += 1;
            let labels = &record.facts.labels;
            if !adv.node_selectors.is_empty()
                && !adv
                    .node_selectors
                    .iter()
                    .any(|s| selector::matches(s, labels))
            {
                why = format!("L2Advertisement {name}: nodeSelectors do not match");
                continue;
            }
            // No interfaces listed: every interface of the node.
            let here: Vec<&String> = record
                .facts
                .interfaces
                .iter()
                .filter(|i| adv.interfaces.is_empty() || adv.interfaces.contains(i))
                .collect();
            if here.is_empty() && !adv.interfaces.is_empty() {
                why = format!(
                    "L2Advertisement {name}: none of interfaces [{}] is here",
                    adv.interfaces.join(", ")
                );
                continue;
            }
            accepted = true;
            interfaces.extend(here.into_iter().cloned());
        }
        match (accepted, selecting) {
            (true, _) => Ok(interfaces.into_iter().collect()),
            (false, 0) => Err(format!("no L2Advertisement selects pool {}", usage.pool)),
            (false, _) => Err(why),
        }
    }
}

/// What an advertisement (L2 or BGP) selects an address by: its pool (by name or by labels;
/// neither list: every pool) and the Services on it (no selector: every Service).
pub(super) struct AdReach<'a> {
    pub pools: &'a [String],
    pub pool_selectors: &'a [super::objects::LabelSelector],
    pub service_selectors: &'a [super::objects::LabelSelector],
}

impl AdReach<'_> {
    pub(super) fn selects(
        &self,
        pool: &str,
        pool_labels: &BTreeMap<String, String>,
        users: &[&super::ServiceEntry],
    ) -> bool {
        let pool_ok = (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.iter().any(|p| p == pool)
            || self
                .pool_selectors
                .iter()
                .any(|s| selector::matches(s, pool_labels));
        let service_ok = self.service_selectors.is_empty()
            || users.iter().any(|e| {
                self.service_selectors
                    .iter()
                    .any(|s| selector::matches(s, &e.spec.labels))
            });
        pool_ok && service_ok
    }
}
