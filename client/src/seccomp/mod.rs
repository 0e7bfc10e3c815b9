//! Seccomp for the containers a client creates: berth's RuntimeDefault profile (an
//! allow-list rendered for the container's capabilities and the host's architecture),
//! profiles read from files, and the choice between those and none. The same as berthd's
//! (`services/src/core/seccomp`, which the CRI uses), so a container `berth run` makes is
//! filtered as one the kubelet makes.
//!
//! RuntimeDefault answers a call it does not know with ENOSYS, not EPERM: libc falls back
//! to an older call only on ENOSYS (glibc tries `clone3` for every thread and `posix_spawn`
//! and goes back to `clone` only then), and a call the kernel adds later stays refused until
//! someone allows it here. The calls the profile knows and refuses answer EPERM, as in the
//! default profile of Docker and containerd.

mod default;
mod file;

pub use file::{load, resolve};

use default::{
    ALLOWED, BY_ARCH, BY_CAPABILITY, NAMESPACE_FLAGS, PERSONALITIES, PTRACE, PTRACE_SAFE_FROM,
    REFUSED,
};
use serde_json::{json, Value};

/// A profile that cannot be used, shown as berthd shows an invalid argument (so a mistake
/// reads the same whichever side finds it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: invalid argument")]
    Invalid(String),
}

impl Error {
    fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The filter a container gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Profile {
    /// No filter. The default of `spec::Options`, so a caller that never chose (berth
    /// build's steps) keeps what it had; `berth run` and the CRI choose explicitly.
    #[default]
    Unconfined,
    /// berth's RuntimeDefault, rendered for the container's capabilities.
    RuntimeDefault,
    /// A profile read with [`load`], resolved for the container when its spec is built.
    Custom(Value),
}

impl Profile {
    /// The spec's `linux.seccomp` for a container holding `caps`; None for no filter.
    pub fn render<S: AsRef<str>>(&self, caps: &[S]) -> Option<Value> {
        match self {
            Profile::Unconfined => None,
            Profile::RuntimeDefault => Some(runtime_default(caps)),
            Profile::Custom(p) => Some(resolve(p, caps, Platform::host())),
        }
    }
}

/// The architectures berth knows the system calls of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
    /// Anything else: the native ABI only, and no calls of its own allowed.
    Other,
}

impl Arch {
    pub fn host() -> Arch {
        if cfg!(target_arch = "x86_64") {
            Arch::X86_64
        } else if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::Other
        }
    }

    /// libseccomp's names for the ABIs a process on this architecture can call the kernel
    /// through: each needs the filter, or a 32-bit call would go around it.
    pub fn abis(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            Arch::Aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            Arch::Other => &[],
        }
    }

    /// Go's name for it, as Docker's profile format writes architectures.
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Other => std::env::consts::ARCH,
        }
    }
}

/// What a profile is rendered for: the architecture, and the kernel release (major, minor),
/// since some calls are safe to allow only from a release on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub arch: Arch,
    pub kernel: (u32, u32),
}

impl Platform {
    /// This machine. A kernel release that cannot be read counts as 0.0, which keeps the
    /// calls that need a newer one refused.
    pub fn host() -> Platform {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Platform {
            arch: Arch::host(),
            kernel: kernel_release(release.trim()).unwrap_or((0, 0)),
        }
    }
}

/// A kernel release, "4.8" or "6.1.0-13-amd64", as (major, minor).
fn kernel_release(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(m) => m
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .parse()
            .ok()?,
        None => 0,
    };
    Some((major, minor))
}

/// berth's RuntimeDefault profile for a container holding `caps` (e.g. "CAP_SYS_ADMIN"),
/// on this machine.
pub fn runtime_default<S: AsRef<str>>(caps: &[S]) -> Value {
    render(caps, Platform::host())
}

/// Calls decided by their arguments; they never appear in an unconditional list.
const BY_ARGUMENT: &[&str] = &["clone", "clone3", "personality", "socket"];

/// RuntimeDefault for a container holding `caps` on `platform`.
pub fn render<S: AsRef<str>>(caps: &[S], platform: Platform) -> Value {
    let holds = |cap: &str| caps.iter().any(|c| c.as_ref() == cap);
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    for (arch, names) in BY_ARCH {
        if *arch == platform.arch {
            allowed.extend_from_slice(names);
        }
    }
    if platform.kernel >= PTRACE_SAFE_FROM {
        allowed.extend_from_slice(PTRACE);
    }
    for (cap, names) in BY_CAPABILITY {
        if holds(cap) {
            allowed.extend_from_slice(names);
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut refused: Vec<&str> = REFUSED
        .iter()
        .chain(BY_CAPABILITY.iter().flat_map(|(_, names)| names.iter()))
        .copied()
        .filter(|n| allowed.binary_search(n).is_err() && !BY_ARGUMENT.contains(n))
        .collect();
    refused.sort_unstable();
    refused.dedup();

    let mut rules = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    if !refused.is_empty() {
        rules.push(refuse(&refused, libc::EPERM, vec![]));
    }
    for p in PERSONALITIES {
        rules.push(allow("personality", vec![arg(0, "SCMP_CMP_EQ", *p, 0)]));
    }
    // Sockets of every family but vsock: not network-namespaced, it reaches the host and
    // its hypervisor past the container's network.
    let vsock = libc::AF_VSOCK as u64;
    rules.push(allow("socket", vec![arg(0, "SCMP_CMP_NE", vsock, 0)]));
    rules.push(refuse(
        &["socket"],
        libc::EPERM,
        vec![arg(0, "SCMP_CMP_EQ", vsock, 0)],
    ));
    if !holds("CAP_SYS_ADMIN") {
        // clone without a namespace flag; with one, EPERM (one rule per flag: a masked
        // compare matches one bit pattern, and "any of these bits" is not one).
        let all = NAMESPACE_FLAGS.iter().fold(0u64, |m, f| m | *f as u64);
        rules.push(allow("clone", vec![arg(0, "SCMP_CMP_MASKED_EQ", all, 0)]));
        for f in NAMESPACE_FLAGS {
            let f = *f as u64;
            rules.push(refuse(
                &["clone"],
                libc::EPERM,
                vec![arg(0, "SCMP_CMP_MASKED_EQ", f, f)],
            ));
        }
        // clone3's flags live in memory a filter cannot read: refuse it the way that makes
        // libc fall back to clone, which the rules above do check.
        rules.push(refuse(&["clone3"], libc::ENOSYS, vec![]));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENOSYS,
        "architectures": platform.arch.abis(),
        "syscalls": rules,
    })
}

fn allow(name: &str, args: Vec<Value>) -> Value {
    json!({"names": [name], "action": "SCMP_ACT_ALLOW", "args": args})
}

fn refuse(names: &[&str], errno: i32, args: Vec<Value>) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno, "args": args})
}

/// One argument comparison; for SCMP_CMP_MASKED_EQ, `value` is the mask and `value_two`
/// what the masked argument must equal.
fn arg(index: u32, op: &str, value: u64, value_two: u64) -> Value {
    json!({"index": index, "op": op, "value": value, "valueTwo": value_two})
}

#[cfg(test)]
mod tests;
