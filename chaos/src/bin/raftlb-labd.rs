//! Helpers that run *inside* a lab namespace (started with `ip netns exec`):
//!
//! * `serve --name N --port P`: a TCP server that writes its node name to every connection.
//! * `probe --target IP:PORT --every-ms 10 --for-ms T`: starts a connection attempt every
//!   interval; prints `START_US ok NAME` or `START_US fail` per attempt (start times in
//!   the lab's monotonic clock, `raftlb_chaos::lab::now_us`, comparable with the test's own).
//! * `observe --iface eth0 --vip IP --every-ms 10 --for-ms T`: asks "who has VIP" (ARP or
//!   NDP) from its own MAC and addresses, and records every answer and every announcement
//!   for the VIP seen on the wire; prints `TIME_US req|garp SEQ MAC` lines.
//! * `arplat --iface eth0 --target IP --rate R --count N`: ARP request latency, in µs, as
//!   percentiles.
//!
//! * `speak --peer IP --my-asn A --peer-asn B --router-id R --count N [--base 198.18.0.0]
//!   [--count6 M --base6 2001:db8:: --next-hop-v6 IP] [--community a:b] [--large a:b:c]
//!   [--local-pref N] [--port 179]`: one raftlb BGP session (the `BgpSession` actor alone,
//!   no Raft) announcing N /32s (and M /128s). Prints `TIME_US STATE sent=S pending=P
//!   updates=U` whenever its status changes; reads `announce`, `withdraw` and
//!   `stop REASON` lines on stdin.
//!
//! * `udp --to IP:PORT --ttl T --hex HEX[,HEX...]`: sends each payload as one datagram with
//!   IP TTL T (hand-made BFD packets, malformed on purpose).
//!
//! * `workload --endpoints URL,... --clients C --seed S --every-ms M --for-ms T`: the chaos
//!   campaign's allocation workload (`raftlb_chaos::campaign::workload`), one history line per
//!   operation.
//!
//! * `final-read --endpoints URL,... --within-ms T`: the workload's Services as one
//!   linearizable read gives them, one history line (the durability checker's reference).
//!
//! Everything it sends goes out of the namespace's own interface onto the lab's bridge.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, MacAddr};

use raftlb_chaos::lab::now_us;

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn need<T: std::str::FromStr>(args: &[String], name: &str) -> T {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("raftlb-labd: missing or bad {name}");
            std::process::exit(2)
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    match args.get(1).map(String::as_str) {
        Some("serve") => rt.block_on(serve(need(&args, "--name"), need(&args, "--port"))),
        Some("probe") => rt.block_on(probe(
            need(&args, "--target"),
            need(&args, "--every-ms"),
            need(&args, "--for-ms"),
        )),
        Some("observe") => observe(
            &need::<String>(&args, "--iface"),
            need(&args, "--vip"),
            need(&args, "--every-ms"),
            need(&args, "--for-ms"),
        ),
        Some("arplat") => arplat(
            &need::<String>(&args, "--iface"),
            need(&args, "--target"),
            need(&args, "--rate"),
            need(&args, "--count"),
        ),
        Some("speak") => {
            drop(rt);
            speak(&args)
        }
        Some("workload") => rt.block_on(raftlb_chaos::campaign::workload::run(
            need::<String>(&args, "--endpoints")
                .split(',')
                .map(str::to_string)
                .collect(),
            need(&args, "--clients"),
            need(&args, "--seed"),
            need(&args, "--every-ms"),
            need(&args, "--for-ms"),
            std::io::stdout(),
        )),
        Some("final-read") => {
            let event = rt.block_on(raftlb_chaos::campaign::workload::final_read(
                need::<String>(&args, "--endpoints")
                    .split(',')
                    .map(str::to_string)
                    .collect(),
                Duration::from_millis(need(&args, "--within-ms")),
            ));
            println!("{}", serde_json::to_string(&event).unwrap_or_default());
        }
        Some("udp") => udp(
            need(&args, "--to"),
            need(&args, "--ttl"),
            &need::<String>(&args, "--hex"),
        ),
        _ => {
            eprintln!(
                "usage: raftlb-labd serve|probe|observe|arplat|speak|udp|workload|final-read ..."
            );
            std::process::exit(2)
        }
    }
}

fn udp(to: SocketAddr, ttl: u32, hex: &str) {
    let socket = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
        .unwrap_or_else(|e| {
            eprintln!("raftlb-labd udp: {e}");
            std::process::exit(1)
        });
    let set = if to.is_ipv4() {
        socket.set_ttl(ttl)
    } else {
        socket2::SockRef::from(&socket).set_unicast_hops_v6(ttl)
    };
    if let Err(e) = set {
        eprintln!("raftlb-labd udp: TTL {ttl}: {e}");
        std::process::exit(1);
    }
    for payload in hex.split(',') {
        let bytes: Vec<u8> = (0..payload.len() / 2)
            .filter_map(|i| u8::from_str_radix(payload.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        if let Err(e) = socket.send_to(&bytes, to) {
            eprintln!("raftlb-labd udp: {e}");
            std::process::exit(1);
        }
    }
}

async fn serve(name: String, port: u16) {
    use tokio::io::AsyncWriteExt;
    // [::] takes IPv4 too (v6only is off by default on Linux); 0.0.0.0 only if it cannot.
    let listener = match tokio::net::TcpListener::bind(("::", port)).await {
        Ok(l) => Ok(l),
        Err(_) => tokio::net::TcpListener::bind(("0.0.0.0", port)).await,
    };
    let listeners: Vec<_> = listener.into_iter().collect();
    if listeners.is_empty() {
        eprintln!("raftlb-labd serve: cannot listen on port {port}");
        std::process::exit(1);
    }
    let mut tasks = Vec::new();
    for l in listeners {
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok((mut s, _)) = l.accept().await {
                    let _ = s.write_all(name.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn probe(target: SocketAddr, every_ms: u64, for_ms: u64) {
    use tokio::io::AsyncReadExt;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let end = Instant::now() + Duration::from_millis(for_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    let mut attempts = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let out = out.clone();
        attempts.push(tokio::spawn(async move {
            let start = now_us();
            let result = tokio::time::timeout(Duration::from_millis(1000), async {
                let mut s = tokio::net::TcpStream::connect(target).await?;
                let mut name = String::new();
                s.read_to_string(&mut name).await?;
                Ok::<_, std::io::Error>(name)
            })
            .await;
            let line = match result {
                Ok(Ok(name)) if !name.is_empty() => format!("{start} ok {name}\n"),
                _ => format!("{start} fail\n"),
            };
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = o.write_all(line.as_bytes());
            let _ = o.flush();
        }));
    }
    for a in attempts {
        let _ = a.await;
    }
}

const OBSERVER_MAC: MacAddr = MacAddr(0x02, 0x6c, 0x61, 0x62, 0x00, 0x01);

fn open(
    iface: &str,
) -> (
    Box<dyn pnet_datalink::DataLinkSender>,
    Box<dyn pnet_datalink::DataLinkReceiver>,
) {
    let i = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .unwrap_or_else(|| {
            eprintln!("raftlb-labd: no interface {iface}");
            std::process::exit(1)
        });
    let config = pnet_datalink::Config {
        read_timeout: Some(Duration::from_millis(20)),
        promiscuous: true,
        ..Default::default()
    };
    match pnet_datalink::channel(&i, config) {
        Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
        Ok(_) => panic!("not an Ethernet channel"),
        Err(e) => {
            eprintln!("raftlb-labd: cannot open {iface}: {e}");
            std::process::exit(1)
        }
    }
}

/// Observer source address number `seq % 64`: a reply names the request it answers.
fn observer_v4(seq: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 160 + (seq % 64) as u8)
}

fn observer_v6(seq: u64) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x1a0 + (seq % 64) as u16)
}

fn arp_request(src_mac: MacAddr, src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac.octets());
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac.octets());
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

fn checksum6(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn neighbor_solicit(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let dst = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac.octets());
    let sum = checksum6(&src, &dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
    f.extend_from_slice(&src_mac.octets());
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// An answer for `vip` seen on the wire: (is it to one of our requests (seq mod 64), MAC).
fn answer_for(frame: &[u8], vip: &IpAddr) -> Option<(Option<u64>, MacAddr)> {
    if frame.len() < 14 {
        return None;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    match vip {
        IpAddr::V4(v) if ethertype == 0x0806 && frame.len() >= 42 => {
            let a = &frame[14..42];
            let op = u16::from_be_bytes([a[6], a[7]]);
            let sha = MacAddr::new(a[8], a[9], a[10], a[11], a[12], a[13]);
            let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
            let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
            if spa != *v || sha == OBSERVER_MAC {
                return None;
            }
            let o = tpa.octets();
            let ours = op == 2 && o[..3] == [10, 77, 0] && (160..224).contains(&o[3]);
            Some((ours.then(|| u64::from(o[3] - 160)), sha))
        }
        IpAddr::V6(v) if ethertype == 0x86dd && frame.len() >= 14 + 40 + 24 => {
            let ip = &frame[14..54];
            let icmp = &frame[54..];
            if ip[6] != 58 || icmp[0] != 136 || icmp[8..24] != v.octets() {
                return None;
            }
            let mac = MacAddr::new(frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]);
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            let dst = Ipv6Addr::from(dst);
            let seg = dst.segments();
            let ours =
                seg[..7] == [0xfd00, 0x77, 0, 0, 0, 0, 0] && (0x1a0..0x1e0).contains(&seg[7]);
            Some((ours.then(|| u64::from(seg[7] - 0x1a0)), mac))
        }
        _ => None,
    }
}

fn observe(iface: &str, vip: IpAddr, every_ms: u64, for_ms: u64) {
    let (mut tx, mut rx) = open(iface);
    let end = Instant::now() + Duration::from_millis(for_ms);
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (seq, stop) = (seq.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let frame = match vip {
                    IpAddr::V4(v) => arp_request(OBSERVER_MAC, observer_v4(s), v),
                    IpAddr::V6(v) => neighbor_solicit(OBSERVER_MAC, observer_v6(s), v),
                };
                let _ = tx.send_to(&frame, None);
                std::thread::sleep(Duration::from_millis(every_ms));
            }
        })
    };
    let mut out = std::io::stdout();
    while Instant::now() < end {
        let Ok(frame) = rx.next() else { continue };
        if let Some((ours, mac)) = answer_for(frame, &vip) {
            let line = match ours {
                // The newest request with this number.
                Some(n) => {
                    let cur = seq.load(std::sync::atomic::Ordering::SeqCst);
                    let s = cur - ((cur + 64 - n) % 64);
                    format!("{} req {} {}\n", now_us(), s, mac)
                }
                // With the newest request sent when it arrived: an answer to a request up to
                // that one may have been decided before the announcement (in flight).
                None => format!(
                    "{} garp {} {}\n",
                    now_us(),
                    seq.load(std::sync::atomic::Ordering::SeqCst),
                    mac
                ),
            };
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
}

fn arplat(iface: &str, target: Ipv4Addr, rate: u64, count: u64) {
    let (mut tx, mut rx) = open(iface);
    let sent: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
            let start = Instant::now();
            for s in 0..count {
                let due = start + gap * s as u32;
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                let frame = arp_request(OBSERVER_MAC, observer_v4(s), target);
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(s % 64, Instant::now());
                let _ = tx.send_to(&frame, None);
            }
        })
    };
    let mut lat_us: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(count / rate.max(1) + 3);
    while Instant::now() < deadline && (lat_us.len() as u64) < count {
        let Ok(frame) = rx.next() else { continue };
        if let Some((Some(n), _)) = answer_for(frame, &IpAddr::V4(target)) {
            let at = Instant::now();
            if let Some(t) = sent.lock().unwrap_or_else(|p| p.into_inner()).remove(&n) {
                lat_us.push(at.duration_since(t).as_secs_f64() * 1e6);
            }
        }
    }
    let _ = sender.join();
    lat_us.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat_us
            .get(((lat_us.len() as f64 * p) as usize).min(lat_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "answered {} of {count} p50 {:.1} p99 {:.1} max {:.1}",
        lat_us.len(),
        pct(0.5),
        pct(0.99),
        lat_us.last().copied().unwrap_or(f64::NAN)
    );
}

/// The prefixes and attributes `speak` announces.
fn speak_routes(
    args: &[String],
) -> std::collections::BTreeMap<ipnet::IpNet, Arc<raftlb_actors::bgp::PathAttrs>> {
    use raftlb_actors::bgp::PathAttrs;
    let mut attrs = PathAttrs {
        local_pref: arg(args, "--local-pref").and_then(|v| v.parse().ok()),
        ..PathAttrs::default()
    };
    for (i, a) in args.iter().enumerate() {
        let Some(v) = args.get(i + 1) else { continue };
        let parts: Vec<u32> = v.split(':').filter_map(|p| p.parse().ok()).collect();
        match (a.as_str(), parts.as_slice()) {
            ("--community", [a, b]) => attrs.communities.push((a << 16) | b),
            ("--large", [a, b, c]) => attrs.large_communities.push([*a, *b, *c]),
            _ => {}
        }
    }
    attrs.communities.sort_unstable();
    attrs.large_communities.sort_unstable();
    let attrs = Arc::new(attrs);
    let count: u32 = arg(args, "--count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let base: Ipv4Addr = arg(args, "--base")
        .and_then(|v| v.parse().ok())
        .unwrap_or(Ipv4Addr::new(198, 18, 0, 0));
    let count6: u128 = arg(args, "--count6")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let base6: Ipv6Addr = arg(args, "--base6")
        .and_then(|v| v.parse().ok())
        .unwrap_or("2001:db8::".parse().expect("an address"));
    let v4 = (0..count).map(|i| {
        ipnet::IpNet::new(IpAddr::V4(Ipv4Addr::from(u32::from(base) + i)), 32).expect("a /32")
    });
    let v6 = (0..count6).map(|i| {
        ipnet::IpNet::new(IpAddr::V6(Ipv6Addr::from(u128::from(base6) + i)), 128).expect("a /128")
    });
    v4.chain(v6).map(|p| (p, attrs.clone())).collect()
}

fn speak(args: &[String]) {
    use raftlb_actors::bgp::{
        BgpSession, GetStatus, Peer, PeerAsn, ReplaceRoutes, SessionConfig, Shutdown,
    };
    let peer_ip: IpAddr = need(args, "--peer");
    let port: u16 = arg(args, "--port")
        .and_then(|v| v.parse().ok())
        .unwrap_or(179);
    let my_asn: u32 = need(args, "--my-asn");
    let peer_asn: u32 = need(args, "--peer-asn");
    let peer = Peer {
        name: format!("{peer_ip}"),
        address: SocketAddr::new(peer_ip, port),
        source: arg(args, "--source").and_then(|v| v.parse().ok()),
        ttl: if my_asn == peer_asn { 255 } else { 1 },
        password: None,
        config: SessionConfig {
            local_asn: my_asn,
            peer_asn: PeerAsn::Fixed(peer_asn),
            router_id: need(args, "--router-id"),
            hold_time: arg(args, "--hold")
                .and_then(|v| v.parse().ok())
                .unwrap_or(9),
            keepalive: None,
            connect_retry: 1,
            ipv4: arg(args, "--count").is_some(),
            ipv6: arg(args, "--count6").is_some(),
            graceful_restart: false,
        },
        next_hop_v4: None,
        next_hop_v6: arg(args, "--next-hop-v6").and_then(|v| v.parse().ok()),
    };
    let routes = speak_routes(args);
    let system = actix::System::new();
    system.block_on(async move {
        let session = actix::Actor::start(BgpSession::new(peer));
        session.do_send(ReplaceRoutes(routes.clone()));
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut last = String::new();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut stdin_open = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                line = lines.recv(), if stdin_open => match line {
                    Some(l) => {
                        let l = l.trim();
                        if l == "announce" {
                            session.do_send(ReplaceRoutes(routes.clone()));
                        } else if l == "withdraw" {
                            session.do_send(ReplaceRoutes(Default::default()));
                        } else if let Some(reason) = l.strip_prefix("stop") {
                            let _ = session.send(Shutdown { reason: reason.trim().to_string() }).await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            println!("{} stopped", now_us());
                            return;
                        }
                    }
                    None => stdin_open = false,
                },
            }
            let Ok(s) = session.send(GetStatus).await else { return };
            let line = format!(
                "{} sent={} pending={} updates={} error={}",
                s.state,
                s.prefixes_sent,
                s.prefixes_pending,
                s.updates_sent,
                s.last_error.as_deref().unwrap_or("-").replace(' ', "_")
            );
            if line != last {
                println!("{} {line}", now_us());
                let _ = std::io::stdout().flush();
                last = line;
            }
        }
    });
}
