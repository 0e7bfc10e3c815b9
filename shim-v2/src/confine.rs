//! What the native runtime adds around libcontainer so a container isolates exactly as under
//! runc, for its init and for every exec. Each gap was found by running the same spec on both
//! runtimes and comparing what the processes see (`tests/tests/isolation.rs`):
//!
//! - libcontainer mounts cgroup v1 hierarchies read-write whatever the spec says, and binds
//!   a hierarchy it does not manage (`name=systemd`) at the creator's own cgroup — the host's
//!   root. The creating helper joins the container's cgroup in those named hierarchies first
//!   (its children inherit it, as runc places its init in every hierarchy), and the cgroup
//!   mount is made read-only once the container exists.
//! - A new network namespace has its loopback down; runc brings it up.
//! - An exec gets neither the container's seccomp filter nor (see `main.rs`) its user
//!   namespace. The shim takes the profile out of the spec libcontainer reads
//!   ([`take_seccomp`]) and [`Confined`] installs it, compiled once ([`crate::filter`]),
//!   just before the container's program runs, for the init and for every exec.

use crate::filter::{self, Filter};
use libcontainer::oci_spec::runtime::{LinuxCapabilities, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What a native create must do beyond libcontainer, read from the bundle's spec.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The spec's cgroup path when it is a cgroupfs one (`/a/b`), for the named hierarchies.
    pub cgroups_path: Option<String>,
    /// The container gets a new network namespace (whose loopback must come up).
    pub new_netns: bool,
    /// Where the spec mounts the cgroup filesystem read-only, and its other flags.
    pub readonly_cgroup: Option<(String, MountFlags)>,
    /// Where the spec mounts sysfs read-only in a new network namespace (runc makes that
    /// sysfs read-only as a whole, libcontainer only its mount).
    pub readonly_sysfs: Option<String>,
    /// `linux.readonlyPaths`: runc keeps each one's nosuid/nodev/noexec as its parent
    /// mount has them; libcontainer adds all three.
    pub readonly_paths: Vec<String>,
}

/// The per-mount flags runc carries over from a spec's options.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MountFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl MountFlags {
    fn of_options<'a>(options: impl Iterator<Item = &'a str>) -> MountFlags {
        let mut f = MountFlags::default();
        for o in options {
            match o {
                "nosuid" => f.nosuid = true,
                "nodev" => f.nodev = true,
                "noexec" => f.noexec = true,
                _ => {}
            }
        }
        f
    }

    /// As `mount_setattr` attributes: those to set, and those to clear.
    fn attrs(self) -> (u64, u64) {
        let mut set = 0;
        let mut clear = 0;
        for (on, attr) in [
            (self.nosuid, libc::MOUNT_ATTR_NOSUID),
            (self.nodev, libc::MOUNT_ATTR_NODEV),
            (self.noexec, libc::MOUNT_ATTR_NOEXEC),
        ] {
            if on {
                set |= attr;
            } else {
                clear |= attr;
            }
        }
        (set, clear)
    }
}

impl Plan {
    /// Reads the plan from a parsed spec.
    pub fn of(spec: &serde_json::Value) -> Plan {
        let linux = &spec["linux"];
        let cgroups_path = linux["cgroupsPath"]
            .as_str()
            .and_then(cgroupfs_path)
            .map(str::to_string);
        let new_netns = linux["namespaces"].as_array().is_some_and(|nss| {
            nss.iter().any(|ns| {
                ns["type"] == "network" && ns["path"].as_str().is_none_or(|p| p.is_empty())
            })
        });
        let readonly_mount = |kind: &str| {
            spec["mounts"].as_array().and_then(|ms| {
                ms.iter().find_map(|m| {
                    let options: Vec<&str> = m["options"]
                        .as_array()
                        .map(|o| o.iter().filter_map(|o| o.as_str()).collect())
                        .unwrap_or_default();
                    (m["type"] == kind && options.contains(&"ro")).then(|| {
                        let dest = m["destination"].as_str().unwrap_or_default().to_string();
                        (dest, MountFlags::of_options(options.into_iter()))
                    })
                })
            })
        };
        let readonly_paths = linux["readonlyPaths"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Plan {
            cgroups_path,
            new_netns,
            readonly_cgroup: readonly_mount("cgroup"),
            readonly_sysfs: readonly_mount("sysfs")
                .filter(|_| new_netns)
                .map(|(d, _)| d),
            readonly_paths,
        }
    }
}

/// A cgroup path the shim may place processes under itself: a cgroupfs one (`/a/b`) that
/// stays below each hierarchy's root.
pub fn cgroupfs_path(path: &str) -> Option<&str> {
    (path.starts_with('/') && !path.split('/').any(|c| c == "..")).then_some(path)
}

/// The cgroup hierarchies libcontainer's manager leaves alone: the named v1 ones
/// (`name=systemd`) and, on a hybrid host, the v2 one beside them (`/sys/fs/cgroup/unified`).
/// runc places a container in each.
fn unmanaged_hierarchies() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    info.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut tail = after.split(' ');
            let fstype = tail.next()?;
            let super_opts = tail.nth(1)?;
            let point = before.split(' ').nth(4)?;
            let named = fstype == "cgroup" && super_opts.split(',').any(|o| o.starts_with("name="));
            let hybrid = fstype == "cgroup2";
            ((named || hybrid) && point.starts_with("/sys/fs/cgroup/"))
                .then(|| PathBuf::from(point))
        })
        .collect()
}

/// Moves the calling process into `cgroups_path` in every hierarchy libcontainer leaves
/// alone (made if missing), so the container's processes, forked from it, are there too.
pub fn join_unmanaged_cgroups(cgroups_path: &str) -> Result<(), String> {
    let rel = cgroups_path.trim_start_matches('/');
    for root in unmanaged_hierarchies() {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| format!("make {}: {e}", dir.display()))?;
        std::fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| format!("join {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Undoes [`join_unmanaged_cgroups`] for a create that failed: the calling process moves back
/// to each hierarchy's root and the container's cgroup, empty now, is removed (a failed
/// create has no delete to remove it later).
pub fn leave_unmanaged_cgroups(cgroups_path: &str) {
    for root in unmanaged_hierarchies() {
        let _ = std::fs::write(root.join("cgroup.procs"), "0");
    }
    remove_unmanaged_cgroups(cgroups_path);
}

/// Removes the container's (empty) cgroup from the hierarchies libcontainer leaves alone.
pub fn remove_unmanaged_cgroups(cgroups_path: &str) {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for root in unmanaged_hierarchies() {
        let _ = std::fs::remove_dir(root.join(rel));
    }
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Enters namespace `kind` (`net`, `mnt`) of process `pid`.
fn enter(pid: i32, kind: &str, flag: i32) -> Result<(), String> {
    let path = format!("/proc/{pid}/ns/{kind}");
    let ns = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    // SAFETY: setns on a descriptor we own; the caller is a single-threaded helper.
    if unsafe { libc::setns(ns.as_raw_fd(), flag) } != 0 {
        return Err(errno(&format!("enter {path}")));
    }
    Ok(())
}

/// The part of `struct ifreq` that SIOC[GS]IFFLAGS use, padded to the kernel's size.
#[repr(C)]
struct IfFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings up `lo` in the current network namespace.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain socket call; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno("socket"));
    }
    // SAFETY: fd was just returned by socket and is owned here alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: both ioctls read and write an ifreq-sized struct we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(errno("read lo's flags"));
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(errno("bring lo up"));
        }
    }
    Ok(())
}

/// `mount_setattr(dest, attrs)`, without following a symlink at `dest`.
fn set_attrs(dest: &str, recursive: bool, set: u64, clear: u64) -> Result<(), String> {
    let path = CString::new(dest).map_err(|_| format!("bad mount destination {dest:?}"))?;
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_SYMLINK_NOFOLLOW | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr with a NUL-terminated path and a mount_attr of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        return Err(errno(&format!("set the flags of {dest}")));
    }
    Ok(())
}

/// The cgroup mount as runc leaves it: every hierarchy read-only with the spec's flags; on
/// a v1 host the tmpfs holding them stays a writable mount whose root is mode 0555 (runc
/// makes only the hierarchies read-only), on a v2 host the one cgroup2 mount is read-only.
fn readonly_cgroup(dest: &str, flags: MountFlags) -> Result<(), String> {
    let (set, clear) = flags.attrs();
    set_attrs(dest, true, set | libc::MOUNT_ATTR_RDONLY, clear)?;
    let path = CString::new(dest).map_err(|_| format!("bad mount destination {dest:?}"))?;
    // SAFETY: statfs is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs into a struct we own, with a NUL-terminated path.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(errno(&format!("statfs {dest}")));
    }
    if st.f_type == libc::TMPFS_MAGIC {
        set_attrs(dest, false, 0, libc::MOUNT_ATTR_RDONLY)?;
        // runc's stand-in for read-only there: nothing can be made beside the hierarchies.
        // SAFETY: chmod of a NUL-terminated path (a mount point: no symlink to follow).
        if unsafe { libc::chmod(path.as_ptr(), 0o555) } != 0 {
            return Err(errno(&format!("chmod {dest}")));
        }
    }
    Ok(())
}

/// Makes sysfs at `dest` read-only as a filesystem (its own, in a new network namespace).
fn readonly_sysfs(dest: &str) -> Result<(), String> {
    let path = CString::new(dest).map_err(|_| format!("bad mount destination {dest:?}"))?;
    let flags =
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: a remount of a path we name, with no source, type or data.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(errno(&format!("make sysfs at {dest} read-only")));
    }
    Ok(())
}

/// One line of a mountinfo: its id, its parent's, its mount point and per-mount options.
struct MountLine {
    id: u64,
    parent: u64,
    point: String,
    options: String,
}

fn mount_lines(pid: i32) -> Result<Vec<MountLine>, String> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(MountLine {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                point: f.get(4)?.replace("\\040", " "),
                options: f.get(5)?.to_string(),
            })
        })
        .collect())
}

/// The read-only paths' nosuid/nodev/noexec as runc leaves them: as the mount each was
/// bound from (its parent) has them.
fn readonly_paths_as_runc(paths: &[String], mounts: &[MountLine]) -> Result<(), String> {
    for p in paths {
        let Some(m) = mounts.iter().rev().find(|m| &m.point == p) else {
            continue;
        };
        let Some(parent) = mounts.iter().rev().find(|x| x.id == m.parent) else {
            continue;
        };
        let flags = MountFlags::of_options(parent.options.split(','));
        let (set, clear) = flags.attrs();
        set_attrs(p, false, set | libc::MOUNT_ATTR_RDONLY, clear)?;
    }
    Ok(())
}

/// Finishes a container libcontainer has created (its init waits to be started): loopback
/// up in a new network namespace, the cgroup mount read-only. Runs in the forked helper,
/// which it moves into the container's namespaces: the helper ends right after.
pub fn after_create(plan: &Plan, init: i32) -> Result<(), String> {
    if plan.new_netns {
        enter(init, "net", libc::CLONE_NEWNET)?;
        loopback_up()?;
    }
    if plan.readonly_cgroup.is_none()
        && plan.readonly_sysfs.is_none()
        && plan.readonly_paths.is_empty()
    {
        return Ok(());
    }
    // Read from the host's /proc: inside, the container's own procfs does not show us.
    let mounts = mount_lines(init)?;
    enter(init, "mnt", libc::CLONE_NEWNS)?;
    if let Some((dest, flags)) = &plan.readonly_cgroup {
        readonly_cgroup(dest, *flags)?;
    }
    if let Some(dest) = &plan.readonly_sysfs {
        readonly_sysfs(dest)?;
    }
    readonly_paths_as_runc(&plan.readonly_paths, &mounts)
}

/// The program a container process runs (its init or an exec), started as runc starts it:
/// the container's seccomp filter in place before the program gets control.
///
/// Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which the process may
/// not keep: then libcontainer is handed the process with CAP_SYS_ADMIN and CAP_SETPCAP
/// added ([`elevate`]), and the executor drops to the process's own capabilities after the
/// filter, as runc does (filter first, then capabilities).
#[derive(Clone)]
pub struct Confined {
    pub filter: Filter,
    /// The process's own capabilities, to drop to after the filter (when elevated).
    pub drop_to: Option<LinuxCapabilities>,
}

impl Executor for Confined {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        filter::install(&self.filter).map_err(ExecutorError::Other)?;
        if let Some(caps) = &self.drop_to {
            let syscall = libcontainer::syscall::syscall::create_syscall();
            libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
                .map_err(|e| ExecutorError::Other(format!("drop capabilities: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Where a bundle keeps the seccomp profile taken out of its spec, and the init's own
/// capabilities when they were elevated for it.
const SECCOMP_FILE: &str = "berth-seccomp.json";

/// Takes `linux.seccomp` out of the spec libcontainer will read (the shim installs the
/// filter itself) into the bundle's side file; without no_new_privs the init's
/// capabilities are elevated in the spec and its own kept beside the profile. Returns
/// whether the spec changed.
pub fn take_seccomp(spec: &mut serde_json::Value, bundle: &Path) -> Result<bool, String> {
    let Some(profile) = spec
        .pointer_mut("/linux")
        .and_then(|l| l.as_object_mut())
        .and_then(|l| l.remove("seccomp"))
    else {
        return Ok(false);
    };
    let nnp = spec.pointer("/process/noNewPrivileges") == Some(&serde_json::Value::Bool(true));
    let mut drop_to = serde_json::Value::Null;
    if let (false, Some(caps)) = (nnp, spec.pointer_mut("/process/capabilities")) {
        let own: LinuxCapabilities = serde_json::from_value(caps.clone())
            .map_err(|e| format!("the spec's capabilities: {e}"))?;
        let (high, plain) = elevate(&own);
        *caps = serde_json::to_value(high).map_err(|e| e.to_string())?;
        drop_to = serde_json::to_value(plain).map_err(|e| e.to_string())?;
    }
    let side = serde_json::json!({"profile": profile, "dropTo": drop_to});
    std::fs::write(bundle.join(SECCOMP_FILE), side.to_string())
        .map_err(|e| format!("write {SECCOMP_FILE}: {e}"))?;
    Ok(true)
}

fn side_file(bundle: &Path) -> Result<Option<serde_json::Value>, String> {
    match std::fs::read(bundle.join(SECCOMP_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("parse {SECCOMP_FILE}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {SECCOMP_FILE}: {e}")),
    }
}

/// The init's confinement: the bundle's profile, compiled (or from `cache`), and the
/// capabilities to drop to. None when the container has no seccomp profile.
pub fn for_init(bundle: &Path, cache: &Path) -> Result<Option<Confined>, String> {
    let Some(side) = side_file(bundle)? else {
        return Ok(None);
    };
    let drop_to = match &side["dropTo"] {
        serde_json::Value::Null => None,
        v => Some(serde_json::from_value(v.clone()).map_err(|e| e.to_string())?),
    };
    Ok(Some(Confined {
        filter: filter::cached(cache, &side["profile"])?,
        drop_to,
    }))
}

/// The capabilities an elevated exec is handed to libcontainer with: its own plus
/// CAP_SYS_ADMIN (to install the filter) and CAP_SETPCAP (to drop from the bounding set);
/// and, returned, its own with every absent set made empty (an absent set would otherwise
/// keep the elevated one).
pub fn elevate(own: &LinuxCapabilities) -> (LinuxCapabilities, LinuxCapabilities) {
    use libcontainer::oci_spec::runtime::Capability;
    let set =
        |s: &Option<libcontainer::oci_spec::runtime::Capabilities>| s.clone().unwrap_or_default();
    let mut plain = own.clone();
    plain
        .set_bounding(Some(set(own.bounding())))
        .set_effective(Some(set(own.effective())))
        .set_permitted(Some(set(own.permitted())))
        .set_inheritable(Some(set(own.inheritable())))
        .set_ambient(Some(set(own.ambient())));
    let add = |s: &Option<libcontainer::oci_spec::runtime::Capabilities>| {
        let mut s = set(s);
        s.insert(Capability::SysAdmin);
        s.insert(Capability::Setpcap);
        Some(s)
    };
    let mut high = plain.clone();
    high.set_bounding(add(plain.bounding()))
        .set_effective(add(plain.effective()))
        .set_permitted(add(plain.permitted()));
    (high, plain)
}

/// The exec's confinement, from the container's profile (in its bundle) and the exec's
/// process file, which is rewritten with elevated capabilities when the filter needs them.
/// None when the container has no seccomp profile.
pub fn for_exec(bundle: &Path, process: &Path, cache: &Path) -> Result<Option<Confined>, String> {
    let Some(side) = side_file(bundle)? else {
        return Ok(None);
    };
    let filter = filter::cached(cache, &side["profile"])?;
    let text = std::fs::read(process).map_err(|e| format!("read {}: {e}", process.display()))?;
    let mut proc: libcontainer::oci_spec::runtime::Process =
        serde_json::from_slice(&text).map_err(|e| format!("parse {}: {e}", process.display()))?;
    // With no_new_privs the filter needs no privilege; a process with no capability sets
    // keeps all of root's (under runc too), CAP_SYS_ADMIN included.
    let Some(own) = proc
        .capabilities()
        .as_ref()
        .filter(|_| proc.no_new_privileges() != Some(true))
    else {
        return Ok(Some(Confined {
            filter,
            drop_to: None,
        }));
    };
    let (high, plain) = elevate(own);
    proc.set_capabilities(Some(high));
    let out = serde_json::to_vec(&proc).map_err(|e| format!("write the process: {e}"))?;
    std::fs::write(process, out).map_err(|e| format!("write {}: {e}", process.display()))?;
    Ok(Some(Confined {
        filter,
        drop_to: Some(plain),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::Capability;

    #[test]
    fn the_plan_reads_what_runc_would_do() {
        let spec = serde_json::json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "options": ["ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup",
                 "options": ["nosuid", "ro"]}
            ],
            "linux": {
                "cgroupsPath": "/berth/default/c1",
                "namespaces": [{"type": "pid"}, {"type": "network"}]
            }
        });
        assert_eq!(
            Plan::of(&spec),
            Plan {
                cgroups_path: Some("/berth/default/c1".into()),
                new_netns: true,
                readonly_cgroup: Some((
                    "/sys/fs/cgroup".into(),
                    MountFlags {
                        nosuid: true,
                        ..MountFlags::default()
                    }
                )),
                readonly_sysfs: None,
                readonly_paths: vec![],
            }
        );
        let joined = serde_json::json!({
            "mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup", "options": ["rw"]}],
            "linux": {
                "cgroupsPath": "system.slice:berth:c1",
                "namespaces": [{"type": "network", "path": "/proc/1/ns/net"}]
            }
        });
        assert_eq!(Plan::of(&joined), Plan::default());
        let escaping = serde_json::json!({"linux": {"cgroupsPath": "/a/../../b"}});
        assert_eq!(Plan::of(&escaping).cgroups_path, None);
    }

    #[test]
    fn the_profile_leaves_the_spec_and_the_init_is_elevated_without_no_new_privs() {
        let d = tempfile::tempdir().unwrap();
        let profile = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"});
        let caps = serde_json::json!({"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
            "permitted": ["CAP_CHOWN"]});
        let mut spec = serde_json::json!({"process": {"noNewPrivileges": false,
            "capabilities": caps}, "linux": {"seccomp": profile}});
        assert!(take_seccomp(&mut spec, d.path()).unwrap());
        assert!(spec["linux"].get("seccomp").is_none());
        let eff = spec["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(eff.iter().any(|c| c == "CAP_SYS_ADMIN"));
        let init = for_init(d.path(), &d.path().join("cache"))
            .unwrap()
            .unwrap();
        let drop_to = init.drop_to.unwrap();
        assert_eq!(drop_to.effective().as_ref().unwrap().len(), 1);
        // With no_new_privs nothing is elevated; without a profile nothing is taken.
        let mut spec = serde_json::json!({"process": {"noNewPrivileges": true,
            "capabilities": caps}, "linux": {"seccomp": profile}});
        assert!(take_seccomp(&mut spec, d.path()).unwrap());
        assert_eq!(spec["process"]["capabilities"], caps);
        assert!(for_init(d.path(), &d.path().join("cache"))
            .unwrap()
            .unwrap()
            .drop_to
            .is_none());
        let mut plain = serde_json::json!({"process": {}});
        assert!(!take_seccomp(&mut plain, d.path()).unwrap());
        assert_eq!(plain, serde_json::json!({"process": {}}));
    }

    #[test]
    fn elevation_adds_two_capabilities_and_fills_absent_sets() {
        let mut own = LinuxCapabilities::default();
        let chown: libcontainer::oci_spec::runtime::Capabilities =
            [Capability::Chown].into_iter().collect();
        own.set_bounding(Some(chown.clone()))
            .set_effective(Some(chown.clone()))
            .set_permitted(Some(chown.clone()))
            .set_inheritable(None)
            .set_ambient(None);
        let (high, plain) = elevate(&own);
        for s in [high.bounding(), high.effective(), high.permitted()] {
            let s = s.as_ref().unwrap();
            assert!(s.contains(&Capability::SysAdmin) && s.contains(&Capability::Setpcap));
            assert!(s.contains(&Capability::Chown));
        }
        assert_eq!(plain.bounding().as_ref(), Some(&chown));
        assert_eq!(plain.effective().as_ref(), Some(&chown));
        assert!(plain.inheritable().as_ref().unwrap().is_empty());
        assert!(plain.ambient().as_ref().unwrap().is_empty());
    }
}
