//! Discovery against a sysfs tree written by the test: the kernel's flag words and `master`
//! links as Linux lays them out, and `/proc/net/if_inet6` lines.

use super::*;

/// Writes `/sys/class/net/NAME/flags` (and `master` for a bridge or bond member).
fn link(root: &Path, name: &str, flags: u32, enslaved: bool) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flags"), format!("0x{flags:x}\n")).unwrap();
    if enslaved {
        std::fs::write(dir.join("master"), "").unwrap();
    }
}

/// A machine: eth0 (up, broadcast, multicast), lo, a NOARP ifb holding VIPs, a bridge port,
/// docker0, a down NIC, a point-to-point tunnel.
fn machine() -> (tempfile::TempDir, Sources) {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    link(&net, "eth0", 0x1003, false);
    link(&net, "lo", 0x9, false);
    link(&net, "lbvip0", 0x83, false);
    link(&net, "enp1s0", 0x1003, true);
    link(&net, "br0", 0x1003, false);
    link(&net, "docker0", 0x1003, false);
    link(&net, "eth1", 0x1002, false);
    link(&net, "wg0", 0x91, false);
    let inet6 = dir.path().join("if_inet6");
    std::fs::write(
        &inet6,
        "fe80000000000000020000fffe00000b 02 40 20 80     eth0\n\
         00000000000000000000000000000001 01 80 10 80       lo\n\
         fd000077000000000000000000000011 02 40 00 80     eth0\n",
    )
    .unwrap();
    let sources = Sources {
        sys_class_net: net,
        if_inet6: inet6,
    };
    (dir, sources)
}

#[test]
fn metallb_rules_pick_the_up_broadcast_unenslaved_arp_interfaces() {
    let (_dir, sources) = machine();
    let found = suitable(&sources, &Exclusions::metallb_default());
    assert_eq!(found.keys().collect::<Vec<_>>(), ["br0", "eth0"]);
    assert!(found["eth0"].link_local_v6, "eth0 has fe80::/64: NDP too");
    assert!(!found["br0"].link_local_v6);

    let all = links(
        &sources.sys_class_net,
        &std::fs::read_to_string(&sources.if_inet6).unwrap(),
    )
    .unwrap();
    let why = |name: &str| {
        all.iter()
            .find(|l| l.name == name)
            .and_then(|l| l.refusal(&Exclusions::metallb_default()))
    };
    assert_eq!(why("lo").as_deref(), Some("excluded by ^lo$"));
    assert_eq!(why("docker0").as_deref(), Some("excluded by ^docker.*"));
    assert_eq!(why("lbvip0").as_deref(), Some("NOARP"));
    assert_eq!(
        why("enp1s0").as_deref(),
        Some("enslaved to a bridge or bond")
    );
    assert_eq!(why("eth1").as_deref(), Some("down"));
    assert_eq!(why("wg0").as_deref(), Some("NOARP"));
}

#[test]
fn exclude_interfaces_replaces_the_default_list() {
    let (_dir, sources) = machine();
    let ex = Exclusions::parse(&["^br.*".to_string()]).unwrap();
    let found = suitable(&sources, &ex);
    assert_eq!(found.keys().collect::<Vec<_>>(), ["docker0", "eth0"]);
    // Nothing excluded: lo still fails on its flags (no broadcast), the ifb on NOARP.
    let found = suitable(&sources, &Exclusions::parse(&[String::new()]).unwrap());
    assert_eq!(found.keys().collect::<Vec<_>>(), ["br0", "docker0", "eth0"]);
    let err = Exclusions::parse(&["^eth[".to_string()]).unwrap_err();
    assert!(
        err.starts_with("--exclude-interfaces[0] \"^eth[\": not a regular expression"),
        "{err}"
    );
}

#[test]
fn a_missing_sysfs_finds_nothing_instead_of_failing() {
    let sources = Sources {
        sys_class_net: "/nonexistent/raftlb/net".into(),
        if_inet6: "/nonexistent/raftlb/if_inet6".into(),
    };
    assert!(suitable(&sources, &Exclusions::metallb_default()).is_empty());
}

#[test]
fn the_flags_choose_list_none_or_discovery() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(matches!(
        Choice::from_flags(&s(&["eth0", "eth1"]), None),
        Ok(Choice::Listed(l)) if l == ["eth0", "eth1"]
    ));
    assert!(matches!(
        Choice::from_flags(&s(&["none"]), None),
        Ok(Choice::Nowhere)
    ));
    assert!(matches!(
        Choice::from_flags(&[], None),
        Ok(Choice::Discover(_))
    ));
    assert!(matches!(
        Choice::from_flags(&[], Some(&s(&["^x"]))),
        Ok(Choice::Discover(_))
    ));
    let err = Choice::from_flags(&s(&["eth0"]), Some(&s(&["^x"]))).unwrap_err();
    assert!(err.contains("--exclude-interfaces"), "{err}");
    let err = Choice::from_flags(&s(&["eth0", "none"]), None).unwrap_err();
    assert!(err.contains("`none` stands alone"), "{err}");
}
