//! The layer-2 lab (shared/PEERS.md): a bridge in its own namespace, N node namespaces with
//! the VIPs on a NOARP `ifb` device, and a client namespace whose kernel resolves the VIPs.
//!
//! Needs root. Every namespace carries a prefix unique to this process, every process is one
//! this lab started (killed by PID), and everything is removed on drop, also when a test
//! fails. Traffic stays inside these namespaces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::cluster::{labd_binary, raftlb_binary};

/// [`Lab::whole`]: a node whose last lease renewal reached the leader longer ago than this is
/// not in touch (two renewal periods of the default profile, five of the fast one).
pub const WHOLE_RENEWAL_MS: u64 = 300;

pub const VIP4: &str = "10.77.0.240";
pub const VIP6: &str = "fd00:77::f0";
pub const PORT: u16 = 8080;

/// The lab's one clock, in microseconds: CLOCK_MONOTONIC, which every process on the machine
/// (the harness, `raftlb-labd` in each namespace) reads alike and which never jumps.
/// The nodes' audit lines are timed by the same function.
pub fn now_us() -> u64 {
    raftlb_actors::responder::monotonic_us()
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -n NS addr add CIDR dev DEV`; IPv6 without duplicate address detection (the lab's
/// addresses are its own, and DAD would delay the first test by a second).
fn add_addr(ns: &str, cidr: &str, dev: &str) -> anyhow::Result<()> {
    let mut args = vec!["-n", ns, "addr", "add", cidr, "dev", dev];
    if cidr.contains(':') {
        args.push("nodad");
    }
    ip(&args).map(|_| ())
}

pub(crate) fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// One lab node.
#[derive(Debug, Clone)]
pub struct LabNode {
    /// n1, n2, ...
    pub name: String,
    pub ns: String,
    pub ip: String,
    pub ip6: String,
    /// Its port on the bridge (in the bridge namespace).
    pub port: String,
    pub mac: String,
}

/// What an announcer process is.
#[derive(Debug, Clone)]
pub enum Announcer {
    Raftlb {
        profile: String,
    },
    /// keepalived with this VRRP version and advertisement interval (seconds).
    Keepalived {
        version: u8,
        advert: f64,
    },
}

pub struct Lab {
    pub prefix: String,
    pub nodes: Vec<LabNode>,
    pub client_ns: String,
    bridge_ns: String,
    dir: tempfile::TempDir,
    raftlb: PathBuf,
    labd: PathBuf,
    announcer: Announcer,
    /// Per node: its announcer process (raftlb or keepalived).
    procs: BTreeMap<usize, Child>,
    helpers: Vec<Child>,
    namespaces: Vec<String>,
    /// Extra environment for every raftlb node started from now on (a negative control's
    /// switch).
    pub node_env: Vec<(String, String)>,
    /// Extra environment for one node, by name, on top of `node_env`.
    pub node_env_of: BTreeMap<String, Vec<(String, String)>>,
    /// Size-limited file systems mounted on node data directories ([`Lab::small_disks`]).
    mounts: Vec<PathBuf>,
    /// With mTLS ([`Lab::secure`]): the CA and the admin's certificate.
    tls: Option<PathBuf>,
}

/// One answer for a VIP seen from the client namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub time_us: u64,
    /// The observer's request it answers; None for an unsolicited announcement.
    pub request: Option<u64>,
    pub mac: String,
    /// For an announcement: the newest request the observer had sent when it arrived (None in
    /// recordings made before it was kept).
    pub sent_before: Option<u64>,
}

impl Lab {
    /// Builds the topology and starts the identity servers (no announcer yet).
    pub fn build(nodes: usize, announcer: Announcer) -> anyhow::Result<Lab> {
        if !nix_is_root() {
            bail!("the layer-2 lab needs root (network namespaces, raw sockets)");
        }
        let raftlb = raftlb_binary()?;
        let labd = labd_binary()?;
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let prefix = format!("rl{}x{n}", std::process::id());
        let mut lab = Lab {
            bridge_ns: format!("{prefix}-br"),
            client_ns: format!("{prefix}-c"),
            prefix: prefix.clone(),
            nodes: Vec::new(),
            dir: tempfile::tempdir()?,
            raftlb,
            labd,
            announcer,
            procs: BTreeMap::new(),
            helpers: Vec::new(),
            namespaces: Vec::new(),
            node_env: Vec::new(),
            node_env_of: BTreeMap::new(),
            mounts: Vec::new(),
            tls: None,
        };
        lab.topology(nodes)?;
        Ok(lab)
    }

    /// Puts each node's data directory on its own tmpfs of `mib` MiB (before the nodes
    /// start), so [`Lab::fill_disk`] can fill it. Unmounted when the lab is dropped.
    pub fn small_disks(&mut self, mib: u64) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            let dir = self.data_dir(&self.nodes[i].name.clone());
            std::fs::create_dir_all(&dir)?;
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
                .arg(format!("{}-disk", self.prefix))
                .arg(&dir))?;
            self.mounts.push(dir);
        }
        Ok(())
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-tls"))
    }

    /// Runs the raftlb nodes started from now on with mutual TLS: a fresh CA, a certificate per
    /// node for its lab address, and an admin certificate `ctl` shows.
    pub fn secure(&mut self) -> anyhow::Result<()> {
        use raftlb_node::tls::mint::Validity;
        use raftlb_node::tls::store::{mint_cluster, NodeFiles};
        use raftlb_node::tls::DEFAULT_CLUSTER;
        let dir = self.dir.path().join("tls");
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Ok(NodeFiles {
                    id: i as u64 + 1,
                    dir: self.tls_dir(&n.name),
                    ip: n.ip.parse()?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let day = Validity::days(1);
        mint_cluster(&dir, "lab", DEFAULT_CLUSTER, (day, day), &nodes).map_err(|e| anyhow!(e))?;
        self.tls = Some(dir);
        Ok(())
    }

    /// `ctl`'s flags for node `n`'s admin endpoint: plaintext, or TLS as the admin.
    fn ctl_flags(&self, n: &LabNode) -> Vec<String> {
        match &self.tls {
            None => vec!["--endpoint".into(), format!("http://{}:7471", n.ip)],
            Some(dir) => vec![
                "--endpoint".into(),
                format!("https://{}:7471", n.ip),
                "--tls-dir".into(),
                dir.display().to_string(),
            ],
        }
    }

    /// Fills node `name`'s data directory to the last byte (it must be on
    /// [`Lab::small_disks`]).
    pub fn fill_disk(&self, name: &str) -> anyhow::Result<()> {
        let dir = self.data_dir(name);
        anyhow::ensure!(
            self.mounts.contains(&dir),
            "{name}'s data directory is not on a small disk"
        );
        let df = run(Command::new("df").args(["-B1", "--output=avail"]).arg(&dir))?;
        let avail: u64 = df
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow!("df on {}: {df:?}", dir.display()))?;
        if avail > 0 {
            run(Command::new("fallocate")
                .args(["-l", &avail.to_string()])
                .arg(dir.join("filler")))?;
        }
        Ok(())
    }

    /// Frees what [`Lab::fill_disk`] took.
    pub fn free_disk(&self, name: &str) -> anyhow::Result<()> {
        match std::fs::remove_file(self.data_dir(name).join("filler")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn topology(&mut self, nodes: usize) -> anyhow::Result<()> {
        let br = self.bridge_ns.clone();
        self.add_ns(&br)?;
        ip(&["-n", &br, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let plug = |lab: &mut Lab, ns: &str, port: &str| -> anyhow::Result<()> {
            lab.add_ns(ns)?;
            ip(&[
                "-n", &br, "link", "add", "name", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&["-n", &br, "link", "set", port, "master", "br0", "up"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            Ok(())
        };
        let client = self.client_ns.clone();
        plug(self, &client, "vc")?;
        add_addr(&client, "10.77.0.100/24", "eth0")?;
        add_addr(&client, "fd00:77::64/64", "eth0")?;
        for i in 1..=nodes {
            let ns = format!("{}-n{i}", self.prefix);
            let port = format!("v{i}");
            plug(self, &ns, &port)?;
            let ipv4 = format!("10.77.0.{}", 10 + i);
            let ipv6 = format!("fd00:77::{}", 10 + i);
            add_addr(&ns, &format!("{ipv4}/24"), "eth0")?;
            add_addr(&ns, &format!("{ipv6}/64"), "eth0")?;
            // The VIPs on a NOARP device: accepted here, answered by nobody but the owner.
            ip(&["-n", &ns, "link", "add", "name", "lbvip0", "type", "ifb"])?;
            ip(&["-n", &ns, "link", "set", "lbvip0", "up"])?;
            add_addr(&ns, &format!("{VIP4}/32"), "lbvip0")?;
            add_addr(&ns, &format!("{VIP6}/128"), "lbvip0")?;
            run(in_ns(&ns, "sysctl").args([
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ]))?;
            let link: Value =
                serde_json::from_str(&ip(&["-n", &ns, "-j", "link", "show", "eth0"])?)?;
            let mac = link[0]["address"]
                .as_str()
                .ok_or_else(|| anyhow!("no MAC for eth0 in {ns}"))?
                .to_string();
            let server = in_ns(&ns, self.labd.to_str().unwrap_or("raftlb-labd"))
                .args([
                    "serve",
                    "--name",
                    &format!("n{i}"),
                    "--port",
                    &PORT.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            self.helpers.push(server);
            self.nodes.push(LabNode {
                name: format!("n{i}"),
                ns,
                ip: ipv4,
                ip6: ipv6,
                port,
                mac,
            });
        }
        Ok(())
    }

    /// A lab of `nodes` raftlb peers with the default profile (not started yet).
    pub fn raftlb(nodes: usize) -> anyhow::Result<Lab> {
        Lab::build(
            nodes,
            Announcer::Raftlb {
                profile: "default".into(),
            },
        )
    }

    /// Waits until the client's kernel holds one ECMP route for `vip` over every node.
    pub fn wait_client_ecmp(&self, vip: &str, within: Duration) -> anyhow::Result<()> {
        self.wait("the client's ECMP route over every node", within, |l| {
            let route = l.client_route(vip)?;
            Ok(l.nodes.iter().all(|n| route.contains(&n.ip)).then_some(()))
        })
    }

    /// Every node's IPv4 address.
    pub fn node_ips(&self) -> std::collections::BTreeSet<String> {
        self.nodes.iter().map(|n| n.ip.clone()).collect()
    }

    pub fn node_of_mac(&self, mac: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.mac.eq_ignore_ascii_case(mac))
            .map(|n| n.name.as_str())
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("a lab node name")
    }

    /// Starts node `name`'s announcer (raftlb peer or keepalived).
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name);
        let node = self.nodes[i].clone();
        // Appended to: a restarted node's log keeps what its earlier runs wrote.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        let child = match self.announcer.clone() {
            Announcer::Raftlb { profile } => {
                let peers: Vec<String> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(j, n)| format!("{}@{}:7470", j + 1, n.ip))
                    .collect();
                let security = match &self.tls {
                    Some(_) => vec![
                        "--tls-dir".to_string(),
                        self.tls_dir(name).display().to_string(),
                    ],
                    None => vec!["--insecure".to_string()],
                };
                in_ns(&node.ns, self.raftlb.to_str().unwrap_or("raftlb"))
                    .arg("run")
                    .args(&security)
                    .args(["--id", &(i + 1).to_string()])
                    .args(["--listen", &node.ip, "--profile", &profile])
                    .arg("--data-dir")
                    .arg(self.data_dir(name))
                    .args(["--peers", &peers.join(",")])
                    // No --interfaces: discovery, as installed. It must pick eth0 and never
                    // the NOARP device holding the VIPs (nor lo).
                    .args(["--node-name", name])
                    .args(["--node-labels", &format!("kubernetes.io/hostname={name}")])
                    .env("RUST_LOG", "info")
                    .envs(self.node_env.iter().map(|(k, v)| (k, v)))
                    .envs(
                        self.node_env_of
                            .get(name)
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k, v)),
                    )
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?
            }
            Announcer::Keepalived { version, advert } => {
                let conf = self.dir.path().join(format!("{name}-ka.conf"));
                let priority = 200 - i * 10;
                std::fs::write(
                    &conf,
                    format!(
                        "global_defs {{\n  vrrp_version {version}\n  script_user root\n}}\n\
                         vrrp_instance lab {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 77\n\
                         priority {priority}\n  advert_int {advert}\n  nopreempt\n\
                         virtual_ipaddress {{\n    {VIP4}/32 dev eth0\n  }}\n}}\n"
                    ),
                )?;
                let pid = |s: &str| self.dir.path().join(format!("{name}-{s}.pid"));
                in_ns(&node.ns, "keepalived")
                    .args(["-n", "-l", "-D", "-G", "-P", "-f"])
                    .arg(&conf)
                    .arg("-p")
                    .arg(pid("ka"))
                    .arg("-r")
                    .arg(pid("vrrp"))
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?
            }
        };
        self.procs.insert(i, child);
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.start(&n)?;
        }
        Ok(())
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.get(&self.index(name)).map(Child::id)
    }

    fn signal(&self, name: &str, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(name)
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        run(Command::new("kill").args([sig, &pid.to_string()]))?;
        Ok(())
    }

    /// SIGKILL the node's announcer and take its link down (a crashed machine).
    pub fn crash(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name);
        self.link(name, false)?;
        if let Some(mut c) = self.procs.remove(&i) {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGKILL only (the link stays up).
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut c) = self.procs.remove(&i) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn link(&self, name: &str, up: bool) -> anyhow::Result<()> {
        let port = &self.nodes[self.index(name)].port;
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            port,
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }

    /// SIGTERM to node `name` (a clean stop).
    pub fn terminate(&self, name: &str) -> anyhow::Result<()> {
        self.signal(name, "-TERM")
    }

    pub fn pause(&self, name: &str) -> anyhow::Result<()> {
        self.signal(name, "-STOP")
    }

    pub fn resume(&self, name: &str) -> anyhow::Result<()> {
        self.signal(name, "-CONT")
    }

    /// Cuts `name` off from the other nodes (the client still reaches it). `one_way`: only
    /// what it sends to them is dropped; it still hears them.
    pub fn partition(&self, name: &str, one_way: bool) -> anyhow::Result<()> {
        let me = &self.nodes[self.index(name)].port;
        let others: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .map(|n| format!("\"{}\"", n.port))
            .collect();
        let others = others.join(", ");
        let back = if one_way {
            String::new()
        } else {
            format!("    iifname {{ {others} }} oifname \"{me}\" drop\n")
        };
        let rules = format!(
            "table bridge part {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    iifname \"{me}\" oifname {{ {others} }} drop\n{back}  }}\n}}\n"
        );
        self.nft("part", &rules)
    }

    /// Loads an nftables ruleset into the bridge namespace from a file named after `table`.
    fn nft(&self, table: &str, rules: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join(format!("{table}.nft"));
        std::fs::write(&path, rules)?;
        run(in_ns(&self.bridge_ns, "nft").arg("-f").arg(&path))?;
        Ok(())
    }

    /// Drops every frame to and from node `name` at the bridge, silently: no FIN, no RST, no
    /// link change; the node's process and link stay up.
    pub fn cut_off(&self, name: &str) -> anyhow::Result<()> {
        self.drop_at_port("cut", name, "")
    }

    /// Drops node `name`'s BGP and BFD traffic (TCP port 179, UDP 3784/3785) both ways at
    /// the bridge, silently: its sessions with the router see nothing more.
    pub fn cut_bgp(&self, name: &str) -> anyhow::Result<()> {
        let me = &self.nodes[self.index(name)].port;
        let mut rules = String::from(
            "table bridge bgpcut {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
        );
        for dir in ["iifname", "oifname"] {
            for (proto, ports) in [("tcp", "179"), ("udp", "{ 3784, 3785 }")] {
                for end in ["sport", "dport"] {
                    rules.push_str(&format!(
                        "    {dir} \"{me}\" meta l4proto {proto} th {end} {ports} drop\n"
                    ));
                }
            }
        }
        rules.push_str("  }\n}\n");
        self.nft("bgpcut", &rules)
    }

    /// Undoes [`Lab::cut_bgp`].
    pub fn uncut_bgp(&self) -> anyhow::Result<()> {
        self.delete_table("bgpcut")
    }

    /// Undoes [`Lab::cut_off`].
    pub fn reconnect(&self) -> anyhow::Result<()> {
        self.delete_table("cut")
    }

    /// Drops `percent` % of the frames to and from node `name` at the bridge, at random.
    pub fn loss(&self, name: &str, percent: u32) -> anyhow::Result<()> {
        self.drop_at_port("loss", name, &format!("numgen random mod 100 < {percent} "))
    }

    /// Undoes [`Lab::loss`].
    pub fn clear_loss(&self) -> anyhow::Result<()> {
        self.delete_table("loss")
    }

    /// Table `table`: frames to and from node `name` that match `condition` are dropped.
    fn drop_at_port(&self, table: &str, name: &str, condition: &str) -> anyhow::Result<()> {
        let me = &self.nodes[self.index(name)].port;
        let rules = format!(
            "table bridge {table} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    iifname \"{me}\" {condition}drop\n    oifname \"{me}\" {condition}drop\n  }}\n}}\n"
        );
        self.nft(table, &rules)
    }

    fn delete_table(&self, table: &str) -> anyhow::Result<()> {
        run(in_ns(&self.bridge_ns, "nft").args(["delete", "table", "bridge", table]))?;
        Ok(())
    }

    /// Squeezes node `name`'s link to `kbit` kbit/s both ways (tc tbf on each end).
    pub fn squeeze(&self, name: &str, kbit: u32) -> anyhow::Result<()> {
        let node = &self.nodes[self.index(name)];
        let rate = format!("{kbit}kbit");
        for (ns, dev) in [(&self.bridge_ns, node.port.as_str()), (&node.ns, "eth0")] {
            run(in_ns(ns, "tc").args([
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "16kbit",
                "latency", "200ms",
            ]))?;
        }
        Ok(())
    }

    /// Undoes [`Lab::squeeze`].
    pub fn unsqueeze(&self, name: &str) -> anyhow::Result<()> {
        let node = &self.nodes[self.index(name)];
        for (ns, dev) in [(&self.bridge_ns, node.port.as_str()), (&node.ns, "eth0")] {
            run(in_ns(ns, "tc").args(["qdisc", "del", "dev", dev, "root"]))?;
        }
        Ok(())
    }

    /// Whether node `name`'s announcer runs (started and not reaped).
    pub fn running(&mut self, name: &str) -> bool {
        let i = self.index(name);
        match self.procs.get_mut(&i) {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.procs.remove(&i);
                    false
                }
            },
            None => false,
        }
    }

    /// SIGTERM to node `name`, then waits up to `within` for it to exit (SIGKILL after).
    pub fn stop(&mut self, name: &str, within: Duration) -> anyhow::Result<()> {
        self.terminate(name)?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.running(name) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill(name);
        bail!("{name} did not stop within {within:?} after SIGTERM; killed")
    }

    /// `raftlb ctl ARGS -o json` against node `name` only.
    pub fn ctl_at(&self, name: &str, args: &[&str]) -> anyhow::Result<Value> {
        self.ctl_on(&self.nodes[self.index(name)], args)
            .map_err(|e| anyhow!("at {name}: {e}"))
    }

    /// After [`Lab::secure`]: the directory with the CA and the admin's client certificate.
    pub fn admin_tls_dir(&self) -> Option<&Path> {
        self.tls.as_deref()
    }

    /// `raftlb ARGS` in the client namespace (a machine that is not a peer), given up after
    /// 10 s.
    pub fn raftlb_from_client(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(in_ns(&self.client_ns, "timeout")
            .arg("10")
            .arg(&self.raftlb)
            .args(args)
            .output()?)
    }

    /// `raftlb ctl ARGS -o json` in node `n`'s namespace against its own admin endpoint.
    fn ctl_on(&self, n: &LabNode, args: &[&str]) -> anyhow::Result<Value> {
        // A stopped (SIGSTOP) or stuck peer accepts the connection and never answers.
        let out = in_ns(&n.ns, "timeout")
            .arg("10")
            .arg(&self.raftlb)
            .arg("ctl")
            .args(self.ctl_flags(n))
            .args(["-o", "json"])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        self.delete_table("part")
    }

    /// `raftlb ctl ARGS -o json` from inside a running node's namespace.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<Value> {
        self.ctl_except(None, args)
    }

    /// Every node's BGP sessions, as `ctl get bgp -o json` lists them.
    pub fn bgp_sessions(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .ctl(&["get", "bgp"])?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Like [`Lab::ctl`], never asking node `skip` (a cut-off node answers from a stale table).
    pub fn ctl_except(&self, skip: Option<&str>, args: &[&str]) -> anyhow::Result<Value> {
        let mut last = anyhow!("no raftlb node is running");
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.procs.contains_key(&i) || skip == Some(n.name.as_str()) {
                continue;
            }
            match self.ctl_on(n, args) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Starts `raftlb ctl ARGS -o json` (a watch) against the first running node; its
    /// output lines arrive as JSON values. Killed on drop.
    pub fn ctl_watch(&self, args: &[&str]) -> anyhow::Result<CtlWatch> {
        let (_, n) = self
            .nodes
            .iter()
            .enumerate()
            .find(|(i, _)| self.procs.contains_key(i))
            .ok_or_else(|| anyhow!("no raftlb node is running"))?;
        let mut child = in_ns(&n.ns, self.raftlb.to_str().unwrap_or("raftlb"))
            .arg("ctl")
            .args(self.ctl_flags(n))
            .args(["-o", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(CtlWatch {
            child,
            rx,
            seen: Vec::new(),
        })
    }

    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("apply.yaml");
        std::fs::write(&path, yaml)?;
        let p = path.to_string_lossy().into_owned();
        self.ctl(&["apply", "-f", &p]).map(|_| ())
    }

    /// Deletes the objects `yaml` names.
    pub fn delete(&self, yaml: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("delete.yaml");
        std::fs::write(&path, yaml)?;
        let p = path.to_string_lossy().into_owned();
        self.ctl(&["delete", "-f", &p]).map(|_| ())
    }

    /// Owner (node name) of `vip` in the table.
    pub fn owner(&self, vip: &str) -> anyhow::Result<Option<String>> {
        self.owner_seen_by_others(vip, None)
    }

    /// Owner of `vip` as the nodes other than `skip` see it.
    pub fn owner_seen_by_others(
        &self,
        vip: &str,
        skip: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        Ok(owner_in(&self.ctl_except(skip, &["get", "vips"])?, vip))
    }

    /// `ctl move VIP NODE` (unless it is already there), then waits until the table names
    /// `node` and the client reaches it.
    pub fn move_vip(&self, vip: &str, node: &str) -> anyhow::Result<()> {
        if self.owner(vip)?.as_deref() != Some(node) {
            self.ctl(&["move", vip, node])?;
        }
        self.wait("the move", Duration::from_secs(20), |l| {
            Ok((l.owner(vip)?.as_deref() == Some(node)).then_some(()))
        })?;
        self.wait("the new owner reachable", Duration::from_secs(10), |l| {
            Ok((l.reach(vip)?.as_deref() == Some(node)).then_some(()))
        })
    }

    pub fn leader(&self) -> anyhow::Result<Option<String>> {
        Ok(self.leader_in(&self.ctl(&["status"])?))
    }

    /// The cluster is whole: every running node follows one leader in one term, and the
    /// leader heard every node's lease renewal within [`WHOLE_RENEWAL_MS`]. Returns the leader.
    pub fn whole(&self) -> anyhow::Result<Option<String>> {
        let mut agreed = None;
        let mut leader_status = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.procs.contains_key(&i) {
                continue;
            }
            let s = self.ctl_on(n, &["status"])?;
            let (Some(leader), Some(term)) = (s["leader"].as_u64(), s["term"].as_u64()) else {
                return Ok(None);
            };
            if *agreed.get_or_insert((leader, term)) != (leader, term) {
                return Ok(None);
            }
            if s["id"].as_u64() == Some(leader) {
                leader_status = Some(s);
            }
        }
        let Some(s) = leader_status else {
            return Ok(None);
        };
        // The leader holds its own lease and renews with nobody.
        let renewing = s["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .filter(|n| n["raftId"].as_u64() != s["leader"].as_u64())
                .all(|n| {
                    n["sinceRenewalMs"]
                        .as_u64()
                        .is_some_and(|ms| ms <= WHOLE_RENEWAL_MS)
                })
        });
        Ok(renewing.then(|| self.leader_in(&s)).flatten())
    }

    /// The leader's node name in a `ctl status` answer.
    pub fn leader_in(&self, status: &Value) -> Option<String> {
        let id = status["leader"].as_u64()?;
        self.nodes.get(id as usize - 1).map(|n| n.name.clone())
    }

    /// Waits until `check` holds.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Lab) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let end = Instant::now() + timeout;
        let mut last = String::from("never checked");
        while Instant::now() < end {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = "not yet".into(),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{what}: not within {timeout:?} ({last})")
    }

    /// The standard lab configuration: one pool with the two VIPs, MetalLB's canonical
    /// L2Advertisement for it (no interfaces: wherever the node answers), and a dual-stack
    /// Service.
    pub fn apply_standard(&self) -> anyhow::Result<()> {
        self.apply(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab}}\n\
             spec: {{addresses: [{VIP4}/32, {VIP6}/128]}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lab}}\n\
             spec: {{ipAddressPools: [lab]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
             spec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: {PORT}}}]}}\n"
        ))
    }

    /// The standard configuration for BGP mode: one peer (the lab router, AS 64512, dual
    /// stack; with BFD 100 ms x 3 if `bfd`), the VIP pool advertised, and the Service.
    pub fn apply_standard_bgp(&self, bfd: bool) -> anyhow::Result<()> {
        let (profile, peer_bfd) = if bfd {
            (
                "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: fast}\n\
                 spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}\n---\n",
                ", bfdProfile: fast",
            )
        } else {
            ("", "")
        };
        self.apply(&format!(
            "{profile}apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
             spec: {{myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, holdTime: 9s, \
             dualStackAddressFamily: true{peer_bfd}}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab}}\n\
             spec: {{addresses: [{VIP4}/32, {VIP6}/128]}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: lab}}\n\
             spec: {{ipAddressPools: [lab]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
             spec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: {PORT}}}]}}\n"
        ))
    }

    /// Starts every node's raftlb and waits for a leader and every node registered (no
    /// configuration yet).
    pub fn start_cluster(&mut self) -> anyhow::Result<()> {
        self.start_all()?;
        self.wait("a leader", Duration::from_secs(30), |l| l.leader())?;
        let n = self.nodes.len();
        self.wait("every node registered", Duration::from_secs(30), |l| {
            let s = l.ctl(&["status"])?;
            let registered = s["nodes"].as_array().map_or(0, Vec::len);
            Ok((registered == n).then_some(()))
        })
    }

    /// Starts a raftlb cluster with the standard configuration and waits until both VIPs
    /// have owners.
    pub fn start_raftlb(&mut self) -> anyhow::Result<()> {
        self.start_cluster()?;
        self.wait("the configuration applied", Duration::from_secs(20), |l| {
            l.apply_standard().map(Some)
        })?;
        for vip in [VIP4, VIP6] {
            self.wait(
                &format!("an owner for {vip}"),
                Duration::from_secs(20),
                |l| l.owner(vip),
            )?;
        }
        Ok(())
    }

    fn labd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = in_ns(ns, self.labd.to_str().unwrap_or("raftlb-labd"));
        c.args(args);
        c
    }

    /// Sends each hex payload as one UDP datagram from the client namespace to `to`, with IP
    /// TTL `ttl`.
    pub fn send_udp(&self, to: &str, ttl: u32, payloads: &[&str]) -> anyhow::Result<()> {
        let ttl = ttl.to_string();
        let hex = payloads.join(",");
        run(&mut self.labd(
            &self.client_ns,
            &["udp", "--to", to, "--ttl", &ttl, "--hex", &hex],
        ))?;
        Ok(())
    }

    /// One TCP connect from the client to `vip`: the node that answered.
    pub fn reach(&self, vip: &str) -> anyhow::Result<Option<String>> {
        let target = target(vip);
        let out = run(&mut self.labd(
            &self.client_ns,
            &[
                "probe",
                "--target",
                &target,
                "--every-ms",
                "10",
                "--for-ms",
                "10",
            ],
        ))?;
        Ok(out
            .lines()
            .find_map(|l| l.split_whitespace().nth(2).map(str::to_string)))
    }

    /// Runs `raftlb-labd ARGS` in the client namespace in the background, its lines to a file.
    fn background(&self, what: &str, args: &[&str]) -> anyhow::Result<Background> {
        let out = self.dir.path().join(format!("{what}-{}.txt", now_us()));
        let child = self
            .labd(&self.client_ns, args)
            .stdout(std::fs::File::create(&out)?)
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Background {
            child: Some(child),
            out,
        })
    }

    /// Starts the observer in the client namespace for `ms` milliseconds.
    pub fn observe(&mut self, vip: &str, ms: u64) -> anyhow::Result<Background> {
        let ms = ms.to_string();
        self.background(
            "observe",
            &[
                "observe",
                "--iface",
                "eth0",
                "--vip",
                vip,
                "--every-ms",
                "10",
                "--for-ms",
                &ms,
            ],
        )
    }

    /// Starts the TCP probe in the client namespace for `ms` milliseconds.
    pub fn probe(&mut self, vip: &str, every_ms: u64, ms: u64) -> anyhow::Result<Background> {
        let (every, ms) = (every_ms.to_string(), ms.to_string());
        self.background(
            "probe",
            &[
                "probe",
                "--target",
                &target(vip),
                "--every-ms",
                &every,
                "--for-ms",
                &ms,
            ],
        )
    }

    /// Every node's admin URL, comma-separated (the workload's `--endpoints`).
    fn admin_endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("http://{}:7471", n.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The workload's Services as one linearizable read gives them (asked of each node in
    /// turn for up to 10 s): a `final-read` history line.
    pub fn final_read(&self) -> anyhow::Result<String> {
        run(&mut self.labd(
            &self.client_ns,
            &[
                "final-read",
                "--endpoints",
                &self.admin_endpoints(),
                "--within-ms",
                "10000",
            ],
        ))
    }

    /// The chaos workload in the client namespace for `ms` milliseconds: `clients` clients
    /// against every node's admin endpoint, one operation every `every_ms` each.
    pub fn workload(
        &mut self,
        clients: usize,
        seed: u64,
        every_ms: u64,
        ms: u64,
    ) -> anyhow::Result<Background> {
        let endpoints = self.admin_endpoints();
        let (clients, seed, every, ms) = (
            clients.to_string(),
            seed.to_string(),
            every_ms.to_string(),
            ms.to_string(),
        );
        self.background(
            "workload",
            &[
                "workload",
                "--endpoints",
                &endpoints,
                "--clients",
                &clients,
                "--seed",
                &seed,
                "--every-ms",
                &every,
                "--for-ms",
                &ms,
            ],
        )
    }

    /// ARP request latency from the client to `target` (p50/p99 line from raftlb-labd).
    pub fn arp_latency(&self, target: &str, rate: u64, count: u64) -> anyhow::Result<String> {
        run(&mut self.labd(
            &self.client_ns,
            &[
                "arplat",
                "--iface",
                "eth0",
                "--target",
                target,
                "--rate",
                &rate.to_string(),
                "--count",
                &count.to_string(),
            ],
        ))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts a BGP router of `kind` in the client namespace (10.77.0.100, AS `asn`), which
    /// accepts every node of the lab subnet as a neighbour of AS `node_asn`.
    pub fn router(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
    ) -> anyhow::Result<crate::routers::Router> {
        self.start_router_with(kind, asn, node_asn, |_| {})
    }

    /// Like [`Lab::router`], with BFD on every session (BIRD): `interval_ms` both ways,
    /// multiplier `mult`.
    pub fn router_with_bfd(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
        interval_ms: u32,
        mult: u32,
    ) -> anyhow::Result<crate::routers::Router> {
        self.start_router_with(kind, asn, node_asn, |c| {
            c.bfd = Some((interval_ms, interval_ms, mult))
        })
    }

    /// Like [`Lab::router`], every session signed with TCP-MD5 `password` (BIRD, FRR).
    pub fn router_with_password(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
        password: &str,
    ) -> anyhow::Result<crate::routers::Router> {
        self.start_router_with(kind, asn, node_asn, |c| c.password = Some(password.into()))
    }

    /// Like [`Lab::router_with_fib`], with graceful restart on every session (BIRD).
    pub fn router_with_graceful_restart(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
    ) -> anyhow::Result<crate::routers::Router> {
        self.start_router_with(kind, asn, node_asn, |c| {
            c.fib = true;
            c.graceful_restart = true;
        })
    }

    /// FRR's bfdd in the client namespace (at the router's address) with a BFD peer per
    /// node.
    pub fn frr_bfd(&self, interval_ms: u32, mult: u32) -> anyhow::Result<crate::routers::FrrBfd> {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.ip.clone()).collect();
        crate::routers::FrrBfd::start(
            &self.client_ns,
            self.dir.path(),
            "10.77.0.100",
            &nodes,
            interval_ms,
            mult,
        )
    }

    /// Like [`Lab::router`], and the router (BIRD) also dials every node itself.
    pub fn router_dialling(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
    ) -> anyhow::Result<crate::routers::Router> {
        let nodes = self.nodes.iter().map(|n| n.ip.clone()).collect();
        self.start_router_with(kind, asn, node_asn, |c| c.active = nodes)
    }

    /// Like [`Lab::router`], and the router installs what it learns into the client
    /// namespace's kernel (ECMP across the nodes' paths, hashed on ports as well, so TCP
    /// connections from one client spread).
    pub fn router_with_fib(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
    ) -> anyhow::Result<crate::routers::Router> {
        self.start_router_with(kind, asn, node_asn, |c| c.fib = true)
    }

    /// A router in the client namespace at 10.77.0.100 for the lab's nodes, configured by `f`
    /// beyond the defaults (with `fib`, ECMP hashing on ports is switched on too).
    pub fn start_router_with(
        &self,
        kind: crate::routers::RouterKind,
        asn: u32,
        node_asn: u32,
        f: impl FnOnce(&mut crate::routers::RouterConfig),
    ) -> anyhow::Result<crate::routers::Router> {
        let mut config = crate::routers::RouterConfig {
            ns: self.client_ns.clone(),
            address: "10.77.0.100".into(),
            asn,
            neighbors: "10.77.0.0/24".into(),
            neighbor_asn: node_asn,
            v6: Some(("fd00:77::64".into(), "fd00:77::/64".into())),
            fib: false,
            active: Vec::new(),
            active_port: None,
            bfd: None,
            password: None,
            graceful_restart: false,
        };
        f(&mut config);
        if config.fib {
            run(in_ns(&self.client_ns, "sysctl").args([
                "-qw",
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
            ]))?;
        }
        crate::routers::Router::start(kind, config, self.dir.path())
    }

    /// The routes the client namespace's kernel holds for `dest` (`ip route show`).
    pub fn client_route(&self, dest: &str) -> anyhow::Result<String> {
        let family = if dest.contains(':') { "-6" } else { "-4" };
        ip(&[family, "-n", &self.client_ns, "route", "show", dest])
    }

    /// Starts `raftlb-labd speak` (one BgpSession, no Raft) on node `name` towards the
    /// router at 10.77.0.100 (or the `--peer` in `args`).
    pub fn speaker(&self, name: &str, args: &[&str]) -> anyhow::Result<Speaker> {
        let node = &self.nodes[self.index(name)];
        let mut all: Vec<&str> = vec!["speak", "--router-id", &node.ip];
        if !args.contains(&"--peer") {
            all.extend(["--peer", "10.77.0.100"]);
        }
        all.extend_from_slice(args);
        let mut child = self
            .labd(&node.ns, &all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Ok(Speaker {
            child: Some(child),
            lines,
        })
    }
}

/// A `raftlb-labd speak` process: its status lines, and commands on its stdin.
pub struct Speaker {
    child: Option<Child>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Speaker {
    /// `announce`, `withdraw` or `stop REASON`.
    pub fn command(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let child = self.child.as_mut().ok_or_else(|| anyhow!("speaker gone"))?;
        let stdin = child.stdin.as_mut().ok_or_else(|| anyhow!("no stdin"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Status lines so far: `TIME_US STATE sent=S pending=P updates=U error=E`.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to end by itself (after `stop`).
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while let Some(c) = self.child.as_mut() {
            if c.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("speaker still running after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `raftlb ctl ... -w -o json` and what it printed so far.
pub struct CtlWatch {
    child: Child,
    rx: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl CtlWatch {
    /// Everything printed so far, once `done` holds for it (waiting up to `within`).
    pub fn until(
        &mut self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<&[Value]> {
        let deadline = Instant::now() + within;
        while !done(&self.seen) {
            if Instant::now() > deadline {
                bail!(
                    "watch: {what}: not seen within {within:?}; printed: {:?}",
                    self.seen
                );
            }
            if let Ok(v) = self.rx.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(v);
            }
        }
        Ok(&self.seen)
    }
}

impl Drop for CtlWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Set once SIGINT or SIGTERM arrives (the default action, which would skip the lab's
/// cleanup, is replaced). Programs check it between steps and return, dropping the lab.
pub fn interrupted() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("\ninterrupted: finishing this step, then tearing the lab down");
        set.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}

fn target(vip: &str) -> String {
    if vip.contains(':') {
        format!("[{vip}]:{PORT}")
    } else {
        format!("{vip}:{PORT}")
    }
}

fn nix_is_root() -> bool {
    run(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

/// A helper process in the client namespace writing lines to a file.
pub struct Background {
    child: Option<Child>,
    out: PathBuf,
}

impl Background {
    /// Waits for it to finish and returns its lines.
    pub fn finish(mut self) -> anyhow::Result<Vec<String>> {
        if let Some(mut c) = self.child.take() {
            c.wait()?;
        }
        self.lines()
    }

    /// Asks it to stop (SIGTERM), waits up to `within` for it to finish what it is doing,
    /// then kills it; returns the lines it wrote.
    pub fn stop_within(mut self, within: Duration) -> anyhow::Result<Vec<String>> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + within;
            while c.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            c.wait()?;
        }
        self.lines()
    }

    /// Stops it now and returns the lines it wrote (each is flushed as it is written).
    pub fn stop(mut self) -> anyhow::Result<Vec<String>> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait()?;
        }
        self.lines()
    }

    fn lines(&self) -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string(&self.out)?
            .lines()
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn answers(lines: &[String]) -> Vec<Answer> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let garp = *f.get(1)? == "garp";
            let number = f.get(2)?.parse().ok();
            Some(Answer {
                time_us: f.first()?.parse().ok()?,
                request: if garp { None } else { number },
                mac: f.get(3)?.to_lowercase(),
                sent_before: if garp { number } else { None },
            })
        })
        .collect()
}

/// Split-brain evidence: one request answered by two MACs (two answerers reply to every
/// request, so asking every 10 ms catches any overlap longer than that), or a request answered
/// by one MAC up to 20 ms *after* another MAC announced the VIP (the new owner started while
/// the old one still answered), to a request sent after the announcement arrived. An answer
/// shortly *before* an announcement is a handover; an answer after it to a request sent before
/// it may have been decided before it and held up on the way (a squeezed link): the nodes'
/// audit, which knows when each reply was decided and under which lease, judges those.
///
/// A reply that arrives after a reply to a later request was held up on the way (a squeezed
/// link queues frames for hundreds of milliseconds): it was decided when its request came in,
/// not when it arrived, so it is left out. Replies are in send order otherwise.
///
/// Each finding comes with its time: the first answer to the request answered twice, or the
/// late answer.
pub fn dual_answers(answers: &[Answer]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut in_time: Vec<&Answer> = answers.iter().collect();
    in_time.sort_by_key(|a| a.time_us);
    let mut newest = None;
    let answers: Vec<&Answer> = in_time
        .into_iter()
        .filter(|a| match a.request {
            Some(r) if newest.is_some_and(|n| r < n) => false,
            Some(r) => {
                newest = Some(r);
                true
            }
            None => true,
        })
        .collect();
    // Per request: when it was first answered, and by which MACs.
    let mut by_request: BTreeMap<u64, (u64, Vec<&str>)> = BTreeMap::new();
    for a in &answers {
        if let Some(r) = a.request {
            let (_, macs) = by_request.entry(r).or_insert((a.time_us, Vec::new()));
            if !macs.contains(&a.mac.as_str()) {
                macs.push(&a.mac);
            }
        }
    }
    for (r, (t, macs)) in &by_request {
        if macs.len() > 1 {
            out.push((
                *t,
                format!("request {r} answered by {}", macs.join(" and ")),
            ));
        }
    }
    for g in answers.iter().filter(|a| a.request.is_none()) {
        let asked_after = |a: &Answer| match (a.request, g.sent_before) {
            (Some(r), Some(sent)) => r > sent,
            (r, None) => r.is_some(),
            (None, _) => false,
        };
        if let Some(other) = answers.iter().find(|a| {
            asked_after(a)
                && a.mac != g.mac
                && a.time_us >= g.time_us
                && a.time_us - g.time_us < 20_000
        }) {
            out.push((
                other.time_us,
                format!(
                    "{} announced, then {} still answered {} us later",
                    g.mac,
                    other.mac,
                    other.time_us - g.time_us
                ),
            ));
        }
    }
    out
}

/// The owner of `vip` in a `ctl get vips` answer.
pub fn owner_in(vips: &Value, vip: &str) -> Option<String> {
    vips["vips"].as_array()?.iter().find(|x| x["ip"] == vip)?["owner"]
        .as_str()
        .filter(|o| !o.is_empty())
        .map(str::to_string)
}

/// (attempt start, node) of every successful probe attempt.
pub fn probe_hits(lines: &[String]) -> Vec<(u64, String)> {
    probes(lines)
        .into_iter()
        .filter_map(|(t, node)| Some((t, node?)))
        .collect()
}

/// (attempt start, node that answered or None) of every probe attempt.
pub fn probes(lines: &[String]) -> Vec<(u64, Option<String>)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let node = (f.get(1) == Some(&"ok"))
                .then(|| f.get(2).map(|s| s.to_string()))
                .flatten();
            Some((f.first()?.parse().ok()?, node))
        })
        .collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.procs) {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        for mut c in self.helpers.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        for dir in &self.mounts {
            let _ = Command::new("umount")
                .arg(dir)
                .stderr(Stdio::null())
                .status();
        }
        if std::env::var_os("RAFTLB_LAB_KEEP_LOGS").is_some() {
            let keep = self.dir.path().to_path_buf();
            let _ = std::fs::create_dir_all("/tmp/raftlb-lab-logs");
            for n in &self.nodes {
                let _ = std::fs::copy(
                    keep.join(format!("{}.log", n.name)),
                    format!("/tmp/raftlb-lab-logs/{}-{}.log", self.prefix, n.name),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(t: u64, r: Option<u64>, mac: &str) -> Answer {
        Answer {
            time_us: t,
            request: r,
            mac: mac.into(),
            sent_before: None,
        }
    }

    /// An announcement that arrived when request `sent` was the newest one sent.
    fn garp(t: u64, sent: u64, mac: &str) -> Answer {
        Answer {
            sent_before: Some(sent),
            ..a(t, None, mac)
        }
    }

    #[test]
    fn a_reply_to_a_request_sent_before_the_announcement_is_left_to_the_audit() {
        // Seen in the fast campaign (seed 3000, cycle 590): x's link squeezed, its reply to
        // request 40 (decided under its lease) arrived 4 ms after y's announcement.
        let in_flight = [
            a(0, Some(33), "x"),
            garp(70_000, 41, "y"),
            a(74_400, Some(40), "x"),
            a(80_000, Some(42), "y"),
        ];
        assert!(dual_answers(&in_flight).is_empty());
        // The same reply to a request sent after the announcement arrived is the old owner
        // answering beside the new one.
        let late = [
            a(0, Some(33), "x"),
            garp(70_000, 41, "y"),
            a(74_400, Some(42), "x"),
        ];
        assert_eq!(dual_answers(&late).len(), 1, "{:?}", dual_answers(&late));
    }

    #[test]
    fn observer_lines_parse_with_and_without_the_request_count_of_an_announcement() {
        let lines: Vec<String> = [
            "100 req 7 AA:bb:cc:dd:ee:01",
            "200 garp 9 aa:bb:cc:dd:ee:02",
            "300 garp - aa:bb:cc:dd:ee:03",
        ]
        .map(String::from)
        .to_vec();
        let got = answers(&lines);
        assert_eq!(got[0], a(100, Some(7), "aa:bb:cc:dd:ee:01"));
        assert_eq!(got[1], garp(200, 9, "aa:bb:cc:dd:ee:02"));
        assert_eq!(got[2], a(300, None, "aa:bb:cc:dd:ee:03"));
    }

    #[test]
    fn a_clean_handover_and_back_is_not_split_brain() {
        let seq = [
            a(0, Some(1), "x"),
            a(10_000, Some(2), "x"),
            a(60_000, None, "y"),
            a(70_000, Some(7), "y"),
            a(300_000, None, "x"),
            a(310_000, Some(31), "x"),
        ];
        assert!(dual_answers(&seq).is_empty());
    }

    #[test]
    fn two_macs_for_one_request_or_an_announcement_beside_answers_is() {
        let twice = [a(0, Some(1), "x"), a(100, Some(1), "y")];
        assert_eq!(dual_answers(&twice).len(), 1);
        let garp = [
            a(0, Some(1), "x"),
            a(5_000, None, "y"),
            a(10_000, Some(2), "x"),
        ];
        assert_eq!(dual_answers(&garp).len(), 1);
        // An answer just before the new owner's announcement is a handover.
        let handover = [
            a(0, Some(1), "x"),
            a(5_000, None, "y"),
            a(12_000, Some(2), "y"),
        ];
        assert!(dual_answers(&handover).is_empty());
    }

    #[test]
    fn a_reply_held_up_on_the_way_is_not_a_second_answerer() {
        // y took over and answered request 9; x's reply to request 5, queued on a squeezed
        // link, arrives after it.
        let late = [
            a(0, Some(4), "x"),
            a(300_000, None, "y"),
            a(302_000, Some(9), "y"),
            a(315_000, Some(5), "x"),
        ];
        assert!(dual_answers(&late).is_empty());
        // x deciding to answer a new request after y announced is still caught.
        let current = [
            a(0, Some(4), "x"),
            a(300_000, None, "y"),
            a(302_000, Some(9), "y"),
            a(312_000, Some(10), "x"),
        ];
        assert_eq!(dual_answers(&current).len(), 1);
    }
}
