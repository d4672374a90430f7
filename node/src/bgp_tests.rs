//! The bridge's pure parts: what a BGPPeer and a BFDProfile become on this node.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use raftlb_raft_store::table::objects::{BfdProfileSpec, BgpPeerSpec, SecretRef};

use super::*;

fn node() -> NodeBgp {
    NodeBgp::new(
        None,
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11)),
        "n1",
        179,
        Duration::from_secs(5),
    )
}

fn spec() -> BgpPeerSpec {
    BgpPeerSpec {
        my_asn: 64513,
        peer_asn: Some(64512),
        peer_address: Some("10.77.0.100".into()),
        ..Default::default()
    }
}

#[test]
fn a_password_secret_is_resolved_on_the_node_or_the_session_waits() {
    let named = BgpPeerSpec {
        password_secret: Some(SecretRef {
            name: "tor-auth".into(),
            namespace: None,
        }),
        ..spec()
    };
    let e = session_peer("tor", &named, &node(), &BTreeMap::new()).unwrap_err();
    assert!(
        e.contains("BGPPeer tor") && e.contains("spec.passwordSecret") && e.contains("tor-auth"),
        "{e}"
    );
    let secrets = BTreeMap::from([("tor-auth".to_string(), "s3cret".to_string())]);
    let p = session_peer("tor", &named, &node(), &secrets).unwrap();
    assert_eq!(p.password.as_deref(), Some("s3cret"));
    // A plain password wins and needs no Secret.
    let plain = BgpPeerSpec {
        password: Some("inline".into()),
        ..spec()
    };
    let p = session_peer("tor", &plain, &node(), &BTreeMap::new()).unwrap();
    assert_eq!(p.password.as_deref(), Some("inline"));
    let p = session_peer("tor", &spec(), &node(), &BTreeMap::new()).unwrap();
    assert_eq!(p.password, None);
    assert_eq!(p.config.router_id, Ipv4Addr::new(10, 77, 0, 11));
}

#[test]
fn a_bfd_profile_becomes_microseconds_with_metallb_defaults() {
    let c = bfd_config(&BfdProfileSpec::default());
    assert_eq!(
        (
            c.desired_min_tx_us,
            c.required_min_rx_us,
            c.detect_mult,
            c.passive
        ),
        (300_000, 300_000, 3, false)
    );
    let c = bfd_config(&BfdProfileSpec {
        receive_interval: Some(100),
        transmit_interval: Some(50),
        detect_multiplier: Some(5),
        passive_mode: true,
        ..Default::default()
    });
    assert_eq!(
        (
            c.desired_min_tx_us,
            c.required_min_rx_us,
            c.detect_mult,
            c.passive
        ),
        (50_000, 100_000, 5, true)
    );
}

#[test]
fn discriminators_are_nonzero_and_advance() {
    let first = next_discriminator(0);
    assert_ne!(first, 0);
    assert_eq!(next_discriminator(first), first.wrapping_add(1).max(1));
    assert_eq!(next_discriminator(u32::MAX), 1);
}
