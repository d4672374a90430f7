//! Real BGP routers for the lab (shared/PEERS.md recipes): BIRD 2, FRR 8 (bgpd alone) and
//! GoBGP 3, each run inside a lab namespace as a passive router that accepts every node of
//! the lab subnet, and read back through its own CLI. Their RIBs are the judge of what raftlb
//! announced.
//!
//! Each router runs from its own directory (config, pid file, sockets); it is killed by PID
//! on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::lab::{in_ns, run as output};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    Bird,
    Frr,
    Gobgp,
}

impl RouterKind {
    pub const ALL: [RouterKind; 3] = [RouterKind::Bird, RouterKind::Frr, RouterKind::Gobgp];

    pub fn name(self) -> &'static str {
        match self {
            RouterKind::Bird => "BIRD",
            RouterKind::Frr => "FRR",
            RouterKind::Gobgp => "GoBGP",
        }
    }
}

/// What the router is told about the lab.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub ns: String,
    /// The router's own address on the lab subnet.
    pub address: String,
    pub asn: u32,
    /// The nodes' subnet, accepted as dynamic neighbours.
    pub neighbors: String,
    pub neighbor_asn: u32,
    /// The router's IPv6 address and the nodes' IPv6 subnet, for sessions over IPv6 (BIRD
    /// only).
    pub v6: Option<(String, String)>,
    /// Install the learnt routes into the namespace's kernel (BIRD only; ECMP merged).
    pub fib: bool,
    /// Node addresses the router also dials itself, as configured neighbours (BIRD only), so
    /// raftlb's listener and connection collisions are exercised.
    pub active: Vec<String>,
    /// The port the router dials `active` nodes on (179 if None).
    pub active_port: Option<u16>,
    /// BFD on every session (BIRD only): (min rx ms, min tx ms, multiplier).
    pub bfd: Option<(u32, u32, u32)>,
    /// TCP-MD5 password on every session (BIRD and FRR).
    pub password: Option<String>,
    /// Graceful restart (RFC 4724) on every session, with BGP events logged (BIRD only).
    pub graceful_restart: bool,
}

/// One path in a router's RIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path4or6 {
    pub prefix: String,
    pub next_hop: String,
    /// `a:b`, sorted.
    pub communities: Vec<String>,
    /// `a:b:c`, sorted.
    pub large_communities: Vec<String>,
    pub local_pref: Option<u32>,
}

pub struct Router {
    pub kind: RouterKind,
    pub config: RouterConfig,
    dir: PathBuf,
    child: Option<Child>,
    pid_file: PathBuf,
    /// BIRD's session marks handed out so far, per neighbour (see `sessions_since`).
    bird_marks: std::sync::Mutex<BTreeMap<String, String>>,
}

/// Whether two BIRD session marks (`hh:mm:ss.mmm port P`) name one session: the same port
/// and times within 50 ms of each other.
fn same_bird_session(a: &str, b: &str) -> bool {
    fn ms_of_day(t: &str) -> Option<i64> {
        let (hms, ms) = t.split_once('.').unwrap_or((t, "0"));
        let mut f = hms.split(':').map(|x| x.parse::<i64>().ok());
        let (h, m, s) = (f.next()??, f.next()??, f.next()??);
        Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?)
    }
    const DAY: i64 = 86_400_000;
    let (Some((ta, pa)), Some((tb, pb))) = (a.split_once(" port "), b.split_once(" port ")) else {
        return a == b;
    };
    match (ms_of_day(ta), ms_of_day(tb)) {
        (Some(x), Some(y)) if pa == pb => {
            let d = (x - y).rem_euclid(DAY);
            d.min(DAY - d) <= 50
        }
        _ => a == b,
    }
}

/// From `ss -Htn` lines, each BGP connection's neighbour address and the port at its
/// ephemeral end (the neighbour's when it dialled port 179, ours when we did).
fn parse_bgp_ports(text: &str) -> BTreeMap<String, u16> {
    let split = |ep: &str| -> Option<(String, u16)> {
        let (host, port) = ep.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.split('%').next().unwrap_or(host);
        Some((host.to_string(), port.parse().ok()?))
    };
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(peer)) = (
            f.get(2).and_then(|x| split(x)),
            f.get(3).and_then(|x| split(x)),
        ) else {
            continue;
        };
        if local.1 == 179 {
            out.insert(peer.0, peer.1);
        } else if peer.1 == 179 {
            out.insert(peer.0, local.1);
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

impl Router {
    /// Writes the config and starts the router in `config.ns`; returns once it answers its
    /// CLI.
    pub fn start(kind: RouterKind, config: RouterConfig, dir: &Path) -> anyhow::Result<Router> {
        let dir = dir.join(kind.name().to_lowercase());
        std::fs::create_dir_all(&dir)?;
        let pid_file = dir.join("router.pid");
        let mut router = Router {
            kind,
            config,
            dir,
            child: None,
            pid_file,
            bird_marks: Default::default(),
        };
        router.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match router.paths(false) {
                Ok(_) => return Ok(router),
                Err(e) if Instant::now() > deadline => {
                    bail!("{} did not come up: {e:#}\n{}", kind.name(), router.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let c = &self.config;
        let dir = self.dir.display().to_string();
        let log = std::fs::File::create(self.dir.join("router.log"))?;
        match self.kind {
            RouterKind::Bird => {
                std::fs::write(
                    self.dir.join("bird.conf"),
                    format!(
                        "router id {addr};\n\
                         log stderr all;\n\
                         protocol device {{ scan time 10; }}\n\
                         {kernel}{bfd}\
                         filter gshut {{ if (65535, 0) ~ bgp_community then bgp_local_pref = 0; accept; }}\n\
                         template bgp lbnode {{\n\
                           local {addr} as {asn}; passive on; hold time 9; keepalive time 3;\n\
                           error wait time 1, 5;{bfd_on}{password}{gr}\n\
                           ipv4 {{ import filter gshut; export none; }};\n\
                           ipv6 {{ import filter gshut; export none; }};\n\
                         }}\n\
                         protocol bgp dyn from lbnode {{ neighbor range {range} as {nasn}; \
                           dynamic name \"dyn\"; }}\n{v6}{active}",
                        addr = c.address,
                        asn = c.asn,
                        range = c.neighbors,
                        nasn = c.neighbor_asn,
                        v6 = c.v6.as_ref().map_or(String::new(), |(a, r)| format!(
                            "protocol bgp dynv6 from lbnode {{ local {a} as {}; neighbor range {r} as {}; dynamic name \"dynv6-\"; }}\n",
                            c.asn, c.neighbor_asn
                        )),
                        password = c
                            .password
                            .as_ref()
                            .map_or(String::new(), |p| format!(" password \"{p}\";")),
                        gr = if c.graceful_restart {
                            " graceful restart on; debug { states, events, packets };"
                        } else {
                            ""
                        },
                        bfd_on = if c.bfd.is_some() { " bfd on;" } else { "" },
                        bfd = c.bfd.map_or(String::new(), |(rx, tx, mult)| format!(
                            "protocol bfd {{ interface \"*\" {{ min rx interval {rx} ms; \
                             min tx interval {tx} ms; idle tx interval 1000 ms; multiplier {mult}; }}; }}\n"
                        )),
                        active = c
                            .active
                            .iter()
                            .enumerate()
                            .map(|(i, a)| format!(
                                "protocol bgp dynact{i} from lbnode {{ neighbor {a} port {} as {}; passive off; \
                                 connect delay time 1; connect retry time 2; }}\n",
                                c.active_port.unwrap_or(179),
                                c.neighbor_asn
                            ))
                            .collect::<String>(),
                        kernel = if c.fib {
                            "protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }\n\
                             protocol kernel { ipv6 { import none; export where source = RTS_BGP; }; merge paths on; }\n"
                        } else {
                            ""
                        }
                    ),
                )?;
                let child = in_ns(&c.ns, "bird")
                    .args([
                        "-f",
                        "-c",
                        &format!("{dir}/bird.conf"),
                        "-s",
                        &format!("{dir}/bird.ctl"),
                        "-P",
                        &self.pid_file.display().to_string(),
                    ])
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?;
                self.child = Some(child);
            }
            RouterKind::Frr => {
                std::fs::write(
                    self.dir.join("bgpd.conf"),
                    format!(
                        "hostname lab-router\n\
                         router bgp {asn}\n\
                          bgp router-id {addr}\n\
                          no bgp ebgp-requires-policy\n\
                          no bgp network import-check\n\
                          neighbor LB peer-group\n\
                          neighbor LB remote-as {nasn}\n\
                          bgp listen range {range} peer-group LB\n\
                          neighbor LB passive\n\
                          neighbor LB timers 3 9\n\
                          {password}\
                          address-family ipv4 unicast\n\
                           maximum-paths 8\n\
                           maximum-paths ibgp 8\n\
                           neighbor LB activate\n\
                          exit-address-family\n\
                          address-family ipv6 unicast\n\
                           maximum-paths 8\n\
                           maximum-paths ibgp 8\n\
                           neighbor LB activate\n\
                          exit-address-family\n",
                        addr = c.address,
                        asn = c.asn,
                        range = c.neighbors,
                        nasn = c.neighbor_asn,
                        password = c
                            .password
                            .as_ref()
                            .map_or(String::new(), |p| format!(" neighbor LB password {p}\n")),
                    ),
                )?;
                // bgpd alone: no zebra (-Z), not dropping to user frr (-S), no vty TCP port.
                let child = in_ns(&c.ns, "/usr/lib/frr/bgpd")
                    .args([
                        "-Z",
                        "-S",
                        "-n",
                        "-f",
                        &format!("{dir}/bgpd.conf"),
                        "-i",
                        &self.pid_file.display().to_string(),
                        "-z",
                        &format!("{dir}/zserv.api"),
                        "--vty_socket",
                        &dir,
                        "-A",
                        "127.0.0.1",
                        "-P",
                        "0",
                    ])
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?;
                self.child = Some(child);
            }
            RouterKind::Gobgp => {
                std::fs::write(
                    self.dir.join("gobgpd.toml"),
                    format!(
                        "[global.config]\n\
                           as = {asn}\n\
                           router-id = \"{addr}\"\n\
                           port = 179\n\
                           local-address-list = [\"{addr}\"]\n\
                         [[peer-groups]]\n\
                           [peer-groups.config]\n\
                             peer-group-name = \"lb\"\n\
                             peer-as = {nasn}\n\
                           [peer-groups.timers.config]\n\
                             hold-time = 9\n\
                             keepalive-interval = 3\n\
                           [[peer-groups.afi-safis]]\n\
                             [peer-groups.afi-safis.config]\n\
                               afi-safi-name = \"ipv4-unicast\"\n\
                           [[peer-groups.afi-safis]]\n\
                             [peer-groups.afi-safis.config]\n\
                               afi-safi-name = \"ipv6-unicast\"\n\
                         [[dynamic-neighbors]]\n\
                           [dynamic-neighbors.config]\n\
                             prefix = \"{range}\"\n\
                             peer-group = \"lb\"\n",
                        addr = c.address,
                        asn = c.asn,
                        range = c.neighbors,
                        nasn = c.neighbor_asn
                    ),
                )?;
                let child = in_ns(&c.ns, "gobgpd")
                    .args([
                        "-f",
                        &format!("{dir}/gobgpd.toml"),
                        "-t",
                        "toml",
                        "-p",
                        "--api-hosts=127.0.0.1:50051",
                        "--pprof-disable",
                    ])
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .stdin(Stdio::null())
                    .spawn()?;
                self.child = Some(child);
            }
        }
        Ok(())
    }

    /// The router's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }

    /// What the router's CLI prints for `args` (birdc, vtysh -c, gobgp).
    pub fn cli_text(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cli(args)
    }

    /// Each established BGP connection in the router's namespace: neighbour -> the port at
    /// the connection's ephemeral end.
    fn bgp_ports(&self) -> anyhow::Result<BTreeMap<String, u16>> {
        let text = output(in_ns(&self.config.ns, "ss").args([
            "-Htn",
            "state",
            "established",
            "( sport = :179 or dport = :179 )",
        ]))?;
        Ok(parse_bgp_ports(&text))
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let dir = self.dir.display().to_string();
        match self.kind {
            RouterKind::Bird => output(
                Command::new("birdc")
                    .args(["-s", &format!("{dir}/bird.ctl")])
                    .args(args),
            ),
            RouterKind::Frr => output(
                Command::new("vtysh")
                    .args(["--vty_socket", &dir, "-c"])
                    .arg(args.join(" ")),
            ),
            RouterKind::Gobgp => output(
                in_ns(&self.config.ns, "gobgp")
                    .args(["-u", "127.0.0.1", "-p", "50051"])
                    .args(args),
            ),
        }
    }

    /// Every path for every prefix of one family in the router's RIB.
    pub fn paths(&self, ipv6: bool) -> anyhow::Result<Vec<Path4or6>> {
        match self.kind {
            RouterKind::Bird => {
                let text = self.cli(&[
                    "show",
                    "route",
                    "all",
                    "table",
                    if ipv6 { "master6" } else { "master4" },
                ])?;
                if text.contains("Unable to connect") {
                    bail!("{text}");
                }
                Ok(parse_bird(&text))
            }
            RouterKind::Frr => {
                // The table listing leaves communities out; `detail` has them.
                let family = if ipv6 { "ipv6" } else { "ipv4" };
                let text = self.cli(&["show", "bgp", family, "unicast", "json"])?;
                parse_frr(&text)
            }
            RouterKind::Gobgp => {
                let family = if ipv6 { "ipv6" } else { "ipv4" };
                let text = self.cli(&["global", "rib", "-a", family, "-j"])?;
                parse_gobgp(&text)
            }
        }
    }

    /// Every path of one prefix, with all its attributes.
    pub fn detail(&self, prefix: &str) -> anyhow::Result<Vec<Path4or6>> {
        let ipv6 = prefix.contains(':');
        match self.kind {
            RouterKind::Frr => {
                let family = if ipv6 { "ipv6" } else { "ipv4" };
                let text = self.cli(&["show", "bgp", family, "unicast", prefix, "json"])?;
                parse_frr(&text)
            }
            _ => Ok(self
                .paths(ipv6)?
                .into_iter()
                .filter(|p| p.prefix == prefix)
                .collect()),
        }
    }

    /// How many sessions are Established, and for each neighbour address how many times it
    /// came up, as far as the router can tell (for counting resets).
    pub fn established(&self) -> anyhow::Result<Vec<String>> {
        match self.kind {
            RouterKind::Bird => {
                let text = self.cli(&["show", "protocols", "all"])?;
                // Each dynamic protocol block: "dynN BGP --- up ... Established" then
                // "Neighbor address: X".
                let mut out = Vec::new();
                let mut up = false;
                for line in text.lines() {
                    if line.starts_with("dyn") {
                        up = line.contains("Established");
                    }
                    if let Some(addr) = line.trim().strip_prefix("Neighbor address:") {
                        if up {
                            out.push(addr.trim().to_string());
                        }
                    }
                }
                Ok(sorted(out))
            }
            RouterKind::Frr => {
                let v: Value =
                    serde_json::from_str(&self.cli(&["show", "bgp", "neighbors", "json"])?)?;
                let mut out = Vec::new();
                if let Some(map) = v.as_object() {
                    for (addr, n) in map {
                        if n["bgpState"] == "Established" {
                            out.push(addr.clone());
                        }
                    }
                }
                Ok(sorted(out))
            }
            RouterKind::Gobgp => {
                let v: Value = serde_json::from_str(&self.cli(&["neighbor", "-j"])?)?;
                let mut out = Vec::new();
                for n in v.as_array().into_iter().flatten() {
                    // session_state 6 = ESTABLISHED in GoBGP's API enum.
                    let state = &n["state"]["session_state"];
                    if state == 6 || state == "established" || state == "ESTABLISHED" {
                        if let Some(a) = n["state"]["neighbor_address"]
                            .as_str()
                            .or(n["conf"]["neighbor_address"].as_str())
                        {
                            out.push(a.to_string());
                        }
                    }
                }
                Ok(sorted(out))
            }
        }
    }

    /// The next hops of the paths the router holds for `prefix`.
    pub fn next_hops(&self, prefix: &str) -> anyhow::Result<std::collections::BTreeSet<String>> {
        Ok(self
            .detail(prefix)?
            .into_iter()
            .map(|p| p.next_hop)
            .collect())
    }

    /// Waits until the router holds `prefix` with exactly the next hops `want`.
    pub fn wait_next_hops(
        &self,
        prefix: &str,
        want: &std::collections::BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<()> {
        self.wait(&format!("{prefix} via {want:?}"), within, |r| {
            Ok((r.next_hops(prefix)? == *want).then_some(()))
        })
    }

    /// BFD sessions (BIRD only): neighbour address -> state (`Up`, `Down`, `Init`,
    /// `AdminDown`).
    pub fn bfd_sessions(&self) -> anyhow::Result<BTreeMap<String, String>> {
        if self.kind != RouterKind::Bird {
            bail!("{}: BFD sessions are read from BIRD only", self.kind.name());
        }
        let text = self.cli(&["show", "bfd", "sessions"])?;
        Ok(parse_bird_bfd(&text))
    }

    /// For each Established neighbour, a mark of its current session (BIRD's `since` column,
    /// FRR's count of establishments, GoBGP's time it came up): unchanged values across an
    /// edit mean no session was reset.
    pub fn sessions_since(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        match self.kind {
            RouterKind::Bird => {
                let text = self.cli(&["show", "protocols", "all"])?;
                let mut since = None;
                for line in text.lines() {
                    if line.starts_with("dyn") {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        // Established and the protocol up: between the two, BIRD's `since`
                        // is still the time the protocol started.
                        since = (line.contains("Established") && f.get(3) == Some(&"up"))
                            .then(|| f.get(4).map(|s| s.to_string()))
                            .flatten();
                    }
                    if let (Some(addr), Some(s)) =
                        (line.trim().strip_prefix("Neighbor address:"), &since)
                    {
                        out.insert(addr.trim().to_string(), s.clone());
                    }
                }
                // BIRD prints `since` as its monotonic time converted to wall time at each
                // call, so an unchanged session's mark wanders by a millisecond, and a reset
                // session can come back within a few. The session is the pair of the TCP
                // connection's port at its ephemeral end and its `since`: the same port and a
                // `since` within 50 ms of the mark handed out before is that session.
                let ports = self.bgp_ports()?;
                let mut marks = self.bird_marks.lock().unwrap_or_else(|e| e.into_inner());
                for (addr, mark) in out.iter_mut() {
                    let port = ports.get(addr).copied().unwrap_or(0);
                    *mark = format!("{mark} port {port}");
                    match marks.get(addr) {
                        Some(old) if same_bird_session(old, mark) => mark.clone_from(old),
                        _ => {
                            marks.insert(addr.clone(), mark.clone());
                        }
                    }
                }
            }
            RouterKind::Frr => {
                let v: Value =
                    serde_json::from_str(&self.cli(&["show", "bgp", "neighbors", "json"])?)?;
                for (addr, n) in v.as_object().into_iter().flatten() {
                    if n["bgpState"] == "Established" {
                        // How many times it came up (the epoch of "up since" jitters by a second).
                        out.insert(addr.clone(), n["connectionsEstablished"].to_string());
                    }
                }
            }
            RouterKind::Gobgp => {
                let v: Value = serde_json::from_str(&self.cli(&["neighbor", "-j"])?)?;
                for n in v.as_array().into_iter().flatten() {
                    if let Some(a) = n["state"]["neighbor_address"].as_str() {
                        out.insert(a.to_string(), n["timers"]["state"]["uptime"].to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// The marks of `count` Established sessions once they have stayed the same for a
    /// second, so a test that asserts "no session was reset" starts from settled sessions.
    pub fn settled_sessions(
        &self,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut last = BTreeMap::new();
        self.wait(&format!("{count} sessions settled"), within, |r| {
            let now = r.sessions_since()?;
            let settled = now.len() == count && now == last;
            last = now.clone();
            if !settled {
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(settled.then_some(now))
        })
    }

    /// Polls `check` until it returns Some, for up to `within`.
    pub fn wait<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&Router) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{}: {what} not seen within {within:?} {last}\n{}",
                    self.kind.name(),
                    self.log()
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // bgpd daemonizes nothing here (no -d) but writes its pid file; BIRD and GoBGP run
        // in the foreground. Kill the child we started; it is the router process.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `show route all` of BIRD 2: a prefix line, then per path a `unicast [...]` line and its
/// `BGP.*` attribute lines.
/// `birdc show bfd sessions`: after each protocol's header, one line per session starting
/// with the neighbour's address.
pub fn parse_bird_bfd(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr: std::net::IpAddr = f.first()?.parse().ok()?;
            Some((addr.to_string(), f.get(2)?.to_string()))
        })
        .collect()
}

pub fn parse_bird(text: &str) -> Vec<Path4or6> {
    let mut out: Vec<Path4or6> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        if line.starts_with("BIRD") || line.starts_with("Table") || line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            prefix = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        let t = line.trim();
        if t.contains("unicast [") {
            out.push(Path4or6 {
                prefix: prefix.clone(),
                next_hop: String::new(),
                communities: Vec::new(),
                large_communities: Vec::new(),
                local_pref: None,
            });
        }
        let Some(path) = out.last_mut() else { continue };
        if let Some(v) = t.strip_prefix("BGP.next_hop:") {
            path.next_hop = v.split_whitespace().next().unwrap_or_default().to_string();
        } else if let Some(v) = t.strip_prefix("BGP.local_pref:") {
            path.local_pref = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("BGP.community:") {
            path.communities = sorted(
                v.split(')')
                    .filter_map(|c| c.trim().strip_prefix('('))
                    .map(|c| c.replace(',', ":").replace(' ', ""))
                    .collect(),
            );
        } else if let Some(v) = t.strip_prefix("BGP.large_community:") {
            path.large_communities = sorted(
                v.split(')')
                    .filter_map(|c| c.trim().strip_prefix('('))
                    .map(|c| c.replace(", ", ":").replace(',', ":"))
                    .collect(),
            );
        }
    }
    out
}

/// FRR 8's JSON: the table (`show bgp ipv4 unicast json`: `routes` maps each prefix to its
/// paths) or one prefix (`show bgp ipv4 unicast PREFIX json`: `prefix` and `paths`).
pub fn parse_frr(text: &str) -> anyhow::Result<Vec<Path4or6>> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("FRR said {text}"))?;
    let mut entries: Vec<(String, &Value)> = Vec::new();
    if let Some(prefix) = v["prefix"].as_str() {
        entries.push((prefix.to_string(), &v["paths"]));
    }
    for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
        entries.push((prefix.clone(), paths));
    }
    let mut out = Vec::new();
    for (prefix, paths) in entries {
        for p in paths.as_array().into_iter().flatten() {
            let words = |key: &str| -> Vec<String> {
                p[key]["string"]
                    .as_str()
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default()
            };
            out.push(Path4or6 {
                prefix: prefix.clone(),
                next_hop: p["nexthops"][0]["ip"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                communities: sorted(words("community")),
                large_communities: sorted(words("largeCommunity")),
                local_pref: p["locPrf"]
                    .as_u64()
                    .or(p["localpref"].as_u64())
                    .map(|v| v as u32),
            });
        }
    }
    Ok(out)
}

/// `gobgp global rib -a ipv4 -j` of GoBGP 3.
pub fn parse_gobgp(text: &str) -> anyhow::Result<Vec<Path4or6>> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).with_context(|| format!("GoBGP said {text}"))?;
    let mut out = Vec::new();
    for (prefix, paths) in v.as_object().into_iter().flatten() {
        for p in paths.as_array().into_iter().flatten() {
            let mut path = Path4or6 {
                prefix: prefix.clone(),
                next_hop: String::new(),
                communities: Vec::new(),
                large_communities: Vec::new(),
                local_pref: None,
            };
            for a in p["attrs"].as_array().into_iter().flatten() {
                match a["type"].as_u64() {
                    Some(3) => path.next_hop = a["nexthop"].as_str().unwrap_or_default().into(),
                    Some(5) => path.local_pref = a["value"].as_u64().map(|v| v as u32),
                    Some(8) => {
                        path.communities = sorted(
                            a["communities"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_u64)
                                .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                                .collect(),
                        )
                    }
                    Some(14) => path.next_hop = a["nexthop"].as_str().unwrap_or_default().into(),
                    Some(32) => {
                        path.large_communities = sorted(
                            a["value"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|c| {
                                    format!(
                                        "{}:{}:{}",
                                        c["ASN"]
                                            .as_u64()
                                            .or(c["global_admin"].as_u64())
                                            .unwrap_or(0),
                                        c["LocalData1"]
                                            .as_u64()
                                            .or(c["local_data1"].as_u64())
                                            .unwrap_or(0),
                                        c["LocalData2"]
                                            .as_u64()
                                            .or(c["local_data2"].as_u64())
                                            .unwrap_or(0)
                                    )
                                })
                                .collect(),
                        )
                    }
                    _ => {}
                }
            }
            out.push(path);
        }
    }
    Ok(out)
}

/// FRR's `bfdd` alone in a lab namespace, with one configured BFD peer per node: a second,
/// independent BFD implementation for raftlb's sessions to meet (BGP.md §5). Killed on drop.
pub struct FrrBfd {
    dir: PathBuf,
    child: Option<Child>,
}

impl FrrBfd {
    /// Starts bfdd in `ns` with a peer for each of `peers`, from `local`, `interval_ms` both
    /// ways and multiplier `mult`; returns once its CLI answers.
    pub fn start(
        ns: &str,
        dir: &Path,
        local: &str,
        peers: &[String],
        interval_ms: u32,
        mult: u32,
    ) -> anyhow::Result<FrrBfd> {
        let dir = dir.join("frr-bfdd");
        std::fs::create_dir_all(&dir)?;
        let mut conf = String::from("hostname lab-bfd\nbfd\n");
        for p in peers {
            conf.push_str(&format!(
                " peer {p} local-address {local}\n  receive-interval {interval_ms}\n  \
                 transmit-interval {interval_ms}\n  detect-multiplier {mult}\n  no shutdown\n exit\n"
            ));
        }
        std::fs::write(dir.join("bfdd.conf"), conf)?;
        // bfdd drops to user frr (it refuses to run as root without the frrvty group).
        output(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir))?;
        let log = std::fs::File::create(dir.join("bfdd.log"))?;
        let d = dir.display().to_string();
        let child = in_ns(ns, "/usr/lib/frr/bfdd")
            .args([
                "-f",
                &format!("{d}/bfdd.conf"),
                "-i",
                &format!("{d}/bfdd.pid"),
                "-z",
                &format!("{d}/zserv.api"),
                "--vty_socket",
                &d,
                "--bfdctl",
                &format!("{d}/bfdd.sock"),
                "-A",
                "127.0.0.1",
                "-P",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut bfd = FrrBfd {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match bfd.peers() {
                Ok(_) => return Ok(bfd),
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(bfd.dir.join("bfdd.log")).unwrap_or_default();
                    bfd.stop();
                    bail!("bfdd did not come up: {e:#}\n{log}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn vtysh(&self, commands: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("vtysh");
        cmd.arg("--vty_socket").arg(&self.dir);
        for c in commands {
            cmd.args(["-c", c]);
        }
        output(&mut cmd)
    }

    /// Peer address -> state (`up`, `down`, `init`, `shutdown`), from `show bfd peers json`.
    pub fn peers(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let v: Value = serde_json::from_str(&self.vtysh(&["show bfd peers json"])?)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["peer"].as_str()?.to_string(),
                    p["status"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Shuts the BFD session with `peer` down administratively (bfdd sends AdminDown), or
    /// brings it back.
    pub fn shutdown(&self, peer: &str, local: &str, down: bool) -> anyhow::Result<()> {
        let peer_line = format!("peer {peer} local-address {local}");
        self.vtysh(&[
            "configure terminal",
            "bfd",
            &peer_line,
            if down { "shutdown" } else { "no shutdown" },
        ])
        .map(|_| ())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for FrrBfd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_bgp_ports, same_bird_session};

    #[test]
    fn a_bird_mark_that_wandered_a_millisecond_on_one_port_is_the_same_session() {
        assert!(same_bird_session(
            "18:35:08.982 port 40001",
            "18:35:08.983 port 40001"
        ));
        assert!(same_bird_session(
            "23:59:59.990 port 1",
            "00:00:00.010 port 1"
        ));
        // A session reset and back within a few milliseconds is on another connection.
        assert!(!same_bird_session(
            "18:35:08.982 port 40001",
            "18:35:08.985 port 40002"
        ));
        assert!(!same_bird_session(
            "18:35:08.982 port 1",
            "18:35:10.001 port 1"
        ));
        assert!(!same_bird_session("18:35:08.982 port 1", "garbage"));
    }

    #[test]
    fn bgp_connections_are_keyed_by_neighbour_with_the_ephemeral_port() {
        let ss = "0 0 10.77.0.100:179 10.77.0.11:43210\n\
                  0 0 10.77.0.100:51000 10.77.0.12:179\n\
                  0 0 [fd77::100]:179 [fd77::11]:39000\n";
        let ports = parse_bgp_ports(ss);
        assert_eq!(ports["10.77.0.11"], 43210);
        assert_eq!(ports["10.77.0.12"], 51000);
        assert_eq!(ports["fd77::11"], 39000);
    }
}
