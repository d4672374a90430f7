//! What a Service asks of the allocator, read from its spec and annotations.
//!
//! raftlb's annotations (`raftlb.io/*`) win over MetalLB's (`metallb.io/*`), which win over the
//! older `metallb.universe.tf/*`, so existing MetalLB Services keep working unchanged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::objects::ServiceSpec;
use super::pool::Family;

pub const ANNOTATION_PREFIXES: [&str; 3] = ["raftlb.io/", "metallb.io/", "metallb.universe.tf/"];
pub const ANN_ADDRESS_POOL: &str = "address-pool";
pub const ANN_LB_IPS: &str = "loadBalancerIPs";
pub const ANN_SHARED: &str = "allow-shared-ip";
/// OpenELB's Service annotations: the Eip to allocate from, the IP, and which Eips qualify.
/// They are read after raftlb's and MetalLB's, which win when both are present.
pub const OPENELB_EIP: &str = "eip.openelb.kubesphere.io/v1alpha2";
pub const OPENELB_IP: &str = "eip.openelb.kubesphere.io/v1alpha1";
pub const OPENELB_PROTOCOL: &str = "protocol.openelb.kubesphere.io/v1alpha1";
/// `lb.kubesphere.io/v1alpha1: openelb` marks a Service as OpenELB's. raftlb serves every
/// LoadBalancer Service of its class, so the annotation is accepted and changes nothing.
pub const OPENELB_OWNER: &str = "lb.kubesphere.io/v1alpha1";
/// Written on `get services` output: the pool an IP came from.
pub const ANN_ALLOCATED_FROM: &str = "raftlb.io/ip-allocated-from-pool";

/// Looks up an annotation by suffix under every accepted prefix, raftlb's first.
/// Returns the full key that was used and its value.
pub fn annotation<'a>(
    annotations: &'a BTreeMap<String, String>,
    suffix: &str,
) -> Option<(String, &'a str)> {
    // Called for every Service on every apply: no key is built unless one matches.
    ANNOTATION_PREFIXES.iter().find_map(|prefix| {
        annotations.iter().find_map(|(key, v)| {
            (key.strip_prefix(prefix)? == suffix).then(|| (key.clone(), v.as_str()))
        })
    })
}

/// [`annotation`], then OpenELB's key for the same request (raftlb's and MetalLB's win).
fn annotation_or_openelb<'a>(
    annotations: &'a BTreeMap<String, String>,
    suffix: &str,
    openelb_key: &str,
) -> Option<(String, &'a str)> {
    annotation(annotations, suffix).or_else(|| {
        annotations
            .get(openelb_key)
            .map(|v| (openelb_key.to_string(), v.as_str()))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A Service's allocation request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub requested: Vec<IpAddr>,
    pub pool: Option<String>,
    /// Empty: no sharing.
    pub sharing_key: compact_str::CompactString,
    /// Empty for `Cluster`; the pod selector for `Local` (MetalLB's backend key).
    pub backend_key: compact_str::CompactString,
    pub ports: Vec<(compact_str::CompactString, u16)>,
    /// Primary family first.
    pub families: Vec<Family>,
    pub policy: FamilyPolicy,
    /// OpenELB's protocol annotation: only Eips of this protocol qualify.
    pub eip_protocol: Option<String>,
}

/// The reason a Service's spec cannot be served, with the field it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> IntentError {
    IntentError {
        field: field.into(),
        reason: reason.into(),
    }
}

pub fn parse_family(text: &str) -> Option<Family> {
    match text {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

impl Intent {
    pub fn of(spec: &ServiceSpec) -> Result<Intent, IntentError> {
        let policy = match spec.ip_family_policy.as_str() {
            "" | "SingleStack" => FamilyPolicy::SingleStack,
            "PreferDualStack" => FamilyPolicy::PreferDualStack,
            "RequireDualStack" => FamilyPolicy::RequireDualStack,
            other => {
                return Err(err(
                    "spec.ipFamilyPolicy",
                    format!(
                        "{other:?} is not valid (SingleStack, PreferDualStack, RequireDualStack)"
                    ),
                ))
            }
        };
        let mut families = Vec::new();
        for (i, f) in spec.ip_families.iter().enumerate() {
            let family = parse_family(f).ok_or_else(|| {
                err(
                    format!("spec.ipFamilies[{i}]"),
                    format!("{f:?} is not IPv4 or IPv6"),
                )
            })?;
            if families.contains(&family) {
                return Err(err(
                    format!("spec.ipFamilies[{i}]"),
                    format!("{f} is listed twice"),
                ));
            }
            families.push(family);
        }

        let requested = requested_ips(spec)?;
        if requested.len() == 2 && policy == FamilyPolicy::SingleStack {
            return Err(err(
                "metadata.annotations",
                "two IPs requested for a SingleStack Service (set ipFamilyPolicy)",
            ));
        }
        if families.is_empty() {
            families = if !requested.is_empty() {
                requested.iter().map(Family::of).collect()
            } else if !spec.cluster_ips.is_empty() {
                spec.cluster_ips
                    .iter()
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                    .map(|ip| Family::of(&ip))
                    .collect()
            } else {
                vec![Family::V4]
            };
            families.dedup();
        }
        if policy != FamilyPolicy::SingleStack && families.len() == 1 {
            let other = if families[0] == Family::V4 {
                Family::V6
            } else {
                Family::V4
            };
            families.push(other);
        }
        if policy == FamilyPolicy::SingleStack {
            families.truncate(1);
        }
        for ip in &requested {
            if !families.contains(&Family::of(ip)) {
                return Err(err(
                    "spec.loadBalancerIP",
                    format!(
                        "requested IP {ip} is {} but the Service's ipFamilies are {}",
                        Family::of(ip).as_str(),
                        families
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ));
            }
        }
        if requested.len() == 1 && policy == FamilyPolicy::RequireDualStack {
            return Err(err(
                "metadata.annotations",
                "RequireDualStack needs one requested IP per family",
            ));
        }

        let pool = annotation_or_openelb(&spec.annotations, ANN_ADDRESS_POOL, OPENELB_EIP)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let eip_protocol = match spec.annotations.get(OPENELB_PROTOCOL) {
            None => None,
            Some(p) if super::objects::EIP_PROTOCOLS.contains(&p.as_str()) => Some(p.clone()),
            Some(p) => {
                return Err(err(
                    format!("metadata.annotations[{OPENELB_PROTOCOL}]"),
                    format!(
                        "{p:?} is not an Eip protocol ({})",
                        super::objects::EIP_PROTOCOLS.join(", ")
                    ),
                ))
            }
        };
        let sharing_key = annotation(&spec.annotations, ANN_SHARED)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let backend_key = match spec.external_traffic_policy.as_str() {
            "Local" => spec
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        };
        let ports = spec
            .ports
            .iter()
            .map(|p| (p.protocol.clone(), p.port))
            .collect();
        Ok(Intent {
            requested,
            pool,
            sharing_key: sharing_key.into(),
            backend_key: backend_key.into(),
            ports,
            families,
            policy,
            eip_protocol,
        })
    }

    /// The family sets to try, in order: PreferDualStack falls back to its primary family.
    pub fn family_choices(&self) -> Vec<Vec<Family>> {
        match self.policy {
            FamilyPolicy::PreferDualStack => vec![self.families.clone(), vec![self.families[0]]],
            _ => vec![self.families.clone()],
        }
    }
}

fn requested_ips(spec: &ServiceSpec) -> Result<Vec<IpAddr>, IntentError> {
    let from_annotation = annotation_or_openelb(&spec.annotations, ANN_LB_IPS, OPENELB_IP);
    let lb_ip = spec
        .load_balancer_ip
        .as_deref()
        .filter(|s| !s.trim().is_empty());
    let (field, text) = match (from_annotation, lb_ip) {
        (Some((key, _)), Some(_)) => {
            return Err(err(
                "spec.loadBalancerIP",
                format!("cannot be combined with the annotation {key}"),
            ))
        }
        (Some((key, v)), None) => (format!("metadata.annotations[{key}]"), v.to_string()),
        (None, Some(v)) => ("spec.loadBalancerIP".to_string(), v.to_string()),
        (None, None) => return Ok(Vec::new()),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part
            .parse()
            .map_err(|_| err(&field, format!("{part:?} is not an IP address")))?;
        if ips.iter().any(|o| Family::of(o) == Family::of(&ip)) {
            return Err(err(
                &field,
                format!(
                    "more than one {} address requested",
                    Family::of(&ip).as_str()
                ),
            ));
        }
        ips.push(ip);
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(annotations: &[(&str, &str)]) -> ServiceSpec {
        ServiceSpec {
            namespace: "default".into(),
            name: "web".into(),
            service_type: "LoadBalancer".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn raftlb_annotation_wins_over_metallb_aliases() {
        let s = svc(&[
            ("metallb.universe.tf/address-pool", "old"),
            ("metallb.io/address-pool", "mid"),
            ("raftlb.io/address-pool", "new"),
        ]);
        assert_eq!(Intent::of(&s).unwrap().pool.as_deref(), Some("new"));
        let s = svc(&[
            ("metallb.universe.tf/address-pool", "old"),
            ("metallb.io/address-pool", "mid"),
        ]);
        assert_eq!(Intent::of(&s).unwrap().pool.as_deref(), Some("mid"));
        let s = svc(&[("metallb.universe.tf/allow-shared-ip", "k")]);
        assert_eq!(Intent::of(&s).unwrap().sharing_key, "k");
    }

    #[test]
    fn dual_stack_request_needs_a_dual_stack_policy() {
        let mut s = svc(&[("raftlb.io/loadBalancerIPs", "10.0.0.1, fc00::1")]);
        assert!(Intent::of(&s).unwrap_err().reason.contains("SingleStack"));
        s.ip_family_policy = "RequireDualStack".into();
        let i = Intent::of(&s).unwrap();
        assert_eq!(i.families, vec![Family::V4, Family::V6]);
        assert_eq!(i.requested.len(), 2);
    }

    #[test]
    fn requested_ip_errors_name_the_field() {
        let mut s = svc(&[("metallb.io/loadBalancerIPs", "10.0.0.1")]);
        s.load_balancer_ip = Some("10.0.0.2".into());
        assert_eq!(Intent::of(&s).unwrap_err().field, "spec.loadBalancerIP");
        let s = svc(&[("raftlb.io/loadBalancerIPs", "10.0.0.x")]);
        let e = Intent::of(&s).unwrap_err();
        assert_eq!(e.field, "metadata.annotations[raftlb.io/loadBalancerIPs]");
        let mut s = svc(&[]);
        s.ip_families = vec!["IPv6".into()];
        s.load_balancer_ip = Some("10.0.0.2".into());
        assert!(Intent::of(&s).unwrap_err().reason.contains("is IPv4"));
    }

    #[test]
    fn families_default_from_cluster_ips_then_ipv4() {
        let mut s = svc(&[]);
        assert_eq!(Intent::of(&s).unwrap().families, vec![Family::V4]);
        s.cluster_ips = vec!["fd00::10".into()];
        assert_eq!(Intent::of(&s).unwrap().families, vec![Family::V6]);
        s.ip_family_policy = "PreferDualStack".into();
        let i = Intent::of(&s).unwrap();
        assert_eq!(i.families, vec![Family::V6, Family::V4]);
        assert_eq!(
            i.family_choices(),
            vec![vec![Family::V6, Family::V4], vec![Family::V6]]
        );
    }

    #[test]
    fn local_policy_backend_key_is_the_selector() {
        let mut s = svc(&[]);
        s.external_traffic_policy = "Local".into();
        s.selector = [("app".to_string(), "web".to_string())].into();
        assert_eq!(Intent::of(&s).unwrap().backend_key, "app=web");
        s.external_traffic_policy = "Cluster".into();
        assert_eq!(Intent::of(&s).unwrap().backend_key, "");
    }
}
