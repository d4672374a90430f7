//! Allocation: Services to addresses, following MetalLB's rules (shared/METALLB.md §2–§3).
//! Everything here mutates and cannot fail; the checks ran before (config.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use compact_str::CompactString;

use super::intent::{self, Intent, IntentError};
use super::objects::*;
use super::pool::{self, Family, PoolState};
use super::{
    config_ref, service_key, AddressUse, AllocationTable, ApplyBatch, ApplyOutcome, Change,
    ServiceEntry, ServiceState,
};
use super::{selector, validate};

impl AllocationTable {
    pub(super) fn apply_batch(&mut self, batch: &ApplyBatch) -> ApplyOutcome {
        let now = batch.now_ms;
        let mut outcome = ApplyOutcome::default();
        let mut config_changed = false;
        let mut touched: Vec<String> = Vec::new();

        for (_, r) in &batch.deletes {
            let r = r.clone().normalized();
            if r.kind == Kind::Service {
                let key = service_key(&r);
                if self.services.contains_key(&key) {
                    self.release(&key);
                    self.services.remove(&key);
                    self.pending.remove(&key);
                    outcome.changes.push((r, Change::Deleted));
                }
            } else if let Some(old) = self.objects.remove(&r) {
                if let ObjectSpec::EndpointSlice(s) = &old.spec {
                    self.file_slice(&r, &s.service, false);
                }
                config_changed |= r.kind != Kind::EndpointSlice;
                outcome.changes.push((r, Change::Deleted));
            }
        }
        for (_, obj) in &batch.objects {
            let r = obj.reference().normalized();
            match &obj.spec {
                ObjectSpec::Service(spec) => {
                    let key = spec.key();
                    let change = match self.services.get_mut(&key) {
                        Some(entry) if entry.spec == *spec => Change::Unchanged,
                        Some(entry) => {
                            entry.spec = spec.clone();
                            Change::Configured
                        }
                        None => {
                            self.services.insert(
                                key.clone(),
                                Box::new(ServiceEntry {
                                    spec: spec.clone(),
                                    state: ServiceState::Pending {
                                        reason: "not yet evaluated".into(),
                                    },
                                }),
                            );
                            Change::Created
                        }
                    };
                    if change != Change::Unchanged {
                        touched.push(key.clone());
                    }
                    outcome.changes.push((r, change));
                }
                _ => {
                    let change = match self.objects.get(&r) {
                        Some(old) if old == obj => Change::Unchanged,
                        Some(_) => Change::Configured,
                        None => Change::Created,
                    };
                    if change != Change::Unchanged {
                        let old = self.objects.insert(r.clone(), obj.clone());
                        for (spec, present) in [
                            (old.as_ref().map(|o| &o.spec), false),
                            (Some(&obj.spec), true),
                        ] {
                            if let Some(ObjectSpec::EndpointSlice(s)) = spec {
                                self.file_slice(&r, &s.service, present);
                            }
                        }
                        // Endpoints change who may announce, not what is allocated.
                        config_changed |= r.kind != Kind::EndpointSlice;
                    }
                    outcome.changes.push((r, change));
                }
            }
        }

        if config_changed {
            self.generation += 1;
            self.touch_all();
            self.rebuild_pools();
            // Services holding addresses first (they keep them if still valid), as MetalLB's
            // reprocess-all does, so a pending Service can never take an address in use.
            let allocated: Vec<String> = self
                .services
                .keys()
                .filter(|k| self.holds_addresses(k))
                .cloned()
                .collect();
            for key in allocated {
                self.reconcile(&key, now);
            }
        }
        // Touched services that already hold an address go first, for the same reason.
        touched.sort_by_key(|k| !self.holds_addresses(k));
        for key in &touched {
            self.reconcile(key, now);
        }
        self.retry_pending(now);

        outcome.generation = self.generation;
        outcome.log_index = self.log_index;
        for (_, obj) in &batch.objects {
            if let ObjectSpec::Service(spec) = &obj.spec {
                let key = spec.key();
                if let Some(e) = self.services.get(&key) {
                    outcome.services.push((key, e.state.clone()));
                }
            }
        }
        outcome
    }

    /// Re-derives every pool's free index from the configuration and the addresses in use.
    /// Addresses that left every pool stay recorded until their Service is reconciled.
    pub(super) fn rebuild_pools(&mut self) {
        let mut pools: BTreeMap<String, PoolState> = BTreeMap::new();
        for obj in self.objects.values() {
            if let Some(spec) = obj.spec.pool_spec() {
                // Validated before it was stored.
                let ranges = validate::pool_ranges(&spec).unwrap_or_default();
                pools.insert(
                    obj.name.clone(),
                    PoolState::new(&obj.name, &ranges, spec.avoid_buggy_ips),
                );
            }
        }
        for (ip, usage) in self.addresses.iter_mut() {
            if let Some(pool) = pools.values_mut().find(|p| p.admits(ip)) {
                pool.take(ip);
                usage.pool = pool.name.as_str().into();
            }
        }
        self.pools = pools;
    }

    /// The object a pool name stands for: an IPAddressPool or an Eip (they share names).
    pub fn pool_object(&self, name: &str) -> Option<&Object> {
        self.objects
            .get(&config_ref(Kind::IPAddressPool, name))
            .or_else(|| self.objects.get(&config_ref(Kind::Eip, name)))
    }

    pub(super) fn eip(&self, pool: &str) -> Option<&EipSpec> {
        match self.pool_object(pool).map(|o| &o.spec) {
            Some(ObjectSpec::Eip(e)) => Some(e),
            _ => None,
        }
    }

    /// Why a pool gives no new address to this Service: a disabled Eip, or a pool that is not an
    /// Eip of the protocol the Service's OpenELB annotation asks for.
    pub(super) fn refuses(&self, pool: &str, intent: &Intent) -> Option<String> {
        if self.eip(pool).is_some_and(|e| e.disable) {
            return Some(format!("Eip {pool} is disabled"));
        }
        self.wrong_protocol(pool, intent)
    }

    pub(super) fn wrong_protocol(&self, pool: &str, intent: &Intent) -> Option<String> {
        let want = intent.eip_protocol.as_deref()?;
        match self.eip(pool) {
            Some(e) if e.protocol() == want => None,
            Some(e) => Some(format!(
                "Eip {pool} is protocol {}, the Service asks for {want}",
                e.protocol()
            )),
            None => Some(format!(
                "IPAddressPool {pool} is not an Eip of protocol {want} (annotation {})",
                intent::OPENELB_PROTOCOL
            )),
        }
    }

    pub(super) fn pool_of(&self, ip: &IpAddr) -> Option<&PoolState> {
        self.pools.values().find(|p| p.admits(ip))
    }

    pub(super) fn retry_pending(&mut self, now: u64) {
        let pending: Vec<String> = self.pending.iter().cloned().collect();
        for key in pending {
            self.reconcile(&key, now);
        }
    }

    /// Brings one Service to the state its spec and the configuration call for.
    pub(super) fn reconcile(&mut self, key: &str, now: u64) {
        let Some(entry) = self.services.get(key) else {
            return;
        };
        let spec = entry.spec.clone();
        let object = format!("Service/{key}");
        if spec.service_type != "LoadBalancer" || !self.class_matches(&spec) {
            let reason = if spec.service_type != "LoadBalancer" {
                format!("type is {}, not LoadBalancer", spec.service_type)
            } else {
                format!(
                    "loadBalancerClass {:?} is not served here (this cluster serves {:?})",
                    spec.load_balancer_class.as_deref().unwrap_or(""),
                    self.load_balancer_class.as_deref().unwrap_or("")
                )
            };
            if self.release(key) {
                self.event(now, &object, "Normal", "ClearAssignment", &reason);
            }
            self.pending.remove(key);
            self.set_state(key, ServiceState::Ignored { reason });
            return;
        }
        let intent = match Intent::of(&spec) {
            Ok(i) => i,
            Err(IntentError { field, reason }) => {
                self.release(key);
                self.set_pending(key, now, &format!("{field}: {reason}"));
                return;
            }
        };
        if let ServiceState::Allocated { pool, ips } = entry.state.clone() {
            match self.still_valid(key, &intent, &pool, &ips) {
                Ok(pool) => {
                    // Refresh the address records: the Service may have changed its ports, or
                    // (as the sole user) its sharing key.
                    for ip in &ips {
                        self.assign(key, &intent, &pool, ip);
                    }
                    let ips = self.add_second_family(key, &intent, &pool, ips, now);
                    self.set_state(
                        key,
                        ServiceState::Allocated {
                            pool: pool.into(),
                            ips,
                        },
                    );
                    return;
                }
                Err(reason) => {
                    self.release(key);
                    let msg = format!("current IP not allowed any more ({reason}); reallocating");
                    self.event(now, &object, "Normal", "ClearAssignment", &msg);
                }
            }
        }
        match self.allocate(key, &intent) {
            Ok((pool, ips)) => {
                for ip in &ips {
                    self.assign(key, &intent, &pool, ip);
                }
                let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                let msg = format!("Assigned IP [{}] from pool {pool}", list.join(", "));
                self.event(now, &object, "Normal", "IPAllocated", &msg);
                self.pending.remove(key);
                self.set_state(
                    key,
                    ServiceState::Allocated {
                        pool: pool.into(),
                        ips,
                    },
                );
            }
            Err(reason) => self.set_pending(key, now, &reason),
        }
    }

    pub(super) fn holds_addresses(&self, key: &str) -> bool {
        matches!(
            self.services.get(key).map(|e| &e.state),
            Some(ServiceState::Allocated { .. })
        )
    }

    pub(super) fn set_state(&mut self, key: &str, state: ServiceState) {
        if let Some(e) = self.services.get_mut(key) {
            if e.state != state {
                e.state = state;
                self.touch_service(key);
            }
        }
    }

    /// Pending with a reason; the event is emitted once per distinct reason, not per retry.
    pub(super) fn set_pending(&mut self, key: &str, now: u64, reason: &str) {
        let same = matches!(
            self.services.get(key).map(|e| &e.state),
            Some(ServiceState::Pending { reason: r }) if r == reason
        );
        if !same {
            let object = format!("Service/{key}");
            self.event(now, &object, "Warning", "AllocationFailed", reason);
        }
        self.pending.insert(key.to_string());
        self.set_state(
            key,
            ServiceState::Pending {
                reason: reason.to_string(),
            },
        );
    }

    /// Whether a Service may keep what it holds. Returns the pool name (it may have been
    /// relabelled when the address moved to another pool).
    pub(super) fn still_valid(
        &self,
        key: &str,
        intent: &Intent,
        pool: &str,
        ips: &[IpAddr],
    ) -> Result<String, String> {
        let mut current_pool = pool.to_string();
        for ip in ips {
            let Some(p) = self.pool_of(ip) else {
                return Err(format!("{ip} is in no IPAddressPool"));
            };
            current_pool = p.name.clone();
        }
        if let Some(want) = &intent.pool {
            if *want != current_pool {
                return Err(format!("pool {want} requested, IP is from {current_pool}"));
            }
        }
        // A disabled Eip keeps what it gave (OpenELB's rule); a protocol mismatch does not.
        if let Some(why) = self.wrong_protocol(&current_pool, intent) {
            return Err(why);
        }
        if !intent.requested.is_empty() {
            let want: BTreeSet<_> = intent.requested.iter().collect();
            let have: BTreeSet<_> = ips.iter().collect();
            if want != have {
                return Err("requested IPs changed".into());
            }
        }
        let families: Vec<Family> = ips.iter().map(Family::of).collect();
        let fits = intent.family_choices().iter().any(|choice| {
            choice.iter().all(|f| families.contains(f))
                && families.iter().all(|f| choice.contains(f))
        }) || (intent.policy == intent::FamilyPolicy::PreferDualStack
            && families.len() == 1
            && intent.families.contains(&families[0]));
        if !fits {
            return Err("IP families no longer match the Service".into());
        }
        for ip in ips {
            self.check_sharing(key, intent, ip)?;
        }
        Ok(current_pool)
    }

    /// PreferDualStack with one IP gains the other family once its pool has one.
    pub(super) fn add_second_family(
        &mut self,
        key: &str,
        intent: &Intent,
        pool: &str,
        mut ips: Vec<IpAddr>,
        now: u64,
    ) -> Vec<IpAddr> {
        if intent.policy != intent::FamilyPolicy::PreferDualStack
            || ips.len() != 1
            || !intent.requested.is_empty()
        {
            return ips;
        }
        let have = Family::of(&ips[0]);
        let Some(&missing) = intent.families.iter().find(|f| **f != have) else {
            return ips;
        };
        if let Some(ip) = self.pick(key, intent, pool, missing) {
            self.assign(key, intent, pool, &ip);
            ips.push(ip);
            let msg = format!("Assigned additional IP {ip} from pool {pool}");
            self.event(
                now,
                &format!("Service/{key}"),
                "Normal",
                "IPAllocated",
                &msg,
            );
        }
        ips
    }

    /// Whether `key` may use `ip` beside its current users.
    pub(super) fn check_sharing(
        &self,
        key: &str,
        intent: &Intent,
        ip: &IpAddr,
    ) -> Result<(), String> {
        let Some(usage) = self.addresses.get(ip) else {
            return Ok(());
        };
        let others: Vec<(&CompactString, &Vec<(CompactString, u16)>)> = usage
            .users
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let names = || {
            others
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if intent.sharing_key.is_empty() || intent.sharing_key != usage.sharing_key {
            return Err(format!(
                "{ip} is in use by {} and the allow-shared-ip keys differ",
                names()
            ));
        }
        if intent.backend_key != usage.backend_key {
            return Err(format!(
                "{ip} is shared by {} with a different externalTrafficPolicy/selector",
                names()
            ));
        }
        for (other, ports) in &others {
            if let Some((proto, port)) = intent.ports.iter().find(|p| ports.contains(p)) {
                return Err(format!(
                    "{ip}: port {port}/{proto} is already taken by {other}"
                ));
            }
        }
        Ok(())
    }

    /// Pools a Service may take from automatically, in order: matching pinned pools by
    /// priority (0 = unset last) then name, then pools without serviceAllocation by name.
    pub(super) fn candidate_pools(&self, spec: &ServiceSpec, intent: &Intent) -> Vec<String> {
        let ns_labels = self
            .objects
            .get(&config_ref(Kind::Namespace, &spec.namespace))
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        let mut pinned: Vec<(i64, String)> = Vec::new();
        let mut fallback: Vec<String> = Vec::new();
        for obj in self.objects.values() {
            let Some(p) = obj.spec.pool_spec() else {
                continue;
            };
            if !p.auto_assign || self.refuses(&obj.name, intent).is_some() {
                continue;
            }
            match &p.service_allocation {
                None => fallback.push(obj.name.clone()),
                Some(sa) => {
                    let ns_ok = (sa.namespaces.is_empty() && sa.namespace_selectors.is_empty())
                        || sa.namespaces.iter().any(|n| *n == spec.namespace)
                        || sa
                            .namespace_selectors
                            .iter()
                            .any(|s| selector::matches(s, &ns_labels));
                    let svc_ok = sa.service_selectors.is_empty()
                        || sa
                            .service_selectors
                            .iter()
                            .any(|s| selector::matches(s, &spec.labels));
                    if ns_ok && svc_ok {
                        let prio = if sa.priority == 0 {
                            i64::MAX
                        } else {
                            i64::from(sa.priority)
                        };
                        pinned.push((prio, obj.name.clone()));
                    }
                }
            }
        }
        pinned.sort();
        if pinned.is_empty() {
            fallback
        } else {
            // Only if no pinned pool can serve does MetalLB fall back; the caller tries them in
            // order, so append the fallback after the pinned pools.
            pinned.into_iter().map(|(_, n)| n).chain(fallback).collect()
        }
    }

    /// Chooses addresses for a Service. Reads only.
    pub(super) fn allocate(
        &self,
        key: &str,
        intent: &Intent,
    ) -> Result<(String, Vec<IpAddr>), String> {
        let spec = &self.services[key].spec;
        if !intent.requested.is_empty() {
            let mut pool_name: Option<String> = None;
            for ip in &intent.requested {
                let Some(pool) = self.pool_of(ip) else {
                    return Err(format!(
                        "requested IP {ip} is not allowed: it is in no IPAddressPool"
                    ));
                };
                if let Some(want) = &intent.pool {
                    if *want != pool.name {
                        return Err(format!(
                            "requested IP {ip} is in pool {}, not in the requested pool {want}",
                            pool.name
                        ));
                    }
                }
                match &pool_name {
                    Some(p) if *p != pool.name => {
                        return Err("requested IPs must come from one pool".into())
                    }
                    _ => pool_name = Some(pool.name.clone()),
                }
                if let Some(why) = self.refuses(&pool.name, intent) {
                    return Err(format!("requested IP {ip}: {why}"));
                }
                self.check_sharing(key, intent, ip)?;
            }
            return Ok((pool_name.unwrap_or_default(), intent.requested.clone()));
        }
        let candidates = match &intent.pool {
            Some(p) if !self.pools.contains_key(p) => {
                return Err(format!("IPAddressPool {p} does not exist"))
            }
            Some(p) => match self.refuses(p, intent) {
                Some(why) => return Err(why),
                None => vec![p.clone()],
            },
            None => self.candidate_pools(spec, intent),
        };
        if candidates.is_empty() {
            return Err("no IPAddressPool serves this Service".into());
        }
        let mut full: Vec<&str> = Vec::new();
        for choice in intent.family_choices() {
            for name in &candidates {
                let pool = &self.pools[name];
                if !choice.iter().all(|f| pool.has_family(*f)) {
                    continue;
                }
                let picked: Vec<IpAddr> = choice
                    .iter()
                    .filter_map(|f| self.pick(key, intent, name, *f))
                    .collect();
                if picked.len() == choice.len() {
                    return Ok((name.clone(), picked));
                }
                if !full.contains(&name.as_str()) {
                    full.push(name);
                }
            }
        }
        if full.is_empty() {
            let fams: Vec<&str> = intent.families.iter().map(|f| f.as_str()).collect();
            return Err(format!(
                "no IPAddressPool among [{}] has {}",
                candidates.join(", "),
                fams.join(" and ")
            ));
        }
        Err(format!("no available IPs in pool {}", full.join(", ")))
    }

    /// The first usable address of `family` in pool walk order: the lowest free one, or for a
    /// Service with a sharing key, a lower compatible shared one.
    pub(super) fn pick(
        &self,
        key: &str,
        intent: &Intent,
        pool: &str,
        family: Family,
    ) -> Option<IpAddr> {
        let state = self.pools.get(pool)?;
        let free = state.lowest_free(family);
        let mut best = free.and_then(|ip| state.position(&ip).map(|pos| (pos, ip)));
        if !intent.sharing_key.is_empty() {
            for ip in self
                .shared
                .get(intent.sharing_key.as_str())
                .into_iter()
                .flatten()
            {
                if Family::of(ip) != family || !state.admits(ip) {
                    continue;
                }
                if self.check_sharing(key, intent, ip).is_err() {
                    continue;
                }
                let pos = state.position(ip)?;
                if best.is_none_or(|(b, _)| pos < b) {
                    best = Some((pos, *ip));
                }
            }
        }
        best.map(|(_, ip)| ip)
    }

    pub(super) fn assign(&mut self, key: &str, intent: &Intent, pool: &str, ip: &IpAddr) {
        let before = self.slot(ip);
        if !self.addresses.contains_key(ip) {
            if let Some(p) = self.pools.get_mut(pool) {
                p.take(ip);
            }
            // Every allocated address has an ownership record (kept after release, so its
            // epoch keeps counting if the address comes back).
            self.vips.entry(*ip).or_default();
        }
        let usage = self.addresses.entry(*ip).or_insert_with(|| {
            Box::new(AddressUse {
                pool: pool.into(),
                sharing_key: intent.sharing_key.clone(),
                backend_key: intent.backend_key.clone(),
                users: super::small_map::SmallMap::new(),
            })
        });
        usage.users.insert(key.into(), intent.ports.clone());
        if usage.users.len() == 1 {
            // The sole user may change its key in place.
            let old = std::mem::replace(&mut usage.sharing_key, intent.sharing_key.clone());
            usage.backend_key = intent.backend_key.clone();
            if let Some(set) = self.shared.get_mut(old.as_str()) {
                set.remove(ip);
                if set.is_empty() {
                    self.shared.remove(old.as_str());
                }
            }
        }
        if !intent.sharing_key.is_empty() {
            self.shared
                .entry(intent.sharing_key.to_string())
                .or_default()
                .insert(*ip);
        }
        self.refile(*ip, before);
    }

    /// Gives back whatever the Service holds. Returns whether it held anything.
    pub(super) fn release(&mut self, key: &str) -> bool {
        let Some(ServiceState::Allocated { ips, .. }) =
            self.services.get(key).map(|e| e.state.clone())
        else {
            return false;
        };
        for ip in &ips {
            let before = self.slot(ip);
            let Some(usage) = self.addresses.get_mut(ip) else {
                continue;
            };
            usage.users.remove(key);
            if usage.users.is_empty() {
                let usage = self.addresses.remove(ip).expect("present above");
                if let Some(p) = self.pools.get_mut(usage.pool.as_str()) {
                    p.give_back(ip);
                }
                if let Some(set) = self.shared.get_mut(usage.sharing_key.as_str()) {
                    set.remove(ip);
                    if set.is_empty() {
                        self.shared.remove(usage.sharing_key.as_str());
                    }
                }
            }
            self.refile(*ip, before);
        }
        self.set_state(
            key,
            ServiceState::Pending {
                reason: "released".into(),
            },
        );
        true
    }

    /// Pool names with their spec and usage per family.
    pub fn pool_usage(
        &self,
        name: &str,
    ) -> Option<(Option<&Object>, pool::FamilyUsage, pool::FamilyUsage)> {
        let p = self.pools.get(name)?;
        Some((
            self.pool_object(name),
            p.usage(Family::V4),
            p.usage(Family::V6),
        ))
    }
}
