//! The YAML under deploy/statefulset/ parses, its CRDs are exactly what `raftlb crds`
//! generates from the Rust types, every object deserialises into its k8s-openapi type and
//! serialises back to the same document (so no field is misspelt or misplaced), and the
//! deployment keeps the promises the README makes (3 voters, a PDB that keeps a quorum,
//! hostNetwork with only NET_RAW and NET_ADMIN, probes on /readyz and /healthz).

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/statefulset")
}

fn documents(file: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(dir().join(file))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("{file}: not YAML: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Deserialises into `T` and back; the result must equal the document.
fn round_trip<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) -> anyhow::Result<T> {
    let typed: T = serde_json::from_value(doc.clone())
        .map_err(|e| anyhow::anyhow!("{file}: {} {}: {e}", doc["kind"], doc["metadata"]["name"]))?;
    let back = serde_json::to_value(&typed)?;
    if let Some((path, want, got)) = first_difference("", doc, &back) {
        anyhow::bail!(
            "{file}: {} {}: {path}: the document has {want}, its type reads {got} (unknown or misplaced field?)",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    Ok(typed)
}

/// The first place two JSON values differ: (path, left, right).
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (l, r) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                first_difference(&format!("{path}.{k}"), l, r)
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(&format!("{path}[{i}]"), l, r)),
        _ if a == b => None,
        _ => Some((path.to_string(), a.to_string(), b.to_string())),
    }
}

#[test]
fn committed_crds_match_the_generated_ones() -> anyhow::Result<()> {
    let bin = raftlb_chaos::raftlb_binary()?;
    let out = Command::new(bin).arg("crds").output()?;
    anyhow::ensure!(out.status.success(), "raftlb crds failed");
    let generated = String::from_utf8(out.stdout)?;
    let committed = std::fs::read_to_string(dir().join("crds.yaml"))?;
    assert!(
        generated == committed,
        "deploy/statefulset/crds.yaml is stale: run `raftlb crds > deploy/statefulset/crds.yaml`"
    );
    let kinds: Vec<String> = documents("crds.yaml")?
        .iter()
        .map(|d| {
            d["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    for kind in [
        "IPAddressPool",
        "L2Advertisement",
        "BGPAdvertisement",
        "BGPPeer",
        "Community",
        "BFDProfile",
        "ServiceL2Status",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing");
    }
    Ok(())
}

#[test]
fn every_object_deserialises_into_its_kubernetes_type() -> anyhow::Result<()> {
    let kustomization = documents("kustomization.yaml")?;
    let resources: Vec<String> = kustomization[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap_or("").to_string())
        .collect();
    // Every manifest but the example configuration is part of the kustomization.
    for entry in std::fs::read_dir(dir())? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" && name != "example-config.yaml"
        {
            assert!(
                resources.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
    let mut seen = Vec::new();
    let mut statefulset = None;
    let mut pdb = None;
    let mut cluster_role = None;
    let mut certificates = Vec::new();
    let mut issuers = Vec::new();
    for file in &resources {
        for doc in documents(file)? {
            let kind = doc["kind"].as_str().unwrap_or("").to_string();
            match kind.as_str() {
                "Namespace" => drop(round_trip::<Namespace>(file, &doc)?),
                "ServiceAccount" => drop(round_trip::<ServiceAccount>(file, &doc)?),
                "ClusterRole" => cluster_role = Some(round_trip::<ClusterRole>(file, &doc)?),
                "ClusterRoleBinding" => drop(round_trip::<ClusterRoleBinding>(file, &doc)?),
                "Role" => drop(round_trip::<Role>(file, &doc)?),
                "RoleBinding" => drop(round_trip::<RoleBinding>(file, &doc)?),
                "Service" => drop(round_trip::<Service>(file, &doc)?),
                "StatefulSet" => statefulset = Some(round_trip::<StatefulSet>(file, &doc)?),
                "PodDisruptionBudget" => pdb = Some(round_trip::<PodDisruptionBudget>(file, &doc)?),
                "CustomResourceDefinition" => {
                    drop(round_trip::<CustomResourceDefinition>(file, &doc)?)
                }
                // cert-manager's kinds (no Rust type here): checked below as JSON.
                "Certificate" if doc["apiVersion"] == "cert-manager.io/v1" => {
                    certificates.push(doc.clone())
                }
                "Issuer" if doc["apiVersion"] == "cert-manager.io/v1" => issuers.push(doc.clone()),
                other => anyhow::bail!("{file}: unexpected kind {other}"),
            }
            seen.push(kind);
        }
    }
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
    ] {
        assert!(seen.iter().any(|k| k == kind), "no {kind}");
    }

    let sts = statefulset.expect("a StatefulSet");
    let spec = sts.spec.expect("spec");
    let service_name = spec.service_name.clone().unwrap_or_default();
    let replicas = spec.replicas.expect("replicas");
    assert_eq!(replicas, 3);
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert!(
        pod.affinity.and_then(|a| a.pod_anti_affinity).is_some(),
        "anti-affinity"
    );
    let c = &pod.containers[0];
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .expect("capabilities");
    assert_eq!(
        caps.add.clone().unwrap_or_default(),
        ["NET_RAW", "NET_ADMIN"]
    );
    assert_eq!(caps.drop.clone().unwrap_or_default(), ["ALL"]);
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some(),
        "resource requests"
    );
    assert!(
        !spec.volume_claim_templates.unwrap_or_default().is_empty(),
        "a PVC for sled"
    );

    // mTLS: the pod's own certificate from the csi-driver, signed by the cluster CA's Issuer,
    // naming the pod by the DNS name that gives its Raft id; an admin certificate with the
    // admin role.
    let args = c.args.clone().unwrap_or_default();
    assert!(!args.iter().any(|a| a == "--insecure"), "plaintext peers");
    let tls_dir = args
        .iter()
        .find_map(|a| a.strip_prefix("--tls-dir="))
        .expect("--tls-dir");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == tls_dir)
        .expect("the TLS volume is mounted at --tls-dir");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.csi.clone())
        .expect("a csi volume");
    assert_eq!(volume.driver, "csi.cert-manager.io");
    let attrs = volume.volume_attributes.unwrap_or_default();
    let issuer = attrs["csi.cert-manager.io/issuer-name"].clone();
    assert!(
        issuers
            .iter()
            .any(|i| i["metadata"]["name"] == issuer.as_str() && i["spec"]["ca"].is_object()),
        "the pods' issuer is a CA Issuer"
    );
    let identity = format!("${{POD_NAME}}.{service_name}.${{POD_NAMESPACE}}.svc");
    assert_eq!(
        attrs["csi.cert-manager.io/dns-names"].split(',').next(),
        Some(identity.as_str()),
        "the pod's identity comes first"
    );
    let usages = &attrs["csi.cert-manager.io/key-usages"];
    assert!(usages.contains("server auth") && usages.contains("client auth"));
    let admin = certificates
        .iter()
        .find(|c| c["spec"]["subject"]["organizations"][0] == "raftlb:admin")
        .expect("an admin certificate");
    assert_eq!(admin["spec"]["issuerRef"]["name"], issuer.as_str());
    assert!(
        certificates
            .iter()
            .any(|c| c["spec"]["isCA"] == true && c["spec"]["secretName"] == "raftlb-ca"),
        "a CA certificate behind the CA Issuer"
    );

    // The PDB keeps a quorum of the voters.
    let min = pdb
        .and_then(|p| p.spec)
        .and_then(|s| s.min_available)
        .expect("minAvailable");
    let quorum = replicas / 2 + 1;
    assert_eq!(
        min,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(quorum)
    );

    // The controller's writes are allowed, and nothing broader than they need.
    let rules = cluster_role.and_then(|r| r.rules).unwrap_or_default();
    let allows = |resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(allows("services/status", "patch"));
    assert!(allows("services", "patch"), "the pool annotation");
    assert!(allows("events", "create"));
    assert!(allows("endpointslices", "watch") && allows("nodes", "watch"));
    let allows_in = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|x| x == group))
                && r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(
        allows_in("network.kubesphere.io", "eips", "list")
            && allows_in("network.kubesphere.io", "eips", "watch")
            && allows_in("network.kubesphere.io", "eips/status", "patch"),
        "OpenELB's Eips: read, and their status"
    );
    assert!(
        !rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")),
        "no wildcard verbs"
    );
    assert!(!allows("secrets", "get"), "no Secrets");
    Ok(())
}

#[test]
fn example_configuration_passes_raftlb_check() -> anyhow::Result<()> {
    let bin = raftlb_chaos::raftlb_binary()?;
    let out = Command::new(bin)
        .args(["check", "-f"])
        .arg(dir().join("example-config.yaml"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
