//! Reads multi-document YAML manifests (raftlb.io/v1alpha1, MetalLB's metallb.io/v1beta1 and
//! v1beta2, and `v1` Service, Namespace and List) into typed objects.
//!
//! Parsing is all-or-nothing: the first bad document rejects the file with an error naming the
//! document, its kind/name, the field and the reason. Unknown fields are errors for raftlb's
//! kinds (a typo must not silently change meaning); for `v1` Services every field of the
//! Kubernetes schema is accepted, and only the ones allocation uses are kept.

use std::collections::BTreeMap;

use raftlb_raft_store::table::objects::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// A parsed file: its name and its objects, each with its document number.
pub type Manifest = (String, Vec<(u32, Object)>);

/// Where a manifest went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: document {document} ({object}): {field}: {reason}")]
pub struct ManifestError {
    pub source_name: String,
    pub document: u32,
    pub object: String,
    pub field: String,
    pub reason: String,
}

/// `metadata` of any object. Server-populated fields are accepted (so `kubectl get -o yaml`
/// output can be applied) and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // the server-populated fields are read only to be accepted
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    uid: Option<Value>,
    #[serde(default)]
    resource_version: Option<Value>,
    #[serde(default)]
    generation: Option<Value>,
    #[serde(default)]
    creation_timestamp: Option<Value>,
    #[serde(default)]
    managed_fields: Option<Value>,
    #[serde(default)]
    finalizers: Option<Value>,
    #[serde(default)]
    owner_references: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    #[allow(dead_code)]
    spec: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<Value>,
}

/// `v1` ServicePort: every Kubernetes field accepted.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct K8sServicePort {
    #[serde(default)]
    name: String,
    #[serde(default = "tcp")]
    protocol: String,
    port: u16,
    #[serde(default)]
    #[allow(dead_code)]
    target_port: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    node_port: Option<u16>,
    #[serde(default)]
    #[allow(dead_code)]
    app_protocol: Option<String>,
}

fn tcp() -> String {
    "TCP".into()
}

fn cluster_ip_type() -> String {
    "ClusterIP".into()
}

/// `discovery.k8s.io/v1` EndpointSlice: the fields announcing reads; the others are accepted.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointSliceDoc {
    metadata: Metadata,
    #[serde(default)]
    endpoints: Vec<K8sEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct K8sEndpoint {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    conditions: K8sEndpointConditions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct K8sEndpointConditions {
    /// Unset means ready (Kubernetes' reading).
    #[serde(default)]
    ready: Option<bool>,
}

/// `v1` ServiceSpec: every Kubernetes field accepted.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct K8sServiceSpec {
    #[serde(default = "cluster_ip_type", rename = "type")]
    service_type: String,
    #[serde(default)]
    ports: Vec<K8sServicePort>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<String>,
    #[serde(default, rename = "loadBalancerIP")]
    load_balancer_ip: Option<String>,
    #[serde(default)]
    load_balancer_class: Option<String>,
    #[serde(default)]
    external_traffic_policy: Option<String>,
    #[serde(default)]
    ip_families: Vec<String>,
    #[serde(default)]
    ip_family_policy: Option<String>,
    #[serde(default, rename = "externalIPs")]
    #[allow(dead_code)]
    external_ips: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    session_affinity: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    session_affinity_config: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    load_balancer_source_ranges: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    external_name: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    health_check_node_port: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    publish_not_ready_addresses: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    allocate_load_balancer_node_ports: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    internal_traffic_policy: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    traffic_distribution: Option<Value>,
}

const CONFIG_API_VERSIONS: [&str; 3] = [
    "raftlb.io/v1alpha1",
    "metallb.io/v1beta1",
    "metallb.io/v1beta2",
];

/// Parses every document of `text`. `source_name` is used in errors (a file name or "-").
pub fn parse(text: &str, source_name: &str) -> Result<Vec<(u32, Object)>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i as u32 + 1;
        let fail = |object: &str, field: &str, reason: String| ManifestError {
            source_name: source_name.to_string(),
            document,
            object: object.to_string(),
            field: field.to_string(),
            reason,
        };
        let value = Value::deserialize(doc).map_err(|e| fail("?", "(yaml)", e.to_string()))?;
        if value.is_null() {
            continue; // an empty document, e.g. a leading '---'
        }
        parse_value(value, &mut out, document, &fail)?;
    }
    Ok(out)
}

/// Parses one object as the Kubernetes API returns it (JSON), with the same rules as a file.
pub fn parse_json(
    value: &serde_json::Value,
    source_name: &str,
) -> Result<Vec<(u32, Object)>, ManifestError> {
    let fail = |object: &str, field: &str, reason: String| ManifestError {
        source_name: source_name.to_string(),
        document: 1,
        object: object.to_string(),
        field: field.to_string(),
        reason,
    };
    let value = serde_yaml_ng::to_value(value).map_err(|e| fail("?", "(json)", e.to_string()))?;
    let mut out = Vec::new();
    parse_value(value, &mut out, 1, &fail)?;
    Ok(out)
}

fn parse_value(
    value: Value,
    out: &mut Vec<(u32, Object)>,
    document: u32,
    fail: &dyn Fn(&str, &str, String) -> ManifestError,
) -> Result<(), ManifestError> {
    if !value.is_mapping() {
        return Err(fail(
            "?",
            "(document)",
            "a document must be a mapping (an object)".into(),
        ));
    }
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let api_version =
        text("apiVersion").ok_or_else(|| fail("?", "apiVersion", "missing".into()))?;
    let kind_text = text("kind").ok_or_else(|| fail("?", "kind", "missing".into()))?;
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let object = format!("{kind_text}/{name}");

    if kind_text == "List" && api_version == "v1" {
        let items = match value.get("items") {
            Some(Value::Sequence(items)) => items.clone(),
            _ => {
                return Err(fail(
                    "List",
                    "items",
                    "a List needs an items sequence".into(),
                ))
            }
        };
        for item in items {
            parse_value(item, out, document, fail)?;
        }
        return Ok(());
    }
    let kind = Kind::parse(&kind_text).ok_or_else(|| {
        fail(
            &object,
            "kind",
            format!(
                "unknown kind {kind_text:?} (valid: {})",
                Kind::ALL.map(Kind::as_str).join(", ")
            ),
        )
    })?;
    let core = matches!(kind, Kind::Service | Kind::Namespace);
    let version_ok = if core {
        api_version == "v1"
    } else if kind == Kind::EndpointSlice {
        api_version == "discovery.k8s.io/v1"
    } else if kind == Kind::BGPPeer {
        CONFIG_API_VERSIONS.contains(&api_version.as_str())
    } else {
        CONFIG_API_VERSIONS[..2].contains(&api_version.as_str())
    };
    if !version_ok {
        let valid = if core {
            "v1".to_string()
        } else if kind == Kind::EndpointSlice {
            "discovery.k8s.io/v1".to_string()
        } else if kind == Kind::BGPPeer {
            CONFIG_API_VERSIONS.join(", ")
        } else {
            CONFIG_API_VERSIONS[..2].join(", ")
        };
        return Err(fail(
            &object,
            "apiVersion",
            format!("{api_version:?} does not serve {kind_text} (valid: {valid})"),
        ));
    }

    fn typed<T: DeserializeOwned>(
        value: Value,
        object: &str,
        fail: &dyn Fn(&str, &str, String) -> ManifestError,
    ) -> Result<T, ManifestError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            fail(
                object,
                if path == "." { "(document)" } else { &path },
                e.into_inner().to_string(),
            )
        })
    }

    let obj = match kind {
        Kind::Namespace => {
            let d: NamespaceDoc = typed(value, &object, fail)?;
            Object {
                namespace: String::new(),
                name: d.metadata.name,
                labels: d.metadata.labels,
                spec: ObjectSpec::Namespace,
            }
        }
        Kind::Service => {
            let d: Doc<K8sServiceSpec> = typed(value, &object, fail)?;
            let namespace = d.metadata.namespace.unwrap_or_else(|| "default".into());
            let s = d.spec;
            let mut cluster_ips = s.cluster_ips;
            if cluster_ips.is_empty() {
                cluster_ips.extend(s.cluster_ip.filter(|c| c != "None" && !c.is_empty()));
            }
            let spec = ServiceSpec {
                namespace: namespace.clone(),
                name: d.metadata.name.clone(),
                labels: d.metadata.labels.clone(),
                annotations: d.metadata.annotations,
                service_type: s.service_type,
                load_balancer_class: s.load_balancer_class,
                load_balancer_ip: s.load_balancer_ip,
                ports: s
                    .ports
                    .into_iter()
                    .map(|p| ServicePort {
                        name: p.name,
                        protocol: p.protocol,
                        port: p.port,
                    })
                    .collect(),
                selector: s.selector,
                external_traffic_policy: s.external_traffic_policy.unwrap_or_default(),
                ip_families: s.ip_families,
                ip_family_policy: s.ip_family_policy.unwrap_or_default(),
                cluster_ips,
            };
            Object {
                namespace,
                name: d.metadata.name,
                labels: d.metadata.labels,
                spec: ObjectSpec::Service(spec),
            }
        }
        Kind::EndpointSlice => {
            let d: EndpointSliceDoc = typed(value, &object, fail)?;
            let service = d
                .metadata
                .labels
                .get("kubernetes.io/service-name")
                .cloned()
                .unwrap_or_default();
            Object {
                namespace: d.metadata.namespace.unwrap_or_else(|| "default".into()),
                name: d.metadata.name,
                labels: d.metadata.labels,
                spec: ObjectSpec::EndpointSlice(EndpointSliceSpec {
                    service,
                    endpoints: d
                        .endpoints
                        .into_iter()
                        .map(|e| EndpointInfo {
                            node_name: e.node_name,
                            ready: e.conditions.ready.unwrap_or(true),
                        })
                        .collect(),
                }),
            }
        }
        _ => {
            // A config document: its metadata, and its spec wrapped into ObjectSpec.
            fn config<S: DeserializeOwned>(
                value: Value,
                object: &str,
                fail: &dyn Fn(&str, &str, String) -> ManifestError,
                wrap: fn(S) -> ObjectSpec,
            ) -> Result<(Metadata, ObjectSpec), ManifestError> {
                let d: Doc<S> = typed(value, object, fail)?;
                Ok((d.metadata, wrap(d.spec)))
            }
            let (metadata, spec) = match kind {
                Kind::IPAddressPool => config(value, &object, fail, ObjectSpec::IpAddressPool)?,
                Kind::L2Advertisement => config(value, &object, fail, ObjectSpec::L2Advertisement)?,
                Kind::BGPAdvertisement => {
                    config(value, &object, fail, ObjectSpec::BgpAdvertisement)?
                }
                Kind::BGPPeer => config(value, &object, fail, ObjectSpec::BgpPeer)?,
                Kind::BFDProfile => config(value, &object, fail, ObjectSpec::BfdProfile)?,
                Kind::Community => config(value, &object, fail, ObjectSpec::Community)?,
                Kind::Namespace | Kind::Service | Kind::EndpointSlice => {
                    unreachable!("handled above")
                }
            };
            Object {
                namespace: metadata.namespace.unwrap_or_default(),
                name: metadata.name,
                labels: metadata.labels,
                spec,
            }
        }
    };
    // Same checks the state machine runs, so a bad file fails before it reaches the leader.
    raftlb_raft_store::table::validate::object(&obj)
        .map_err(|(field, reason)| fail(&obj.reference().to_string(), &field, reason))?;
    out.push((document, obj));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_manifest_parses_with_defaults() {
        let yaml = r#"
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: metallb-system}
spec:
  addresses: [192.168.10.0/24, 192.168.9.1-192.168.9.5]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: r1}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {metallb.io/address-pool: first-pool}
spec:
  type: LoadBalancer
  ports: [{port: 80, targetPort: 8080}]
  selector: {app: web}
"#;
        let objs = parse(yaml, "t.yaml").unwrap();
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0].0, 1, "a leading --- opens the first document");
        match &objs[0].1.spec {
            ObjectSpec::IpAddressPool(p) => assert!(p.auto_assign && !p.avoid_buggy_ips),
            other => panic!("{other:?}"),
        }
        match &objs[2].1.spec {
            ObjectSpec::Service(s) => {
                assert_eq!(
                    (s.namespace.as_str(), s.ports[0].protocol.as_str()),
                    ("default", "TCP")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    fn error_of(yaml: &str) -> ManifestError {
        parse(yaml, "bad.yaml").unwrap_err()
    }

    #[test]
    fn errors_name_document_object_field_and_reason() {
        let e = error_of("apiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/24], autoAssgn: true}\n");
        assert_eq!((e.document, e.object.as_str()), (1, "IPAddressPool/p"));
        assert!(e.reason.contains("unknown field `autoAssgn`"), "{e}");

        let e = error_of("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/33]}\n");
        assert_eq!((e.document, e.field.as_str()), (2, "spec.addresses[0]"));
        assert!(e.reason.contains("not a valid CIDR"), "{e}");

        let e = error_of("apiVersion: raftlb.io/v1alpha1\nkind: Pool\nmetadata: {name: p}\n");
        assert_eq!(e.field, "kind");
        assert!(e.reason.contains("unknown kind \"Pool\""));

        let e = error_of(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: LoadBalancer}\n",
        );
        assert_eq!(
            (e.object.as_str(), e.field.as_str()),
            ("Service/default/s", "spec.ports")
        );

        let e = error_of("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/24], autoAssign: maybe}\n");
        assert_eq!(e.field, "spec.autoAssign");

        let e = error_of("apiVersion: metallb.io/v1beta2\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/24]}\n");
        assert_eq!(e.field, "apiVersion");

        let e = error_of("- just\n- a list\n");
        assert_eq!(e.field, "(document)");

        let e = error_of("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: LoadBalancer, ports: [{port: 80}], loadBalancerIP: 10.0.0.x}\n");
        assert_eq!(e.field, "spec.loadBalancerIP");
    }

    #[test]
    fn list_items_are_expanded() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a, labels: {team: x}}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n";
        let objs = parse(yaml, "-").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].1.labels.get("team").map(String::as_str), Some("x"));
    }
}
