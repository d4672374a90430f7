//! Who is on the other end of a connection, read from its certificate, and what it may do.
//!
//! * A peer's certificate names its Raft id in a DNS SAN `node-ID.CLUSTER.raftlb`
//!   ([`node_name`]); the Raft port accepts nothing else, and each Raft RPC is checked against
//!   it (`crate::rpc`).
//! * An operator's certificate follows the Kubernetes x509 convention: CN is the user, O the
//!   group, `raftlb:viewer` or `raftlb:admin`.

use std::fmt;

use raftlb_raft_store::NodeId;
use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The group (O) of an operator who may read.
pub const VIEWER_GROUP: &str = "raftlb:viewer";
/// The group (O) of an operator who may also write.
pub const ADMIN_GROUP: &str = "raftlb:admin";
/// The group (O) written into node certificates (informational: a node is known by its SAN).
pub const NODE_GROUP: &str = "raftlb:node";

/// The DNS SAN that names Raft node `id` of `cluster`.
pub fn node_name(cluster: &str, id: NodeId) -> String {
    format!("node-{id}.{cluster}.raftlb")
}

/// How certificates name peers: `node-ID.CLUSTER.raftlb` always; in a StatefulSet also the
/// pod's stable DNS name `SET-ORDINAL.SERVICE.NAMESPACE.svc` (the Raft id is the ordinal + 1),
/// which cert-manager's csi-driver writes into each pod's own certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub cluster: String,
    pub pods: Option<Pods>,
}

/// A StatefulSet's pods and the headless Service that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pods {
    pub set: String,
    pub service: String,
    pub namespace: String,
}

impl Naming {
    pub fn cluster(cluster: &str) -> Naming {
        Naming {
            cluster: cluster.to_string(),
            pods: None,
        }
    }

    /// The name peer `id`'s certificate must prove to a peer that dials it.
    pub fn peer_name(&self, id: NodeId) -> String {
        match &self.pods {
            Some(p) => format!(
                "{}-{}.{}.{}.svc",
                p.set,
                id.saturating_sub(1),
                p.service,
                p.namespace
            ),
            None => node_name(&self.cluster, id),
        }
    }

    /// The Raft id a SAN names, if any.
    pub fn node_id(&self, san: &str) -> Option<NodeId> {
        node_id_of(san, &self.cluster).or_else(|| {
            let p = self.pods.as_ref()?;
            let (ordinal, domain) = san.strip_prefix(&format!("{}-", p.set))?.split_once('.')?;
            let svc = format!("{}.{}.svc", p.service, p.namespace);
            if domain != svc && !domain.starts_with(&format!("{svc}.")) {
                return None;
            }
            // No sign, no leading zeros: one spelling per ordinal.
            if ordinal.is_empty()
                || !ordinal.bytes().all(|b| b.is_ascii_digit())
                || (ordinal.len() > 1 && ordinal.starts_with('0'))
            {
                return None;
            }
            ordinal.parse::<NodeId>().ok()?.checked_add(1)
        })
    }
}

/// The Raft id a SAN names, if it is a node name of `cluster`.
fn node_id_of(san: &str, cluster: &str) -> Option<NodeId> {
    let rest = san.strip_prefix("node-")?;
    let (id, domain) = rest.split_once('.')?;
    if domain != format!("{cluster}.raftlb") {
        return None;
    }
    id.parse().ok().filter(|id| *id >= 1)
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn group(self) -> &'static str {
        match self {
            Role::Viewer => VIEWER_GROUP,
            Role::Admin => ADMIN_GROUP,
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "viewer" | VIEWER_GROUP => Ok(Role::Viewer),
            "admin" | ADMIN_GROUP => Ok(Role::Admin),
            _ => Err(format!("role {s:?} is not viewer or admin")),
        }
    }
}

/// The caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A plaintext connection (`--insecure`): nobody is authenticated, everything is allowed.
    Anonymous,
    /// A raftlb peer, by the Raft id its certificate names.
    Node(NodeId),
    /// An operator: the certificate's CN and the role its O grants.
    User { name: String, role: Role },
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => write!(f, "anonymous (plaintext)"),
            Principal::Node(id) => write!(f, "node {id}"),
            Principal::User { name, role } => write!(f, "user {name:?} ({})", role.group()),
        }
    }
}

/// What an admin RPC needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Status, lists, watch, events, history.
    Read,
    /// Apply, delete, drain, move, membership, leadership, snapshot.
    Write,
    /// Adding or promoting node `id` itself (what `run --join` does with its node certificate).
    Join(NodeId),
}

impl Principal {
    /// Whether this caller may do what `need` names.
    pub fn may(&self, need: Need) -> bool {
        match (self, need) {
            (Principal::Anonymous, _) => true,
            (Principal::User { role, .. }, Need::Read) => *role >= Role::Viewer,
            (Principal::User { role, .. }, _) => *role == Role::Admin,
            (Principal::Node(_), Need::Read) => true,
            (Principal::Node(id), Need::Join(joining)) => *id == joining,
            (Principal::Node(_), Need::Write) => false,
        }
    }

    /// The name recorded beside a write.
    pub fn user(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Node(id) => format!("node-{id}"),
            Principal::User { name, .. } => name.clone(),
        }
    }
}

/// The facts of a certificate an operator or a metric needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The serial number, hex with colons (as `openssl x509 -serial` groups it).
    pub serial: String,
    pub subject: String,
    pub sans: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}

/// The DNS and IP names a certificate's SAN extension lists.
fn sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    Ok(ext
        .map(|e| {
            e.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*ip)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

pub fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let cert = parse(der)?;
    Ok(CertFacts {
        serial: cert.tbs_certificate.raw_serial_as_string(),
        subject: cert.subject().to_string(),
        sans: sans(&cert)?,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Who a (verified) certificate names, for a connection to a peer named by `naming`.
pub fn principal(der: &[u8], naming: &Naming) -> Result<Principal, String> {
    let cert = parse(der)?;
    if let Some(id) = sans(&cert)?.iter().find_map(|s| naming.node_id(s)) {
        return Ok(Principal::Node(id));
    }
    let cluster = &naming.cluster;
    let texts = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let subject = cert.subject();
    let groups = texts(&mut subject.iter_organization());
    let role = if groups.iter().any(|g| g == ADMIN_GROUP) {
        Role::Admin
    } else if groups.iter().any(|g| g == VIEWER_GROUP) {
        Role::Viewer
    } else {
        return Err(format!(
            "certificate {subject} names no node of cluster {cluster:?} (SAN node-ID.{cluster}.raftlb) and no raftlb role (O={VIEWER_GROUP} or O={ADMIN_GROUP})"
        ));
    };
    let name = texts(&mut subject.iter_common_name())
        .into_iter()
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("certificate {subject} has a role but no user (CN)"))?;
    Ok(Principal::User { name, role })
}

/// The caller of `req`: with mTLS, from the certificate the handshake verified; without,
/// [`Principal::Anonymous`].
pub fn caller<T>(req: &tonic::Request<T>, naming: Option<&Naming>) -> Result<Principal, Status> {
    let Some(naming) = naming else {
        return Ok(Principal::Anonymous);
    };
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::permission_denied("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::permission_denied("no client certificate"))?;
    principal(leaf, naming).map_err(Status::permission_denied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::mint::{self, Validity};

    #[test]
    fn a_node_certificate_names_its_raft_id_only_in_its_own_cluster() {
        let ca = mint::Ca::create("test", Validity::days(1)).unwrap();
        let node = ca
            .node(
                "blue",
                3,
                &["raftlb-2.raftlb".into()],
                &[],
                Validity::days(1),
            )
            .unwrap();
        let der = crate::tls::material::first_cert(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            principal(&der, &Naming::cluster("blue")).unwrap(),
            Principal::Node(3)
        );
        let other = principal(&der, &Naming::cluster("green")).unwrap_err();
        assert!(other.contains("no node of cluster \"green\""), "{other}");
    }

    #[test]
    fn an_operator_certificate_gives_its_cn_and_role() {
        let ca = mint::Ca::create("test", Validity::days(1)).unwrap();
        for (role, want) in [(Role::Viewer, Role::Viewer), (Role::Admin, Role::Admin)] {
            let c = ca.client("alice", role, Validity::days(1)).unwrap();
            let der = crate::tls::material::first_cert(c.cert_pem.as_bytes()).unwrap();
            assert_eq!(
                principal(&der, &Naming::cluster("blue")).unwrap(),
                Principal::User {
                    name: "alice".into(),
                    role: want
                }
            );
        }
    }

    #[test]
    fn roles_allow_what_they_name() {
        let viewer = Principal::User {
            name: "v".into(),
            role: Role::Viewer,
        };
        let admin = Principal::User {
            name: "a".into(),
            role: Role::Admin,
        };
        assert!(viewer.may(Need::Read));
        assert!(!viewer.may(Need::Write));
        assert!(!viewer.may(Need::Join(1)));
        assert!(admin.may(Need::Write) && admin.may(Need::Join(4)));
        assert!(Principal::Node(4).may(Need::Join(4)));
        assert!(!Principal::Node(4).may(Need::Join(5)));
        assert!(!Principal::Node(4).may(Need::Write));
    }

    #[test]
    fn node_names_parse_strictly() {
        assert_eq!(node_id_of("node-12.c.raftlb", "c"), Some(12));
        assert_eq!(node_id_of("node-0.c.raftlb", "c"), None);
        assert_eq!(node_id_of("node-x.c.raftlb", "c"), None);
        assert_eq!(node_id_of("node-1.c.raftlb.evil", "c"), None);
        assert_eq!(node_id_of("node-1.d.raftlb", "c"), None);
    }

    #[test]
    fn a_statefulset_pod_name_names_its_ordinal_plus_one() {
        let naming = Naming {
            cluster: "c".into(),
            pods: Some(Pods {
                set: "raftlb".into(),
                service: "raftlb".into(),
                namespace: "raftlb-system".into(),
            }),
        };
        let id = |s: &str| naming.node_id(s);
        assert_eq!(id("raftlb-0.raftlb.raftlb-system.svc"), Some(1));
        assert_eq!(
            id("raftlb-2.raftlb.raftlb-system.svc.cluster.local"),
            Some(3)
        );
        assert_eq!(id("node-5.c.raftlb"), Some(5));
        assert_eq!(naming.peer_name(3), "raftlb-2.raftlb.raftlb-system.svc");
        for bad in [
            "raftlb-02.raftlb.raftlb-system.svc",
            "raftlb-+1.raftlb.raftlb-system.svc",
            "raftlb-1.raftlb.other.svc",
            "raftlb-1.raftlb.raftlb-system.svcx",
            "raftlb-1.raftlb.raftlb-system",
            "other-1.raftlb.raftlb-system.svc",
            "raftlb-.raftlb.raftlb-system.svc",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
        assert_eq!(
            Naming::cluster("c").node_id("raftlb-0.raftlb.raftlb-system.svc"),
            None
        );
    }
}
