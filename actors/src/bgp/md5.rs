//! TCP-MD5 signatures (RFC 2385) on a BGP socket: the `TCP_MD5SIG` socket option. No safe
//! wrapper exists (socket2 and nix lack it, and the libc crate lacks `struct tcp_md5sig`), so
//! this module is the crate's only unsafe code: one `setsockopt` on a descriptor the caller
//! owns, with a `#[repr(C)]` copy of the kernel's struct whose size goes alongside.
#![allow(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG_MAXKEYLEN` in linux/tcp.h.
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` (linux/tcp.h): the peer's address, flags, prefix length, key length,
/// interface index and the key.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

/// Sets (or, with an empty `key`, removes) the TCP-MD5 key for connections with `peer` on
/// `socket`: before `connect` on a dialling socket, on the listening socket for accepted
/// ones. On an IPv6 socket an IPv4 peer is given as IPv4-mapped, as the kernel expects.
pub fn set_key(
    socket: &impl AsRawFd,
    socket_is_v6: bool,
    peer: IpAddr,
    key: &[u8],
) -> std::io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("TCP-MD5 keys are at most {MAX_KEY_LEN} bytes"),
        ));
    }
    let peer = match (socket_is_v6, peer) {
        (true, IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
        (_, p) => p,
    };
    let addr = socket2::SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let len = (addr.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `addr.as_ptr()` points to `addr.len()` initialised bytes of a sockaddr, and the
    // destination is a sockaddr_storage, at least as large; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr() as *const u8,
            &mut sig.addr as *mut libc::sockaddr_storage as *mut u8,
            len,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `socket`),
    // and the option value is a live `TcpMd5Sig` whose exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernels_layout() {
        // 128 (address) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, keylen), 130);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, key), 136);
    }

    #[test]
    fn the_kernel_takes_a_key_and_its_removal_and_refuses_a_long_one() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_key(&v4, false, "127.0.0.2".parse().unwrap(), b"s3cret").unwrap();
        set_key(&v4, false, "127.0.0.2".parse().unwrap(), b"").unwrap();
        let v6 = std::net::TcpListener::bind("[::]:0").unwrap();
        set_key(&v6, true, "127.0.0.2".parse().unwrap(), b"s3cret").unwrap();
        set_key(&v6, true, "fd00::1".parse().unwrap(), b"s3cret").unwrap();
        assert!(set_key(&v4, false, "127.0.0.2".parse().unwrap(), &[b'x'; 81]).is_err());
    }
}
