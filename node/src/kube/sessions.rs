//! `BGPSessionState` objects and the Events of sessions going up and down. A session lives on
//! its node and is not in the replicated table, so each node writes its own sessions' objects
//! (labelled with its name), once a second and only what changed; the leader-only rule of
//! `status` is for what the table decides.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::crd::{BGPSessionState, BGPSessionStateSpec, BGPSessionStateStatus, GROUP, VERSION};
use super::status::{create_event, event};
use crate::app::App;
use crate::bgp::BgpSessionView;

/// Labels on BGPSessionState objects: the node that runs the session, and its BGPPeer.
pub const LABEL_NODE: &str = "raftlb.io/node";
pub const LABEL_PEER: &str = "raftlb.io/peer";

const PERIOD: Duration = Duration::from_secs(1);

/// The object of `node`'s session with `peer`: a DNS subdomain name.
pub fn object_name(node: &str, peer: &str) -> String {
    format!("{node}-{peer}")
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .take(253)
        .collect()
}

fn rfc3339_ms(ms: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn status_of(v: &BgpSessionView) -> BGPSessionStateStatus {
    BGPSessionStateStatus {
        node: v.node.clone(),
        peer: v.peer.clone(),
        peer_address: v.address.clone(),
        bgp_status: v.state.clone(),
        bfd_status: v.bfd.as_ref().map_or("N/A".into(), |b| b.state.clone()),
        established_since: if v.established_since_ms == 0 {
            String::new()
        } else {
            rfc3339_ms(v.established_since_ms)
        },
        local_address: v.local_address.clone(),
        connection: v.connection.clone(),
        peer_asn: v.peer_asn,
        peer_router_id: v.peer_router_id.clone(),
        hold_time: u32::from(v.hold_time),
        keepalive_time: u32::from(v.keepalive),
        families: v.families.clone(),
        prefixes_sent: v.prefixes_sent,
        prefixes_pending: v.prefixes_pending,
        updates_sent: v.updates_sent,
        downs: v.downs,
        last_error: v.last_error.clone(),
    }
}

/// What happened between two looks at a session: (type, reason, message) per Event, oldest
/// first. A session that went down and came back between two looks gets both.
pub fn transitions(
    old: Option<&BGPSessionStateStatus>,
    new: &BGPSessionStateStatus,
) -> Vec<(&'static str, &'static str, String)> {
    let was_up = old.is_some_and(|o| o.bgp_status == "Established");
    let is_up = new.bgp_status == "Established";
    let bounced = old.is_some_and(|o| new.downs > o.downs);
    let mut out = Vec::new();
    if was_up && (!is_up || bounced) {
        out.push((
            "Warning",
            "BGPSessionDown",
            format!(
                "BGP session of node {} with peer {} ({}) left Established: {}",
                new.node,
                new.peer,
                new.peer_address,
                if new.last_error.is_empty() {
                    "no reason recorded"
                } else {
                    &new.last_error
                }
            ),
        ));
    }
    if is_up && (!was_up || bounced) {
        out.push((
            "Normal",
            "BGPSessionUp",
            format!(
                "BGP session of node {} with peer {} ({}) Established over an {} connection: hold time {} s, keepalive {} s, families {}",
                new.node,
                new.peer,
                new.peer_address,
                new.connection,
                new.hold_time,
                new.keepalive_time,
                new.families.join(",")
            ),
        ));
    }
    out
}

/// Keeps this node's BGPSessionState objects equal to its sessions, for as long as the
/// process runs.
pub async fn run(app: App, client: Client, namespace: String) {
    let api: Api<BGPSessionState> = Api::namespaced(client.clone(), &namespace);
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let me = app.fence.name.clone();
    let mine = ListParams::default().labels(&format!("{LABEL_NODE}={me}"));
    // What the API holds of this node's objects, by name; None until listed.
    let mut written: Option<BTreeMap<String, BGPSessionStateStatus>> = None;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if written.is_none() {
            match api.list(&mine).await {
                Ok(list) => {
                    written = Some(
                        list.items
                            .into_iter()
                            .map(|o| (o.name_any(), o.status.unwrap_or_default()))
                            .collect(),
                    )
                }
                Err(e) => {
                    warn!(error = %e, "cannot list BGPSessionState objects");
                    continue;
                }
            }
        }
        let Some(known) = written.as_mut() else {
            continue;
        };
        let want: BTreeMap<String, BGPSessionStateStatus> = crate::bgp::local_views(&app, false)
            .await
            .iter()
            .map(|v| (object_name(&v.node, &v.peer), status_of(v)))
            .collect();
        for (name, status) in &want {
            let old = known.get(name);
            if old == Some(status) {
                continue;
            }
            for (type_, reason, message) in transitions(old, status) {
                let about = ObjectReference {
                    api_version: Some(format!("{GROUP}/{VERSION}")),
                    kind: Some("BGPSessionState".into()),
                    namespace: Some(namespace.clone()),
                    name: Some(name.clone()),
                    ..Default::default()
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let ev = event(
                    &namespace,
                    format!("{name}.{now:x}.{}", reason.to_lowercase()),
                    about,
                    type_,
                    reason,
                    &message,
                    now,
                );
                if let Err(e) = create_event(&events, &ev).await {
                    warn!(object = %name, error = %e, "cannot publish a BGP session event");
                }
            }
            if old.is_none() {
                let mut obj = BGPSessionState::new(name, BGPSessionStateSpec {});
                obj.metadata.labels = Some(
                    [
                        (LABEL_NODE.to_string(), status.node.clone()),
                        (LABEL_PEER.to_string(), status.peer.clone()),
                    ]
                    .into(),
                );
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        warn!(object = %name, error = %e, "cannot create BGPSessionState");
                        continue;
                    }
                }
            }
            let patch = json!({ "status": status });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    known.insert(name.clone(), status.clone());
                }
                Err(e) => warn!(object = %name, error = %e, "cannot write BGPSessionState"),
            }
        }
        let gone: Vec<String> = known
            .keys()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    known.remove(&name);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    known.remove(&name);
                }
                Err(e) => warn!(object = %name, error = %e, "cannot delete BGPSessionState"),
            }
        }
    }
}
