//! The container's cgroup, found from its init process: statistics for Stats (cgroup v1 and
//! v2, in containerd's metrics types) and OOM-kill notification (v2: inotify on
//! memory.events; v1: an eventfd registered on memory.oom_control). The watcher is one
//! thread that sleeps in the kernel until something happens.

use berth_proto::cgroups::{v1, v2};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone)]
pub enum Cgroup {
    /// Unified hierarchy: one directory.
    V2(PathBuf),
    /// One directory per controller ("memory", "cpuacct", ...).
    V1(HashMap<String, PathBuf>),
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// A number, with "max" as `max_value`.
fn num(p: &Path, max_value: u64) -> u64 {
    match read(p) {
        Some(s) if s.trim() == "max" => max_value,
        Some(s) => s.trim().parse().unwrap_or(0),
        None => 0,
    }
}

/// "key value" lines.
fn flat(p: &Path) -> HashMap<String, u64> {
    read(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Parses /proc/<pid>/cgroup text into the container's cgroup.
pub fn parse(text: &str, unified: bool) -> Option<Cgroup> {
    let mut v1 = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            if unified {
                return Some(Cgroup::V2(Path::new(ROOT).join(rel)));
            }
            continue;
        }
        for c in controllers.split(',') {
            let c = c.trim_start_matches("name=");
            v1.insert(c.to_string(), Path::new(ROOT).join(c).join(rel));
        }
    }
    (!v1.is_empty()).then_some(Cgroup::V1(v1))
}

impl Cgroup {
    pub fn of_pid(pid: i32) -> Option<Cgroup> {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        parse(&text, Path::new(ROOT).join("cgroup.controllers").exists())
    }

    fn v1_dir(&self, controller: &str) -> Option<&PathBuf> {
        match self {
            Cgroup::V1(m) => m.get(controller),
            Cgroup::V2(_) => None,
        }
    }

    /// Current statistics, packed as containerd packs them.
    pub fn metrics(&self) -> prost_types::Any {
        match self {
            Cgroup::V2(dir) => berth_proto::to_any(&metrics_v2(dir)),
            Cgroup::V1(_) => berth_proto::to_any(&self.metrics_v1()),
        }
    }

    fn metrics_v1(&self) -> v1::Metrics {
        let memory = self.v1_dir("memory");
        v1::Metrics {
            pids: self.v1_dir("pids").map(|d| v1::PidsStat {
                current: num(&d.join("pids.current"), 0),
                limit: num(&d.join("pids.max"), 0),
            }),
            cpu: self
                .v1_dir("cpuacct")
                .map(|d| cpu_v1(d, self.v1_dir("cpu"))),
            memory: memory.map(|d| memory_v1(d)),
            memory_oom_control: memory.map(|d| oom_control_v1(d)),
            blkio: self.v1_dir("blkio").map(|d| v1::BlkIoStat {
                io_service_bytes_recursive: blkio_v1(&d.join("blkio.throttle.io_service_bytes")),
                io_serviced_recursive: blkio_v1(&d.join("blkio.throttle.io_serviced")),
            }),
            ..v1::Metrics::default()
        }
    }

    /// Calls `on_oom` each time the kernel OOM-kills a process of this cgroup, from one
    /// thread that ends when the cgroup goes away.
    pub fn watch_oom(&self, on_oom: impl Fn() + Send + 'static) {
        match self.clone() {
            Cgroup::V2(dir) => {
                std::thread::spawn(move || watch_v2(&dir, on_oom));
            }
            Cgroup::V1(m) => {
                if let Some(dir) = m.get("memory").cloned() {
                    std::thread::spawn(move || watch_v1(&dir, on_oom));
                }
            }
        }
    }
}

/// CPU time from cpuacct (`d`), throttling from the cpu controller's directory.
fn cpu_v1(d: &Path, cpu: Option<&PathBuf>) -> v1::CpuStat {
    // cpuacct.stat counts USER_HZ ticks (100 per second on Linux).
    let stat = flat(&d.join("cpuacct.stat"));
    let tick = 1_000_000_000 / 100;
    let per_cpu = read(&d.join("cpuacct.usage_percpu"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let throttle = cpu.map(|c| flat(&c.join("cpu.stat"))).unwrap_or_default();
    v1::CpuStat {
        usage: Some(v1::CpuUsage {
            total: num(&d.join("cpuacct.usage"), 0),
            kernel: stat.get("system").copied().unwrap_or(0) * tick,
            user: stat.get("user").copied().unwrap_or(0) * tick,
            per_cpu,
        }),
        throttling: Some(v1::Throttle {
            periods: throttle.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: throttle.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: throttle.get("throttled_time").copied().unwrap_or(0),
        }),
    }
}

fn memory_v1(d: &Path) -> v1::MemoryStat {
    let s = flat(&d.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let entry = |prefix: &str| v1::MemoryEntry {
        limit: num(&d.join(format!("{prefix}.limit_in_bytes")), u64::MAX),
        usage: num(&d.join(format!("{prefix}.usage_in_bytes")), 0),
        max: num(&d.join(format!("{prefix}.max_usage_in_bytes")), 0),
        failcnt: num(&d.join(format!("{prefix}.failcnt")), 0),
    };
    v1::MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: Some(entry("memory")),
        swap: Some(entry("memory.memsw")),
        kernel: Some(entry("memory.kmem")),
        kernel_tcp: Some(entry("memory.kmem.tcp")),
    }
}

fn oom_control_v1(d: &Path) -> v1::MemoryOomControl {
    let oom = flat(&d.join("memory.oom_control"));
    v1::MemoryOomControl {
        oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
        under_oom: oom.get("under_oom").copied().unwrap_or(0),
        oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
    }
}

/// A blkio file's "major:minor op value" lines.
fn blkio_v1(file: &Path) -> Vec<v1::BlkIoEntry> {
    read(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, value] = f.as_slice() else {
                return None;
            };
            let (major, minor) = dev.split_once(':')?;
            Some(v1::BlkIoEntry {
                op: op.to_string(),
                device: String::new(),
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn metrics_v2(dir: &Path) -> v2::Metrics {
    let cpu = flat(&dir.join("cpu.stat"));
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let ev = flat(&dir.join("memory.events"));
    let e = |k: &str| ev.get(k).copied().unwrap_or(0);
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: num(&dir.join("pids.current"), 0),
            limit: num(&dir.join("pids.max"), 0),
        }),
        cpu: Some(v2::CpuStat {
            usage_usec: c("usage_usec"),
            user_usec: c("user_usec"),
            system_usec: c("system_usec"),
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_usec: c("throttled_usec"),
        }),
        memory: Some(memory_v2(dir)),
        io: Some(v2::IoStat {
            usage: io_v2(&dir.join("io.stat")),
        }),
        memory_events: Some(v2::MemoryEvents {
            low: e("low"),
            high: e("high"),
            max: e("max"),
            oom: e("oom"),
            oom_kill: e("oom_kill"),
        }),
    }
}

fn memory_v2(dir: &Path) -> v2::MemoryStat {
    let s = flat(&dir.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    v2::MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault"),
        workingset_activate: g("workingset_activate"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: num(&dir.join("memory.current"), 0),
        usage_limit: num(&dir.join("memory.max"), u64::MAX),
        swap_usage: num(&dir.join("memory.swap.current"), 0),
        swap_limit: num(&dir.join("memory.swap.max"), u64::MAX),
        max_usage: num(&dir.join("memory.peak"), 0),
        swap_max_usage: num(&dir.join("memory.swap.peak"), 0),
    }
}

/// io.stat's "major:minor key=value..." lines.
fn io_v2(file: &Path) -> Vec<v2::IoEntry> {
    read(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (major, minor) = it.next()?.split_once(':')?;
            let kv: HashMap<&str, u64> = it
                .filter_map(|x| {
                    let (k, v) = x.split_once('=')?;
                    Some((k, v.parse().ok()?))
                })
                .collect();
            let k = |n: &str| kv.get(n).copied().unwrap_or(0);
            Some(v2::IoEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                rbytes: k("rbytes"),
                wbytes: k("wbytes"),
                rios: k("rios"),
                wios: k("wios"),
            })
        })
        .collect()
}

fn oom_kills_v2(dir: &Path) -> u64 {
    flat(&dir.join("memory.events"))
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

fn watch_v2(dir: &Path, on_oom: impl Fn()) {
    let Ok(path) = std::ffi::CString::new(dir.join("memory.events").as_os_str().as_encoded_bytes())
    else {
        return;
    };
    // SAFETY: inotify_init1 takes flags only; the fd is closed at the end of this function.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd is a live inotify descriptor; path is NUL-terminated.
    if unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) } < 0 {
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
        return;
    }
    let mut seen = oom_kills_v2(dir);
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 || !dir.exists() {
            break;
        }
        let now = oom_kills_v2(dir);
        if now > seen {
            seen = now;
            on_oom();
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
}

fn oom_kills_v1(dir: &Path) -> u64 {
    let m = flat(&dir.join("memory.oom_control"));
    m.get("oom_kill").copied().unwrap_or(0)
}

fn watch_v1(dir: &Path, on_oom: impl Fn()) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let Ok(control) = std::fs::File::open(dir.join("memory.oom_control")) else {
        return;
    };
    // SAFETY: eventfd takes an initial value and flags; closed at the end of this function.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return;
    }
    let registered = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.event_control"))
        .and_then(|mut f| f.write_all(format!("{efd} {}", control.as_raw_fd()).as_bytes()));
    if registered.is_ok() {
        let mut seen = oom_kills_v1(dir);
        let mut buf = [0u8; 8];
        loop {
            // SAFETY: an 8-byte read from the eventfd into our buffer.
            let n = unsafe { libc::read(efd, buf.as_mut_ptr().cast(), 8) };
            // The eventfd also fires when the cgroup is removed.
            if n != 8 || !dir.exists() {
                break;
            }
            let now = oom_kills_v1(dir);
            if now > seen || now == 0 {
                seen = now;
                on_oom();
            }
        }
    }
    // SAFETY: closing the eventfd opened above.
    unsafe { libc::close(efd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_files() {
        let v2 = parse("0::/system.slice/berth-c1\n", true).unwrap();
        assert!(
            matches!(v2, Cgroup::V2(p) if p == Path::new("/sys/fs/cgroup/system.slice/berth-c1"))
        );
        let v1 = parse(
            "4:memory:/default/c1\n3:cpu,cpuacct:/default/c1\n1:name=systemd:/x\n0::/\n",
            false,
        )
        .unwrap();
        let Cgroup::V1(m) = v1 else { panic!() };
        assert_eq!(m["memory"], Path::new("/sys/fs/cgroup/memory/default/c1"));
        assert_eq!(m["cpuacct"], Path::new("/sys/fs/cgroup/cpuacct/default/c1"));
        assert_eq!(m["cpu"], Path::new("/sys/fs/cgroup/cpu/default/c1"));
        assert!(parse("garbage", false).is_none());
    }
}
