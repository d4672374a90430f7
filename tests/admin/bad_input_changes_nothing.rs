//! Bad manifests are refused whole, with an error naming the document, the object, the field
//! and the reason, and the replicated table does not change.

use std::time::Duration;

use raftlb_chaos::Cluster;
use raftlb_tests::{documents, pool, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_manifest_is_refused_with_a_clear_error_and_changes_nothing() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    cluster
        .apply(
            leader,
            &documents(&[pool("a", &["198.18.2.0/24"]), service("default", "ok")]),
        )
        .await?;
    let before = cluster.status(leader).await?;
    let services_before = cluster.services(leader).await?;

    let svc_without_ports =
        "apiVersion: v1\nkind: Service\nmetadata: {name: noports}\nspec: {type: LoadBalancer}\n"
            .to_string();
    let svc_outside =
        "apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 203.0.113.9\n  ports: [{port: 80}]\n".to_string();
    let advert_unknown_pool =
        "apiVersion: raftlb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [nope]}\n".to_string();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "overlapping pools",
            documents(&[service("default", "new"), pool("b", &["198.18.2.128/25"])]),
            vec!["document 2", "IPAddressPool/b", "spec.addresses[0]", "overlaps 198.18.2.0/24 of IPAddressPool a"],
        ),
        (
            "invalid CIDR",
            pool("c", &["198.18.3.0/33"]),
            vec!["document 1", "IPAddressPool/c", "spec.addresses[0]", "not a valid CIDR"],
        ),
        (
            "invalid range",
            pool("c", &["198.18.3.9-198.18.3.1"]),
            vec!["IPAddressPool/c", "spec.addresses[0]", "ends before it starts"],
        ),
        (
            "requested IP outside every pool",
            documents(&[service("default", "new"), svc_outside]),
            vec!["document 2", "Service/default/far", "spec.loadBalancerIP", "203.0.113.9 is not in any IPAddressPool"],
        ),
        (
            "unknown kind",
            "apiVersion: raftlb.io/v1alpha1\nkind: AddressPool\nmetadata: {name: x}\nspec: {}\n".into(),
            vec!["document 1", "AddressPool/x", "kind", "unknown kind"],
        ),
        (
            "unknown field",
            "apiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: d}\nspec: {addresses: [198.18.4.0/24], autoassign: false}\n".into(),
            vec!["IPAddressPool/d", "unknown field `autoassign`"],
        ),
        (
            "Service without ports",
            documents(&[pool("e", &["198.18.5.0/24"]), svc_without_ports]),
            vec!["document 2", "Service/default/noports", "spec.ports", "needs at least one port"],
        ),
        (
            "advertisement naming an unknown pool",
            advert_unknown_pool,
            vec!["L2Advertisement/l2", "spec.ipAddressPools[0]", "IPAddressPool \"nope\" does not exist"],
        ),
    ];
    for (name, manifest, wants) in cases {
        let err = cluster
            .apply(leader, &manifest)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{name}: accepted"))?
            .to_string();
        for want in wants {
            assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
        }
    }
    let after = cluster.status(leader).await?;
    assert_eq!(
        after.config_generation, before.config_generation,
        "config changed"
    );
    assert_eq!(
        cluster.services(leader).await?,
        services_before,
        "services changed"
    );

    // The CLI shows the same error and exits non-zero.
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), pool("c", &["banana"]))?;
    let out = std::process::Command::new(&cluster.bin)
        .args(["ctl", "--endpoint", &cluster.endpoints(), "apply", "-f"])
        .arg(file.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("IPAddressPool/c") && stderr.contains("spec.addresses[0]"),
        "{stderr}"
    );
    Ok(())
}
