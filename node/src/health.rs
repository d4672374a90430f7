//! `/healthz`, `/readyz` and Prometheus `/metrics` on every peer (`--metrics-port`).
//!
//! Ready means: a member of a cluster that has a leader, and caught up (applied within
//! [`READY_LAG`] entries of its log). Metric names follow MetalLB's where one exists
//! (`metallb_allocator_*` becomes `raftlb_allocator_*`, `metallb_speaker_announced` becomes
//! `raftlb_speaker_announced`); the Raft and lease families are raftlb's own.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use raftlb_actors::bgp::SessionStatus;
use raftlb_actors::lease::Clock;
use raftlb_raft_store::table::pool::Family;
use raftlb_raft_store::table::ServiceState;
use raftlb_raft_store::Raft;

use crate::app::App;

/// How far behind its own log a peer may be and still be ready.
pub const READY_LAG: u64 = 100;

type Ctx = App;

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

async fn healthz(State(ctx): State<Ctx>) -> (StatusCode, String) {
    match &ctx.raft.metrics().borrow().running_state {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        ),
    }
}

/// Why this peer is not ready, if it is not.
pub fn not_ready(raft: &Raft) -> Option<String> {
    let m = raft.metrics().borrow().clone();
    let member = m
        .membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == m.id);
    if !member {
        return Some("not a member of the cluster yet".into());
    }
    if m.current_leader.is_none() {
        return Some("no leader".into());
    }
    let applied = m.last_applied.map_or(0, |l| l.index);
    let log = m.last_log_index.unwrap_or(0);
    if log > applied + READY_LAG {
        return Some(format!("catching up: applied {applied} of {log}"));
    }
    None
}

async fn readyz(State(ctx): State<Ctx>) -> (StatusCode, String) {
    match not_ready(&ctx.raft) {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Prometheus text exposition: `# HELP`, `# TYPE`, then the samples of each family.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{v}\"")
            })
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

pub fn render(
    app: &App,
    bgp: &[SessionStatus],
    bfd: &std::collections::BTreeMap<std::net::IpAddr, raftlb_actors::bfd::BfdStatus>,
) -> String {
    let (raft, table) = (&app.raft, &app.state);
    let mut out = Exposition(String::new());
    bgp_metrics(&mut out, &app.fence.name, bgp);
    bfd_metrics(&mut out, &app.fence.name, bfd);
    let m = raft.metrics().borrow().clone();
    {
        let applied = table.read().unwrap_or_else(|p| p.into_inner());
        let t = &applied.table;
        type Pick = fn(&raftlb_raft_store::table::pool::FamilyUsage) -> u128;
        let per_pool: [(&str, &str, Option<Family>, Pick); 6] = [
            (
                "raftlb_allocator_addresses_total",
                "Addresses in the pool",
                None,
                |u| u.size,
            ),
            (
                "raftlb_allocator_ipv4_addresses_total",
                "IPv4 addresses in the pool",
                Some(Family::V4),
                |u| u.size,
            ),
            (
                "raftlb_allocator_ipv6_addresses_total",
                "IPv6 addresses in the pool",
                Some(Family::V6),
                |u| u.size,
            ),
            (
                "raftlb_allocator_addresses_in_use_total",
                "Addresses of the pool in use",
                None,
                |u| u.used,
            ),
            (
                "raftlb_allocator_ipv4_addresses_in_use_total",
                "IPv4 addresses of the pool in use",
                Some(Family::V4),
                |u| u.used,
            ),
            (
                "raftlb_allocator_ipv6_addresses_in_use_total",
                "IPv6 addresses of the pool in use",
                Some(Family::V6),
                |u| u.used,
            ),
        ];
        for (name, help, family, pick) in per_pool {
            out.family(name, "gauge", help);
            for pool in t.pools().keys() {
                if let Some((_, v4, v6)) = t.pool_usage(pool) {
                    let value = match family {
                        Some(Family::V4) => pick(&v4),
                        Some(Family::V6) => pick(&v6),
                        None => pick(&v4).saturating_add(pick(&v6)),
                    };
                    out.sample(name, &[("pool", pool)], value);
                }
            }
        }
        let mut allocated: std::collections::BTreeMap<&str, u64> =
            t.pools().keys().map(|p| (p.as_str(), 0)).collect();
        let mut pending = 0;
        for e in t.services().values() {
            match &e.state {
                ServiceState::Allocated { pool, .. } => {
                    *allocated.entry(pool.as_str()).or_default() += 1;
                }
                ServiceState::Pending { .. } => pending += 1,
                ServiceState::Ignored { .. } => {}
            }
        }
        out.family(
            "raftlb_allocator_services_allocated_total",
            "gauge",
            "Services holding addresses of the pool",
        );
        for (pool, n) in allocated {
            out.sample(
                "raftlb_allocator_services_allocated_total",
                &[("pool", pool)],
                n,
            );
        }
        out.family(
            "raftlb_services_pending",
            "gauge",
            "LoadBalancer Services waiting for an address",
        );
        out.sample("raftlb_services_pending", &[], pending);

        let owners = t.owners();
        out.family(
            "raftlb_vips_owned",
            "gauge",
            "VIPs each node owns in the table",
        );
        for node in t.nodes().keys() {
            let n = owners.values().filter(|(o, _)| *o == node).count();
            out.sample("raftlb_vips_owned", &[("node", node)], n);
        }
        out.family(
            "raftlb_speaker_announced",
            "gauge",
            "Service announced from a node (1), as in metallb_speaker_announced",
        );
        for (ip, (node, _)) in &owners {
            let ip_text = ip.to_string();
            if let Some(usage) = t.addresses().get(ip) {
                for service in usage.users.keys() {
                    out.sample(
                        "raftlb_speaker_announced",
                        &[
                            ("service", service),
                            ("protocol", "layer2"),
                            ("node", node),
                            ("ip", &ip_text),
                        ],
                        1,
                    );
                }
            }
        }
        out.family(
            "raftlb_node_live",
            "gauge",
            "Node renews its lease as the leader last recorded (1) or was declared down (0)",
        );
        for (name, n) in t.nodes() {
            out.sample("raftlb_node_live", &[("node", name)], u8::from(n.live));
        }
        out.family(
            "raftlb_vip_moves_total",
            "counter",
            "Changes of VIP owner applied",
        );
        out.sample("raftlb_vip_moves_total", &[], t.moves_total());
        out.family(
            "raftlb_failovers_total",
            "counter",
            "Changes of VIP owner away from a node that was down",
        );
        out.sample("raftlb_failovers_total", &[], t.failovers_total());
        out.family(
            "raftlb_config_generation",
            "gauge",
            "Generation of the configuration in force",
        );
        out.sample("raftlb_config_generation", &[], t.generation());
    }
    {
        let s = &app.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let node = [("node", app.fence.name.as_str())];
        let rows: [(&str, &str, &str, f64); 6] = [
            (
                "raftlb_announcer_vips",
                "gauge",
                "VIPs this node's announcer holds (answers for while its lease holds)",
                load(&s.announcing) as f64,
            ),
            (
                "raftlb_planner_runs_total",
                "counter",
                "Planner passes this peer ran while leading",
                load(&s.plans) as f64,
            ),
            (
                "raftlb_planner_seconds_total",
                "counter",
                "Time spent in those passes",
                load(&s.plan_ns) as f64 / 1e9,
            ),
            (
                "raftlb_planner_vips_examined_total",
                "counter",
                "VIPs those passes looked at (only what changed since the last plan)",
                load(&s.plan_vips) as f64,
            ),
            (
                "raftlb_announcer_full_syncs_total",
                "counter",
                "Syncs of the announcer with the whole table (start, or a journal that fell behind)",
                load(&s.syncs_full) as f64,
            ),
            (
                "raftlb_announcer_partial_syncs_total",
                "counter",
                "Syncs of the announcer with what the applied entries touched",
                load(&s.syncs_partial) as f64,
            ),
        ];
        for (name, kind, help, value) in rows {
            out.family(name, kind, help);
            out.sample(name, &node, value);
        }
    }
    if let Some(tls) = app.security.tls() {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let node = [("node", app.fence.name.as_str())];
        let facts = tls.facts();
        out.family(
            "raftlb_tls_cert_not_after_seconds",
            "gauge",
            "When the certificate this peer presents expires (Unix time)",
        );
        out.sample(
            "raftlb_tls_cert_not_after_seconds",
            &[("node", app.fence.name.as_str()), ("serial", &facts.serial)],
            facts.not_after,
        );
        out.family(
            "raftlb_tls_ca_not_after_seconds",
            "gauge",
            "When each CA of the bundle in force expires (Unix time)",
        );
        for ca in tls.cas() {
            out.sample(
                "raftlb_tls_ca_not_after_seconds",
                &[("node", app.fence.name.as_str()), ("serial", &ca.serial)],
                ca.not_after,
            );
        }
        let rows: [(&str, &str, u64); 4] = [
            (
                "raftlb_tls_reloads_total",
                "Certificate reloads that took effect (SIGHUP or changed files)",
                load(&tls.reloads),
            ),
            (
                "raftlb_tls_reload_errors_total",
                "New certificate files refused (the old ones stayed in force)",
                load(&tls.reload_errors),
            ),
            (
                "raftlb_tls_handshake_failures_total",
                "TLS handshakes on the Raft and admin ports that failed or timed out",
                load(&tls.handshake_failures),
            ),
            (
                "raftlb_tls_denied_total",
                "RPCs refused for the caller's certificate (identity or role)",
                load(&tls.denied),
            ),
        ];
        for (name, help, value) in rows {
            out.family(name, "counter", help);
            out.sample(name, &node, value);
        }
    }
    {
        let k = &app.fence;
        let left = k.lease.remaining(k.clock.now_ns()).as_secs_f64();
        out.family(
            "raftlb_lease_valid",
            "gauge",
            "This node holds a quorum-confirmed lease (it may answer for its VIPs)",
        );
        out.sample(
            "raftlb_lease_valid",
            &[("node", &k.name)],
            u8::from(left > 0.0),
        );
        out.family(
            "raftlb_lease_remaining_seconds",
            "gauge",
            "Time left on this node's lease",
        );
        out.sample("raftlb_lease_remaining_seconds", &[("node", &k.name)], left);
    }
    let leader = m.current_leader.map_or(0, |l| l);
    let rows: [(&str, &str, &str, u64); 5] = [
        (
            "raftlb_raft_term",
            "gauge",
            "Current Raft term",
            m.current_term,
        ),
        (
            "raftlb_raft_leader_id",
            "gauge",
            "Raft id of the leader this peer knows (0: none)",
            leader,
        ),
        (
            "raftlb_raft_is_leader",
            "gauge",
            "This peer leads (1) or not (0)",
            u64::from(m.current_leader == Some(m.id)),
        ),
        (
            "raftlb_raft_last_log_index",
            "gauge",
            "Index of the last entry in this peer's log",
            m.last_log_index.unwrap_or(0),
        ),
        (
            "raftlb_raft_applied_index",
            "gauge",
            "Index of the last entry applied to the table",
            m.last_applied.map_or(0, |l| l.index),
        ),
    ];
    for (name, kind, help, value) in rows {
        out.family(name, kind, help);
        out.sample(name, &[("peer", &m.id.to_string())], value);
    }
    out.family(
        "raftlb_ready",
        "gauge",
        "This peer is ready (member, leader known, caught up)",
    );
    out.sample("raftlb_ready", &[], u8::from(not_ready(raft).is_none()));
    out.0
}

async fn metrics(
    State(ctx): State<Ctx>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let (bgp, bfd) = {
        let bridge = ctx.bgp.lock().await;
        (bridge.status().await, bridge.bfd_status().await)
    };
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        render(&ctx, &bgp, &bfd),
    )
}

/// MetalLB's BFD metrics (`metallb_bfd_*`, from FRR) under raftlb's prefix, per peer and node.
fn bfd_metrics(
    out: &mut Exposition,
    node: &str,
    sessions: &std::collections::BTreeMap<std::net::IpAddr, raftlb_actors::bfd::BfdStatus>,
) {
    type Pick = fn(&raftlb_actors::bfd::BfdStatus) -> u64;
    let rows: [(&str, &str, &str, Pick); 5] = [
        (
            "raftlb_bfd_session_up",
            "gauge",
            "BFD session Up (1) or not (0)",
            |s| u64::from(s.state == "Up"),
        ),
        (
            "raftlb_bfd_control_packet_input",
            "counter",
            "BFD control packets received",
            |s| s.packets_in,
        ),
        (
            "raftlb_bfd_control_packet_output",
            "counter",
            "BFD control packets sent",
            |s| s.packets_out,
        ),
        (
            "raftlb_bfd_session_up_events",
            "counter",
            "Times the BFD session came Up",
            |s| s.ups,
        ),
        (
            "raftlb_bfd_session_down_events",
            "counter",
            "Times the BFD session left Up",
            |s| s.downs,
        ),
    ];
    per_peer(out, node, &rows, sessions.values(), |s| &s.peer);
}

/// MetalLB's BGP metrics (`metallb_bgp_*`) under raftlb's prefix, per peer and node, from
/// what the sessions negotiated and sent.
fn bgp_metrics(out: &mut Exposition, node: &str, sessions: &[SessionStatus]) {
    type Pick = fn(&SessionStatus) -> u64;
    let rows: [(&str, &str, &str, Pick); 5] = [
        (
            "raftlb_bgp_session_up",
            "gauge",
            "BGP session Established (1) or not (0)",
            |s| u64::from(s.state == "Established"),
        ),
        (
            "raftlb_bgp_updates_total",
            "counter",
            "BGP UPDATE messages sent",
            |s| s.updates_sent,
        ),
        (
            "raftlb_bgp_announced_prefixes_total",
            "gauge",
            "Prefixes the peer holds from this session",
            |s| s.prefixes_sent as u64,
        ),
        (
            "raftlb_bgp_pending_prefixes_total",
            "gauge",
            "Prefixes waiting to be sent (session down, family not negotiated, no next hop)",
            |s| s.prefixes_pending as u64,
        ),
        (
            "raftlb_bgp_session_downs_total",
            "counter",
            "Times the BGP session left Established",
            |s| s.downs,
        ),
    ];
    per_peer(out, node, &rows, sessions, |s| &s.address);
}

/// A metric family: name, type, help, and how to read its value off one session.
type MetricRow<'a, T> = (&'a str, &'a str, &'a str, fn(&T) -> u64);

/// One metric family per row, one sample per session labelled with its peer and the node.
fn per_peer<'a, T: 'a>(
    out: &mut Exposition,
    node: &str,
    rows: &[MetricRow<'_, T>],
    sessions: impl IntoIterator<Item = &'a T> + Clone,
    peer: fn(&T) -> &str,
) {
    for (name, kind, help, pick) in rows {
        out.family(name, kind, help);
        for s in sessions.clone() {
            out.sample(name, &[("peer", peer(s)), ("node", node)], pick(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_and_bfd_sessions_give_one_sample_per_peer_in_each_family() {
        let mut out = Exposition(String::new());
        let up = SessionStatus {
            address: "10.77.0.100:179".into(),
            state: "Established",
            updates_sent: 7,
            ..SessionStatus::default()
        };
        bgp_metrics(&mut out, "n1", &[up]);
        let bfd = std::collections::BTreeMap::from([(
            "10.77.0.100".parse().unwrap(),
            raftlb_actors::bfd::BfdStatus {
                peer: "10.77.0.100".into(),
                state: "Up",
                packets_in: 12,
                ..Default::default()
            },
        )]);
        bfd_metrics(&mut out, "n1", &bfd);
        let text = out.0;
        for line in [
            "raftlb_bgp_session_up{peer=\"10.77.0.100:179\",node=\"n1\"} 1",
            "raftlb_bgp_updates_total{peer=\"10.77.0.100:179\",node=\"n1\"} 7",
            "raftlb_bfd_session_up{peer=\"10.77.0.100\",node=\"n1\"} 1",
            "raftlb_bfd_control_packet_input{peer=\"10.77.0.100\",node=\"n1\"} 12",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert_eq!(text.matches("# TYPE ").count(), 10, "{text}");
    }
}
