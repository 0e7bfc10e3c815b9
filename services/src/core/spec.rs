//! The OCI runtime spec a production engine gives a container by default, with an image's
//! config (entrypoint, command, environment, working directory, user) applied on top.

use crate::core::error::{Error, Result};
use crate::core::seccomp;
use berth_snapshotters::layer::root::Root;
use berth_snapshotters::mount::TempMount;
use berth_snapshotters::view::{self, Found};
use berth_snapshotters::Mount;
use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;

/// containerd's type URL for a runtime spec inside an `Any`.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The capabilities a container gets unless told otherwise.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by name; its number is its place in the list (linux/capability.h).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities this process's bounding set holds, which are all a container it starts
/// can have (e.g. no CAP_SYS_RESOURCE when berth itself runs inside a container); all of
/// them when the set cannot be read. Read once: a bounding set only ever shrinks, and berth
/// never drops from it.
pub fn bounded_caps() -> Vec<String> {
    static BOUNDED: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let bounding = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX);
        ALL_CAPS
            .iter()
            .enumerate()
            .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
            .map(|(_, n)| n.to_string())
            .collect()
    });
    BOUNDED.clone()
}

/// Paths hidden from an unprivileged container.
pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Paths an unprivileged container sees read-only.
pub const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the caller decided about the container, on top of the image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub id: String,
    pub namespace: String,
    /// Replaces the image's Cmd (the entrypoint stays).
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub terminal: bool,
    pub memory: Option<i64>,
    /// CPUs, as a fraction (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    pub host_network: bool,
    /// (source, destination, options) bind mounts.
    pub binds: Vec<(String, String, Vec<String>)>,
    /// The seccomp filter, rendered for the container's capabilities.
    pub seccomp: seccomp::Profile,
}

/// A JSON array of strings (an image config's Cmd, Env, ...); anything else is empty.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The image config's environment, with a default PATH when it sets none.
pub fn image_env(image_config: &Value) -> Vec<String> {
    let mut env = strings(&image_config["config"]["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    env
}

/// The kernel filesystems every container gets (`/dev/shm` aside: where it comes from
/// differs); privileged ones see /sys and cgroups read-write.
pub fn base_mounts(privileged: bool) -> Vec<Value> {
    let rw = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", rw]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": [rw, "nosuid", "noexec", "nodev"]}),
    ]
}

/// The process arguments: the image's Entrypoint then Cmd, or the caller's args for Cmd.
pub fn args(image_config: &Value, given: &[String]) -> Vec<String> {
    let cfg = &image_config["config"];
    let mut out = strings(&cfg["Entrypoint"]);
    if given.is_empty() {
        out.extend(strings(&cfg["Cmd"]));
    } else {
        out.extend(given.iter().cloned());
    }
    out
}

/// The image's environment with the options' variables over it (and TERM for a terminal).
fn process_env(image_config: &Value, o: &Options) -> Vec<String> {
    let mut env = image_env(image_config);
    for e in &o.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if o.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    env
}

/// The base mounts, /dev/shm, the host's resolver files on the host network, and binds.
fn container_mounts(o: &Options) -> Vec<Value> {
    let mut mounts = base_mounts(false);
    mounts.insert(
        3,
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    );
    if o.host_network {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            mounts.push(
                json!({"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]}),
            );
        }
    }
    for (src, dst, opts) in &o.binds {
        let mut options = opts.clone();
        if !options.iter().any(|x| x == "bind" || x == "rbind") {
            options.push("rbind".into());
        }
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": options}));
    }
    mounts
}

/// The cgroup limits: no devices, and the memory, CPU and pids limits asked for.
fn resources(o: &Options) -> Value {
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(m) = o.memory {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(c) = o.cpus {
        resources["cpu"] = json!({"quota": (c * 100_000.0) as i64, "period": 100_000u64});
    }
    if let Some(p) = o.pids {
        resources["pids"] = json!({"limit": p});
    }
    resources
}

pub fn build(image_config: &Value, o: &Options) -> Value {
    let cfg = &image_config["config"];
    let env = process_env(image_config, o);
    let cwd = o
        .cwd
        .clone()
        .or_else(|| {
            cfg["WorkingDir"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "/".into());
    let mut gids = vec![o.gid];
    for g in &o.additional_gids {
        if !gids.contains(g) {
            gids.push(*g);
        }
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !o.host_network {
        namespaces.push(json!({"type": "network"}));
    }
    let mounts = container_mounts(o);
    let resources = resources(o);
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": o.terminal,
            "user": {"uid": o.uid, "gid": o.gid, "additionalGids": gids},
            "args": args(image_config, &o.args),
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024u64, "soft": 1024u64}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": o.id,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/berth/{}/{}", o.namespace, o.id),
            "namespaces": namespaces,
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
        },
    });
    if let Some(filter) = o.seccomp.render(&caps) {
        spec["linux"]["seccomp"] = filter;
    }
    spec
}

/// Parses sizes like 512, 64k, 256m, 2g (powers of 1024).
pub fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last()? {
        'k' => (&s[..s.trim_end_matches('b').len() - 1], 1i64 << 10),
        'm' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 20),
        'g' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (s.trim_end_matches('b'), 1),
    };
    let n: f64 = num.parse().ok()?;
    (n > 0.0).then_some((n * mult as f64) as i64)
}

/// The most read of /etc/passwd or /etc/group.
const ACCOUNTS_LIMIT: u64 = 4 << 20;

/// Reads a regular file inside the rootfs, resolved by the kernel within it. Anything else
/// there reads as nothing: an image's FIFO at the name would block the open and the read,
/// and a device would be read from.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    let r = Root::open(root).ok()?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let file = std::fs::File::from(r.open_in(Path::new(rel), flags).ok()?);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    file.take(ACCOUNTS_LIMIT).read_to_string(&mut s).ok()?;
    Some(s)
}

/// A file read from a snapshot's directories as [`read_in_root`] reads it in the mounted
/// rootfs: absent, unreadable or not UTF-8 is empty.
fn found_text(found: Found) -> String {
    match found {
        Found::Contents(bytes) => String::from_utf8(bytes).unwrap_or_default(),
        Found::Nothing => String::new(),
    }
}

/// [`resolve_user`] in the rootfs `mounts` stand for: /etc/passwd and /etc/group read straight
/// from the snapshot's directories when they can be read exactly so (berth's overlay and bind
/// shapes), else from the rootfs mounted for the purpose.
pub fn resolve_user_in_mounts(mounts: &[Mount], user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let read = |rel: &str| view::read_file(mounts, Path::new(rel), ACCOUNTS_LIMIT);
    if let Some((passwd, group)) = read("etc/passwd").and_then(|p| Some((p, read("etc/group")?))) {
        return resolve_user_from(&found_text(passwd), &found_text(group), user);
    }
    let mounted = TempMount::new(mounts)?;
    resolve_user(mounted.path(), user)
}

fn parse_id(s: &str, what: &str) -> Result<u32> {
    let n: u64 = s
        .parse()
        .map_err(|_| Error::invalid(format!("{what} {s:?} is not a number")))?;
    if n >= u32::MAX as u64 {
        return Err(Error::invalid(format!("{what} {n} is out of range")));
    }
    Ok(n as u32)
}

/// Resolves `user` against the rootfs: (uid, gid, supplementary gids including the primary).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let passwd = read_in_root(rootfs, "etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "etc/group").unwrap_or_default();
    resolve_user_from(&passwd, &group, user)
}

/// [`resolve_user`] against the contents of /etc/passwd and /etc/group.
fn resolve_user_from(passwd: &str, group: &str, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let (uid, name, mut gid) = match (&entry, u.chars().all(|c| c.is_ascii_digit())) {
        (Some(f), _) => (
            parse_id(f[2], "uid")?,
            f[0].to_string(),
            parse_id(f[3], "gid")?,
        ),
        (None, true) => (parse_id(u, "uid")?, String::new(), 0),
        (None, false) => {
            return Err(Error::invalid(format!(
                "user {u:?} is not in the image's /etc/passwd"
            )))
        }
    };
    if let Some(g) = g {
        gid = match group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == g || f[2] == g))
        {
            Some(f) => parse_id(f[2], "gid")?,
            None if g.chars().all(|c| c.is_ascii_digit()) => parse_id(g, "gid")?,
            None => {
                return Err(Error::invalid(format!(
                    "group {g:?} is not in the image's /etc/group"
                )))
            }
        };
    }
    let mut extra = vec![gid];
    if !name.is_empty() {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = parse_id(f[2], "gid") {
                    if !extra.contains(&id) {
                        extra.push(id);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An active overlay snapshot over two layers written as the overlay snapshotter stores
    /// them: the top one replaces /etc/group with a symlink and whites out /etc/shadow.
    fn account_layers(dir: &Path) -> Vec<Mount> {
        let (bottom, top) = (dir.join("l0"), dir.join("l1"));
        for d in [bottom.join("etc"), top.join("etc"), top.join("usr/share")] {
            std::fs::create_dir_all(d).unwrap();
        }
        for d in ["upper", "work"] {
            std::fs::create_dir(dir.join(d)).unwrap();
        }
        let passwd = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
        std::fs::write(bottom.join("etc/passwd"), passwd).unwrap();
        std::fs::write(bottom.join("etc/group"), "root:x:0:\nold:x:9:app\n").unwrap();
        std::fs::write(bottom.join("etc/shadow"), "").unwrap();
        let group = "root:x:0:\nstaff:x:50:app\nusers:x:100:daemon,app\napp:x:1000:\n";
        std::fs::write(top.join("usr/share/group"), group).unwrap();
        std::os::unix::fs::symlink("../usr/share/group", top.join("etc/group")).unwrap();
        let whiteout =
            std::ffi::CString::new(top.join("etc/shadow").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: a NUL-terminated path; a 0/0 character device is overlayfs' whiteout.
        let made = unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR, 0) };
        assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                format!("workdir={}", dir.join("work").display()),
                format!("upperdir={}", dir.join("upper").display()),
                format!("lowerdir={}:{}", top.display(), bottom.display()),
            ],
        }]
    }

    /// An image whose /etc/passwd and /etc/group are a FIFO and a device resolves as if they
    /// were empty, instead of blocking on the FIFO or reading the device.
    #[test]
    fn accounts_that_are_not_regular_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        for (name, kind, dev) in [
            ("passwd", libc::S_IFIFO, 0),
            ("group", libc::S_IFCHR, libc::makedev(1, 5)),
        ] {
            let c = std::ffi::CString::new(etc.join(name).into_os_string().into_encoded_bytes())
                .unwrap();
            // SAFETY: a NUL-terminated path; mknod makes the node or fails.
            let made = unsafe { libc::mknod(c.as_ptr(), kind | 0o644, dev) };
            assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
        }
        let root = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((
                resolve_user(&root, "0:0").map_err(|e| e.to_string()),
                resolve_user(&root, "app").map_err(|e| e.to_string()),
            ));
        });
        // A deadline only to tell a blocked read from an answer, not a speed.
        let (numeric, named) = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("resolving the user blocked on the FIFO");
        assert_eq!(numeric, Ok((0, 0, vec![0])));
        assert!(named.is_err(), "{named:?}");
    }

    /// Users resolve from the snapshot's directories exactly as in its mounted rootfs.
    #[test]
    fn users_resolve_alike_without_a_mount() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "this test mounts an overlay: run as root");
        let dir = tempfile::tempdir().unwrap();
        let mounts = account_layers(dir.path());
        let direct = view::read_file(&mounts, Path::new("etc/group"), ACCOUNTS_LIMIT);
        assert!(direct.is_some(), "the layers are read without a mount");
        let mounted = TempMount::new(&mounts).unwrap();
        for user in [
            "0",
            "root",
            "daemon",
            "app",
            "app:staff",
            "app:100",
            "1000:7",
            "4242",
            "4242:staff",
            "nobody",
            "app:nogroup",
            "1:old",
        ] {
            let without = resolve_user_in_mounts(&mounts, user).map_err(|e| e.to_string());
            let with = resolve_user(mounted.path(), user).map_err(|e| e.to_string());
            assert_eq!(without, with, "{user}");
        }
        assert_eq!(
            resolve_user_in_mounts(&mounts, "app").unwrap(),
            (1000, 1000, vec![1000, 50, 100])
        );
    }

    #[test]
    fn image_config_applies() {
        let img = json!({"config": {"Entrypoint": ["/bin/tini", "--"], "Cmd": ["serve"], "Env": ["A=1", "PATH=/x"], "WorkingDir": "/app"}});
        let o = Options {
            id: "c".into(),
            namespace: "default".into(),
            env: vec!["A=2".into()],
            ..Default::default()
        };
        let s = build(&img, &o);
        assert_eq!(s["process"]["args"], json!(["/bin/tini", "--", "serve"]));
        assert_eq!(s["process"]["env"], json!(["PATH=/x", "A=2"]));
        assert_eq!(s["process"]["cwd"], "/app");
        let o = Options {
            args: vec!["other".into()],
            ..o
        };
        assert_eq!(
            build(&img, &o)["process"]["args"],
            json!(["/bin/tini", "--", "other"])
        );
    }

    #[test]
    fn seccomp_follows_the_choice() {
        let img = json!({"config": {"Cmd": ["/bin/true"]}});
        let unconfined = build(&img, &Options::default());
        assert!(unconfined["linux"].get("seccomp").is_none());
        let o = Options {
            seccomp: seccomp::Profile::RuntimeDefault,
            ..Default::default()
        };
        let s = build(&img, &o);
        assert_eq!(s["linux"]["seccomp"]["defaultErrnoRet"], libc::ENOSYS);
        // Rendered for the spec's own capabilities: CAP_SYS_CHROOT is one, so chroot is allowed.
        let allowed = &s["linux"]["seccomp"]["syscalls"][0]["names"];
        assert!(allowed.as_array().unwrap().contains(&json!("chroot")));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
    }
}
