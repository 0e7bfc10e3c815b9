//! A container's seccomp profile as a BPF program, compiled once per profile and installed
//! by the native runtime itself.
//!
//! libseccomp takes ~12 ms of CPU to turn RuntimeDefault (hundreds of rules over three
//! ABIs) into BPF, and libcontainer did that inside every container's init (`perf record`
//! of ten `berth run --rm`: libseccomp was a fifth of all busy samples). The program
//! depends on the profile alone, so the shim compiles it with libseccomp once, keeps it in
//! berthd's state directory beside the profile it came from, and later containers load the
//! stored program with one `seccomp(2)` call. The profile is read as the OCI spec (and runc)
//! mean it: an `SCMP_CMP_MASKED_EQ` argument's `value` is the mask, `valueTwo` the datum.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde_json::Value;
use std::path::Path;
use std::str::FromStr;

/// A compiled filter: the BPF instructions and the `seccomp(2)` flags to load them with.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub program: Vec<u8>,
    pub flags: u32,
}

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;

/// The kernel's flags for a profile's `flags` (those libseccomp sets at load).
fn load_flags(profile: &Value) -> Result<u32, String> {
    let mut flags = 0;
    for f in profile["flags"].as_array().into_iter().flatten() {
        flags |= match f.as_str().unwrap_or_default() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => 32,
            other => return Err(format!("unknown seccomp flag {other:?}")),
        };
    }
    Ok(flags)
}

fn action(name: &Value, errno: &Value) -> Result<ScmpAction, String> {
    let name = name.as_str().unwrap_or_default();
    let errno = errno.as_i64().map_or(libc::EPERM, |e| e as i32);
    ScmpAction::from_str(name, Some(errno)).map_err(|e| format!("seccomp action {name:?}: {e}"))
}

fn compare(arg: &Value) -> Result<ScmpArgCompare, String> {
    let index = arg["index"].as_u64().unwrap_or_default() as u32;
    let value = arg["value"].as_u64().unwrap_or_default();
    let two = arg["valueTwo"].as_u64().unwrap_or_default();
    let op = arg["op"].as_str().unwrap_or_default();
    Ok(match op {
        "SCMP_CMP_MASKED_EQ" => ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(value), two),
        _ => {
            let op = ScmpCompareOp::from_str(op).map_err(|e| format!("seccomp op {op:?}: {e}"))?;
            ScmpArgCompare::new(index, op, value)
        }
    })
}

/// Adds one rule: all its argument conditions together, or (as runc does when two compare
/// the same argument, which libseccomp refuses in one rule) one rule per condition.
fn add_rule(
    ctx: &mut ScmpFilterContext,
    act: ScmpAction,
    call: ScmpSyscall,
    args: &[Value],
) -> Result<(), String> {
    let conditions = args.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
    let mut indexes: Vec<u64> = args
        .iter()
        .map(|a| a["index"].as_u64().unwrap_or(0))
        .collect();
    indexes.sort_unstable();
    let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
    let r = if conditions.is_empty() {
        ctx.add_rule(act, call).map(drop)
    } else if repeated {
        conditions
            .into_iter()
            .try_for_each(|c| ctx.add_rule_conditional(act, call, &[c]).map(drop))
    } else {
        ctx.add_rule_conditional(act, call, &conditions).map(drop)
    };
    r.map_err(|e| format!("seccomp rule for syscall {call:?}: {e}"))
}

/// Compiles a profile (an OCI `linux.seccomp` object) with libseccomp.
pub fn compile(profile: &Value) -> Result<Filter, String> {
    let default = action(&profile["defaultAction"], &profile["defaultErrnoRet"])?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| format!("seccomp filter: {e}"))?;
    for arch in profile["architectures"].as_array().into_iter().flatten() {
        let name = arch.as_str().unwrap_or_default();
        let arch = ScmpArch::from_str(name).map_err(|e| format!("seccomp arch {name:?}: {e}"))?;
        ctx.add_arch(arch)
            .map_err(|e| format!("seccomp arch {name:?}: {e}"))?;
    }
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        let act = action(&rule["action"], &rule["errnoRet"])?;
        if act == default {
            continue;
        }
        let args = rule["args"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for name in rule["names"].as_array().into_iter().flatten() {
            // A name this libseccomp does not know is a call this kernel lacks, as runc
            // and libcontainer treat it.
            let Ok(call) = ScmpSyscall::from_name(name.as_str().unwrap_or_default()) else {
                continue;
            };
            add_rule(&mut ctx, act, call, args)?;
        }
    }
    let mut file = tempfile_in_memory()?;
    ctx.export_bpf(&file)
        .map_err(|e| format!("export the seccomp filter: {e}"))?;
    let program = read_all(&mut file)?;
    Ok(Filter {
        program,
        flags: load_flags(profile)?,
    })
}

fn tempfile_in_memory() -> Result<std::fs::File, String> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned at once.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by memfd_create and is owned here alone.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn read_all(file: &mut std::fs::File) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek};
    let mut out = vec![];
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut out))
        .map_err(|e| format!("read the seccomp filter: {e}"))?;
    Ok(out)
}

/// The compiled filter for `profile`, from the cache in `dir` when a program compiled from
/// the very same profile (and libseccomp version) is there; else compiled and stored.
pub fn cached(dir: &Path, profile: &Value) -> Result<Filter, String> {
    let version = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let key = format!("{version}\n{profile}");
    let path = dir.join(format!("{:016x}.bpf", fnv1a(key.as_bytes())));
    if let Ok(stored) = std::fs::read(&path) {
        if let Some(program) = stored
            .strip_prefix(key.as_bytes())
            .and_then(|r| r.strip_prefix(b"\0"))
        {
            return Ok(Filter {
                program: program.to_vec(),
                flags: load_flags(profile)?,
            });
        }
    }
    let filter = compile(profile)?;
    // Best effort: a cache that cannot be written costs the next container a compile.
    let _ = store(dir, &path, key.as_bytes(), &filter.program);
    Ok(filter)
}

fn store(dir: &Path, path: &Path, key: &[u8], program: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let mut bytes = Vec::with_capacity(key.len() + 1 + program.len());
    bytes.extend_from_slice(key);
    bytes.push(0);
    bytes.extend_from_slice(program);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

/// Installs the filter on the calling thread (and, with TSYNC, its process).
pub fn install(f: &Filter) -> Result<(), String> {
    let prog = libc::sock_fprog {
        len: (f.program.len() / std::mem::size_of::<libc::sock_filter>()) as u16,
        filter: f.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(2) reads `prog`, which points at our program for the call's length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            f.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(format!(
            "install the seccomp filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Value {
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                 "args": [{"index": 0, "value": 0x1002_0000u64, "valueTwo": 0x1000_0000u64,
                           "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]}
            ]
        })
    }

    #[test]
    fn a_profile_compiles_and_is_cached_by_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let first = cached(dir.path(), &profile()).unwrap();
        assert!(!first.program.is_empty());
        assert_eq!(
            first.program.len() % std::mem::size_of::<libc::sock_filter>(),
            0
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(cached(dir.path(), &profile()).unwrap(), first);
        // Another profile is another entry, never the first's program.
        let mut other = profile();
        other["syscalls"][0]["errnoRet"] = serde_json::json!(13);
        let second = cached(dir.path(), &other).unwrap();
        assert_ne!(second.program, first.program);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn flags_and_bad_profiles() {
        let mut p = profile();
        p["flags"] =
            serde_json::json!(["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]);
        assert_eq!(compile(&p).unwrap().flags, 6);
        p["flags"] = serde_json::json!(["SECCOMP_FILTER_FLAG_NOPE"]);
        assert!(compile(&p).is_err());
        let mut p = profile();
        p["architectures"] = serde_json::json!(["SCMP_ARCH_NOPE"]);
        assert!(compile(&p).is_err());
    }

    /// The filter refuses what the profile refuses, with the masked compare read as the
    /// spec means it (in a forked child, so the test process stays unfiltered).
    #[test]
    fn the_installed_filter_answers_as_the_profile_says() {
        let f = compile(&profile()).unwrap();
        // SAFETY: the child only makes system calls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain prctl/syscalls in the forked child.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let code = if install(&f).is_err() {
                    10
                } else if libc::mkdir(c"/proc/nope".as_ptr(), 0o700) == 0
                    || *libc::__errno_location() != libc::EPERM
                {
                    11
                } else if libc::unshare(libc::CLONE_NEWUSER) == 0
                    || *libc::__errno_location() != libc::ENOSYS
                {
                    12
                } else if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == -1
                    && *libc::__errno_location() == libc::ENOSYS
                {
                    13
                } else {
                    0
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
