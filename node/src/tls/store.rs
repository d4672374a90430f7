//! Certificate files as `raftlb cert` and `raftlb up` lay them out (CockroachDB's shape):
//! `ca.crt`/`ca.key`, `node.crt`/`node.key`, `client.USER.crt`/`client.USER.key`. Keys are
//! written mode 0600; nothing is overwritten unless asked.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::identity::Role;
use super::mint::{Ca, Minted, Validity};

fn write(path: &Path, text: &str, mode: u32, overwrite: bool) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(mode);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{} exists (--overwrite replaces it)", path.display())
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `dir/ca.crt` and `dir/ca.key`.
pub fn write_ca(dir: &Path, ca: &Ca, overwrite: bool) -> Result<(), String> {
    create_dir(dir)?;
    write(&dir.join("ca.key"), &ca.key_pem(), 0o600, overwrite)?;
    write(&dir.join("ca.crt"), &ca.cert_pem, 0o644, overwrite)
}

/// The CA in `dir` (`ca.crt`, `ca.key`).
pub fn read_ca(dir: &Path) -> Result<Ca, String> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    Ca::load(&read("ca.crt")?, &read("ca.key")?).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `dir/NAME.crt` and `dir/NAME.key`, and `dir/ca.crt` if `dir` has none.
pub fn write_leaf(
    dir: &Path,
    name: &str,
    leaf: &Minted,
    ca: &Ca,
    overwrite: bool,
) -> Result<(), String> {
    create_dir(dir)?;
    write(
        &dir.join(format!("{name}.key")),
        &leaf.key_pem,
        0o600,
        overwrite,
    )?;
    write(
        &dir.join(format!("{name}.crt")),
        &leaf.cert_pem,
        0o644,
        overwrite,
    )?;
    if !dir.join("ca.crt").exists() {
        write(&dir.join("ca.crt"), &ca.cert_pem, 0o644, false)?;
    }
    Ok(())
}

/// A node of a cluster minted in one go: its Raft id, the directory its `node.crt` goes to, and
/// the address its peers dial (a loopback address also gets the name `localhost`).
pub struct NodeFiles {
    pub id: u64,
    pub dir: PathBuf,
    pub ip: IpAddr,
}

/// A whole cluster's certificates, as `raftlb up` and the test labs run it: the CA in `dir`
/// (made if missing, else reused), `client.admin` beside it, and `node` in each node's
/// directory. Files already there are kept, so a restart mints only what is missing.
pub fn mint_cluster(
    dir: &Path,
    ca_name: &str,
    cluster: &str,
    validity: (Validity, Validity),
    nodes: &[NodeFiles],
) -> Result<(), String> {
    let (ca_validity, leaf_validity) = validity;
    let ca = if dir.join("ca.crt").exists() {
        read_ca(dir)?
    } else {
        let ca = Ca::create(ca_name, ca_validity)?;
        write_ca(dir, &ca, false)?;
        ca
    };
    if !dir.join("client.admin.crt").exists() {
        let admin = ca.client("admin", Role::Admin, leaf_validity)?;
        write_leaf(dir, "client.admin", &admin, &ca, false)?;
    }
    for n in nodes {
        if n.dir.join("node.crt").exists() {
            continue;
        }
        let dns = if n.ip.is_loopback() {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let leaf = ca.node(cluster, n.id, &dns, &[n.ip], leaf_validity)?;
        write_leaf(&n.dir, "node", &leaf, &ca, false)?;
    }
    Ok(())
}
