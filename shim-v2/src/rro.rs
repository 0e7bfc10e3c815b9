//! Recursive read-only mounts: a bind mount whose options say `rro` is made read-only with
//! every mount beneath it (mount_setattr with AT_RECURSIVE), inside the container's mount
//! namespace once runc has created it and before the process starts. runc 1.2 does this
//! itself; runc 1.1 ignores the option, so the shim finishes the job.

use crate::error::{Error, Result};
use crate::fork;
use crate::reaper::Reaper;
use std::ffi::{CStr, CString};
use std::path::Path;

/// The destinations of the spec's mounts that ask for `rro`.
pub fn targets(spec: &serde_json::Value) -> Vec<String> {
    spec["mounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| {
                    m["options"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|x| x == "rro"))
                })
                .filter_map(|m| m["destination"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Makes each of `targets` (paths inside the container) recursively read-only, from a child
/// process that joins the mount namespace of `pid`.
pub fn apply(pid: i32, targets: &[String], reaper: &Reaper) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let ns =
        CString::new(format!("/proc/{pid}/ns/mnt")).map_err(|_| Error::internal("pid path"))?;
    let paths: Vec<CString> = targets
        .iter()
        .map(|t| {
            CString::new(t.as_str())
                .map_err(|_| Error::invalid(format!("mount path {t:?} has a NUL")))
        })
        .collect::<Result<_>>()?;
    // SAFETY: the child only makes async-signal-safe system calls (open, setns, syscall) on
    // memory prepared before the fork.
    let child = unsafe { fork::spawn(|| set_readonly_in(&ns, &paths)) }
        .map_err(|e| Error::internal(format!("fork: {e}")))?;
    // The reaper owns waiting (it waits for any child): its status is the helper's.
    match reaper.wait(child).status {
        0 => Ok(()),
        100 => Err(Error::internal(format!(
            "cannot enter the mount namespace of pid {pid}"
        ))),
        n if (1..=99).contains(&n) => Err(Error::invalid(format!(
            "cannot make {} recursively read-only (mount_setattr needs Linux 5.12)",
            targets[(n - 1) as usize]
        ))),
        _ => Err(Error::internal("the recursive read-only helper died")),
    }
}

/// In the forked child: joins the mount namespace at `ns` and makes each of `paths`
/// recursively read-only. Its exit code: 0, 100 when the namespace cannot be entered, or
/// 1 + the index of the first path that failed (up to 99).
fn set_readonly_in(ns: &CStr, paths: &[CString]) -> i32 {
    // SAFETY: open and setns on a NUL-terminated path; the descriptor stays open until the
    // child exits.
    let entered = unsafe {
        let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        fd >= 0 && libc::setns(fd, libc::CLONE_NEWNS) == 0
    };
    if !entered {
        return 100;
    }
    for (i, p) in paths.iter().enumerate() {
        let rc = berth_snapshotters::idmap::mount_setattr(
            libc::AT_FDCWD,
            p,
            libc::AT_RECURSIVE as libc::c_uint,
            libc::MOUNT_ATTR_RDONLY,
            None,
        );
        if rc != 0 {
            return 1 + i.min(98) as i32;
        }
    }
    0
}

/// Reads the bundle's spec for [`targets`].
pub fn from_bundle(bundle: &Path) -> Vec<String> {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .map(|v: serde_json::Value| targets(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rro_mounts_are_targets() {
        let spec = serde_json::json!({"mounts": [
            {"destination": "/a", "options": ["rbind", "ro", "rro"]},
            {"destination": "/b", "options": ["rbind", "ro"]},
            {"destination": "/proc"}
        ]});
        assert_eq!(targets(&spec), vec!["/a"]);
        assert!(targets(&serde_json::json!({})).is_empty());
    }
}
