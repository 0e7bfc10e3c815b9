//! berthd as operators run it: the Prometheus endpoint scraped and every line checked, JSON
//! logs, config imports, SIGHUP reloading the log level and registry settings (and surviving
//! a broken file), and berthd under its systemd unit's settings — SIGTERM stops it cleanly
//! while containers live on (KillMode=process), and a new berthd takes them back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin, oci, ok, require_root, stderr, Daemon};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Checks one line of the Prometheus text format; returns (name, labels, value) of samples.
fn sample(line: &str) -> Option<(String, String, f64)> {
    if let Some(rest) = line.strip_prefix("# ") {
        let mut w = rest.split(' ');
        let kind = w.next().unwrap();
        assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
        let name = w.next().unwrap_or_default();
        assert!(valid_name(name), "bad metric name in {line}");
        if kind == "TYPE" {
            let t = w.next().unwrap_or_default();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                "{line}"
            );
        }
        return None;
    }
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "bad metric name in {line}");
    let (labels, rest) = if line[name_end..].starts_with('{') {
        // Label values are quoted, with \\, \" and \n escaped.
        let b = line.as_bytes();
        let (mut i, mut quoted) = (name_end + 1, false);
        while i < b.len() && (quoted || b[i] != b'}') {
            match b[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                _ => {}
            }
            i += 1;
        }
        assert!(i < b.len(), "unclosed labels: {line}");
        (line[name_end + 1..i].to_string(), &line[i + 1..])
    } else {
        (String::new(), &line[name_end..])
    };
    let value = rest.trim_start_matches(' ');
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    Some((name.to_string(), labels, v))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[test]
fn metrics_endpoint_json_logs_and_imports() {
    let port = free_port();
    let conf = tempfile::tempdir().unwrap();
    std::fs::create_dir(conf.path().join("conf.d")).unwrap();
    std::fs::write(
        conf.path().join("config.toml"),
        "imports = [\"conf.d/*.toml\"]\nlog_format = \"json\"\n[metrics]\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    // The drop-in's address wins over the main file's.
    std::fs::write(
        conf.path().join("conf.d/50-metrics.toml"),
        format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let file = conf.path().join("config.toml");
    let d = Daemon::start_with(move |c| {
        c.arg("--config").arg(&file);
    })
    .unwrap();
    let (work, archive) = oci::busybox_archive();
    ok(&d.berth(
        &[
            "images",
            "import",
            "--base-name",
            "test.local/m",
            archive.to_str().unwrap(),
        ],
        None,
    ));
    drop(work);
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "--network",
            "none",
            "--memory",
            "64m",
            "test.local/m:latest",
            "meter",
            "sleep",
            "300",
        ],
        None,
    ));

    let (head, body) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let samples: Vec<(String, String, f64)> = body.lines().filter_map(sample).collect();
    let find = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(labels))
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing from:\n{body}"))
    };
    let me = "namespace=\"default\",id=\"meter\"";
    assert_eq!(
        find("container_memory_limit_bytes", me),
        (64u64 << 20) as f64
    );
    assert!(find("container_memory_usage_bytes", me) > 0.0);
    assert!(find("container_pids_current", me) >= 1.0);
    assert_eq!(find("berth_containers_running", ""), 1.0);
    assert!(find("berth_content_bytes", "") > 0.0);
    assert!(
        find(
            "berth_grpc_requests_total",
            "method=\"/containerd.services.tasks.v1.Tasks/Create\",code=\"0\""
        ) >= 1.0
    );
    assert!(find("berth_grpc_request_duration_seconds_count", "Tasks/Create") >= 1.0);
    assert!(find("berth_unpack_layers_total", "") >= 1.0);
    assert!(find("berth_unpack_layer_bytes_total", "") > 0.0);
    // A refused call is counted under its code (5: NotFound).
    let _ = d.berth(&["containers", "info", "nosuch"], None);
    let (_, body) = http_get(port, "/metrics");
    assert!(body.contains("Containers/Get\",code=\"5\"}"), "{body}");
    let (head, _) = http_get(port, "/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // Hostile scrapers: another method is refused; a request head past 8 KiB gets no answer
    // but a closed connection; the endpoint keeps serving.
    let raw = |req: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(raw(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 16 << 10));
    assert_eq!(raw(&huge), "");
    let (head, _) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Every log line is one JSON object.
    let log = d.log_text();
    let mut lines = 0;
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        lines += 1;
    }
    assert!(lines > 3, "{log}");
    ok(&d.berth(&["rm", "-f", "meter"], None));
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A berthd started by hand (no --log-level flag, so the file's level rules).
struct Hand {
    child: Child,
    dir: tempfile::TempDir,
}

impl Hand {
    fn start(config: &Path, wrap: &[&str]) -> Hand {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("berthd.log")).unwrap();
        let mut cmd = match wrap.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin("berthd"));
                c
            }
            None => Command::new(bin("berthd")),
        };
        cmd.arg("--config")
            .arg(config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(dir.path().join("berth.sock"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        let h = Hand { child, dir };
        h.wait_ready();
        h
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "berthd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    fn berth(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("berth"))
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to the berthd this test started.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never logged: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Hand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_log_level_and_registry_hosts() {
    require_root();
    let registry = oci::Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::layout(&layout, "v1", &[oci::busybox_layer()]);
    let reference = registry.push(&layout, "v1", "reload/busybox").unwrap();
    let host = reference.split('/').next().unwrap().to_string();
    let config = work.path().join("config.toml");
    write_config(&config, "log_level = \"warn\"\n");
    let d = Hand::start(&config, &[]);

    // At warn, a pull's failure over HTTPS to a plain-HTTP registry is not logged at debug.
    let out = d.berth(&["images", "pull", &reference]);
    assert!(
        !out.status.success(),
        "pulled over HTTPS from a plain-HTTP registry?"
    );
    assert!(!d.log().contains("DEBUG"), "{}", d.log());

    write_config(
        &config,
        &format!("log_level = \"debug\"\n[registry.hosts.\"{host}\"]\nplain_http = true\n"),
    );
    d.signal(libc::SIGHUP);
    d.wait_log("registry settings reloaded");
    d.wait_log("log level changed");
    let out = d.berth(&["images", "pull", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(&d.berth(&["namespaces", "create", "after-hup"]));
    d.wait_log("DEBUG");

    // A broken file is refused; the daemon keeps its settings and keeps serving.
    write_config(&config, "log_level = [\n");
    d.signal(libc::SIGHUP);
    d.wait_log("keeping the current one");
    ok(&d.berth(&["images", "ls"]));
}

/// A value of the unit file's [Service] section.
fn unit_value(key: &str) -> String {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../cmd/systemd/berthd.service"),
    )
    .unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from berthd.service"))
        .to_string()
}

fn field(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn under_the_units_settings_sigterm_leaves_containers_running() {
    require_root();
    assert_eq!(unit_value("KillMode"), "process");
    assert_eq!(unit_value("Delegate"), "yes");
    // systemd is not PID 1 in CI, so the unit's limits are applied as systemd would, by
    // prlimit and choom; where this host's kernel refuses (no CAP_SYS_RESOURCE here), the
    // nearest allowed value is used and said.
    let want_nofile: u64 = unit_value("LimitNOFILE").parse().unwrap();
    let want_oom: i32 = unit_value("OOMScoreAdjust").parse().unwrap();
    let hard = {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
        l.rlim_max
    };
    let permitted = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    let nofile_arg = format!("--nofile={want_nofile}:{want_nofile}");
    let nofile = if permitted(&["prlimit", &nofile_arg]) {
        want_nofile
    } else {
        hard
    };
    let oom = if permitted(&["choom", "-n", &want_oom.to_string(), "--"]) {
        want_oom
    } else {
        0
    };
    if (nofile, oom) != (want_nofile, want_oom) {
        eprintln!("this host refuses the unit's LimitNOFILE={want_nofile} / OOMScoreAdjust={want_oom}; using {nofile} / {oom}");
    }
    let (nofile_s, oom_s) = (format!("--nofile={nofile}:{nofile}"), oom.to_string());
    let wrap = [
        "prlimit",
        nofile_s.as_str(),
        "choom",
        "-n",
        oom_s.as_str(),
        "--",
    ];
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    write_config(&config, "log_level = \"info\"\n");
    let mut d = Hand::start(&config, &wrap);

    // The wrappers exec berthd, so the pid is berthd's own.
    let pid = d.child.id();
    assert!(field(&format!("/proc/{pid}/limits"), "Max open files").contains(&nofile.to_string()));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim(),
        oom_s
    );

    let (_w, archive) = oci::busybox_archive();
    assert!(d
        .berth(&[
            "images",
            "import",
            "--base-name",
            "test.local/u",
            archive.to_str().unwrap()
        ])
        .status
        .success());
    let out = d.berth(&[
        "containers",
        "run",
        "-d",
        "--network",
        "none",
        "test.local/u:latest",
        "kept",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["inspect", "kept"]))).unwrap();
    let ctr_pid = inspected[0]["State"]["Pid"].as_u64().unwrap();
    assert!(ctr_pid > 0);

    // SIGTERM: berthd drains and exits 0; the container's processes stay.
    d.signal(libc::SIGTERM);
    let status = d.child.wait().unwrap();
    assert!(status.success(), "berthd exited {status}: {}", d.log());
    assert!(d.log().contains("berthd stopped"), "{}", d.log());
    assert!(
        Path::new(&format!("/proc/{ctr_pid}")).exists(),
        "the container died with berthd"
    );

    // A new berthd (Restart=always) takes the container back.
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(d.dir.path().join("berthd.log"))
        .unwrap();
    d.child = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(d.dir.path().join("root"))
        .arg("--state")
        .arg(d.dir.path().join("state"))
        .arg("--address")
        .arg(d.socket())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    d.wait_ready();
    let ps = ok(&d.berth(&["ps"]));
    assert!(
        ps.lines()
            .any(|l| l.starts_with("kept") && l.contains("Up")),
        "{ps}"
    );
    ok(&d.berth(&["rm", "-f", "kept"]));
}
