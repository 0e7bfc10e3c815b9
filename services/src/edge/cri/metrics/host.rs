//! What berthd reads itself about a running container, beside its shim's cgroup statistics:
//! the processes of its cgroup and their descriptors, its first process's soft limits, the
//! limits its cgroup enforces, huge pages and pressure stalls (cgroup v1, v2 and the hybrid
//! layout), the interfaces of a pod's network namespace, and block device names. All of it is
//! blocking file reading: callers run it through `blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// A file holding one number; `None` when absent, unreadable or "max".
fn number(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

/// Memory limits at or past 2^62 mean "none" (v1 writes its page-rounded i64::MAX).
fn limit_or_zero(v: Option<u64>) -> u64 {
    v.filter(|v| *v < 1 << 62).unwrap_or(0)
}

/// A process's cgroups: a directory per v1 controller and the unified (v2) directory,
/// either or both present (hybrid hosts have both).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Cgroups {
    v1: HashMap<String, PathBuf>,
    unified: Option<PathBuf>,
}

impl Cgroups {
    pub fn of_pid(pid: u32) -> Option<Cgroups> {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let root = Path::new(ROOT);
        let unified_root = if root.join("cgroup.controllers").exists() {
            Some(root.to_path_buf())
        } else {
            let hybrid = root.join("unified");
            hybrid.join("cgroup.controllers").exists().then_some(hybrid)
        };
        Some(Self::parse(&text, root, unified_root.as_deref()))
    }

    /// `/proc/<pid>/cgroup` text, with v1 controllers mounted under `root/<controller>` and
    /// the unified hierarchy (if mounted) at `unified_root`.
    fn parse(text: &str, root: &Path, unified_root: Option<&Path>) -> Cgroups {
        let mut out = Cgroups::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                out.unified = unified_root.map(|u| u.join(rel));
                continue;
            }
            for c in controllers.split(',') {
                let c = c.trim_start_matches("name=");
                out.v1.insert(c.to_string(), root.join(c).join(rel));
            }
        }
        out
    }

    /// The directory of `controller`: its v1 hierarchy's, or the unified one on v2.
    fn dir(&self, controller: &str) -> Option<&Path> {
        if self.v1.is_empty() {
            return self.unified.as_deref();
        }
        self.v1.get(controller).map(PathBuf::as_path)
    }

    /// The processes of the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        self.dir("pids")
            .or_else(|| self.dir("memory"))
            .and_then(|d| read(&d.join("cgroup.procs")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Huge page usage by page size ("2MB", "1GB"): (size, in use, highest use). v2 keeps
    /// no highest use; it reads as the current one there.
    pub fn hugetlb(&self) -> Vec<(String, u64, u64)> {
        let Some(dir) = self.dir("hugetlb") else {
            return vec![];
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![];
        };
        let v1 = !self.v1.is_empty();
        let suffix = if v1 { ".usage_in_bytes" } else { ".current" };
        let mut out: Vec<_> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
                if size.contains('.') {
                    return None; // hugetlb.2MB.rsvd.current and the like
                }
                let usage = number(&e.path())?;
                let max = if v1 {
                    number(&dir.join(format!("hugetlb.{size}.max_usage_in_bytes")))
                } else {
                    None
                };
                Some((size.to_string(), usage, max.unwrap_or(usage)))
            })
            .collect();
        out.sort();
        out
    }

    /// Pressure stall totals of `resource` ("cpu", "memory", "io") in microseconds: (some,
    /// full). The unified directory has them; a v1 controller's only on kernels booted with
    /// cgroup v1 PSI.
    pub fn pressure(&self, resource: &str) -> Option<(u64, u64)> {
        let file = format!("{resource}.pressure");
        let text = self
            .unified
            .iter()
            .map(PathBuf::as_path)
            .chain(self.dir(if resource == "io" { "blkio" } else { resource }))
            .find_map(|d| read(&d.join(&file)))?;
        parse_pressure(&text)
    }

    /// The limits the cgroup enforces.
    pub fn limits(&self) -> Limits {
        if self.v1.is_empty() {
            return self.unified.as_deref().map(limits_v2).unwrap_or_default();
        }
        let cpu = self.dir("cpu");
        let mem = self.dir("memory");
        let at = |d: Option<&Path>, f: &str| d.and_then(|d| number(&d.join(f)));
        let quota = cpu
            .and_then(|d| read(&d.join("cpu.cfs_quota_us")))
            .and_then(|q| q.trim().parse::<i64>().ok())
            .filter(|q| *q > 0)
            .map(|q| q as u64);
        Limits {
            cpu_period: at(cpu, "cpu.cfs_period_us").unwrap_or(0),
            cpu_quota: quota,
            cpu_shares: at(cpu, "cpu.shares").unwrap_or(0),
            memory: limit_or_zero(at(mem, "memory.limit_in_bytes")),
            memory_reservation: limit_or_zero(at(mem, "memory.soft_limit_in_bytes")),
            memory_and_swap: limit_or_zero(at(mem, "memory.memsw.limit_in_bytes")),
        }
    }
}

/// Everything berthd reads itself about a running container whose first process is `pid`.
#[derive(Debug, Default)]
pub(super) struct Figures {
    pub processes: u64,
    pub fds: u64,
    pub sockets: u64,
    pub limits: Limits,
    pub hugetlb: Vec<(String, u64, u64)>,
    /// (resource, some, full) stall totals in microseconds.
    pub pressure: Vec<(&'static str, u64, u64)>,
    pub soft_limits: Vec<(String, u64)>,
}

impl Figures {
    /// None when the process (so its cgroup) is gone.
    pub fn read(pid: u32) -> Option<Figures> {
        let cg = Cgroups::of_pid(pid)?;
        let procs = cg.procs();
        let (fds, sockets) = descriptors(&procs);
        Some(Figures {
            processes: procs.len() as u64,
            fds,
            sockets,
            limits: cg.limits(),
            hugetlb: cg.hugetlb(),
            pressure: ["cpu", "memory", "io"]
                .into_iter()
                .filter_map(|r| cg.pressure(r).map(|(some, full)| (r, some, full)))
                .collect(),
            soft_limits: soft_limits(pid),
        })
    }
}

/// What a cgroup's limits are, in cgroup v1's terms (memory and swap together; shares).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Limits {
    pub cpu_period: u64,
    pub cpu_quota: Option<u64>,
    pub cpu_shares: u64,
    pub memory: u64,
    pub memory_reservation: u64,
    pub memory_and_swap: u64,
}

fn limits_v2(dir: &Path) -> Limits {
    let cpu_max = read(&dir.join("cpu.max")).unwrap_or_default();
    let mut it = cpu_max.split_whitespace();
    let (quota, period) = (it.next(), it.next());
    // The inverse of the weight runc derives from CRI shares, as cAdvisor reads it.
    let shares = number(&dir.join("cpu.weight"))
        .filter(|w| (1..=10_000).contains(w))
        .map(|w| 2 + (w - 1) * 262_142 / 9_999)
        .unwrap_or(0);
    let memory = limit_or_zero(number(&dir.join("memory.max")));
    let swap = number(&dir.join("memory.swap.max"));
    Limits {
        cpu_period: period.and_then(|p| p.parse().ok()).unwrap_or(0),
        cpu_quota: quota.and_then(|q| q.parse().ok()),
        cpu_shares: shares,
        memory,
        memory_reservation: limit_or_zero(number(&dir.join("memory.low"))),
        // v2 limits swap alone; the CRI and v1 speak of memory and swap together.
        memory_and_swap: match swap {
            Some(s) if memory > 0 => memory.saturating_add(s),
            _ => 0,
        },
    }
}

/// A `*.pressure` file: the `total=` of its "some" and "full" lines.
fn parse_pressure(text: &str) -> Option<(u64, u64)> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((total("some")?, total("full").unwrap_or(0)))
}

/// Open file descriptors and, of them, sockets, over `pids`.
pub(super) fn descriptors(pids: &[u32]) -> (u64, u64) {
    let (mut fds, mut sockets) = (0, 0);
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            fds += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            {
                sockets += 1;
            }
        }
    }
    (fds, sockets)
}

/// The finite soft limits of a process (`/proc/<pid>/limits`), named in snake case
/// ("max_open_files").
pub(super) fn soft_limits(pid: u32) -> Vec<(String, u64)> {
    parse_limits(&read(Path::new(&format!("/proc/{pid}/limits"))).unwrap_or_default())
}

fn parse_limits(text: &str) -> Vec<(String, u64)> {
    // "Limit" fills the first 26 columns; the values follow.
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (name, rest) = (l.get(..26)?, l.get(26..)?);
            let soft = rest.split_whitespace().next()?.parse().ok()?;
            let name = name.split_whitespace().collect::<Vec<_>>().join("_");
            Some((name.to_ascii_lowercase(), soft))
        })
        .collect()
}

/// One interface's counters from `/proc/<pid>/net/dev`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of `pid`'s network namespace but loopback.
pub(super) fn interfaces(pid: u32) -> Vec<Interface> {
    parse_net_dev(&read(Path::new(&format!("/proc/{pid}/net/dev"))).unwrap_or_default())
}

fn parse_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, counters) = l.split_once(':')?;
            let v: Vec<u64> = counters
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            let name = name.trim();
            if name == "lo" || v.len() < 12 {
                return None;
            }
            Some(Interface {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// A block device's name ("/dev/vda"), or "major:minor" when the kernel has none for it.
pub(super) fn device_name(major: u64, minor: u64) -> String {
    read(Path::new(&format!("/sys/dev/block/{major}:{minor}/uevent")))
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The filesystem holding `dir`: its device (as [`device_name`] names it, or `dir` itself
/// when it is on no block device), size in bytes, inodes and free inodes.
#[derive(Debug, Default, Clone)]
pub(super) struct Filesystem {
    pub device: String,
    pub bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub(super) fn filesystem(dir: &Path) -> Option<Filesystem> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
    let device = if major == 0 {
        dir.display().to_string()
    } else {
        device_name(major, minor)
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we pass from a NUL-terminated path we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(Filesystem {
        device,
        bytes: st.f_blocks * st.f_frsize,
        inodes: st.f_files,
        inodes_free: st.f_ffree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_lines_map_to_v1_controllers_and_the_unified_tree() {
        let text = "9:name=systemd:/k8s/pod\n4:cpu,cpuacct:/k8s/c1\n0::/k8s/c1\n";
        let cg = Cgroups::parse(text, Path::new("/cg"), Some(Path::new("/cg/unified")));
        assert_eq!(cg.dir("cpu"), Some(Path::new("/cg/cpu/k8s/c1")));
        assert_eq!(cg.dir("cpuacct"), Some(Path::new("/cg/cpuacct/k8s/c1")));
        assert_eq!(cg.dir("systemd"), Some(Path::new("/cg/systemd/k8s/pod")));
        assert_eq!(cg.dir("memory"), None);
        assert_eq!(cg.unified.as_deref(), Some(Path::new("/cg/unified/k8s/c1")));
        let v2 = Cgroups::parse(
            "0::/kubepods/c2\n",
            Path::new("/cg"),
            Some(Path::new("/cg")),
        );
        assert_eq!(v2.dir("memory"), Some(Path::new("/cg/kubepods/c2")));
    }

    #[test]
    fn v2_limits_read_in_v1_terms() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, v: &str| std::fs::write(d.path().join(f), v).unwrap();
        w("cpu.max", "20000 100000\n");
        w("cpu.weight", "39\n"); // runc's weight for 1024 shares
        w("memory.max", "67108864\n");
        w("memory.low", "0\n");
        w("memory.swap.max", "0\n");
        let l = limits_v2(d.path());
        assert_eq!(l.cpu_period, 100_000);
        assert_eq!(l.cpu_quota, Some(20_000));
        assert!((990..=1030).contains(&l.cpu_shares), "{}", l.cpu_shares);
        assert_eq!((l.memory, l.memory_and_swap), (64 << 20, 64 << 20));
        w("cpu.max", "max 100000\n");
        w("memory.max", "max\n");
        w("memory.swap.max", "max\n");
        let l = limits_v2(d.path());
        assert_eq!((l.cpu_quota, l.memory, l.memory_and_swap), (None, 0, 0));
    }

    #[test]
    fn pressure_limits_and_net_dev_parse() {
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=250\n";
        assert_eq!(parse_pressure(psi), Some((1_500_000, 250)));
        assert_eq!(parse_pressure(""), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(
            parse_limits(limits),
            vec![("max_open_files".to_string(), 1024)]
        );
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
                   eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n";
        let ifs = parse_net_dev(dev);
        assert_eq!(ifs.len(), 1);
        assert_eq!(
            (
                ifs[0].name.as_str(),
                ifs[0].rx_bytes,
                ifs[0].rx_dropped,
                ifs[0].tx_packets,
                ifs[0].tx_errors
            ),
            ("eth0", 5000, 2, 30, 3)
        );
    }

    #[test]
    fn this_process_has_descriptors_limits_and_a_filesystem() {
        let me = std::process::id();
        let (fds, _) = descriptors(&[me]);
        assert!(fds >= 3);
        assert!(soft_limits(me).iter().any(|(n, _)| n == "max_open_files"));
        let fs = filesystem(Path::new("/")).unwrap();
        assert!(fs.bytes > 0 && fs.inodes >= fs.inodes_free);
    }
}
