//! The bodies of the node's fuzz targets (`node/fuzz`, `cargo +nightly fuzz run T`), as plain
//! functions so that a stable `cargo test` replays their corpora (`fuzz/corpus/T`) and every
//! crash kept as a regression (`fuzz/regressions/T`). Each takes bytes from outside the
//! process and must end without a panic, whatever they are.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use prost::Message;
use raftlb_proto::admin::{ApplyRequest, DrainRequest, MoveVipRequest, WatchRequest};
use raftlb_raft_store::{codec, Command, NodeId, Response, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bgp::BgpSessionView;
use crate::fence::{LeaseView, RenewReply, RenewRequest};
use crate::raft::leader::{LeaderReply, MembershipChange};

/// Decodes `data` as a `T`; what decodes must encode to bytes that decode to the same
/// encoding again (the one codec is stable).
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> bool {
    let Ok(value) = codec::decode::<T>(data) else {
        return false;
    };
    let once = codec::encode(&value).expect("a decoded value encodes");
    let again: T = codec::decode(&once).expect("an encoded value decodes");
    assert_eq!(codec::encode(&again).expect("encodes"), once);
    true
}

/// `raft_payload`: a Raft port payload, as every request type a peer's server decodes and
/// every reply type its client decodes. Returns how many types took it.
pub fn raft_payload(data: &[u8]) -> usize {
    type Reply<T, E = openraft::error::Infallible> = Result<T, RaftError<NodeId, E>>;
    [
        round_trip::<AppendEntriesRequest<TypeConfig>>(data),
        round_trip::<VoteRequest<NodeId>>(data),
        round_trip::<InstallSnapshotRequest<TypeConfig>>(data),
        round_trip::<Command>(data),
        round_trip::<MembershipChange>(data),
        round_trip::<RenewRequest>(data),
        round_trip::<bool>(data),
        round_trip::<Reply<AppendEntriesResponse<NodeId>>>(data),
        round_trip::<Reply<VoteResponse<NodeId>>>(data),
        round_trip::<Reply<InstallSnapshotResponse<NodeId>, InstallSnapshotError>>(data),
        round_trip::<LeaderReply<Response>>(data),
        round_trip::<LeaderReply<String>>(data),
        round_trip::<LeaderReply<u64>>(data),
        round_trip::<LeaderReply<Vec<LeaseView>>>(data),
        round_trip::<RenewReply>(data),
        round_trip::<Vec<BgpSessionView>>(data),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// `manifest_yaml`: a manifest as `ctl apply -f`, `run -f` and `raftlb check` read it. Parsing
/// twice gives the same result (no hidden state), and an error names its source.
pub fn manifest_yaml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let first = crate::manifest::parse_file(text, "fuzz.yaml");
    let second = crate::manifest::parse_file(text, "fuzz.yaml");
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.objects.len(), b.objects.len());
            true
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(a.to_string().starts_with("fuzz.yaml"), "{a}");
            false
        }
        (a, b) => panic!("two parses disagree: {:?} / {:?}", a.is_ok(), b.is_ok()),
    }
}

/// `kube_json`: an object as the Kubernetes API server sends it.
pub fn kube_json(data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    crate::manifest::parse_json(&value, "fuzz").is_ok()
}

/// `admin_request`: an admin request body, decoded as each message whose fields the service
/// validates itself, then validated as the service does.
pub fn admin_request(data: &[u8]) -> usize {
    let mut decoded = 0;
    if let Ok(r) = ApplyRequest::decode(data) {
        decoded += 1;
        let _ = crate::manifest::parse_file(&r.manifest, &r.source);
    }
    if let Ok(r) = MoveVipRequest::decode(data) {
        decoded += 1;
        let _ = r.vip.parse::<std::net::IpAddr>();
    }
    if let Ok(r) = WatchRequest::decode(data) {
        decoded += 1;
        let _ = crate::watch::Resource::parse(&r.resource);
    }
    if DrainRequest::decode(data).is_ok() {
        decoded += 1;
    }
    decoded
}

/// A target's name and body.
pub type Target = (&'static str, fn(&[u8]));

/// The targets by name, for the replay test and anyone who wants to run an input by hand.
pub const TARGETS: [Target; 4] = [
    ("raft_payload", |d| {
        raft_payload(d);
    }),
    ("manifest_yaml", |d| {
        manifest_yaml(d);
    }),
    ("kube_json", |d| {
        kube_json(d);
    }),
    ("admin_request", |d| {
        admin_request(d);
    }),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
        out
    }

    /// Whether libFuzzer found the input (it names what it adds by the SHA-1 of the bytes);
    /// the others are seeds written from real values, and regressions.
    fn found_by_the_fuzzer(path: &std::path::Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 40 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Replays every corpus and regression under stable `cargo test`. Beside each seed and
    /// regression, its truncations too; the fuzzer's own inputs once each (it has explored
    /// around them already, and thousands of them times 64 cuts took minutes in debug).
    #[test]
    fn every_target_survives_its_corpus() {
        for (target, body) in TARGETS {
            let inputs = inputs(target);
            assert!(inputs.len() >= 3, "no corpus for {target}");
            for (path, bytes) in &inputs {
                eprintln!("{target}: {}", path.display());
                body(bytes);
                if found_by_the_fuzzer(path) {
                    continue;
                }
                for cut in (0..bytes.len()).step_by(bytes.len() / 64 + 1) {
                    body(&bytes[..cut]);
                }
            }
        }
    }

    /// The corpora are not all rejects: each has inputs that get past decoding.
    #[test]
    fn the_corpora_reach_past_decoding() {
        let count = |t: &str, f: fn(&[u8]) -> bool| inputs(t).iter().filter(|(_, b)| f(b)).count();
        assert!(count("manifest_yaml", manifest_yaml) >= 3);
        assert!(count("kube_json", kube_json) >= 2);
        assert!(inputs("raft_payload")
            .iter()
            .any(|(_, b)| raft_payload(b) > 0));
        assert!(inputs("admin_request")
            .iter()
            .any(|(_, b)| admin_request(b) > 0));
    }

    /// Writes the seed corpora of `raft_payload` and `admin_request` from real values
    /// (`cargo test -p raftlb-node --lib write_seed_corpus -- --ignored`).
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let save = |target: &str, name: &str, bytes: Vec<u8>| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 7);
        let manifest = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml"),
        )
        .unwrap();
        let objects = crate::manifest::parse(&manifest, "cluster.yaml").unwrap();
        let cmd = Command::Apply(crate::admin::operator_batch(objects));
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id),
            entries: vec![
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(3, 1), 8),
                    payload: EntryPayload::Normal(cmd.clone()),
                },
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(3, 1), 9),
                    payload: EntryPayload::Blank,
                },
            ],
            leader_commit: Some(log_id),
        };
        let e = |v: &dyn erased::Encode| v.bytes();
        save("raft_payload", "append_entries", e(&append));
        save(
            "raft_payload",
            "vote",
            e(&VoteRequest::new(Vote::new(4, 2), Some(log_id))),
        );
        save("raft_payload", "command_apply", e(&cmd));
        save(
            "raft_payload",
            "renew",
            e(&RenewRequest {
                node: "node-2".into(),
                applied: 42,
            }),
        );
        save(
            "raft_payload",
            "membership",
            e(&MembershipChange::AddLearner {
                id: 4,
                addr: "127.0.0.1:7476".into(),
            }),
        );
        save(
            "raft_payload",
            "leader_reply",
            e(&LeaderReply::<u64>::NotLeader(Some((
                2,
                "127.0.0.1:7472".into(),
            )))),
        );
        save(
            "admin_request",
            "apply",
            ApplyRequest {
                manifest,
                delete: false,
                source: "cluster.yaml".into(),
            }
            .encode_to_vec(),
        );
        save(
            "admin_request",
            "move",
            MoveVipRequest {
                vip: "192.0.2.1".into(),
                node: "node-3".into(),
            }
            .encode_to_vec(),
        );
        save(
            "admin_request",
            "watch",
            WatchRequest {
                resource: "vips".into(),
                min_index: 9,
            }
            .encode_to_vec(),
        );
    }

    mod erased {
        pub trait Encode {
            fn bytes(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Encode for T {
            fn bytes(&self) -> Vec<u8> {
                raftlb_raft_store::codec::encode(self).unwrap()
            }
        }
    }
}
