//! The `raftlb` binary: `run` (one peer), `up` (a local cluster), `ctl` (the admin client),
//! `check` (validate manifests offline).
//!
//! Exit codes: 0 success; 1 runtime error; 2 usage or invalid manifest; 3 a peer could not
//! start (store, listener); 4 `--join` failed; 5 no admin endpoint answered.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use raftlb_node::check;
use raftlb_node::ctl::{self, CtlCommand, Output};
use raftlb_node::interfaces::Choice;
use raftlb_node::manifest;
use raftlb_node::peer::{self, PeerConfig, Timing, DEFAULT_ADMIN_PORT, DEFAULT_RAFT_PORT};
use raftlb_node::tls::identity::{Naming, Pods};
use raftlb_node::tls::material::Files;
use raftlb_node::tls::net::ClientTls;
use raftlb_node::tls::{Security, Tls, DEFAULT_CLUSTER};
use raftlb_node::up::{self, UpConfig};
use raftlb_raft_store::table::ownership::NodeFacts;

#[derive(Parser)]
#[command(
    name = "raftlb",
    version,
    about = "Bare-metal load balancer on a Raft spine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run one peer.
    Run {
        /// Raft id (>= 1). With --pod-name it is the StatefulSet ordinal + 1.
        #[arg(long, required_unless_present = "pod_name")]
        id: Option<u64>,
        /// StatefulSet pod name (NAME-ORDINAL): derives --id; pod 0 forms the cluster, the
        /// others --join pod 0 through the headless Service (--peer-service).
        #[arg(long, env = "POD_NAME", conflicts_with = "id")]
        pod_name: Option<String>,
        /// The headless Service that gives the StatefulSet's pods stable DNS names.
        #[arg(long, default_value = "raftlb")]
        peer_service: String,
        #[arg(long)]
        data_dir: PathBuf,
        /// IP to listen on (Raft and admin).
        #[arg(long, default_value = "127.0.0.1")]
        listen: IpAddr,
        #[arg(long, default_value_t = DEFAULT_RAFT_PORT)]
        raft_port: u16,
        #[arg(long, default_value_t = DEFAULT_ADMIN_PORT)]
        admin_port: u16,
        /// Initial voters, ID@IP:PORT (Raft port), comma-separated; the lowest id initializes.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Admin URL of a running peer: join as a learner, then get promoted.
        #[arg(long, conflicts_with = "peers")]
        join: Option<String>,
        /// Manifests to apply once a leader exists (idempotent).
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Raft timing profile: default or fast.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Serve only Services of this loadBalancerClass ("" for Services without one).
        #[arg(long)]
        lb_class: Option<String>,
        /// Build a snapshot after this many log entries.
        #[arg(long, default_value_t = 5000)]
        snapshot_every: u64,
        /// Log entries kept behind a snapshot, for slow followers.
        #[arg(long, default_value_t = 1000)]
        keep_logs: u64,
        /// Override single timing knobs of the profile, e.g.
        /// follower_lease_ms=700,down_after_ms=800 (checked against the fencing inequalities).
        #[arg(long, value_delimiter = ',')]
        timing: Vec<String>,
        /// This node's name in the table (default node-ID).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// This node's labels, KEY=VALUE, comma-separated (L2Advertisement nodeSelectors).
        #[arg(long, value_delimiter = ',')]
        node_labels: Vec<String>,
        /// Interfaces to answer ARP/NDP on (raw sockets: needs root or CAP_NET_RAW); `none`:
        /// the node may own VIPs in the table but answers nowhere. Without it, as MetalLB: every
        /// interface that is up, broadcast-capable, not enslaved and not NOARP, rescanned
        /// every 10 s.
        #[arg(long, value_delimiter = ',')]
        interfaces: Vec<String>,
        /// Regular expressions of interface names discovery skips, comma-separated; replaces
        /// MetalLB's default list (^docker.*, ^cbr.*, ^dummy.*, ^virbr.*, ^lxcbr.*, ^veth.*,
        /// ^lo$, ^cali.*, ^tunl.*, ^flannel.*, ^kube-ipvs.*, ^cni.*, ^nodelocaldns.*, ^lxc.*).
        #[arg(long, value_delimiter = ',')]
        exclude_interfaces: Option<Vec<String>>,
        /// Take desired state from Kubernetes (Services, EndpointSlices, Nodes, raftlb's CRDs)
        /// and write results back (the Raft leader writes).
        #[arg(long)]
        kube: bool,
        /// API server URL; default: in-cluster configuration or KUBECONFIG.
        #[arg(long, requires = "kube")]
        kube_url: Option<String>,
        /// The StatefulSet the peers run in (default: from --pod-name): when its replica count
        /// drops, the leader removes the members beyond it (ids are ordinals + 1).
        #[arg(long, requires = "kube")]
        statefulset: Option<String>,
        /// Namespace holding raftlb's CRs, ServiceL2Status objects and their Events.
        #[arg(long, env = "POD_NAMESPACE", default_value = "raftlb-system")]
        kube_namespace: String,
        /// Serve /healthz, /readyz and /metrics on this port of --listen (MetalLB uses 9120).
        #[arg(long)]
        metrics_port: Option<u16>,
        /// BGP router ID of this node's sessions (a BGPPeer's routerID overrides it); default:
        /// the --listen address if it is IPv4 and not loopback, else derived from the node name.
        #[arg(long, env = "RAFTLB_ROUTER_ID")]
        router_id: Option<std::net::Ipv4Addr>,
        /// TCP port where BGP peers' connections are accepted, on every address of the node
        /// (opened with the first BGP session); 0: only dial.
        #[arg(long, env = "RAFTLB_BGP_PORT", default_value_t = 179)]
        bgp_port: u16,
        /// After `ctl drain`, how long this node keeps announcing with the GRACEFUL_SHUTDOWN
        /// community and LOCAL_PREF 0 (RFC 8326) before it withdraws, in milliseconds.
        #[arg(long, env = "RAFTLB_BGP_DRAIN_WAIT_MS", default_value_t = 5000)]
        bgp_drain_wait_ms: u64,
        /// Exit when the process that started this peer is gone (`raftlb up` passes its pid),
        /// so a launcher killed with SIGKILL leaves no peer behind.
        #[arg(long, hide = true)]
        exit_with_parent: Option<u32>,
        /// Mutual TLS on the Raft and admin ports with the certificates in DIR: ca.crt and
        /// node.crt/node.key (`raftlb cert`), or tls.crt/tls.key (a cert-manager Secret).
        /// Reloaded on SIGHUP and when the files change.
        #[arg(long, env = "RAFTLB_TLS_DIR", required_unless_present = "insecure")]
        tls_dir: Option<PathBuf>,
        /// The cluster name in the peers' certificates (SAN node-ID.CLUSTER.raftlb).
        #[arg(long, env = "RAFTLB_CLUSTER", default_value = DEFAULT_CLUSTER)]
        cluster: String,
        /// Plaintext on the Raft and admin ports: nobody is authenticated.
        #[arg(long, conflicts_with = "tls_dir")]
        insecure: bool,
    },
    /// Make certificates for a cluster (no openssl needed).
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Start a local cluster of N peers on 127.0.0.1 and apply the given manifests.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value = "./raftlb-data")]
        data_dir: PathBuf,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Raft port of node 1; node N uses base+2(N-1) for Raft and the next port for admin.
        #[arg(long, default_value_t = DEFAULT_RAFT_PORT)]
        base_port: u16,
        #[arg(long, default_value = "default")]
        profile: String,
        /// Plaintext peers (by default `up` makes a CA and certificates in the data dir).
        #[arg(long)]
        insecure: bool,
    },
    /// Talk to a running cluster.
    Ctl {
        /// Admin URLs; the first that answers is used. `http://` is plaintext; `https://` and
        /// a bare HOST:PORT use TLS when a client certificate is known for them (given, or
        /// the one `raftlb up` made for its endpoints).
        #[arg(
            long,
            global = true,
            env = "RAFTLB_ENDPOINT",
            default_value = "127.0.0.1:7471,127.0.0.1:7473,127.0.0.1:7475"
        )]
        endpoint: String,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// table, wide, json or yaml; accepted anywhere on the line, as kubectl does.
        #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
        output: Output,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Print raftlb's CustomResourceDefinitions as YAML (what deploy/statefulset/crds.yaml holds).
    Crds,
    /// Check manifests without a cluster.
    Check {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
}

/// How `ctl` authenticates.
#[derive(clap::Args)]
struct ClientTlsArgs {
    /// A directory with ca.crt and a client certificate (client.USER.crt/.key, or
    /// tls.crt/tls.key).
    #[arg(long, global = true, env = "RAFTLB_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Which client.USER.crt of --tls-dir, when it holds several.
    #[arg(long, global = true, env = "RAFTLB_USER")]
    user: Option<String>,
    /// The CA bundle, client certificate and key, one by one (instead of --tls-dir).
    #[arg(long, global = true, env = "RAFTLB_CA", requires_all = ["cert", "key"], conflicts_with = "tls_dir")]
    ca: Option<PathBuf>,
    #[arg(long, global = true, env = "RAFTLB_CERT", requires = "ca")]
    cert: Option<PathBuf>,
    #[arg(long, global = true, env = "RAFTLB_KEY", requires = "ca")]
    key: Option<PathBuf>,
    /// Plaintext only.
    #[arg(long, global = true, conflicts_with_all = ["tls_dir", "ca"])]
    insecure: bool,
}

impl ClientTlsArgs {
    fn choice(&self) -> Result<ClientTls, String> {
        if self.insecure {
            return Ok(ClientTls::Insecure);
        }
        let files = match (&self.tls_dir, &self.ca, &self.cert, &self.key) {
            (Some(dir), ..) => Files::client_in(dir, self.user.as_deref())?,
            (None, Some(ca), Some(cert), Some(key)) => Files {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => return Ok(ClientTls::Auto),
        };
        Tls::load(files, DEFAULT_CLUSTER).map(ClientTls::Given)
    }
}

/// Where and for how long a node or client certificate is made.
#[derive(clap::Args)]
struct LeafArgs {
    /// Where to write (default: --certs-dir).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace files that exist.
    #[arg(long)]
    overwrite: bool,
}

impl LeafArgs {
    /// Mints with the CA in `certs_dir` and writes `NAME.crt`/`.key` to --out (default:
    /// `certs_dir`); returns where.
    fn mint(
        self,
        certs_dir: PathBuf,
        name: &str,
        make: impl FnOnce(
            &raftlb_node::tls::mint::Ca,
            raftlb_node::tls::mint::Validity,
        ) -> Result<raftlb_node::tls::mint::Minted, String>,
    ) -> Result<PathBuf, String> {
        use raftlb_node::tls::store;
        let ca = store::read_ca(&certs_dir)?;
        let leaf = make(&ca, raftlb_node::tls::mint::Validity::days(self.days))?;
        let out = self.out.unwrap_or(certs_dir);
        store::write_leaf(&out, name, &leaf, &ca, self.overwrite)?;
        Ok(out)
    }
}

#[derive(Subcommand)]
enum CertCommand {
    /// A new cluster CA: DIR/ca.crt and DIR/ca.key (mode 0600).
    CreateCa {
        #[arg(long)]
        certs_dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace files that exist.
        #[arg(long)]
        overwrite: bool,
    },
    /// A peer's certificate, signed by the CA in --certs-dir: OUT/node.crt, OUT/node.key and a
    /// copy of ca.crt.
    CreateNode {
        #[arg(long)]
        certs_dir: PathBuf,
        /// Raft id the certificate names (SAN node-ID.CLUSTER.raftlb).
        #[arg(long)]
        id: u64,
        #[arg(long, default_value = DEFAULT_CLUSTER)]
        cluster: String,
        /// DNS names peers and operators dial, comma-separated.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses peers and operators dial, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ip: Vec<IpAddr>,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// An operator's certificate: CN=NAME, O=raftlb:ROLE; DIR/client.NAME.crt and .key.
    CreateClient {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        certs_dir: PathBuf,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// Print a certificate's subject, names, serial and validity.
    Show { file: PathBuf },
}

fn cert_command(cmd: CertCommand) -> Result<(), String> {
    use raftlb_node::tls::mint::{Ca, Validity};
    use raftlb_node::tls::store;
    match cmd {
        CertCommand::CreateCa {
            certs_dir,
            days,
            overwrite,
        } => {
            let ca = Ca::create("raftlb", Validity::days(days))?;
            store::write_ca(&certs_dir, &ca, overwrite)?;
            println!("wrote {}/ca.crt and ca.key", certs_dir.display());
        }
        CertCommand::CreateNode {
            certs_dir,
            id,
            cluster,
            dns,
            ip,
            leaf,
        } => {
            if id == 0 {
                return Err("--id: Raft ids start at 1".into());
            }
            let out = leaf.mint(certs_dir, "node", |ca, valid| {
                ca.node(&cluster, id, &dns, &ip, valid)
            })?;
            println!(
                "wrote {}/node.crt and node.key (node-{id}.{cluster}.raftlb)",
                out.display()
            );
        }
        CertCommand::CreateClient {
            name,
            role,
            certs_dir,
            leaf,
        } => {
            let role = raftlb_node::tls::identity::Role::parse(&role)
                .map_err(|e| format!("--role: {e}"))?;
            let out = leaf.mint(certs_dir, &format!("client.{name}"), |ca, valid| {
                ca.client(&name, role, valid)
            })?;
            println!(
                "wrote {}/client.{name}.crt and .key ({})",
                out.display(),
                role.group()
            );
        }
        CertCommand::Show { file } => {
            let pem = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let der = raftlb_node::tls::material::first_cert(&pem)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let f = raftlb_node::tls::identity::facts(&der)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            println!("subject: {}", f.subject);
            println!("names: {}", f.sans.join(", "));
            println!("serial: {}", f.serial);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let days = |t: i64| match (t - now) / 86_400 {
                d if d >= 0 => format!("in {d} days"),
                d => format!("{} days ago", -d),
            };
            println!(
                "not before: {} (Unix time, {})",
                f.not_before,
                days(f.not_before)
            );
            println!(
                "not after: {} (Unix time, {})",
                f.not_after,
                days(f.not_after)
            );
        }
    }
    Ok(())
}

fn read_manifests(files: &[String]) -> Result<Vec<(String, String)>, String> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|text| (f.clone(), text))
                .map_err(|e| format!("{f}: cannot read: {e}"))
        })
        .collect()
}

/// Watches the parent: once `parent` is no longer this process's parent (it died and the
/// process was re-parented), exit. Polling `getppid` through std is safe and has none of
/// PR_SET_PDEATHSIG's pitfall (that signal fires when the spawning *thread* exits, and `up`
/// spawns from a runtime thread).
fn exit_with(parent: u32) {
    let exit_if_gone = move || {
        if std::os::unix::process::parent_id() != parent {
            eprintln!("raftlb run: the launcher (pid {parent}) is gone; exiting");
            std::process::exit(1);
        }
    };
    exit_if_gone();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        exit_if_gone();
    });
}

/// Parses every file; each object raftlb skips gets its line on stderr.
fn parse_manifests(files: &[String]) -> Result<Vec<manifest::Manifest>, String> {
    read_manifests(files)?
        .into_iter()
        .map(|(name, text)| {
            let parsed = manifest::parse_file(&text, &name).map_err(|e| e.to_string())?;
            for line in &parsed.skipped {
                eprintln!("{name}: {line}");
            }
            Ok((name, parsed.objects))
        })
        .collect()
}

fn parse_peers(list: &[String]) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for p in list {
        let (id, addr) = p
            .split_once('@')
            .ok_or_else(|| format!("--peers: {p:?} is not ID@IP:PORT"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("--peers: {id:?} in {p:?} is not a node id"))?;
        addr.parse::<SocketAddr>()
            .map_err(|_| format!("--peers: {addr:?} in {p:?} is not IP:PORT"))?;
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("--peers: node {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// `raftlb-2` -> ("raftlb", 2).
fn statefulset_ordinal(pod: &str) -> Result<(String, u64), String> {
    pod.rsplit_once('-')
        .and_then(|(set, n)| Some((set.to_string(), n.parse().ok()?)))
        .filter(|(set, _)| !set.is_empty())
        .ok_or_else(|| format!("--pod-name {pod:?} is not NAME-ORDINAL"))
}

fn parse_labels(list: &[String]) -> Result<BTreeMap<String, String>, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("--node-labels: {l:?} is not KEY=VALUE")),
        })
        .collect()
}

fn override_timing(mut t: Timing, overrides: &[String]) -> Result<Timing, String> {
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("--timing: {o:?} is not KNOB=MILLISECONDS"))?;
        let v: u64 = v
            .parse()
            .map_err(|_| format!("--timing: {k}: {v:?} is not a number of milliseconds"))?;
        let knob = match k {
            "heartbeat_ms" => &mut t.heartbeat_ms,
            "election_min_ms" => &mut t.election_min_ms,
            "election_max_ms" => &mut t.election_max_ms,
            "leader_lease_ms" => &mut t.leader_lease_ms,
            "follower_lease_ms" => &mut t.follower_lease_ms,
            "renew_every_ms" => &mut t.renew_every_ms,
            "down_after_ms" => &mut t.down_after_ms,
            _ => return Err(format!("--timing: unknown knob {k:?} (heartbeat_ms, election_min_ms, election_max_ms, leader_lease_ms, follower_lease_ms, renew_every_ms, down_after_ms)")),
        };
        *knob = v;
    }
    t.check().map_err(|e| format!("--timing: {e}"))?;
    Ok(t)
}

fn usage_error(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Cmd::Run {
                id,
                pod_name,
                peer_service,
                data_dir,
                listen,
                raft_port,
                admin_port,
                peers,
                join,
                files,
                profile,
                lb_class,
                snapshot_every,
                keep_logs,
                timing: overrides,
                node_name,
                node_labels,
                interfaces,
                exclude_interfaces,
                kube,
                kube_url,
                kube_namespace,
                statefulset,
                metrics_port,
                router_id,
                bgp_port,
                bgp_drain_wait_ms,
                exit_with_parent,
                tls_dir,
                cluster,
                insecure,
            } => {
                if let Some(parent) = exit_with_parent {
                    exit_with(parent);
                }
                let timing = Timing::profile(&profile).unwrap_or_else(|| {
                    usage_error(format!("--profile: {profile:?} is not default or fast"))
                });
                let timing = override_timing(timing, &overrides).unwrap_or_else(|e| usage_error(e));
                let labels = parse_labels(&node_labels).unwrap_or_else(|e| usage_error(e));
                let mut peers = parse_peers(&peers).unwrap_or_else(|e| usage_error(e));
                let mut join = join;
                let set_name = pod_name
                    .as_deref()
                    .and_then(|p| statefulset_ordinal(p).ok())
                    .map(|(set, _)| set);
                let id = match (id, &pod_name) {
                    (Some(id), _) => id,
                    (None, Some(pod)) => {
                        let (set, ordinal) =
                            statefulset_ordinal(pod).unwrap_or_else(|e| usage_error(e));
                        if ordinal == 0 && peers.is_empty() && join.is_none() {
                            peers.insert(1, SocketAddr::new(listen, raft_port).to_string());
                        } else if peers.is_empty() && join.is_none() {
                            join = Some(format!(
                                "{set}-0.{peer_service}.{kube_namespace}.svc:{admin_port}"
                            ));
                        }
                        ordinal + 1
                    }
                    (None, None) => usage_error("give --id or --pod-name".into()),
                };
                let facts = NodeFacts {
                    name: node_name.unwrap_or_else(|| format!("node-{id}")),
                    raft_id: id,
                    labels,
                    interfaces: Vec::new(),
                    excluded: None,
                };
                let bgp = raftlb_node::bgp::NodeBgp::new(
                    router_id,
                    listen,
                    &facts.name,
                    bgp_port,
                    std::time::Duration::from_millis(bgp_drain_wait_ms),
                );
                if !peers.is_empty() && !peers.contains_key(&id) {
                    usage_error(format!("--peers does not list this node (--id {id})"));
                }
                if peers.is_empty() && join.is_none() {
                    usage_error("give --peers (form a cluster) or --join (join one)".into());
                }
                let manifests = parse_manifests(&files).unwrap_or_else(|e| usage_error(e));
                let interfaces = Choice::from_flags(&interfaces, exclude_interfaces.as_deref())
                    .unwrap_or_else(|e| usage_error(e));
                let security = match (insecure, tls_dir) {
                    (true, _) => Security::Insecure,
                    (false, Some(dir)) => {
                        // In a StatefulSet a pod's certificate may name it by its stable DNS
                        // name (cert-manager's csi-driver), which gives its ordinal.
                        let naming = Naming {
                            cluster: cluster.clone(),
                            pods: set_name.clone().map(|set| Pods {
                                set,
                                service: peer_service.clone(),
                                namespace: kube_namespace.clone(),
                            }),
                        };
                        let tls = Tls::load_named(Files::node_in(&dir), naming)
                            .unwrap_or_else(|e| usage_error(format!("--tls-dir: {e}")));
                        let facts = tls.facts();
                        if !facts.sans.iter().any(|s| tls.naming.node_id(s) == Some(id)) {
                            usage_error(format!(
                                "--tls-dir: the certificate (serial {}) names {:?}, none of them node {id} ({:?})",
                                facts.serial,
                                facts.sans,
                                tls.naming.peer_name(id)
                            ));
                        }
                        Security::Mtls(tls)
                    }
                    (false, None) => usage_error("give --tls-dir DIR or --insecure".into()),
                };
                let cfg = PeerConfig {
                    id,
                    data_dir,
                    raft_addr: SocketAddr::new(listen, raft_port),
                    admin_addr: SocketAddr::new(listen, admin_port),
                    peers,
                    join,
                    manifests,
                    timing,
                    lb_class,
                    snapshot_every,
                    keep_logs,
                    facts,
                    interfaces,
                    kube: kube.then_some(raftlb_node::kube::KubeOptions {
                        url: kube_url,
                        namespace: kube_namespace,
                        statefulset: statefulset.or(set_name),
                    }),
                    metrics_addr: metrics_port.map(|p| SocketAddr::new(listen, p)),
                    bgp,
                    security,
                };
                match peer::run(cfg).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        e.exit_code()
                    }
                }
            }
            Cmd::Up {
                nodes,
                data_dir,
                files,
                base_port,
                profile,
                insecure,
            } => {
                if Timing::profile(&profile).is_none() {
                    usage_error(format!("--profile: {profile:?} is not default or fast"));
                }
                // Check the manifests before starting anything.
                if let Err(e) = parse_manifests(&files) {
                    usage_error(e);
                }
                let files = read_manifests(&files).unwrap_or_else(|e| usage_error(e));
                let cfg = UpConfig {
                    nodes,
                    data_dir,
                    files,
                    base_port,
                    profile,
                    insecure,
                };
                match up::up(cfg).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        1
                    }
                }
            }
            Cmd::Cert { command } => match cert_command(command) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            },
            Cmd::Ctl {
                endpoint,
                tls,
                output,
                command,
            } => match async {
                let tls = tls.choice().map_err(|e| anyhow::anyhow!("{e}"))?;
                ctl::run(&endpoint, &tls, output, command).await
            }
            .await
            {
                Ok(()) => 0,
                Err(e) => {
                    let msg = format!("{e:#}");
                    eprintln!("error: {msg}");
                    if msg.starts_with("no admin endpoint answered") {
                        5
                    } else {
                        1
                    }
                }
            },
            Cmd::Crds => match raftlb_node::kube::crd::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    0
                }
                Err(e) => {
                    eprintln!("error: cannot render the CRDs: {e}");
                    1
                }
            },
            Cmd::Check { files } => match parse_manifests(&files).and_then(check::together) {
                Ok(checked) => {
                    for note in &checked.notes {
                        println!("note: {note}");
                    }
                    for (name, objs) in checked.manifests {
                        println!("{name}: {} objects OK", objs.len());
                    }
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    2
                }
            },
        }
    });
    std::process::exit(code);
}
