//! berth's built-in RuntimeDefault seccomp profile: everything allowed except the system
//! calls a container has no business making (kernel modules, clocks, reboot, keyrings, BPF,
//! namespaces and mounts, tracing other processes), each refused with EPERM. A call whose
//! capability the container holds is allowed again (CAP_SYS_ADMIN gives mount, CAP_SYS_PTRACE
//! ptrace, and so on), so adding a capability works as users expect.

use serde_json::{json, Value};

/// (system calls, the capability that allows them again; "" for none)
const DENIED: &[(&[&str], &str)] = &[
    (
        &[
            "acct",
            "bpf",
            "fanotify_init",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "swapon",
            "swapoff",
            "umount",
            "umount2",
            "unshare",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "clone3",
        ],
        "CAP_SYS_ADMIN",
    ),
    (
        &[
            "clock_adjtime",
            "clock_settime",
            "settimeofday",
            "stime",
            "adjtimex",
        ],
        "CAP_SYS_TIME",
    ),
    (
        &[
            "create_module",
            "delete_module",
            "finit_module",
            "init_module",
            "query_module",
            "get_kernel_syms",
        ],
        "CAP_SYS_MODULE",
    ),
    (
        &[
            "kcmp",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        "CAP_SYS_PTRACE",
    ),
    (&["iopl", "ioperm"], "CAP_SYS_RAWIO"),
    (&["kexec_file_load", "kexec_load", "reboot"], "CAP_SYS_BOOT"),
    (&["open_by_handle_at"], "CAP_DAC_READ_SEARCH"),
    (
        &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
        "CAP_SYS_NICE",
    ),
    (&["syslog"], "CAP_SYSLOG"),
    (
        &[
            "add_key",
            "keyctl",
            "request_key",
            "nfsservctl",
            "sysfs",
            "_sysctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "vm86",
            "vm86old",
        ],
        "",
    ),
];

/// The profile for a container holding `caps` (e.g. "CAP_SYS_ADMIN").
pub fn runtime_default(caps: &[String]) -> Value {
    let mut denied: Vec<&str> = Vec::new();
    for (calls, cap) in DENIED {
        if cap.is_empty() || !caps.iter().any(|c| c == cap) {
            denied.extend(calls.iter());
        }
    }
    let mut syscalls =
        vec![json!({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM})];
    // clone asking for a new namespace is refused too, unless CAP_SYS_ADMIN (clone3 above
    // is refused outright, so libc falls back to clone): one rule per flag, since a masked
    // compare matches one bit pattern.
    if !caps.iter().any(|c| c == "CAP_SYS_ADMIN") {
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            syscalls.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EPERM,
                "args": [{"index": 0, "value": flag as u64, "valueTwo": flag as u64, "op": "SCMP_CMP_MASKED_EQ"}]
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    })
}

/// A Localhost profile: the JSON file at `path` (absolute), in the OCI runtime-spec's
/// seccomp shape (as the kubelet and containerd read it).
pub fn localhost(path: &str) -> crate::error::Result<Value> {
    use crate::error::Error;
    let p = path.strip_prefix("localhost/").unwrap_or(path);
    if !p.starts_with('/') {
        return Err(Error::invalid(format!(
            "seccomp profile {path:?} must be an absolute path"
        )));
    }
    let bytes = std::fs::read(p)
        .map_err(|e| Error::invalid(format!("cannot load seccomp profile {p:?}: {e}")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("seccomp profile {p:?} is not valid JSON: {e}")))?;
    if !v.is_object() || v["defaultAction"].as_str().is_none() {
        return Err(Error::invalid(format!(
            "seccomp profile {p:?} has no defaultAction"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_allow_their_calls_again() {
        let plain = runtime_default(&[]);
        let names = |v: &Value| v["syscalls"][0]["names"].as_array().unwrap().clone();
        assert!(names(&plain).contains(&json!("mount")));
        assert!(names(&plain).contains(&json!("reboot")));
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]);
        assert!(!names(&admin).contains(&json!("mount")));
        assert!(names(&admin).contains(&json!("keyctl")));
        assert_eq!(admin["syscalls"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn localhost_profiles_are_checked() {
        assert!(localhost("relative.json").is_err());
        assert!(localhost("/nonexistent/profile.json").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        assert!(localhost(&format!("localhost/{}", p.display())).is_ok());
        std::fs::write(&p, "[]").unwrap();
        assert!(localhost(p.to_str().unwrap()).is_err());
    }
}
