//! Certificates without openssl (`raftlb cert`, and `raftlb up`'s own): a cluster CA, node
//! certificates that name their Raft id, operator certificates that carry a role. ECDSA P-256
//! keys; every leaf may serve and dial (a peer does both).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::identity::{node_name, Role, NODE_GROUP};

/// A certificate and its key, PEM.
pub struct Minted {
    pub cert_pem: String,
    pub key_pem: String,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    /// A validity that ended `ago` before now (for tests of expiry).
    pub fn expired(ago: std::time::Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        let ago = Duration::try_from(ago).unwrap_or(Duration::DAY);
        Validity {
            not_before: now - ago - Duration::days(1),
            not_after: now - ago,
        }
    }
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A CA that signs: its certificate and key.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn create(name: &str, validity: Validity) -> Result<Ca, String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "raftlb");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(err("CA key"))?;
        let cert = params.self_signed(&key).map_err(err("CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and key (`ca.crt`, `ca.key`).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, String> {
        let key = KeyPair::from_pem(key_pem).map_err(err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(err("CA certificate"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn leaf(&self, mut params: CertificateParams, validity: Validity) -> Result<Minted, String> {
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(err("key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(err("certificate"))?;
        Ok(Minted {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Node `id`'s certificate: SAN `node-ID.CLUSTER.raftlb` beside the names and addresses
    /// its peers and operators dial.
    pub fn node(
        &self,
        cluster: &str,
        id: u64,
        dns: &[String],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<Minted, String> {
        let mut params = CertificateParams::default();
        let own = node_name(cluster, id);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, &own);
        params
            .distinguished_name
            .push(DnType::OrganizationName, NODE_GROUP);
        let mut sans = vec![SanType::DnsName(
            own.clone()
                .try_into()
                .map_err(err("--cluster is not a DNS label"))?,
        )];
        for d in dns {
            sans.push(SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|e| format!("--dns {d:?}: {e}"))?,
            ));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        self.leaf(params, validity)
    }

    /// Node `id`'s certificate for peers on one machine: dialled at 127.0.0.1 or localhost
    /// (`raftlb up`, the test labs).
    pub fn loopback_node(
        &self,
        cluster: &str,
        id: u64,
        validity: Validity,
    ) -> Result<Minted, String> {
        self.node(
            cluster,
            id,
            &["localhost".to_string()],
            &[IpAddr::from([127, 0, 0, 1])],
            validity,
        )
    }

    /// An operator's certificate: CN = `user`, O = the role's group.
    pub fn client(&self, user: &str, role: Role, validity: Validity) -> Result<Minted, String> {
        if user.is_empty() {
            return Err("the user name is empty".into());
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        params
            .distinguished_name
            .push(DnType::OrganizationName, role.group());
        self.leaf(params, validity)
    }
}
