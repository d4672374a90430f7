//! OpenELB's BgpConf and BgpPeer: the mapping onto BGPPeer, the fields refused by name, and
//! the table's rules across objects.

use super::*;
use crate::table::objects::{Kind, Object, ObjectRef, ObjectSpec};
use crate::table::ownership::NodeFacts;
use crate::table::tests::object;
use crate::table::{AllocationTable, ApplyBatch, Command, Response};

/// OpenELB's sample BgpConf (`config/samples/network_v1alpha2_bgpconf.yaml`).
fn sample_conf() -> BgpConfSpec {
    BgpConfSpec {
        asn: 50001,
        listen_port: 17900,
        router_id: Some("172.22.0.10".into()),
        ..Default::default()
    }
}

/// OpenELB's sample BgpPeer (`config/samples/network_v1alpha2_bgppeer.yaml`).
fn sample_peer() -> BgpPeerConfSpec {
    BgpPeerConfSpec {
        conf: Some(PeerConf {
            peer_as: 50000,
            neighbor_address: Some("172.22.0.2".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn family(afi: &str) -> AfiSafi {
    AfiSafi {
        config: Some(AfiSafiConfig {
            family: Some(Family {
                afi: Some(afi.into()),
                safi: Some("SAFI_UNICAST".into()),
            }),
            enabled: true,
        }),
        ..Default::default()
    }
}

#[test]
fn the_samples_read_as_a_bgppeer() {
    let mapped = sample_peer().bgp_peer(Some(&sample_conf())).unwrap();
    assert_eq!(mapped.my_asn, 50001);
    assert_eq!(mapped.peer_asn, Some(50000));
    assert_eq!(mapped.local_asn, None);
    assert_eq!(mapped.peer_address.as_deref(), Some("172.22.0.2"));
    assert_eq!(mapped.router_id.as_deref(), Some("172.22.0.10"));
    assert_eq!(mapped.peer_port, None);
    assert!(!mapped.enable_graceful_restart);
    assert!(!mapped.dual_stack_address_family);
    assert!(validate_conf("default", &sample_conf()).is_ok());
    assert!(sample_peer().validate().is_ok());
    // Without a BgpConf the local AS comes from conf.localAs, or there is none.
    assert_eq!(sample_peer().bgp_peer(None), None);
    let mut own = sample_peer();
    own.conf.as_mut().unwrap().local_as = 64999;
    assert_eq!(own.bgp_peer(None).unwrap().my_asn, 64999);
    // With both, localAs overrides the BgpConf's AS for this peer.
    let both = own.bgp_peer(Some(&sample_conf())).unwrap();
    assert_eq!((both.my_asn, both.local_asn), (50001, Some(64999)));
}

#[test]
fn every_honoured_field_is_mapped() {
    let mut p = sample_peer();
    let c = p.conf.as_mut().unwrap();
    c.auth_password = Some("s3cret".into());
    c.description = Some("top of rack".into());
    p.timers = Some(Timers {
        config: Some(TimersConfig {
            connect_retry: Some("5".into()),
            hold_time: Some("9".into()),
            keepalive_interval: Some("3".into()),
            minimum_advertisement_interval: Some("0".into()),
        }),
    });
    p.transport = Some(Transport {
        remote_port: 1790,
        remote_address: Some("172.22.0.2".into()),
        ..Default::default()
    });
    p.ebgp_multihop = Some(EbgpMultihop {
        enabled: true,
        multihop_ttl: 255,
    });
    p.graceful_restart = Some(GracefulRestart {
        enabled: true,
        restart_time: 120,
        ..Default::default()
    });
    p.afi_safis = vec![family("AFI_IP"), family("AFI_IP6")];
    p.node_selector = Some(crate::table::objects::LabelSelector {
        match_labels: [("rack".to_string(), "r1".to_string())].into(),
        match_expressions: vec![],
    });
    assert_eq!(p.validate(), Ok(()));
    let m = p.bgp_peer(Some(&sample_conf())).unwrap();
    assert_eq!(m.password.as_deref(), Some("s3cret"));
    assert_eq!(m.hold_time.as_deref(), Some("9s"));
    assert_eq!(m.keepalive_time.as_deref(), Some("3s"));
    assert_eq!(m.connect_time.as_deref(), Some("5s"));
    assert_eq!(m.peer_port, Some(1790));
    assert!(m.ebgp_multi_hop);
    assert!(m.enable_graceful_restart);
    assert!(m.dual_stack_address_family);
    assert_eq!(m.node_selectors.len(), 1);
    // The peer's own gracefulRestart wins; without one, the BgpConf's applies.
    p.graceful_restart = None;
    let mut conf = sample_conf();
    conf.graceful_restart = Some(GracefulRestart {
        enabled: true,
        ..Default::default()
    });
    assert!(p.bgp_peer(Some(&conf)).unwrap().enable_graceful_restart);
    assert!(
        !p.bgp_peer(Some(&sample_conf()))
            .unwrap()
            .enable_graceful_restart
    );
}

#[test]
fn unsupported_peer_fields_are_refused_by_name() {
    type Edit = fn(&mut BgpPeerConfSpec);
    let cases: Vec<(Edit, &str, &str)> = vec![
        (|p| p.conf = None, "spec.conf", "missing"),
        (
            |p| p.conf.as_mut().unwrap().peer_as = 0,
            "spec.conf.peerAs",
            "missing",
        ),
        (
            |p| p.conf.as_mut().unwrap().neighbor_address = None,
            "spec.conf.neighborAddress",
            "missing",
        ),
        (
            |p| p.conf.as_mut().unwrap().peer_group = Some("g".into()),
            "spec.conf.peerGroup",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().peer_type = 1,
            "spec.conf.peerType",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().remove_private_as = Some("ALL".into()),
            "spec.conf.removePrivateAs",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().route_flap_damping = true,
            "spec.conf.routeFlapDamping",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().send_community = 1,
            "spec.conf.sendCommunity",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().neighbor_interface = Some("eth0".into()),
            "spec.conf.neighborInterface",
            "unnumbered",
        ),
        (
            |p| p.conf.as_mut().unwrap().vrf = Some("red".into()),
            "spec.conf.vrf",
            "VRF",
        ),
        (
            |p| p.conf.as_mut().unwrap().allow_own_as = 1,
            "spec.conf.allowOwnAs",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().replace_peer_as = true,
            "spec.conf.replacePeerAs",
            "not supported",
        ),
        (
            |p| p.conf.as_mut().unwrap().admin_down = true,
            "spec.conf.adminDown",
            "delete the BgpPeer",
        ),
        (
            |p| {
                p.transport = Some(Transport {
                    passive_mode: true,
                    ..Default::default()
                })
            },
            "spec.transport.passiveMode",
            "dials and accepts",
        ),
        (
            |p| {
                p.transport = Some(Transport {
                    mtu_discovery: true,
                    ..Default::default()
                })
            },
            "spec.transport.mtuDiscovery",
            "not supported",
        ),
        (
            |p| {
                p.transport = Some(Transport {
                    tcp_mss: 1400,
                    ..Default::default()
                })
            },
            "spec.transport.tcpMss",
            "MSS",
        ),
        (
            |p| {
                p.transport = Some(Transport {
                    remote_address: Some("10.9.9.9".into()),
                    ..Default::default()
                })
            },
            "spec.transport.remoteAddress",
            "differs",
        ),
        (
            |p| {
                p.timers = Some(Timers {
                    config: Some(TimersConfig {
                        minimum_advertisement_interval: Some("30".into()),
                        ..Default::default()
                    }),
                })
            },
            "spec.timers.config.minimumAdvertisementInterval",
            "5 ms",
        ),
        (
            |p| {
                p.timers = Some(Timers {
                    config: Some(TimersConfig {
                        hold_time: Some("90s".into()),
                        ..Default::default()
                    }),
                })
            },
            "spec.timers.config.holdTime",
            "not a number of seconds",
        ),
        (
            |p| {
                p.timers = Some(Timers {
                    config: Some(TimersConfig {
                        hold_time: Some("2".into()),
                        ..Default::default()
                    }),
                })
            },
            "spec.timers.config.holdTime",
            "at least 3s",
        ),
        (
            |p| {
                p.ebgp_multihop = Some(EbgpMultihop {
                    enabled: true,
                    multihop_ttl: 2,
                })
            },
            "spec.ebgpMultihop.multihopTtl",
            "TTL 255",
        ),
        (
            |p| {
                p.graceful_restart = Some(GracefulRestart {
                    enabled: true,
                    restart_time: 90,
                    ..Default::default()
                })
            },
            "spec.gracefulRestart.restartTime",
            "120",
        ),
        (
            |p| {
                p.graceful_restart = Some(GracefulRestart {
                    enabled: true,
                    helper_only: true,
                    ..Default::default()
                })
            },
            "spec.gracefulRestart.helperOnly",
            "not supported",
        ),
        (
            |p| {
                p.graceful_restart = Some(GracefulRestart {
                    enabled: true,
                    notification_enabled: true,
                    ..Default::default()
                })
            },
            "spec.gracefulRestart.notificationEnabled",
            "not supported",
        ),
        (
            |p| {
                p.graceful_restart = Some(GracefulRestart {
                    enabled: true,
                    longlived_enabled: true,
                    ..Default::default()
                })
            },
            "spec.gracefulRestart.longlivedEnabled",
            "not supported",
        ),
        (
            |p| {
                let mut f = family("AFI_IP");
                f.config.as_mut().unwrap().family.as_mut().unwrap().safi =
                    Some("SAFI_FLOW_SPEC_UNICAST".into());
                p.afi_safis = vec![f]
            },
            "spec.afiSafis[0].config.family.safi",
            "SAFI_UNICAST",
        ),
        (
            |p| p.afi_safis = vec![family("AFI_L2VPN")],
            "spec.afiSafis[0].config.family.afi",
            "AFI_IP, AFI_IP6",
        ),
        (
            |p| p.afi_safis = vec![family("AFI_IP6")],
            "spec.afiSafis",
            "its own address family",
        ),
        (
            |p| {
                let mut f = family("AFI_IP");
                f.mp_graceful_restart = Some(Enabled {
                    config: Some(EnabledConfig { enabled: true }),
                });
                p.afi_safis = vec![f]
            },
            "spec.afiSafis[0].mpGracefulRestart",
            "gracefulRestart.enabled",
        ),
    ];
    for (edit, field, reason) in cases {
        let mut p = sample_peer();
        edit(&mut p);
        let obj = object("p", ObjectSpec::OpenElbBgpPeer(p));
        let err = crate::table::validate::object(&obj).expect_err(field);
        assert_eq!(err.0, field, "{err:?}");
        assert!(err.1.contains(reason), "{field}: {err:?}");
    }
    // A disabled family entry and an empty addPaths are nothing to refuse.
    let mut p = sample_peer();
    let mut off = family("AFI_IP6");
    off.config.as_mut().unwrap().enabled = false;
    off.add_paths = Some(AddPaths {
        config: Some(AddPathsConfig::default()),
    });
    p.afi_safis = vec![family("AFI_IP"), off];
    assert_eq!(p.validate(), Ok(()));
    assert!(p.notes().is_empty());
    // OpenELB's documented sendMax is accepted with a note saying why it is not needed.
    p.afi_safis[0].add_paths = Some(AddPaths {
        config: Some(AddPathsConfig {
            receive: false,
            send_max: 10,
        }),
    });
    assert_eq!(p.validate(), Ok(()));
    let notes = p.notes();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("spec.afiSafis[0].addPaths: accepted"),
        "{notes:?}"
    );
    assert!(
        !p.bgp_peer(Some(&sample_conf()))
            .unwrap()
            .dual_stack_address_family
    );
}

#[test]
fn unsupported_conf_fields_are_refused_by_name() {
    type Edit = fn(&mut BgpConfSpec);
    let cases: Vec<(Edit, &str, &str)> = vec![
        (|c| c.asn = 0, "spec.as", "missing"),
        (|c| c.router_id = Some("r1".into()), "spec.routerId", "IPv4"),
        (|c| c.listen_port = 70000, "spec.listenPort", "not a port"),
        (
            |c| c.as_per_rack = [("r1".to_string(), 65001)].into(),
            "spec.asPerRack",
            "localAs",
        ),
        (
            |c| c.listen_addresses = vec!["10.0.0.1".into()],
            "spec.listenAddresses",
            "every address",
        ),
        (|c| c.families = vec![65537], "spec.families", "afiSafis"),
        (
            |c| c.use_multiple_paths = true,
            "spec.useMultiplePaths",
            "only announces",
        ),
        (
            |c| c.policy = Some("bgp-policy".into()),
            "spec.policy",
            "GoBGP policy",
        ),
        (
            |c| {
                c.graceful_restart = Some(GracefulRestart {
                    enabled: true,
                    deferral_time: 360,
                    ..Default::default()
                })
            },
            "spec.gracefulRestart.deferralTime",
            "not supported",
        ),
    ];
    for (edit, field, reason) in cases {
        let mut c = sample_conf();
        edit(&mut c);
        let err = validate_conf("default", &c).expect_err(field);
        assert_eq!(err.0, field, "{err:?}");
        assert!(err.1.contains(reason), "{field}: {err:?}");
    }
    let err = validate_conf("other", &sample_conf()).unwrap_err();
    assert_eq!(err.0, "metadata.name");
    assert!(
        err.1.contains("only the BgpConf named \"default\""),
        "{err:?}"
    );
    for port in [-1, 0, 179] {
        let c = BgpConfSpec {
            listen_port: port,
            ..sample_conf()
        };
        assert_eq!(validate_conf("default", &c), Ok(()), "listenPort {port}");
    }
}

fn table() -> AllocationTable {
    let mut t = AllocationTable::default();
    for (i, (n, rack)) in [("a", "r1"), ("b", "r2")].into_iter().enumerate() {
        let facts = NodeFacts {
            name: n.into(),
            raft_id: i as u64 + 1,
            labels: [("rack".to_string(), rack.to_string())].into(),
            interfaces: vec![],
            excluded: None,
        };
        assert_eq!(
            t.apply(t.log_index + 1, &Command::RegisterNode { facts, now_ms: 1 }),
            Response::Ok
        );
    }
    t
}

fn apply(t: &mut AllocationTable, objects: Vec<Object>, deletes: Vec<ObjectRef>) -> Response {
    let cmd = Command::Apply(ApplyBatch {
        objects: objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| (i as u32 + 1, o))
            .collect(),
        deletes: deletes.into_iter().map(|r| (1, r)).collect(),
        strict: true,
        now_ms: 1,
    });
    t.apply(t.log_index + 1, &cmd)
}

fn rejected(r: Response) -> (String, String, String) {
    match r {
        Response::Rejected(e) => (e.object, e.field, e.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_bgppeer_needs_a_local_as_from_the_bgpconf_or_its_own() {
    let mut t = table();
    let (who, field, reason) = rejected(apply(
        &mut t,
        vec![object("tor", ObjectSpec::OpenElbBgpPeer(sample_peer()))],
        vec![],
    ));
    assert_eq!(
        (who.as_str(), field.as_str()),
        ("BgpPeer/tor", "spec.conf.localAs")
    );
    assert!(reason.contains("no BgpConf \"default\""), "{reason}");
    assert!(t.bgp_view("a").peers().is_empty(), "nothing half-applied");

    let r = apply(
        &mut t,
        vec![
            object("default", ObjectSpec::BgpConf(sample_conf())),
            object("tor", ObjectSpec::OpenElbBgpPeer(sample_peer())),
        ],
        vec![],
    );
    assert!(matches!(r, Response::Applied(_)), "{r:?}");
    let view = t.bgp_view("a");
    let names: Vec<&str> = view.peers().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["tor"]);
    assert_eq!(view.peers()[0].1.my_asn, 50001);
    assert_eq!(view.listen_port(), Some(17900));

    // The BgpConf cannot go while a BgpPeer takes its AS from it.
    let conf_ref = ObjectRef {
        kind: Kind::BgpConf,
        namespace: String::new(),
        name: "default".into(),
    };
    let (who, field, _) = rejected(apply(&mut t, vec![], vec![conf_ref.clone()]));
    assert_eq!(
        (who.as_str(), field.as_str()),
        ("BgpPeer/tor", "spec.conf.localAs")
    );
    let peer_ref = ObjectRef {
        kind: Kind::BgpPeer,
        ..conf_ref.clone()
    };
    let peer_ref = ObjectRef {
        name: "tor".into(),
        ..peer_ref
    };
    let r = apply(&mut t, vec![], vec![peer_ref, conf_ref]);
    assert!(matches!(r, Response::Applied(_)), "{r:?}");
    assert_eq!(t.bgp_view("a").listen_port(), None);
}

#[test]
fn bgppeers_share_one_name_space_and_advertisements_may_name_either() {
    let mut t = table();
    let metallb = BgpPeerSpec {
        my_asn: 64513,
        peer_asn: Some(64512),
        peer_address: Some("10.77.0.100".into()),
        ..Default::default()
    };
    let (who, field, reason) = rejected(apply(
        &mut t,
        vec![
            object("default", ObjectSpec::BgpConf(sample_conf())),
            object("tor", ObjectSpec::BgpPeer(metallb.clone())),
            object("tor", ObjectSpec::OpenElbBgpPeer(sample_peer())),
        ],
        vec![],
    ));
    assert_eq!(
        (who.as_str(), field.as_str()),
        ("BgpPeer/tor", "metadata.name")
    );
    assert!(reason.contains("share one name space"), "{reason}");

    let mut racked = sample_peer();
    racked.node_selector = Some(crate::table::objects::LabelSelector {
        match_labels: [("rack".to_string(), "r2".to_string())].into(),
        match_expressions: vec![],
    });
    let ad = crate::table::objects::BgpAdvertisementSpec {
        peers: vec!["openelb-tor".into(), "metallb-tor".into()],
        ..Default::default()
    };
    let r = apply(
        &mut t,
        vec![
            object("default", ObjectSpec::BgpConf(sample_conf())),
            object("metallb-tor", ObjectSpec::BgpPeer(metallb)),
            object("openelb-tor", ObjectSpec::OpenElbBgpPeer(racked)),
            object("both", ObjectSpec::BgpAdvertisement(ad)),
        ],
        vec![],
    );
    assert!(matches!(r, Response::Applied(_)), "{r:?}");
    let names = |n: &str| -> Vec<String> {
        t.bgp_view(n)
            .peers()
            .iter()
            .map(|(p, _)| p.to_string())
            .collect()
    };
    assert_eq!(
        names("a"),
        ["metallb-tor"],
        "nodeSelector rack r2 leaves a out"
    );
    assert_eq!(names("b"), ["metallb-tor", "openelb-tor"]);
}

#[test]
fn the_bgppeer_rules_run_with_the_bgpconf_and_name_openelb_fields() {
    let mut t = table();
    // iBGP (peerAs = the BgpConf's as) with ebgpMultihop: MetalLB's rule, OpenELB's field.
    let mut p = sample_peer();
    p.conf.as_mut().unwrap().peer_as = 50001;
    p.ebgp_multihop = Some(EbgpMultihop {
        enabled: true,
        multihop_ttl: 0,
    });
    let (who, field, reason) = rejected(apply(
        &mut t,
        vec![
            object("default", ObjectSpec::BgpConf(sample_conf())),
            object("tor", ObjectSpec::OpenElbBgpPeer(p)),
        ],
        vec![],
    ));
    assert_eq!(
        (who.as_str(), field.as_str()),
        ("BgpPeer/tor", "spec.ebgpMultihop.enabled")
    );
    assert!(reason.contains("iBGP"), "{reason}");
    // A neighbour address that is no address.
    let mut p = sample_peer();
    p.conf.as_mut().unwrap().local_as = 65000;
    p.conf.as_mut().unwrap().neighbor_address = Some("tor-1".into());
    let err =
        crate::table::validate::object(&object("tor", ObjectSpec::OpenElbBgpPeer(p))).unwrap_err();
    assert_eq!(err.0, "spec.conf.neighborAddress");
}
