//! What each BGPAdvertisement field does to the router's RIB, BIRD 2 as the judge:
//! `externalTrafficPolicy: Local` announces only from nodes with a ready endpoint (and the
//! path moves with the endpoint), `aggregationLength` announces the aggregate, `peers` and
//! `nodeSelectors` restrict who announces, large communities arrive as configured.
//!
//! Needs root and bird2 (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::Duration;

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::{Router, RouterKind};

const WITHIN: Duration = Duration::from_secs(30);

/// Two peers for the one router: `left` for n1 and n2, `right` for n3. Four pools, each with
/// its own advertisement.
fn config() -> String {
    let peer = |name: &str, nodes: &str| {
        format!(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: {name}}}\n\
             spec: {{myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, nodeSelectors: \
             [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{nodes}]}}]}}]}}\n---\n"
        )
    };
    let pool = |name: &str, cidr: &str, ad: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\n\
             spec: {{addresses: [{cidr}], autoAssign: false}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: {name}}}\n\
             spec: {{ipAddressPools: [{name}]{ad}}}\n---\n"
        )
    };
    [
        peer("left", "n1, n2"),
        peer("right", "n3"),
        pool("local", &format!("{VIP4}/32"), ""),
        pool(
            "agg",
            "10.77.9.0/28",
            ", aggregationLength: 28, communities: [\"large:64512:7:9\"]",
        ),
        pool("left-only", "10.77.10.1/32", ", peers: [left]"),
        pool(
            "n2-only",
            "10.77.11.1/32",
            ", nodeSelectors: [{matchLabels: {kubernetes.io/hostname: n2}}]",
        ),
    ]
    .concat()
}

fn service(name: &str, pool: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, \
         annotations: {{metallb.io/address-pool: {pool}}}}}\n\
         spec: {{type: LoadBalancer, externalTrafficPolicy: {policy}, ports: [{{port: 8080}}]}}\n"
    )
}

fn endpoints_on(node: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-local-1, \
         namespace: default, labels: {{kubernetes.io/service-name: web-local}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [10.244.0.5], nodeName: {node}, \
         conditions: {{ready: true}}}}]\n"
    )
}

fn hops(nodes: &[&str]) -> BTreeSet<String> {
    nodes
        .iter()
        .map(|n| format!("10.77.0.1{}", &n[1..]))
        .collect()
}

fn wait_hops(router: &Router, prefix: &str, nodes: &[&str]) -> anyhow::Result<()> {
    let want = hops(nodes);
    router.wait(&format!("{prefix} from {nodes:?}"), WITHIN, |r| {
        Ok((r.next_hops(prefix)? == want).then_some(()))
    })
}

#[test]
fn advertisement_fields_shape_what_the_router_learns() -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router(RouterKind::Bird, 64512, 64513)?;
    lab.start_cluster()?;
    lab.apply(&config())?;

    // Local: only the node with the ready endpoint; the path follows the endpoint.
    lab.apply(&service("web-local", "local", "Local"))?;
    lab.apply(&endpoints_on("n2"))?;
    wait_hops(&router, &format!("{VIP4}/32"), &["n2"])?;
    lab.apply(&endpoints_on("n3"))?;
    wait_hops(&router, &format!("{VIP4}/32"), &["n3"])?;

    // aggregationLength 28: the /28 from every node, with the large community.
    lab.apply(&service("web-agg", "agg", "Cluster"))?;
    wait_hops(&router, "10.77.9.0/28", &["n1", "n2", "n3"])?;
    assert!(router.detail("10.77.9.0/32")?.is_empty());
    for p in router.detail("10.77.9.0/28")? {
        assert_eq!(p.large_communities, vec!["64512:7:9".to_string()], "{p:?}");
    }

    // peers: [left]: n1 and n2 only (n3's session is with `right`).
    lab.apply(&service("web-left", "left-only", "Cluster"))?;
    wait_hops(&router, "10.77.10.1/32", &["n1", "n2"])?;

    // nodeSelectors: n2 only.
    lab.apply(&service("web-n2", "n2-only", "Cluster"))?;
    wait_hops(&router, "10.77.11.1/32", &["n2"])?;

    // Nothing else moved meanwhile.
    assert_eq!(router.next_hops(&format!("{VIP4}/32"))?, hops(&["n3"]));
    assert_eq!(router.next_hops("10.77.10.1/32")?, hops(&["n1", "n2"]));
    Ok(())
}
