//! Certificate files on disk, checked before use: the CA bundle, a certificate chain and its
//! key. A set of files becomes rustls configurations only when the key matches the
//! certificate, the chain verifies against the bundle and the certificate is valid now.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::identity::{self, CertFacts};

/// Where one identity's files are: the CA bundle, the certificate (chain) and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    /// A node's files in `dir`: `ca.crt` with `node.crt`/`node.key` (`raftlb cert`), or with
    /// `tls.crt`/`tls.key` (a cert-manager Secret mounted as is).
    pub fn node_in(dir: &Path) -> Files {
        let (cert, key) = if dir.join("node.crt").exists() || !dir.join("tls.crt").exists() {
            ("node.crt", "node.key")
        } else {
            ("tls.crt", "tls.key")
        };
        Files {
            ca: dir.join("ca.crt"),
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// An operator's files in `dir`: `client.USER.crt` (the only one, or `user`'s), else
    /// `tls.crt`.
    pub fn client_in(dir: &Path, user: Option<&str>) -> Result<Files, String> {
        let named = |u: &str| Files {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("client.{u}.crt")),
            key: dir.join(format!("client.{u}.key")),
        };
        if let Some(u) = user {
            return Ok(named(u));
        }
        let mut users: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                Some(
                    name.strip_prefix("client.")?
                        .strip_suffix(".crt")?
                        .to_string(),
                )
            })
            .collect();
        users.sort();
        match users.as_slice() {
            [one] => Ok(named(one)),
            [] if dir.join("tls.crt").exists() => Ok(Files {
                ca: dir.join("ca.crt"),
                cert: dir.join("tls.crt"),
                key: dir.join("tls.key"),
            }),
            [] => Err(format!(
                "{}: no client certificate (client.USER.crt or tls.crt)",
                dir.display()
            )),
            many => Err(format!(
                "{}: several client certificates ({}); pick one with --user",
                dir.display(),
                many.join(", ")
            )),
        }
    }

    /// The files' bytes, to notice a change.
    pub fn read(&self) -> Result<[Vec<u8>; 3], String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok([read(&self.ca)?, read(&self.cert)?, read(&self.key)?])
    }
}

/// The one crypto provider (ring, as kube uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The first certificate of a PEM text.
pub fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    certs(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| "no CERTIFICATE block".to_string())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

/// Checked material: what the configurations are built from.
pub struct Material {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The leaf's facts (serial, names, validity).
    pub facts: CertFacts,
    /// The CA bundle's certificates' facts.
    pub cas: Vec<CertFacts>,
}

impl Material {
    /// Parses and checks one identity's files' contents (see the module doc).
    pub fn check(files: &Files, bytes: &[Vec<u8>; 3]) -> Result<Material, String> {
        Material::parse(files, bytes, true)
    }

    /// Parses without checking the key, the chain or the validity: only to play a client
    /// that shows what raftlb must refuse (tests of an expired or foreign certificate).
    pub fn unchecked(files: &Files, bytes: &[Vec<u8>; 3]) -> Result<Material, String> {
        Material::parse(files, bytes, false)
    }

    fn parse(files: &Files, bytes: &[Vec<u8>; 3], check: bool) -> Result<Material, String> {
        let [ca, cert, key] = bytes;
        fn in_file(p: &Path) -> impl Fn(String) -> String + '_ {
            move |e| format!("{}: {e}", p.display())
        }
        let ca_certs = certs(ca).map_err(in_file(&files.ca))?;
        if ca_certs.is_empty() {
            return Err(format!("{}: no CERTIFICATE block", files.ca.display()));
        }
        let mut roots = RootCertStore::empty();
        let mut cas = Vec::new();
        for c in &ca_certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("{}: not a CA certificate: {e}", files.ca.display()))?;
            cas.push(identity::facts(c).map_err(in_file(&files.ca))?);
        }
        let chain = certs(cert).map_err(in_file(&files.cert))?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{}: no CERTIFICATE block", files.cert.display()))?;
        let facts = identity::facts(leaf).map_err(in_file(&files.cert))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("{}: no private key: {e}", files.key.display()))?;
        let provider = provider();
        if !check {
            return Ok(Material {
                roots: Arc::new(roots),
                chain,
                key,
                facts,
                cas,
            });
        }
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| format!("{}: unusable key: {e}", files.key.display()))?;
        CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .map_err(|e| {
                format!(
                    "{} does not belong to {}: {e}",
                    files.key.display(),
                    files.cert.display()
                )
            })?;
        let roots = Arc::new(roots);
        // Every leaf raftlb uses may act as a client, so this one verifier checks the chain,
        // the validity period and the usage at once.
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| format!("{}: {e}", files.ca.display()))?
            .verify_client_cert(leaf, &chain[1..], UnixTime::now())
            .map_err(|e| {
                format!(
                    "{} (serial {}) does not verify against {}: {e}",
                    files.cert.display(),
                    facts.serial,
                    files.ca.display()
                )
            })?;
        Ok(Material {
            roots,
            chain,
            key,
            facts,
            cas,
        })
    }

    /// Reads and checks `files`.
    pub fn load(files: &Files) -> Result<Material, String> {
        Material::check(files, &files.read()?)
    }

    /// For a server that requires a client certificate signed by the bundle.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// For a client that presents this certificate and trusts the bundle.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::Role;
    use crate::tls::mint::{Ca, Minted, Validity};

    fn files() -> Files {
        Files {
            ca: "ca.crt".into(),
            cert: "x.crt".into(),
            key: "x.key".into(),
        }
    }

    fn bytes(ca: &Ca, leaf: &Minted) -> [Vec<u8>; 3] {
        [
            ca.cert_pem.clone().into_bytes(),
            leaf.cert_pem.clone().into_bytes(),
            leaf.key_pem.clone().into_bytes(),
        ]
    }

    #[test]
    fn material_checks_out_only_with_its_key_its_ca_and_in_its_time() {
        let ca = Ca::create("a", Validity::days(1)).unwrap();
        let leaf = ca.client("alice", Role::Admin, Validity::days(1)).unwrap();
        let m = Material::check(&files(), &bytes(&ca, &leaf)).unwrap();
        assert!(m.server_config().is_ok() && m.client_config().is_ok());

        let other = ca.client("bob", Role::Admin, Validity::days(1)).unwrap();
        let mut wrong_key = bytes(&ca, &leaf);
        wrong_key[2] = other.key_pem.into_bytes();
        let e = Material::check(&files(), &wrong_key).err().unwrap();
        assert!(e.contains("x.key does not belong to x.crt"), "{e}");

        let foreign = Ca::create("b", Validity::days(1)).unwrap();
        let mut wrong_ca = bytes(&ca, &leaf);
        wrong_ca[0] = foreign.cert_pem.clone().into_bytes();
        let e = Material::check(&files(), &wrong_ca).err().unwrap();
        assert!(e.contains("does not verify against ca.crt"), "{e}");

        let old = ca
            .client(
                "carol",
                Role::Admin,
                Validity::expired(std::time::Duration::from_secs(3600)),
            )
            .unwrap();
        let e = Material::check(&files(), &bytes(&ca, &old)).err().unwrap();
        assert!(e.contains("does not verify") && e.contains("xpired"), "{e}");

        // A bundle of the old and the new CA accepts leaves of either (CA rotation).
        let mut bundle = bytes(&ca, &leaf);
        bundle[0] = format!("{}{}", foreign.cert_pem, ca.cert_pem).into_bytes();
        let m = Material::check(&files(), &bundle).unwrap();
        assert_eq!(m.cas.len(), 2);
    }

    #[test]
    fn garbage_files_give_an_error_that_names_the_file() {
        let ca = Ca::create("a", Validity::days(1)).unwrap();
        let leaf = ca.client("alice", Role::Admin, Validity::days(1)).unwrap();
        for i in 0..3 {
            let mut b = bytes(&ca, &leaf);
            b[i] = b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n".to_vec();
            let e = Material::check(&files(), &b).err().unwrap();
            let name = ["ca.crt", "x.crt", "x.key"][i];
            assert!(e.contains(name), "{e}");
        }
    }
}
