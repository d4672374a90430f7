//! How the table looks to people and to kubectl-shaped tools: the admin API's messages (shared
//! by the list RPCs and the watch), Kubernetes JSON for Services and text tables for
//! `raftlb ctl`.

use raftlb_proto::admin::{FamilyUsage, Pool, Service, Vip};
use raftlb_raft_store::table::intent::ANN_ALLOCATED_FROM;
use raftlb_raft_store::table::objects::{ObjectSpec, ServiceSpec};
use raftlb_raft_store::table::pool::FamilyUsage as FamilyUsageOf;
use raftlb_raft_store::table::{AllocationTable, ServiceEntry, ServiceState};
use serde_json::{json, Value};

fn usage(u: FamilyUsageOf) -> FamilyUsage {
    FamilyUsage {
        size: u.size.to_string(),
        used: u.used.to_string(),
        free: u.free.to_string(),
    }
}

/// Every pool (IPAddressPools and Eips) with its usage.
pub fn pool_messages(table: &AllocationTable) -> Vec<Pool> {
    table
        .pools()
        .keys()
        .filter_map(|name| {
            let (object, v4, v6) = table.pool_usage(name)?;
            let object = object?;
            let spec = object.spec.pool_spec()?;
            let (protocol, disabled) = match &object.spec {
                ObjectSpec::Eip(e) => (e.protocol().to_string(), e.disable),
                _ => (String::new(), false),
            };
            Some(Pool {
                name: name.clone(),
                addresses: spec.addresses.clone(),
                auto_assign: spec.auto_assign,
                avoid_buggy_ips: spec.avoid_buggy_ips,
                ipv4: Some(usage(v4)),
                ipv6: Some(usage(v6)),
                priority: spec.service_allocation.as_ref().map_or(0, |s| s.priority),
                kind: object.spec.kind().to_string(),
                protocol,
                disabled,
            })
        })
        .collect()
}

/// Every allocated address with its owner; `lease_of(owner)` fills the lease column.
pub fn vip_messages(table: &AllocationTable, lease_of: &dyn Fn(&str) -> String) -> Vec<Vip> {
    let owners = table.owners();
    table
        .addresses()
        .iter()
        .map(|(ip, usage)| {
            let rec = table.vips().get(ip).cloned().unwrap_or_default();
            Vip {
                ip: ip.to_string(),
                pool: usage.pool.to_string(),
                services: usage.users.keys().map(|k| k.to_string()).collect(),
                sharing_key: usage.sharing_key.to_string(),
                interfaces: owners.get(ip).map(|(_, i)| i.clone()).unwrap_or_default(),
                reason: if rec.owner.is_none() {
                    table.unowned_reason(ip)
                } else {
                    String::new()
                },
                lease: rec.owner.as_deref().map_or(String::new(), lease_of),
                owner: rec.owner.unwrap_or_default(),
                epoch: rec.epoch,
                since_ms: rec.since_ms,
            }
        })
        .collect()
}

pub fn service_message(entry: &ServiceEntry) -> Service {
    Service {
        r#type: entry.spec.service_type.to_string(),
        kubernetes_json: service_json(&entry.spec, &entry.state).to_string(),
        ..service_outcome(&entry.spec.namespace, &entry.spec.name, &entry.state)
    }
}

/// A Service's allocation alone, without its type and Kubernetes object: what `apply` reports
/// for each Service it touched (thousands per call; ctl prints only this).
pub fn service_outcome(namespace: &str, name: &str, state: &ServiceState) -> Service {
    let (state, ips, pool, reason) = match state {
        ServiceState::Allocated { pool, ips } => (
            "Allocated",
            ips.iter().map(|i| i.to_string()).collect(),
            pool.to_string(),
            String::new(),
        ),
        ServiceState::Pending { reason } => ("Pending", vec![], String::new(), reason.clone()),
        ServiceState::Ignored { reason } => ("Ignored", vec![], String::new(), reason.clone()),
    };
    Service {
        namespace: namespace.to_string(),
        name: name.to_string(),
        state: state.into(),
        ips,
        pool,
        reason,
        ..Service::default()
    }
}

/// A Service as a Kubernetes `v1` object: allocation in `status.loadBalancer.ingress`, the pool
/// in the `raftlb.io/ip-allocated-from-pool` annotation.
pub fn service_json(spec: &ServiceSpec, state: &ServiceState) -> Value {
    let mut annotations = spec.annotations.clone();
    let mut ingress = Vec::new();
    if let ServiceState::Allocated { pool, ips } = state {
        annotations.insert(ANN_ALLOCATED_FROM.to_string(), pool.to_string());
        ingress = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    }
    let mut spec_json = json!({
        "type": spec.service_type,
        "ports": spec.ports.iter().map(|p| {
            let mut port = json!({"protocol": p.protocol, "port": p.port});
            if !p.name.is_empty() {
                port["name"] = json!(p.name);
            }
            port
        }).collect::<Vec<_>>(),
    });
    let optional = [
        (
            "selector",
            (!spec.selector.is_empty()).then(|| json!(spec.selector)),
        ),
        (
            "loadBalancerIP",
            spec.load_balancer_ip.as_ref().map(|v| json!(v)),
        ),
        (
            "loadBalancerClass",
            spec.load_balancer_class.as_ref().map(|v| json!(v)),
        ),
        (
            "externalTrafficPolicy",
            (!spec.external_traffic_policy.is_empty()).then(|| json!(spec.external_traffic_policy)),
        ),
        (
            "ipFamilies",
            (!spec.ip_families.is_empty()).then(|| json!(spec.ip_families)),
        ),
        (
            "ipFamilyPolicy",
            (!spec.ip_family_policy.is_empty()).then(|| json!(spec.ip_family_policy)),
        ),
        (
            "clusterIPs",
            (!spec.cluster_ips.is_empty()).then(|| json!(spec.cluster_ips)),
        ),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            spec_json[key] = v;
        }
    }
    let mut metadata = json!({"name": spec.name, "namespace": spec.namespace});
    if !spec.labels.is_empty() {
        metadata["labels"] = json!(spec.labels);
    }
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": spec_json,
        "status": {"loadBalancer": if ingress.is_empty() { json!({}) } else { json!({"ingress": ingress}) }},
    })
}

/// Left-aligned columns, two spaces apart, like kubectl.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// "3s", "5m", "2h", "4d" since `then_ms`.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlb_raft_store::table::objects::ServicePort;

    #[test]
    fn allocated_service_is_kubectl_shaped() {
        let spec = ServiceSpec {
            namespace: "default".into(),
            name: "web".into(),
            service_type: "LoadBalancer".into(),
            ports: vec![ServicePort {
                name: Default::default(),
                protocol: "TCP".into(),
                port: 80,
            }],
            ..Default::default()
        };
        let state = ServiceState::Allocated {
            pool: "p".into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
        };
        let v = service_json(&spec, &state);
        assert_eq!(v["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.1");
        assert_eq!(
            v["metadata"]["annotations"]["raftlb.io/ip-allocated-from-pool"],
            "p"
        );
        let pending = service_json(&spec, &ServiceState::Pending { reason: "x".into() });
        assert!(pending["status"]["loadBalancer"].get("ingress").is_none());
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x");
    }
}
