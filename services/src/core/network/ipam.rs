//! Address leases for berth's own bridge networks, kept exactly as CNI's host-local plugin
//! keeps them — `<dir>/<network>/<ip>` holding `<id>\r\n<ifname>`, `last_reserved_ip.0`,
//! all under an flock of `<dir>/<network>/lock` — so the plugin and berth share one
//! network's leases (a container joined by an older berth keeps its address) and the state
//! stays what `berthd cleanup` and the tests already read.

use super::define::Subnet;
use crate::core::error::{Error, Result};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED: &str = "last_reserved_ip.0";

/// One network's leases, locked while held.
struct Store {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl Store {
    /// The network's directory and its lock are made if absent with host-local's own modes
    /// (0755 and 0750), so berth and the plugin leave the same files.
    fn open(data_dir: &Path, network: &str) -> Result<Store> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = data_dir.join(network);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o750)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own; it blocks this (pool) thread until ours.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                format!("lock {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Store { dir, _lock: lock })
    }

    /// The (ip, owner) of every lease.
    fn leases(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                let ip = e.file_name().to_str()?.parse().ok()?;
                let owner = std::fs::read_to_string(e.path()).ok()?;
                Some((ip, owner.trim().to_string()))
            })
            .collect()
    }
}

fn owner(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

/// Leases an address of `subnet` other than its gateway to `id`'s `ifname`, the one after
/// the last leased first (as host-local does, so an address just freed is not reused at once).
pub fn allocate(
    data_dir: &Path,
    network: &str,
    subnet: Subnet,
    gateway: Ipv4Addr,
    id: &str,
    ifname: &str,
) -> Result<Ipv4Addr> {
    let store = Store::open(data_dir, network)?;
    let first = u32::from(subnet.addr) + 1;
    let last = u32::from(subnet.addr) + (u32::MAX >> subnet.len) - 1;
    let after = std::fs::read_to_string(store.dir.join(LAST_RESERVED))
        .ok()
        .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|ip| (first..=last).contains(ip));
    let start = after.map_or(first, |ip| if ip >= last { first } else { ip + 1 });
    let candidates = (start..=last).chain(first..start).map(Ipv4Addr::from);
    for ip in candidates {
        // A leased address's file exists already: `create_new` below skips it, without
        // reading every lease first.
        if ip == gateway {
            continue;
        }
        let path = store.dir.join(ip.to_string());
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        match created {
            Ok(mut f) => {
                use std::io::Write;
                if let Err(e) = f.write_all(owner(id, ifname).as_bytes()) {
                    let _ = std::fs::remove_file(&path);
                    return Err(Error::io(format!("write {}", path.display()), e));
                }
                let last_path = store.dir.join(LAST_RESERVED);
                std::fs::write(&last_path, ip.to_string())
                    .map_err(|e| Error::io(format!("write {}", last_path.display()), e))?;
                return Ok(ip);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
        }
    }
    Err(Error::new(
        crate::core::error::Kind::ResourceExhausted,
        format!("network {network}: every address of {subnet} is leased"),
    ))
}

/// Gives back every lease of `id`'s `ifname` (or of `id` alone, as older host-local wrote
/// them); none is fine.
pub fn release(data_dir: &Path, network: &str, id: &str, ifname: &str) -> Result<()> {
    if !data_dir.join(network).exists() {
        return Ok(());
    }
    let store = Store::open(data_dir, network)?;
    let (full, old) = (owner(id, ifname), id.trim().to_string());
    for (ip, who) in store.leases() {
        if who == full || who == old {
            let p = store.dir.join(ip.to_string());
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", p.display()), e)),
            }
        }
    }
    Ok(())
}

/// Gives back `id`'s leases exactly as host-local's DEL does, for a CNI network whose
/// host-local DEL berth does in process: the network's directory and its lock made if absent
/// (as [`Store::open`] makes them, with the plugin's modes), every file under it whose trimmed contents are
/// `<id>\r\n<ifname>` removed, and only when none was, those holding `<id>` alone (an older
/// host-local's leases). A lease that cannot be read or removed is passed over, as the
/// plugin passes it over.
pub fn release_as_host_local(data_dir: &Path, network: &str, id: &str, ifname: &str) -> Result<()> {
    let store = Store::open(data_dir, network)?;
    if !remove_holding(&store.dir, &owner(id, ifname)) {
        remove_holding(&store.dir, id.trim());
    }
    Ok(())
}

/// Removes every file under `dir` (its subdirectories too) whose trimmed contents are
/// `owner`; whether one was removed.
fn remove_holding(dir: &Path, owner: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut found = false;
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found |= remove_holding(&path, owner);
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        if String::from_utf8_lossy(&text).trim() == owner && std::fs::remove_file(&path).is_ok() {
            found = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_follow_host_locals_layout() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = Subnet::parse("10.9.0.0/29").unwrap();
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let a = allocate(dir.path(), "n", subnet, gw, "ns-a-tag", "eth0").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        let text = std::fs::read_to_string(dir.path().join("n/10.9.0.2")).unwrap();
        assert_eq!(text, "ns-a-tag\r\neth0");
        let last = std::fs::read_to_string(dir.path().join("n/last_reserved_ip.0")).unwrap();
        assert_eq!(last, "10.9.0.2");
        let b = allocate(dir.path(), "n", subnet, gw, "ns-b-tag", "eth0").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        // A freed address is not the next one handed out.
        release(dir.path(), "n", "ns-a-tag", "eth0").unwrap();
        assert!(!dir.path().join("n/10.9.0.2").exists());
        let c = allocate(dir.path(), "n", subnet, gw, "ns-c-tag", "eth0").unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 9, 0, 4));
        // .2 to .6 are the hosts of a /29; .1 is the gateway. Past the end it wraps.
        for want in [5, 6, 2] {
            let ip = allocate(dir.path(), "n", subnet, gw, &format!("x{want}"), "eth0").unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 9, 0, want));
        }
        let e = allocate(dir.path(), "n", subnet, gw, "full", "eth0").unwrap_err();
        assert_eq!(e.kind(), crate::core::error::Kind::ResourceExhausted);
        // A lease written by an older host-local (the id alone) is released too.
        std::fs::write(dir.path().join("n/10.9.0.6"), "old-id").unwrap();
        release(dir.path(), "n", "old-id", "eth0").unwrap();
        assert!(!dir.path().join("n/10.9.0.6").exists());
        release(dir.path(), "absent", "x", "eth0").unwrap();
    }

    #[test]
    fn host_local_release_takes_the_old_format_only_when_the_new_is_absent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let n = dir.path().join("n");
        std::fs::create_dir(&n).unwrap();
        std::fs::write(n.join("10.9.0.2"), "pod-a\r\neth0").unwrap();
        std::fs::write(n.join("10.9.0.3"), "pod-a").unwrap();
        std::fs::write(n.join("10.9.0.4"), "pod-a\r\neth1").unwrap();
        std::fs::write(n.join("last_reserved_ip.0"), "10.9.0.4").unwrap();
        release_as_host_local(dir.path(), "n", "pod-a", "eth0").unwrap();
        assert!(!n.join("10.9.0.2").exists());
        assert!(
            n.join("10.9.0.3").exists(),
            "the id-only lease stays when a full one matched"
        );
        assert!(
            n.join("10.9.0.4").exists(),
            "another interface's lease stays"
        );
        assert!(n.join("last_reserved_ip.0").exists() && n.join("lock").exists());
        release_as_host_local(dir.path(), "n", "pod-a", "eth0").unwrap();
        assert!(
            !n.join("10.9.0.3").exists(),
            "with no full match the id-only lease goes"
        );
        // An absent network gets its directory and lock, as the plugin makes them.
        release_as_host_local(dir.path(), "fresh", "pod-b", "eth0").unwrap();
        let lock = std::fs::metadata(dir.path().join("fresh/lock")).unwrap();
        assert_eq!(lock.permissions().mode() & 0o777, 0o750 & !umask());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("fresh"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1);
    }

    fn umask() -> u32 {
        // SAFETY: umask has no preconditions; the old mask is set back at once.
        unsafe {
            let old = libc::umask(0o022);
            libc::umask(old);
            old
        }
    }
}
