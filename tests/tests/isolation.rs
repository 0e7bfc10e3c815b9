//! Differential isolation: one table of container specs, each started by berth's shim on its
//! native runtime and on runc (two daemons, one with `BERTH_SHIM_RUNTIME=runc`); what the init and an exec see (credentials, capabilities,
//! no_new_privs, seccomp, id maps, cgroups, mounts with their options, rlimits,
//! oom_score_adj, loopback, which cgroup files and masked paths can be written, what a
//! filtered call answers) must be equal, field by field. A new spec field is a new row.
//!
//! Every row also says which runtime must have run it on the "native" side: a spec the
//! native runtime cannot honour goes to runc (the shim decides per field), and the row
//! proves that choice instead of passing vacuously.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{ok, require_root, require_tool, stderr, Daemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const SHIM: &str = "io.containerd.berth.v2";

/// What a process records about itself; `$1` names it (init or exec), so files it makes
/// do not meet the other's.
const PROBE: &str = r###"
echo "## status"; grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]*|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status
echo "## idmap"; cat /proc/self/uid_map /proc/self/gid_map
echo "## cgroup"; cat /proc/self/cgroup
echo "## limits"; cat /proc/self/limits
echo "## oom"; cat /proc/self/oom_score_adj
echo "## lo"; cat /sys/class/net/lo/flags 2>&1
echo "## hostname"; hostname
echo "## id"; id
echo "## writes"
for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
    /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cgroup.procs \
    /sys/fs/cgroup/memory.max /proc/sysrq-trigger /proc/sys/kernel/hostname \
    /proc/kcore /proc/keys /etc/group /ro/file; do
  if [ ! -e "$f" ]; then echo "$f absent"; continue; fi
  if head -c 1 "$f" >/dev/null 2>&1; then r=read; else r=noread; fi
  if (: >> "$f") 2>/dev/null; then w=write; else w=nowrite; fi
  echo "$f $r $w"
done
ls /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/release_agent 2>/dev/null
for d in /sys/fs/cgroup/memory /sys/fs/cgroup/systemd /sys/fs/cgroup; do
  if mkdir "$d/probe-$1" 2>/dev/null; then echo "cgroup made in $d"; rmdir "$d/probe-$1"; fi
  stat -c "$d %u:%g %a" "$d"
done
echo "## mkdir"; mkdir "/dev/shm/probe-$1" 2>&1 && echo made
echo "## unshare"; unshare -U true 2>&1 && echo unshared
echo "## mounts"; cat /proc/self/mountinfo
"###;

/// A container's rootfs: busybox and the few files the probe reads.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "ro"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(require_tool("busybox"), root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "grep", "hostname", "id", "ls", "mkdir", "rmdir", "sleep", "head", "stat",
        "unshare", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:\nusers:x:100:\nuser:x:1000:\n",
    )
    .unwrap();
    std::fs::write(root.join("ro/file"), "x").unwrap();
    root
}

/// containerd's default spec (as Debian's ctr writes it), for `rootfs`, the process a
/// sleeping shell whose init records its view to /dev/shm first.
fn base_spec(rootfs: &Path, id: &str) -> Value {
    let out = std::process::Command::new("ctr")
        .args(["oci", "spec"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ctr oci spec: {}", stderr(&out));
    let mut spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    spec["root"] = json!({"path": rootfs, "readonly": false});
    spec["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        format!("(set -- init; {PROBE}echo '## end') > /dev/shm/init.txt 2>&1; exec sleep 1000"),
    ]);
    spec["process"]["env"] = json!(["PATH=/bin", "HOME=/tmp"]);
    spec["hostname"] = json!("iso");
    // As Docker and the CRI mount it (ctr's default spec has none).
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["ro", "nosuid", "noexec", "nodev"]
    }));
    spec["linux"]["cgroupsPath"] = json!(format!("/berth-isolation/{id}"));
    spec
}

fn caps(spec: &mut Value, list: &[&str], sets: &[&str]) {
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        let v = if sets.contains(&set) {
            json!(list)
        } else {
            json!([])
        };
        spec["process"]["capabilities"][set] = v;
    }
}

/// No no_new_privs, written out as false (berth's CRI writes it so).
fn no_nnp(spec: &mut Value) {
    spec["process"]["noNewPrivileges"] = json!(false);
}

/// A profile that allows everything but mkdir (EPERM), and unshare (ENOSYS) when its flags
/// hold CLONE_NEWUSER but not CLONE_NEWNS: a masked compare whose mask (`value`) and
/// datum (`valueTwo`) differ, so reading them the wrong way round shows.
fn seccomp(spec: &mut Value) {
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "args": [{"index": 0, "value": 0x1002_0000u64, "valueTwo": 0x1000_0000u64,
                       "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
}

fn drop_namespace(spec: &mut Value, kind: &str) {
    let nss = spec["linux"]["namespaces"].as_array_mut().unwrap();
    nss.retain(|n| n["type"] != kind);
}

struct Row {
    name: &'static str,
    edit: fn(&mut Value),
    /// Whether the native side really runs on the native runtime (else the shim must
    /// have chosen runc for it).
    native: bool,
    /// Lines of an exec's view where runc departs from the spec and native follows it:
    /// (native's line, runc's line).
    runc_departs: &'static [(&'static str, &'static str)],
}

/// Debian 12's runc (1.1) raises an exec's soft RLIMIT_NOFILE to its hard limit (the Go
/// runtime's own raise at start-up leaks into the process; runc 1.2 mends it): the spec
/// asks for 512, native gives 512.
const RUNC_NOFILE: &[(&str, &str)] = &[(
    "Max open files            512                  2048                 files     ",
    "Max open files            2048                 2048                 files     ",
)];

const DOCKER_CAPS: &[&str] = &[
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

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "containerd's default spec",
            edit: |_| {},
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "restricted capabilities, no no_new_privs",
            edit: |s| {
                caps(
                    s,
                    &["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
                    &["bounding", "effective", "permitted"],
                );
                no_nnp(s);
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "ambient and inheritable capabilities",
            edit: |s| {
                caps(
                    s,
                    &["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                    &[
                        "bounding",
                        "effective",
                        "permitted",
                        "inheritable",
                        "ambient",
                    ],
                );
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "non-root user with supplementary groups",
            edit: |s| {
                s["process"]["user"] =
                    json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 100]});
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "no capabilities at all",
            edit: |s| {
                caps(s, &[], &[]);
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "read-only rootfs, masked and read-only paths of its own",
            edit: |s| {
                s["root"]["readonly"] = json!(true);
                s["linux"]["maskedPaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("/etc/group"));
                s["linux"]["readonlyPaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("/ro"));
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "rlimits and oom_score_adj",
            edit: |s| {
                s["process"]["rlimits"] = json!([
                    {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
                    {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
                ]);
                s["process"]["oomScoreAdj"] = json!(500);
            },
            native: true,
            runc_departs: RUNC_NOFILE,
        },
        Row {
            name: "memory, pids and cpu limits",
            edit: |s| {
                s["linux"]["resources"]["memory"] = json!({"limit": 67108864});
                s["linux"]["resources"]["pids"] = json!({"limit": 50});
                s["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 100000});
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "seccomp profile with no_new_privs",
            edit: seccomp,
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "seccomp profile without no_new_privs (Docker's way)",
            edit: |s| {
                seccomp(s);
                no_nnp(s);
                caps(s, DOCKER_CAPS, &["bounding", "effective", "permitted"]);
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "seccomp profile, non-root user without no_new_privs",
            edit: |s| {
                seccomp(s);
                no_nnp(s);
                s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "rslave rootfs propagation, no_new_privs absent",
            edit: |s| {
                s["linux"]["rootfsPropagation"] = json!("rslave");
                s["process"]
                    .as_object_mut()
                    .unwrap()
                    .remove("noNewPrivileges");
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "host network, ipc and uts namespaces",
            edit: |s| {
                for kind in ["network", "ipc", "uts"] {
                    drop_namespace(s, kind);
                }
                s.as_object_mut().unwrap().remove("hostname");
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "a cgroup namespace",
            edit: |s| {
                s["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "cgroup"}));
            },
            native: true,
            runc_departs: &[],
        },
        Row {
            name: "a user namespace (native cannot exec into it: runc runs it)",
            edit: |s| {
                s["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}));
                s["linux"]["uidMappings"] =
                    json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                s["linux"]["gidMappings"] =
                    json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            },
            native: false,
            runc_departs: &[],
        },
    ]
}

/// Drops what differs between two runs of one spec without saying anything about
/// isolation: mount and device numbers, and a mount's peer-group tags.
fn normalize(view: &str) -> String {
    let (head, mounts) = view.split_once("## mounts").unwrap_or((view, ""));
    let mut lines: Vec<String> = mounts
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (before, after) = l.split_once(" - ").unwrap_or((l, ""));
            let f: Vec<&str> = before.split(' ').collect();
            let a: Vec<&str> = after.split(' ').collect();
            // root, mount point, per-mount options | fstype, super options
            format!(
                "{} {} {} | {} {}",
                f.get(3).unwrap_or(&""),
                f.get(4).unwrap_or(&""),
                f.get(5).unwrap_or(&""),
                a.first().unwrap_or(&""),
                a.get(2).unwrap_or(&"")
            )
        })
        .collect();
    lines.sort();
    format!("{head}## mounts\n{}\n", lines.join("\n"))
}

/// What the init and an exec of the row's container see, and whether the native
/// runtime's state held the container.
fn views(d: &Daemon, dir: &Path, spec: &Value, id: &str) -> (String, String, bool) {
    let config = dir.join(format!("{id}.json"));
    std::fs::write(&config, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let config = config.to_str().unwrap().to_string();
    ok(&d.ctr(&["run", "-d", "--runtime", SHIM, "--config", &config, id]));
    let native_state = d.state().join("native/default").join(id);
    let on_native = native_state.join("state.json").exists();
    let mut init = String::new();
    // The init writes its view once it runs, its last line `## end` (a read before that
    // may end within the mount table, at a line's end): a deadline, not a count of tries,
    // so a loaded machine (each ctr call slower) still waits long enough.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let out = d.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "cat",
            id,
            "cat",
            "/dev/shm/init.txt",
        ]);
        init = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && init.ends_with("## end\n") {
            init.truncate(init.len() - "## end\n".len());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = d.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "probe",
        id,
        "sh",
        "-c",
        PROBE,
        "probe",
        "exec",
    ]);
    let exec = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(exec.contains("## mounts"), "exec probe: {}", stderr(&out));
    ok(&d.ctr(&["tasks", "kill", "-s", "SIGKILL", id]));
    for _ in 0..100 {
        if d.ctr(&["tasks", "rm", id]).status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ok(&d.ctr(&["containers", "rm", id]));
    (normalize(&init), normalize(&exec), on_native)
}

/// Where two views differ, line by line (both are in the same order of sections).
fn differences(a: &str, b: &str) -> String {
    let mut al: Vec<&str> = a.lines().collect();
    let mut bl: Vec<&str> = b.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < al.len().max(bl.len()) {
        let (x, y) = (al.get(i).copied(), bl.get(i).copied());
        if x != y {
            match (x, y) {
                (Some(x), Some(y)) if bl[i..].contains(&x) && !al[i..].contains(&y) => {
                    out.push_str(&format!("  runc only:   {y}\n"));
                    al.insert(i, y);
                }
                (Some(x), Some(y)) if al[i..].contains(&y) && !bl[i..].contains(&x) => {
                    out.push_str(&format!("  native only: {x}\n"));
                    bl.insert(i, x);
                }
                _ => {
                    out.push_str(&format!(
                        "  native: {}\n  runc:   {}\n",
                        x.unwrap_or("(none)"),
                        y.unwrap_or("(none)")
                    ));
                }
            }
        }
        i += 1;
    }
    out
}

#[test]
fn native_isolates_exactly_as_runc() {
    require_root();
    require_tool("runc");
    let native = Daemon::start().unwrap();
    let runc = Daemon::start_with(|c| {
        c.env("BERTH_SHIM_RUNTIME", "runc");
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let mut failures = vec![];
    for (n, row) in rows().iter().enumerate() {
        let id = format!("iso{n}");
        let mut spec = base_spec(&root, &id);
        (row.edit)(&mut spec);
        let (n_init, n_exec, on_native) = views(&native, dir.path(), &spec, &id);
        let (r_init, r_exec, on_native_too) = views(&runc, dir.path(), &spec, &id);
        assert!(!on_native_too, "the runc daemon ran {id} on native");
        if on_native != row.native {
            failures.push(format!(
                "{}: ran on {} where {} was expected",
                row.name,
                if on_native { "native" } else { "runc" },
                if row.native { "native" } else { "runc" }
            ));
        }
        if n_init != r_init {
            failures.push(format!(
                "{} (init):\n{}",
                row.name,
                differences(&n_init, &r_init)
            ));
        }
        let mut r_exec = r_exec;
        for (native_line, runc_line) in row.runc_departs {
            r_exec = r_exec.replace(runc_line, native_line);
        }
        if n_exec != r_exec {
            failures.push(format!(
                "{} (exec):\n{}",
                row.name,
                differences(&n_exec, &r_exec)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The probe really tells runtimes apart: the views carry what the rows vary.
#[test]
fn the_probe_sees_what_the_rows_change() {
    require_root();
    require_tool("runc");
    let d = Daemon::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let mut spec = base_spec(&root, "seen");
    seccomp(&mut spec);
    no_nnp(&mut spec);
    spec["linux"]["resources"]["pids"] = json!({"limit": 50});
    let (init, exec, on_native) = views(&d, dir.path(), &spec, "seen");
    assert!(on_native);
    for view in [&init, &exec] {
        assert!(view.contains("Seccomp:\t2"), "{view}");
        assert!(view.contains("NoNewPrivs:\t0"), "{view}");
        assert!(view.contains("Operation not permitted"), "{view}");
        assert!(view.contains("Function not implemented"), "{view}");
        // Loopback up (IFF_UP|IFF_LOOPBACK), cgroup files not writable.
        assert!(view.contains("## lo\n0x9\n"), "{view}");
        assert!(
            view.contains("/sys/fs/cgroup/pids/pids.max read nowrite"),
            "{view}"
        );
        assert!(!view.contains("cgroup made in"), "{view}");
        assert!(!view.contains("release_agent"), "{view}");
        assert!(view.contains("/berth-isolation/seen"), "{view}");
    }
}
