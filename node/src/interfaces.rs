//! The interfaces this node answers ARP and NDP on.
//!
//! Three choices, from `--interfaces`: an explicit list (opened at start, a failure stops the
//! peer), `none` (the node may own VIPs in the table but opens no socket: local clusters and
//! tests), or — without the flag — what MetalLB's speaker does: every interface that is up,
//! broadcast-capable, not enslaved to a bridge or bond and not NOARP, minus the names matching
//! the exclusion list (MetalLB's default, or `--exclude-interfaces`). Discovery reads
//! `/sys/class/net` and is repeated every 10 s: an interface that appears is opened, one that
//! goes or stops qualifying is closed, and the names open are published so the node's facts in
//! the table follow them (the planner announces a VIP only on registered interfaces).
//!
//! ```text
//!  scan (sysfs) ──> open/close AF_PACKET responders ──> announcer (actix thread)
//!                                  └──> names (watch) ──> RegisterNode facts
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, ArbiterHandle};
use raftlb_actors::announce::{
    AddInterface, Announcer, InterfaceHandle, RemoveInterface, DEFAULT_REPEATS,
};
use raftlb_actors::lease::{Clock, Lease};
use raftlb_actors::responder::{open_interface, ArpResponder, Interface, NdpResponder};
use regex::Regex;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// MetalLB's default exclusions (its `excludel2.yaml`): container, virtual and tunnel devices.
pub const DEFAULT_EXCLUDES: [&str; 14] = [
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// How often the interfaces are looked at again.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// `IFF_*` bits of `/sys/class/net/NAME/flags`.
const IFF_UP: u32 = 0x1;
const IFF_BROADCAST: u32 = 0x2;
const IFF_NOARP: u32 = 0x80;

/// Where this node answers.
#[derive(Debug, Clone)]
pub enum Choice {
    /// `--interfaces a,b`: exactly these.
    Listed(Vec<String>),
    /// `--interfaces none`: nowhere.
    Nowhere,
    /// No `--interfaces`: every suitable interface, rescanned.
    Discover(Exclusions),
}

impl Choice {
    /// From `--interfaces` and `--exclude-interfaces`.
    pub fn from_flags(interfaces: &[String], exclude: Option<&[String]>) -> Result<Choice, String> {
        let listed: Vec<String> = interfaces
            .iter()
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty())
            .collect();
        match (listed.as_slice(), exclude) {
            ([], Some(ex)) => Ok(Choice::Discover(Exclusions::parse(ex)?)),
            ([], None) => Ok(Choice::Discover(Exclusions::metallb_default())),
            (_, Some(_)) => Err(
                "--exclude-interfaces applies to discovered interfaces; it cannot go with --interfaces"
                    .into(),
            ),
            ([none], None) if none == "none" => Ok(Choice::Nowhere),
            (list, None) => {
                if list.iter().any(|i| i == "none") {
                    return Err(
                        "--interfaces: `none` stands alone (no interface at all)".into(),
                    );
                }
                Ok(Choice::Listed(list.to_vec()))
            }
        }
    }
}

/// Interface names never used by discovery.
#[derive(Debug, Clone)]
pub struct Exclusions(Vec<Regex>);

impl Exclusions {
    pub fn metallb_default() -> Exclusions {
        Exclusions(
            DEFAULT_EXCLUDES
                .iter()
                .map(|p| Regex::new(p).expect("the default exclusions are valid"))
                .collect(),
        )
    }

    /// `--exclude-interfaces REGEX,...` replaces the default list (`""` excludes nothing).
    pub fn parse(patterns: &[String]) -> Result<Exclusions, String> {
        patterns
            .iter()
            .filter(|p| !p.is_empty())
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p).map_err(|e| {
                    format!("--exclude-interfaces[{i}] {p:?}: not a regular expression: {e}")
                })
            })
            .collect::<Result<_, _>>()
            .map(Exclusions)
    }

    fn matching(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|r| r.is_match(name)).map(Regex::as_str)
    }
}

/// What sysfs and procfs say about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub flags: u32,
    /// A member of a bridge or bond (`/sys/class/net/NAME/master` exists).
    pub enslaved: bool,
    /// Has an IPv6 link-local address (needed for NDP).
    pub link_local_v6: bool,
}

impl Link {
    /// Why discovery does not use this link, or None if it does.
    pub fn refusal(&self, exclusions: &Exclusions) -> Option<String> {
        if let Some(pattern) = exclusions.matching(&self.name) {
            return Some(format!("excluded by {pattern}"));
        }
        if self.flags & IFF_UP == 0 {
            return Some("down".into());
        }
        if self.enslaved {
            return Some("enslaved to a bridge or bond".into());
        }
        if self.flags & IFF_NOARP != 0 {
            return Some("NOARP".into());
        }
        if self.flags & IFF_BROADCAST == 0 {
            return Some("not broadcast-capable".into());
        }
        None
    }
}

/// Names with an IPv6 link-local address, from `/proc/net/if_inet6` (address, index, prefix
/// length, scope, flags, name; scope 0x20 is link).
fn link_local_names(if_inet6: &str) -> BTreeSet<String> {
    if_inet6
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[3] == "20").then(|| f[5].to_string())
        })
        .collect()
}

/// Every link under `sys_class_net`.
pub fn links(sys_class_net: &Path, if_inet6: &str) -> std::io::Result<Vec<Link>> {
    let link_local = link_local_names(if_inet6);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys_class_net)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join("flags")) else {
            continue; // gone between the listing and the read
        };
        let flags = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        out.push(Link {
            enslaved: dir.join("master").exists(),
            link_local_v6: link_local.contains(&name),
            name,
            flags,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Where the kernel describes links: `/sys/class/net` and `/proc/net/if_inet6`.
#[derive(Debug, Clone)]
pub struct Sources {
    pub sys_class_net: PathBuf,
    pub if_inet6: PathBuf,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            sys_class_net: "/sys/class/net".into(),
            if_inet6: "/proc/net/if_inet6".into(),
        }
    }
}

/// The suitable links now, by name.
pub fn suitable(sources: &Sources, exclusions: &Exclusions) -> BTreeMap<String, Link> {
    // No IPv6 at all (no if_inet6): ARP only.
    let if_inet6 = std::fs::read_to_string(&sources.if_inet6).unwrap_or_default();
    match links(&sources.sys_class_net, &if_inet6) {
        Ok(links) => links
            .into_iter()
            .filter(|l| match l.refusal(exclusions) {
                Some(why) => {
                    debug!(interface = %l.name, why, "not announcing on this interface");
                    false
                }
                None => true,
            })
            .map(|l| (l.name.clone(), l))
            .collect(),
        Err(e) => {
            warn!(path = %sources.sys_class_net.display(), error = %e, "cannot list interfaces");
            BTreeMap::new()
        }
    }
}

/// The announcer and the interfaces open under it.
pub struct Responders {
    pub announcer: Addr<Announcer>,
    arbiter: ArbiterHandle,
    lease: Arc<Lease>,
    clock: Arc<dyn Clock>,
    /// Open interfaces, and whether NDP is answered on each.
    open: BTreeMap<String, (Interface, bool)>,
}

impl Responders {
    /// Starts the actor system on its own thread, with an announcer and no interface yet.
    pub fn start(lease: Arc<Lease>, clock: Arc<dyn Clock>) -> anyhow::Result<Responders> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("actors".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let announcer =
                        Announcer::new(BTreeMap::new(), DEFAULT_REPEATS.to_vec()).start();
                    let _ = tx.send((announcer, actix::Arbiter::current()));
                });
                let _ = system.run();
            })?;
        let (announcer, arbiter) = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the actor thread stopped before it started"))?;
        Ok(Responders {
            announcer,
            arbiter,
            lease,
            clock,
            open: BTreeMap::new(),
        })
    }

    /// Opens `name` (AF_PACKET: needs root or CAP_NET_RAW) and hands it to the announcer;
    /// ARP always, NDP if `ndp`.
    pub async fn open(&mut self, name: &str, ndp: bool) -> std::io::Result<()> {
        let i = open_interface(name, self.lease.clone(), self.clock.clone())?;
        let (a, sink) = (i.answerer.clone(), i.sink.clone());
        let (arp_a, arp_sink) = (a.clone(), sink.clone());
        let handle = InterfaceHandle {
            answerer: a.clone(),
            arp: ArpResponder::start_in_arbiter(&self.arbiter, move |_| {
                ArpResponder::new(arp_a, arp_sink)
            }),
            ndp: ndp.then(|| {
                NdpResponder::start_in_arbiter(&self.arbiter, move |_| NdpResponder::new(a, sink))
            }),
        };
        let _ = self
            .announcer
            .send(AddInterface(name.to_string(), handle))
            .await;
        self.open.insert(name.to_string(), (i, ndp));
        Ok(())
    }

    /// Stops answering on `name` and closes its socket.
    pub async fn close(&mut self, name: &str) {
        let _ = self.announcer.send(RemoveInterface(name.to_string())).await;
        if let Some((i, _)) = self.open.remove(name) {
            // Dropping joins the receive thread (up to its 100 ms read timeout).
            let _ = tokio::task::spawn_blocking(move || drop(i)).await;
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.open.keys().cloned().collect()
    }
}

/// What `start` set up: the announcer and the names it answers on, kept current.
pub struct Started {
    pub announcer: Addr<Announcer>,
    /// The actor thread's arbiter: BGP sessions are started there too.
    pub arbiter: ArbiterHandle,
    pub names: watch::Receiver<Vec<String>>,
    /// The rescan task, or the listed interfaces held open for the process's life.
    _keep: Keep,
}

enum Keep {
    /// The fixed list's sockets, and the sender of its names: kept, so a reader waiting for a
    /// change waits instead of seeing a closed channel.
    Fixed {
        _responders: Responders,
        _names: watch::Sender<Vec<String>>,
    },
    Rescan(tokio::task::JoinHandle<()>),
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Keep::Rescan(t) = &self._keep {
            t.abort();
        }
    }
}

/// Opens what `choice` says; with discovery, the first scan is done before this returns so
/// the node registers its interfaces at once.
pub async fn start(
    choice: Choice,
    lease: Arc<Lease>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Started> {
    match choice {
        Choice::Nowhere | Choice::Listed(_) => {
            // With no interface the announcer still runs, so the node acts on the table the
            // same way everywhere; it just has nowhere to answer.
            let list = match choice {
                Choice::Listed(list) => list,
                _ => Vec::new(),
            };
            let mut r = Responders::start(lease, clock)?;
            for name in &list {
                r.open(name, true).await.map_err(|e| {
                    anyhow::anyhow!(
                        "--interfaces {name}: cannot open a raw socket: {e} (needs root or CAP_NET_RAW)"
                    )
                })?;
            }
            let (tx, names) = watch::channel(list);
            Ok(Started {
                announcer: r.announcer.clone(),
                arbiter: r.arbiter.clone(),
                names,
                _keep: Keep::Fixed {
                    _responders: r,
                    _names: tx,
                },
            })
        }
        Choice::Discover(exclusions) => {
            let r = Responders::start(lease, clock)?;
            let announcer = r.announcer.clone();
            let arbiter = r.arbiter.clone();
            let mut rescan = Rescan {
                responders: r,
                sources: Sources::default(),
                exclusions,
                refused: BTreeSet::new(),
            };
            let (tx, rx) = watch::channel(Vec::new());
            rescan.once(&tx).await;
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RESCAN_EVERY).await;
                    rescan.once(&tx).await;
                }
            });
            Ok(Started {
                announcer,
                arbiter,
                names: rx,
                _keep: Keep::Rescan(task),
            })
        }
    }
}

/// Discovery's state between scans.
struct Rescan {
    responders: Responders,
    sources: Sources,
    exclusions: Exclusions,
    /// Suitable interfaces that could not be opened: logged once, tried again every scan.
    refused: BTreeSet<String>,
}

impl Rescan {
    async fn once(&mut self, names: &watch::Sender<Vec<String>>) {
        let want = suitable(&self.sources, &self.exclusions);
        let gone: Vec<String> = self
            .responders
            .open
            .keys()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        if !gone.is_empty() {
            // The table stops placing VIPs there first; the socket closes right after.
            let keep: Vec<String> = self
                .responders
                .names()
                .into_iter()
                .filter(|n| !gone.contains(n))
                .collect();
            names.send_replace(keep);
            for name in &gone {
                info!(interface = %name, "interface gone or no longer suitable");
                self.responders.close(name).await;
            }
        }
        // An IPv6 link-local address came or went: reopen with or without NDP.
        for (name, link) in &want {
            if self
                .responders
                .open
                .get(name)
                .is_some_and(|(_, ndp)| *ndp != link.link_local_v6)
            {
                self.responders.close(name).await;
            }
        }
        for (name, link) in &want {
            if self.responders.open.contains_key(name) {
                continue;
            }
            match self.responders.open(name, link.link_local_v6).await {
                Ok(()) => {
                    self.refused.remove(name);
                    info!(interface = %name, ndp = link.link_local_v6, "discovered: answering ARP/NDP here");
                }
                Err(e) => {
                    if self.refused.insert(name.clone()) {
                        warn!(interface = %name, error = %e, "cannot open a raw socket (needs root or CAP_NET_RAW); not announcing here");
                    }
                }
            }
        }
        self.refused.retain(|n| want.contains_key(n));
        let now = self.responders.names();
        if *names.borrow() != now {
            names.send_replace(now);
        }
    }
}

#[cfg(test)]
#[path = "interfaces_tests.rs"]
mod tests;
