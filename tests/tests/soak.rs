//! Soak: the load mix of `load.rs` (imports, pulls from a loopback registry, runs, execs,
//! tags and removals), content ingests, leases, listings, `berth build`s and CRI pods, at a
//! moderate pace for BERTH_SOAK_HOURS hours against one berthd, sampling the daemon every
//! BERTH_SOAK_INTERVAL seconds into `samples.csv` under BERTH_SOAK_OUT. Every operation is
//! counted by kind in `ops.csv`; an unexpected error is logged to `errors.log` and fails
//! the run. Whether a sampled series grows without bound is judged, and plotted, by
//! `scripts/soak-report.py`; `scripts/soak.sh` runs both. Not part of CI: without
//! BERTH_SOAK_HOURS this test returns at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use berth_tests::{bin, free_port, import_as_base, oci, ok, pids_matching, LoadMix};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

mod cri_kit;
use cri_kit::*;

/// CLI workers running the load mix at once (load.rs runs 32 for seconds; hours want less).
const WORKERS: usize = 3;
/// A pause between one worker's operations: the soak is about time, not pressure.
const PAUSE: Duration = Duration::from_millis(500);

/// Operations by kind (ok, failed), and the failures' log.
struct Tally {
    counts: Mutex<BTreeMap<String, (u64, u64)>>,
    errors: Mutex<std::fs::File>,
    started: Instant,
}

impl Tally {
    fn record(&self, kind: &str, result: Result<(), String>) {
        let mut counts = self.counts.lock().unwrap();
        let entry = counts.entry(kind.to_string()).or_default();
        match result {
            Ok(()) => entry.0 += 1,
            Err(e) => {
                entry.1 += 1;
                let at = self.started.elapsed().as_secs();
                let line = format!("{at}s {kind}: {}\n", e.trim());
                eprint!("soak: error: {line}");
                let _ = self.errors.lock().unwrap().write_all(line.as_bytes());
            }
        }
    }

    /// Operations so far, and of them those that failed.
    fn totals(&self) -> (u64, u64) {
        let counts = self.counts.lock().unwrap();
        let failed = counts.values().map(|(_, b)| b).sum();
        (counts.values().map(|(a, b)| a + b).sum(), failed)
    }

    /// A CRI call's outcome, counted; its answer when it succeeded.
    fn grpc<T>(&self, kind: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Option<T> {
        match r {
            Ok(r) => {
                self.record(kind, Ok(()));
                Some(r.into_inner())
            }
            Err(e) => {
                self.record(kind, Err(format!("{}: {}", e.code(), e.message())));
                None
            }
        }
    }
}

/// One berth CLI call (a hang is a failure: 120 s at most): success, or what it said.
fn berth(socket: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("120")
        .arg(bin("berth"))
        .arg("--address")
        .arg(socket)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn berth: {e}"))?;
    if let (Some(data), Some(mut s)) = (stdin, child.stdin.take()) {
        s.write_all(data).map_err(|e| format!("berth stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for berth: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Where the workers meet the daemon.
#[derive(Clone)]
struct Target {
    socket: PathBuf,
    mix: LoadMix,
    end: Instant,
}

/// load.rs's mix, one operation after another, with a pause between them.
fn cli_worker(c: usize, t: Target, tally: Arc<Tally>) {
    let mut i = 0u64;
    while Instant::now() < t.end {
        let (kind, op) = t.mix.step(c, i);
        let args: Vec<&str> = op.iter().map(String::as_str).collect();
        let r = match berth(&t.socket, &args, None) {
            Err(e) if LoadMix::expected_failure(kind, &e) => Ok(()),
            r => r.map(drop),
        };
        tally.record(kind, r);
        i += 1;
        std::thread::sleep(PAUSE);
    }
}

/// Content ingests and removals, leases (some left to expire), and the listings.
fn store_worker(t: Target, tally: Arc<Tally>) {
    let mut i = 0u64;
    while Instant::now() < t.end {
        let blob = oci::noise(64 * 1024, i);
        let digest = berth_tests::sha256(&blob);
        let size = blob.len().to_string();
        let reference = format!("soak-{i}");
        let ingest = [
            "content",
            "ingest",
            &reference,
            "--expected-size",
            &size,
            "--expected-digest",
            &digest,
            // Kept from the collections other workers' removals start until removed here.
            "--label",
            "containerd.io/gc.root=soak",
        ];
        tally.record(
            "content.ingest",
            berth(&t.socket, &ingest, Some(&blob)).map(drop),
        );
        tally.record(
            "content.rm",
            berth(&t.socket, &["content", "rm", &digest], None).map(drop),
        );
        let lease = format!("soak-lease-{i}");
        // Every other lease expires by itself (garbage collection removes it).
        let expiring = i.is_multiple_of(2);
        let expires = if expiring { "2s" } else { "1h" };
        tally.record(
            "lease.create",
            berth(
                &t.socket,
                &["leases", "create", "-i", &lease, "-x", expires],
                None,
            )
            .map(drop),
        );
        if !expiring {
            tally.record(
                "lease.rm",
                berth(&t.socket, &["leases", "rm", &lease], None).map(drop),
            );
        }
        for (kind, args) in [
            ("images.ls", &["images", "ls"][..]),
            ("ps", &["ps", "-a"][..]),
            ("snapshots.ls", &["snapshots", "ls"][..]),
            ("leases.ls", &["leases", "ls"][..]),
        ] {
            tally.record(kind, berth(&t.socket, args, None).map(drop));
        }
        i += 1;
        std::thread::sleep(PAUSE * 3);
    }
}

const DOCKERFILE: &str = "FROM test.local/base:latest\nARG N=0\nRUN echo \"$N\" > /n.txt && dd if=/dev/zero of=/blob bs=1k count=256 2>/dev/null\nCMD [\"cat\", \"/n.txt\"]\n";

/// `berth build` of a new image each round (the RUN step misses the cache), the one before
/// removed.
fn build_worker(t: Target, ctx: PathBuf, tally: Arc<Tally>) {
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let ctx = ctx.to_str().unwrap().to_string();
    let mut i = 0u64;
    while Instant::now() < t.end {
        let (tag, n) = (format!("soak.local/built:{i}"), format!("N={i}"));
        let built = berth(
            &t.socket,
            &["build", "-t", &tag, "--build-arg", &n, &ctx],
            None,
        );
        tally.record("build", built.map(drop));
        if i > 0 {
            let old = format!("soak.local/built:{}", i - 1);
            tally.record(
                "build.rm",
                berth(&t.socket, &["images", "rm", &old], None).map(drop),
            );
        }
        i += 1;
        std::thread::sleep(PAUSE * 6);
    }
}

/// One pod's life through the CRI: pull, run the pod, a container in it, an exec, then stop
/// and remove both.
async fn pod_round(k: &Kit, i: u64, tally: &Tally) {
    let name = format!("soak-{i}");
    let r = pull(k, &k.busybox).await.map(drop);
    tally.record("cri.pull", r.map_err(|e| e.to_string()));
    let mut rt = k.rt().await;
    let config = k.pod_config(&name);
    let req = cri::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    };
    let Some(pod) = tally.grpc("cri.run_pod", rt.run_pod_sandbox(req).await) else {
        return;
    };
    let pod = pod.pod_sandbox_id;
    let create = cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(k.container_config("c", "echo started; sleep 600")),
        sandbox_config: Some(config),
    };
    if let Some(c) = tally.grpc("cri.create", rt.create_container(create).await) {
        let id = c.container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        if tally
            .grpc("cri.start", rt.start_container(start).await)
            .is_some()
        {
            let exec = cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["echo".into(), "soak".into()],
                timeout: 30,
            };
            if let Some(r) = tally.grpc("cri.exec", rt.exec_sync(exec).await) {
                if r.exit_code != 0 || r.stdout != b"soak\n" {
                    let said = String::from_utf8_lossy(&r.stdout);
                    tally.record(
                        "cri.exec",
                        Err(format!("exit {} stdout {said:?}", r.exit_code)),
                    );
                }
            }
        }
        let stop = cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        };
        tally.grpc("cri.stop", rt.stop_container(stop).await);
        let rm = cri::RemoveContainerRequest { container_id: id };
        tally.grpc("cri.rm", rt.remove_container(rm).await);
    }
    let list = cri::ListPodSandboxRequest { filter: None };
    tally.grpc("cri.list_pods", rt.list_pod_sandbox(list).await);
    let stop = cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    };
    tally.grpc("cri.stop_pod", rt.stop_pod_sandbox(stop).await);
    let rm = cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    };
    tally.grpc("cri.rm_pod", rt.remove_pod_sandbox(rm).await);
    // The kubelet's log directory is the test's, not berthd's: keep the disk flat.
    let _ = std::fs::remove_dir_all(k.logs().join(&name));
}

/// What the sampler watches.
struct Watched {
    pid: u32,
    root: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    metrics: String,
}

const COLUMNS: &str = "elapsed_s,rss_kib,rss_anon_kib,images,fds,threads,shims,mounts,content_bytes,content_blobs,redb_bytes,root_bytes,build_cache_bytes,state_bytes,gc_runs,gc_reclaimed_bytes,gc_removed_blobs,gc_removed_snapshots,ops,errors";

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The unlabelled metrics berthd serves, by name.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let mut text = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let _ = s.read_to_string(&mut text);
    }
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Bytes allocated on disk under `dir` on its own filesystem (mounted rootfs not entered),
/// and those of redb's files among them.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let (mut all, mut redb) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != top.dev() {
                continue;
            }
            all += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "redb") {
                redb += m.len();
            }
        }
    }
    (all, redb)
}

fn sample(w: &Watched, started: Instant, tally: &Tally) -> String {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", w.pid))
        .map(|d| d.count())
        .unwrap_or(0);
    // Shims are started with berthd's socket on their command line, as is berthd.
    let shims = pids_matching(w.socket.as_os_str().as_encoded_bytes())
        .len()
        .saturating_sub(1);
    let mounts = berth_tests::mount_points_under(&w.root).len()
        + berth_tests::mount_points_under(&w.state).len();
    let m = scrape(&w.metrics);
    let metric = |k: &str| m.get(k).copied().unwrap_or(-1.0);
    let (root_bytes, redb_bytes) = disk_usage(&w.root);
    let (build_cache_bytes, _) = disk_usage(&w.root.join("io.berth.build.v1"));
    let (state_bytes, _) = disk_usage(&w.state);
    let (ops, failed) = tally.totals();
    // Image records in the namespaces the mix and the pods use: what redb's size follows.
    let images: usize = ["default", "k8s.io"]
        .iter()
        .map(|ns| {
            berth(&w.socket, &["-n", ns, "images", "ls", "-q"], None)
                .map(|out| out.lines().filter(|l| !l.trim().is_empty()).count())
                .unwrap_or(0)
        })
        .sum();
    format!(
        "{},{},{},{images},{fds},{},{shims},{mounts},{},{},{redb_bytes},{root_bytes},{build_cache_bytes},{state_bytes},{},{},{},{},{},{}",
        started.elapsed().as_secs(),
        proc_status(w.pid, "VmRSS:"),
        // Anonymous memory alone: VmRSS also counts the binary's pages as code paths are
        // first run (35 of 48 MB in a debug build), which is not a leak.
        proc_status(w.pid, "RssAnon:"),
        proc_status(w.pid, "Threads:"),
        metric("berth_content_bytes"),
        metric("berth_content_blobs"),
        metric("berth_gc_runs_total"),
        metric("berth_gc_reclaimed_bytes_total"),
        metric("berth_gc_removed_blobs_total"),
        metric("berth_gc_removed_snapshots_total"),
        ops,
        failed,
    )
}

fn sampler(w: Watched, out: PathBuf, every: Duration, end: Instant, tally: Arc<Tally>) {
    let mut f = std::fs::File::create(out).unwrap();
    writeln!(f, "{COLUMNS}").unwrap();
    loop {
        let line = sample(&w, tally.started, &tally);
        writeln!(f, "{line}").unwrap();
        f.flush().unwrap();
        eprintln!("soak: sample {line}");
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep(every.min(end - now));
    }
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_of_mixed_load_stay_flat() {
    let Some(hours) = env_f64("BERTH_SOAK_HOURS") else {
        eprintln!("soak: skipped, BERTH_SOAK_HOURS is not set (scripts/soak.sh HOURS runs it)");
        return;
    };
    let out = PathBuf::from(std::env::var("BERTH_SOAK_OUT").unwrap_or_else(|_| ".".into()));
    std::fs::create_dir_all(&out).unwrap();
    let total = Duration::from_secs_f64(hours * 3600.0);
    // Every minute; often enough for a few dozen samples on a short trial.
    let every = env_f64("BERTH_SOAK_INTERVAL")
        .map(Duration::from_secs_f64)
        .unwrap_or_else(|| (total / 30).clamp(Duration::from_secs(5), Duration::from_secs(60)));

    let metrics = format!("127.0.0.1:{}", free_port());
    // A build cache bound small enough to be reached within minutes, so hours of builds show
    // it holding (the default, 16 MiB, would take most of a two-hour run to fill).
    let k = Kit::start_configured(&format!(
        "\n[metrics]\naddress = \"{metrics}\"\n[build]\ncache_max_bytes = 1048576\n"
    ));
    let (_archive_dir, archive) = oci::busybox_archive();
    import_as_base(&k.d, &archive);
    ok(&k.d.berth(
        &[
            "containers",
            "run",
            "-d",
            "test.local/base:latest",
            "soak-svc",
            "sleep",
            "100000000",
        ],
        None,
    ));
    let tally = Arc::new(Tally {
        counts: Mutex::default(),
        errors: Mutex::new(std::fs::File::create(out.join("errors.log")).unwrap()),
        started: Instant::now(),
    });
    let end = Instant::now() + total;
    let target = Target {
        socket: k.d.socket(),
        mix: LoadMix {
            archive: archive.to_str().unwrap().to_string(),
            reference: k.busybox.clone(),
            base: "test.local/base:latest".into(),
            service: "soak-svc".into(),
        },
        end,
    };
    let watched = Watched {
        pid: k.d.pid().unwrap(),
        root: k.d.root(),
        state: k.d.state(),
        socket: k.d.socket(),
        metrics,
    };
    eprintln!(
        "soak: {hours} h, a sample every {:?}, into {}; berthd pid {} root {}",
        every,
        out.display(),
        watched.pid,
        watched.root.display()
    );
    let mut threads = vec![];
    for c in 0..WORKERS {
        let (t, tally) = (target.clone(), tally.clone());
        threads.push(std::thread::spawn(move || cli_worker(c, t, tally)));
    }
    let (t, tl) = (target.clone(), tally.clone());
    threads.push(std::thread::spawn(move || store_worker(t, tl)));
    let (t, tl, ctx) = (
        target.clone(),
        tally.clone(),
        k.work.path().join("build-ctx"),
    );
    threads.push(std::thread::spawn(move || build_worker(t, ctx, tl)));
    let (tl, samples) = (tally.clone(), out.join("samples.csv"));
    threads.push(std::thread::spawn(move || {
        sampler(watched, samples, every, end, tl)
    }));

    let mut i = 0u64;
    while Instant::now() < end {
        pod_round(&k, i, &tally).await;
        i += 1;
        tokio::time::sleep(PAUSE * 3).await;
    }
    for t in threads {
        t.join().unwrap();
    }
    let _ =
        k.d.berth(&["tasks", "kill", "soak-svc", "--signal", "KILL"], None);

    let counts = tally.counts.lock().unwrap().clone();
    let mut ops = std::fs::File::create(out.join("ops.csv")).unwrap();
    writeln!(ops, "kind,ok,failed").unwrap();
    for (kind, (good, bad)) in &counts {
        writeln!(ops, "{kind},{good},{bad}").unwrap();
        eprintln!("soak: {kind}: {good} ok, {bad} failed");
    }
    let failed: Vec<String> = counts
        .iter()
        .filter(|(_, (_, bad))| *bad > 0)
        .map(|(kind, (_, bad))| format!("{kind} ({bad})"))
        .collect();
    let finished = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("soak: finished at unix {finished}");
    assert!(
        failed.is_empty(),
        "operations failed unexpectedly: {}; see {}",
        failed.join(", "),
        out.join("errors.log").display()
    );
}
