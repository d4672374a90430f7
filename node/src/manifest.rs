//! Reads multi-document YAML manifests (raftlb.io/v1alpha1, MetalLB's metallb.io/v1beta1 and
//! v1beta2, OpenELB's network.kubesphere.io/v1alpha2 Eip, and `v1` Service, Namespace and List)
//! into typed objects.
//!
//! Parsing is all-or-nothing: the first bad document rejects the file with an error naming the
//! document, its kind/name, the field and the reason. Unknown fields are errors for raftlb's
//! kinds (a typo must not silently change meaning); for `v1` Services every field of the
//! Kubernetes schema is accepted, and only the ones allocation uses are kept. Objects of other
//! groups (a walk-through's Deployment, Ingress, ConfigMap) are skipped and reported, one line
//! each; an unknown kind inside a group raftlb reads is an error.

use std::collections::BTreeMap;

use raftlb_raft_store::table::objects::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// A parsed file: its name and its objects, each with its document number.
pub type Manifest = (String, Vec<(u32, Object)>);

/// API groups whose kinds raftlb reads: an unknown kind in one of them is a mistake.
pub const READ_GROUPS: [&str; 3] = ["raftlb.io", "metallb.io", "network.kubesphere.io"];

/// Everything a file held: the objects raftlb uses, one line per object it skipped and one
/// per field it accepts without acting on.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<(u32, Object)>,
    /// `skipped apps/v1 Deployment/nginx: not used by raftlb`, or
    /// `note BgpPeer/tor: spec.afiSafis[0].addPaths: accepted, ...`
    pub skipped: Vec<String>,
}

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
    /// Absent or `null` where the kind's spec has defaults for every field (MetalLB documents
    /// `L2Advertisement` with no spec at all); required otherwise.
    #[serde(default = "Option::default")]
    spec: Option<S>,
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

const OPENELB_API_VERSION: &str = "network.kubesphere.io/v1alpha2";

/// Parses every document of `text`. `source_name` is used in errors (a file name or "-").
pub fn parse(text: &str, source_name: &str) -> Result<Vec<(u32, Object)>, ManifestError> {
    parse_file(text, source_name).map(|p| p.objects)
}

/// Parses every document of `text`, keeping a line for each object of a kind raftlb skips.
pub fn parse_file(text: &str, source_name: &str) -> Result<Parsed, ManifestError> {
    let mut out = Parsed::default();
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
    let mut out = Parsed::default();
    parse_value(value, &mut out, 1, &fail)?;
    Ok(out.objects)
}

/// The apiVersions that serve `kind`.
fn api_versions(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Service | Kind::Namespace => &["v1"],
        Kind::EndpointSlice => &["discovery.k8s.io/v1"],
        Kind::Eip | Kind::BgpConf | Kind::BgpPeer => &[OPENELB_API_VERSION],
        Kind::BGPPeer => &CONFIG_API_VERSIONS,
        _ => &CONFIG_API_VERSIONS[..2],
    }
}

/// The group of an apiVersion: `apps/v1` -> `apps`, `v1` -> `` (core).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn parse_value(
    value: Value,
    out: &mut Parsed,
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
    let object = if name.is_empty() {
        kind_text.clone()
    } else {
        format!("{kind_text}/{name}")
    };

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
    let group = group_of(&api_version);
    let skip = |out: &mut Parsed| {
        out.skipped.push(format!(
            "skipped {api_version} {object}: not used by raftlb"
        ));
        Ok(())
    };
    let Some(kind) = Kind::parse(&kind_text) else {
        if !READ_GROUPS.contains(&group) {
            return skip(out);
        }
        let reason = format!(
            "unknown kind {kind_text:?} in {group} (valid: {})",
            Kind::ALL.map(Kind::as_str).join(", ")
        );
        return Err(fail(&object, "kind", reason));
    };
    // A name raftlb reads, in another group (Knative's serving.knative.dev/v1 Service): not
    // ours. In the core and discovery groups a wrong pairing is a mistake, reported below.
    let foreign = !READ_GROUPS.contains(&group) && !matches!(group, "" | "discovery.k8s.io");
    if foreign {
        return skip(out);
    }
    let versions = api_versions(kind);
    if !versions.contains(&api_version.as_str()) {
        return Err(fail(
            &object,
            "apiVersion",
            format!(
                "{api_version:?} does not serve {kind_text} (valid: {})",
                versions.join(", ")
            ),
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
            let Some(s) = d.spec else {
                return Err(fail(
                    &object,
                    "spec",
                    "missing (a Service needs spec.ports)".into(),
                ));
            };
            let mut cluster_ips = s.cluster_ips;
            if cluster_ips.is_empty() {
                cluster_ips.extend(s.cluster_ip.filter(|c| c != "None" && !c.is_empty()));
            }
            let spec = ServiceSpec {
                namespace: namespace.as_str().into(),
                name: d.metadata.name.as_str().into(),
                labels: d.metadata.labels.clone(),
                annotations: d.metadata.annotations,
                service_type: s.service_type.into(),
                load_balancer_class: s.load_balancer_class,
                load_balancer_ip: s.load_balancer_ip,
                ports: s
                    .ports
                    .into_iter()
                    .map(|p| ServicePort {
                        name: p.name.into(),
                        protocol: p.protocol.into(),
                        port: p.port,
                    })
                    .collect(),
                selector: s.selector.into_iter().collect(),
                external_traffic_policy: s.external_traffic_policy.unwrap_or_default().into(),
                ip_families: s.ip_families.into_iter().map(Into::into).collect(),
                ip_family_policy: s.ip_family_policy.unwrap_or_default().into(),
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
            // A config document: its metadata, and its spec wrapped into ObjectSpec. `absent`
            // says what a missing spec means.
            fn config<S: DeserializeOwned>(
                value: Value,
                object: &str,
                fail: &dyn Fn(&str, &str, String) -> ManifestError,
                wrap: fn(S) -> ObjectSpec,
                absent: impl FnOnce() -> Result<S, ManifestError>,
            ) -> Result<(Metadata, ObjectSpec), ManifestError> {
                let d: Doc<S> = typed(value, object, fail)?;
                let spec = match d.spec {
                    Some(spec) => spec,
                    None => absent()?,
                };
                Ok((d.metadata, wrap(spec)))
            }
            type Fail<'a> = &'a dyn Fn(&str, &str, String) -> ManifestError;
            // Kinds whose every field has a default: no spec is the empty spec (MetalLB's
            // documented `L2Advertisement` has none).
            fn defaulted<S: DeserializeOwned + Default>(
                value: Value,
                object: &str,
                fail: Fail,
                wrap: fn(S) -> ObjectSpec,
            ) -> Result<(Metadata, ObjectSpec), ManifestError> {
                config(value, object, fail, wrap, || Ok(S::default()))
            }
            // Kinds with required fields: no spec is an error saying what is needed.
            fn required<S: DeserializeOwned>(
                value: Value,
                object: &str,
                fail: Fail,
                wrap: fn(S) -> ObjectSpec,
                needs: &str,
            ) -> Result<(Metadata, ObjectSpec), ManifestError> {
                let missing = || Err(fail(object, "spec", format!("missing ({needs})")));
                config(value, object, fail, wrap, missing)
            }
            let (metadata, spec) = match kind {
                Kind::IPAddressPool => required(
                    value,
                    &object,
                    fail,
                    ObjectSpec::IpAddressPool,
                    "an IPAddressPool lists spec.addresses",
                )?,
                Kind::L2Advertisement => {
                    defaulted(value, &object, fail, ObjectSpec::L2Advertisement)?
                }
                Kind::BGPAdvertisement => {
                    defaulted(value, &object, fail, ObjectSpec::BgpAdvertisement)?
                }
                Kind::BGPPeer => required(
                    value,
                    &object,
                    fail,
                    ObjectSpec::BgpPeer,
                    "a BGPPeer needs spec.myASN, spec.peerASN and spec.peerAddress",
                )?,
                Kind::BFDProfile => defaulted(value, &object, fail, ObjectSpec::BfdProfile)?,
                Kind::Community => defaulted(value, &object, fail, ObjectSpec::Community)?,
                Kind::Eip => required(
                    value,
                    &object,
                    fail,
                    ObjectSpec::Eip,
                    "an Eip needs spec.address",
                )?,
                Kind::BgpConf => required(
                    value,
                    &object,
                    fail,
                    ObjectSpec::BgpConf,
                    "a BgpConf needs spec.as",
                )?,
                Kind::BgpPeer => required(
                    value,
                    &object,
                    fail,
                    ObjectSpec::OpenElbBgpPeer,
                    "a BgpPeer needs spec.conf.peerAs and spec.conf.neighborAddress",
                )?,
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
    if let ObjectSpec::OpenElbBgpPeer(p) = &obj.spec {
        for note in p.notes() {
            out.skipped
                .push(format!("note {}: {note}", obj.reference()));
        }
    }
    out.objects.push((document, obj));
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
    fn absent_or_null_spec_is_the_empty_spec_where_metallb_defaults_every_field() {
        for spec in ["", "spec: null\n", "spec: {}\n"] {
            for kind in [
                "L2Advertisement",
                "BGPAdvertisement",
                "BFDProfile",
                "Community",
            ] {
                let yaml = format!("apiVersion: metallb.io/v1beta1\nkind: {kind}\nmetadata: {{name: example, namespace: metallb-system}}\n{spec}");
                let objs =
                    parse(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{kind} {spec:?}: {e}"));
                match &objs[0].1.spec {
                    ObjectSpec::L2Advertisement(s) => assert_eq!(*s, Default::default()),
                    ObjectSpec::BgpAdvertisement(s) => assert_eq!(*s, Default::default()),
                    ObjectSpec::BfdProfile(s) => assert_eq!(*s, Default::default()),
                    ObjectSpec::Community(s) => assert_eq!(*s, Default::default()),
                    other => panic!("{other:?}"),
                }
            }
        }
        // Where MetalLB requires fields, a missing spec says what it needs.
        let e =
            error_of("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\n");
        assert_eq!(
            (e.object.as_str(), e.field.as_str()),
            ("IPAddressPool/p", "spec")
        );
        assert!(e.reason.contains("spec.addresses"), "{e}");
        let e = error_of("apiVersion: network.kubesphere.io/v1alpha2\nkind: Eip\nmetadata: {name: e}\nspec: null\n");
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("spec", "missing (an Eip needs spec.address)")
        );
    }

    #[test]
    fn kinds_of_other_groups_are_skipped_one_line_each() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx}
spec: {replicas: 2}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
ipvs: {strictARP: true}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: knative}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
---
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec: {type: LoadBalancer, ports: [{port: 80}]}
"#;
        let p = parse_file(yaml, "walk.yaml").unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(
            p.objects[0].0, 6,
            "document numbers count the skipped documents"
        );
        assert_eq!(
            p.skipped,
            [
                "skipped apps/v1 Deployment/nginx: not used by raftlb",
                "skipped networking.k8s.io/v1 Ingress/web: not used by raftlb",
                "skipped kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration: not used by raftlb",
                "skipped serving.knative.dev/v1 Service/knative: not used by raftlb",
                "skipped v1 ConfigMap/cfg: not used by raftlb",
            ]
        );
    }

    #[test]
    fn an_unknown_kind_in_a_group_raftlb_reads_is_an_error() {
        for (api, kind) in [
            ("metallb.io/v1beta1", "L2Advertisment"),
            ("raftlb.io/v1alpha1", "Pool"),
            ("network.kubesphere.io/v1alpha2", "Eips"),
        ] {
            let yaml = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n");
            let e = error_of(&yaml);
            assert_eq!((e.document, e.field.as_str()), (2, "kind"), "{e}");
            assert!(e.reason.contains(&format!("unknown kind {kind:?}")), "{e}");
        }
        // A raftlb kind under the core group is a mistake, not another group's object.
        let e = error_of("apiVersion: v1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/24]}\n");
        assert_eq!(e.field, "apiVersion");
    }

    #[test]
    fn openelb_eip_and_annotations_parse() {
        let yaml = r#"
apiVersion: network.kubesphere.io/v1alpha2
kind: Eip
metadata:
  name: eip-sample-pool
  annotations: {eip.openelb.kubesphere.io/is-default-eip: "true"}
spec:
  address: 196.168.220.10-196.168.220.30
  protocol: layer2
  interface: eth0
  disable: false
  usingKnownIPs: false
  priority: 3
  namespaces: [default]
  namespaceSelector: {team: a}
"#;
        let objs = parse(yaml, "eip.yaml").unwrap();
        let ObjectSpec::Eip(e) = &objs[0].1.spec else {
            panic!("{:?}", objs[0].1)
        };
        assert_eq!(
            (e.protocol(), e.interface.as_deref(), e.priority),
            ("layer2", Some("eth0"), 3)
        );
        let e = error_of("apiVersion: network.kubesphere.io/v1alpha2\nkind: Eip\nmetadata: {name: e}\nspec: {address: 10.0.0.1, protocl: layer2}\n");
        assert!(e.reason.contains("unknown field `protocl`"), "{e}");
        let e = error_of("apiVersion: network.kubesphere.io/v1alpha1\nkind: Eip\nmetadata: {name: e}\nspec: {address: 10.0.0.1}\n");
        assert_eq!(e.field, "apiVersion");
        assert!(e.reason.contains("network.kubesphere.io/v1alpha2"), "{e}");
    }

    #[test]
    fn openelb_bgp_objects_parse_and_refuse_by_field() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/openelb/bgp.yaml"
        ))
        .unwrap();
        let p = parse_file(&text, "bgp.yaml").unwrap();
        let ObjectSpec::OpenElbBgpPeer(peer) = &p.objects[1].1.spec else {
            panic!("{:?}", p.objects[1].1)
        };
        assert_eq!(peer.conf.as_ref().unwrap().peer_as, 50000);
        assert!(
            p.skipped[0]
                .starts_with("note BgpPeer/bgppeer-sample: spec.afiSafis[0].addPaths: accepted"),
            "{:?}",
            p.skipped
        );
        let head =
            "apiVersion: network.kubesphere.io/v1alpha2\nkind: BgpPeer\nmetadata: {name: tor}\n";
        for (spec, field, reason) in [
            (
                "spec: {conf: {peerAs: 1, neighborAddress: 10.0.0.1, vrf: red}}",
                "spec.conf.vrf",
                "default VRF",
            ),
            (
                "spec: {conf: {peerAs: 1, neighborAddress: 10.0.0.1}, timers: {config: {holdTime: 90}}}",
                "spec.timers.config.holdTime",
                "invalid type",
            ),
            (
                "spec: {conf: {peerAS: 1, neighborAddress: 10.0.0.1}}",
                "spec.conf.peerAS",
                "unknown field `peerAS`",
            ),
            (
                "spec: {conf: {peerAs: 1, neighborAddress: 10.0.0.1}, transport: {passiveMode: true}}",
                "spec.transport.passiveMode",
                "not supported yet",
            ),
        ] {
            let e = error_of(&format!("{head}{spec}\n"));
            assert_eq!((e.object.as_str(), e.field.as_str()), ("BgpPeer/tor", field), "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
        let e = error_of("apiVersion: network.kubesphere.io/v1alpha2\nkind: BgpConf\nmetadata: {name: global}\nspec: {as: 50000}\n");
        assert_eq!(e.field, "metadata.name", "{e}");
        let e = error_of("apiVersion: network.kubesphere.io/v1alpha2\nkind: BgpConf\nmetadata: {name: default}\nspec: {as: 50000, asPerRack: {r1: 65001}}\n");
        assert_eq!(e.field, "spec.asPerRack", "{e}");
    }

    #[test]
    fn published_walkthroughs_in_examples_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        for (file, objects, skipped) in [
            ("metallb/layer2.yaml", 3, 1),
            ("metallb/bgp.yaml", 4, 0),
            ("metallb/advanced.yaml", 11, 0),
            ("openelb/layer2.yaml", 2, 1),
            ("openelb/samples.yaml", 5, 1),
            ("openelb/bgp.yaml", 5, 2),
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let p = parse_file(&text, file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (p.objects.len(), p.skipped.len()),
                (objects, skipped),
                "{file}"
            );
        }
    }

    #[test]
    fn list_items_are_expanded() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a, labels: {team: x}}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n";
        let objs = parse(yaml, "-").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].1.labels.get("team").map(String::as_str), Some("x"));
    }
}
