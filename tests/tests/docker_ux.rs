//! `berth run` and the everyday verbs as a Docker user types them: the command after the
//! image, generated names, -i/-t/--rm/-d combined, Docker's exit codes, errors said once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{daemon_with_busybox, ok, stderr, Daemon};
use std::process::Output;

const IMAGE: &str = "test.local/ux:latest";

fn daemon() -> (Daemon, tempfile::TempDir) {
    daemon_with_busybox("test.local/ux")
}

/// The one line of stderr a failed run printed (it must be exactly one).
fn one_line_error(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    assert!(!e.contains("internal"), "{e}");
    e
}

#[test]
fn run_takes_the_command_after_the_image() {
    let (d, _img) = daemon();
    assert_eq!(
        ok(&d.berth(&["run", "--rm", IMAGE, "echo", "hi"], None)),
        "hi\n"
    );
    let out = d.berth(&["run", "--rm", IMAGE, "sh", "-c", "exit 7"], None);
    assert_eq!(out.status.code(), Some(7));
    // --rm left nothing behind.
    assert_eq!(ok(&d.berth(&["ps", "-aq"], None)), "");
}

#[test]
fn run_names_the_container_and_ps_shows_it() {
    let (d, _img) = daemon();
    ok(&d.berth(&["run", IMAGE, "true"], None));
    let ps = ok(&d.berth(&["ps", "-a"], None));
    let row = ps.lines().nth(1).expect(&ps);
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (id, name) = (cols[0], *cols.last().unwrap());
    assert_eq!(id.len(), 12, "{row}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{row}");
    let (adjective, noun) = name.split_once('_').expect(row);
    assert!(
        !adjective.is_empty()
            && !noun.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
        "{name}"
    );
    // The name and a prefix of the id both find it.
    let inspect = ok(&d.berth(&["inspect", name], None));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Name"], name);
    assert!(v[0]["Id"].as_str().unwrap().starts_with(id));
    assert_eq!(v[0]["Id"].as_str().unwrap().len(), 64);
    ok(&d.berth(&["rm", &id[..6]], None));

    // --name is taken as given, and only once.
    ok(&d.berth(&["run", "--name", "web", IMAGE, "true"], None));
    let again = d.berth(&["run", "--name", "web", IMAGE, "true"], None);
    assert_eq!(again.status.code(), Some(125));
    assert!(one_line_error(&again).contains("already exists"));
    let bad = d.berth(&["run", "--name", "no/slash", IMAGE, "true"], None);
    assert_eq!(bad.status.code(), Some(125));
    // Generated names never collide.
    for _ in 0..5 {
        ok(&d.berth(&["run", IMAGE, "true"], None));
    }
    let names = ok(&d.berth(&["ps", "-a", "--format", "json"], None));
    let v: serde_json::Value = serde_json::from_str(&names).unwrap();
    let mut all: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 6);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "{all:?}");
}

#[test]
fn stdin_goes_in_with_i_and_not_without() {
    let (d, _img) = daemon();
    assert_eq!(
        ok(&d.berth(&["run", "-i", "--rm", IMAGE, "cat"], Some(b"x\n"))),
        "x\n"
    );
    // Without -i the container's stdin is empty.
    assert_eq!(
        ok(&d.berth(&["run", "--rm", IMAGE, "cat"], Some(b"x\n"))),
        ""
    );
    // -d prints the id and returns; the container runs on.
    let id = ok(&d.berth(&["run", "-d", "--name", "bg", IMAGE, "sleep", "300"], None));
    assert_eq!(id.trim().len(), 64, "{id}");
    assert!(ok(&d.berth(&["ps"], None)).contains("bg"));
    ok(&d.berth(&["rm", "-f", "bg"], None));
}

#[test]
fn exit_codes_are_dockers() {
    let (d, _img) = daemon();
    let out = d.berth(&["run", "--rm", IMAGE, "nosuch"], None);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    let e = one_line_error(&out);
    assert!(e.contains("\"nosuch\"") && e.contains("not found"), "{e}");
    let out = d.berth(&["run", "--rm", IMAGE, "/etc/passwd"], None);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    one_line_error(&out);
    let out = d.berth(&["run", "--rm", "test.local/nosuch:latest", "true"], None);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    one_line_error(&out);
    // Nothing is left of the failed runs.
    assert_eq!(ok(&d.berth(&["ps", "-aq"], None)), "");
}

#[test]
fn the_ctr_style_form_lives_under_containers() {
    let (d, _img) = daemon();
    assert_eq!(
        ok(&d.berth(
            &["containers", "run", "--rm", IMAGE, "c1", "echo", "hi"],
            None
        )),
        "hi\n"
    );
    ok(&d.berth(
        &["containers", "run", "-d", IMAGE, "c2", "sleep", "300"],
        None,
    ));
    assert_eq!(ok(&d.berth(&["ps", "-q"], None)), "c2\n");
    let help = ok(&d.berth(&["run", "--help"], None));
    assert!(help.contains("berth containers run"), "{help}");
}

#[test]
fn run_flags_shape_the_container() {
    let (d, _img) = daemon();
    let run = |flags: &[&str], cmd: &str| {
        let mut a = vec!["run", "--rm"];
        a.extend(flags);
        a.extend([IMAGE, "sh", "-c", cmd]);
        d.berth(&a, None)
    };
    assert_eq!(ok(&run(&["-w", "/tmp"], "pwd")), "/tmp\n");
    assert_eq!(ok(&run(&["--hostname", "box"], "hostname")), "box\n");
    assert_eq!(ok(&run(&["-h", "box2"], "cat /etc/hostname")), "box2\n");
    assert_eq!(
        ok(&d.berth(
            &["run", "--rm", "--entrypoint", "echo", IMAGE, "a", "b"],
            None
        )),
        "a b\n"
    );
    let out = run(&["--read-only"], "touch /x");
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("Read-only"), "{}", stderr(&out));
    assert_eq!(
        ok(&run(
            &["--read-only", "--tmpfs", "/scratch"],
            "touch /scratch/x && echo ok"
        )),
        "ok\n"
    );
    assert_eq!(
        ok(&run(
            &["--ulimit", "nofile=100:200"],
            "ulimit -n; ulimit -Hn"
        )),
        "100\n200\n"
    );
    let shm = ok(&run(&["--shm-size", "8m"], "df -k /dev/shm | tail -1"));
    assert!(shm.split_whitespace().nth(1) == Some("8192"), "{shm}");
    // Capabilities: the bounding set in /proc/self/status, as bits.
    let cap = |flags: &[&str]| {
        let s = ok(&run(flags, "grep CapBnd /proc/self/status"));
        u64::from_str_radix(s.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let default = cap(&[]);
    const NET_ADMIN: u64 = 1 << 12;
    const CHOWN: u64 = 1;
    assert_eq!(default & NET_ADMIN, 0);
    assert_eq!(cap(&["--cap-add", "NET_ADMIN"]), default | NET_ADMIN);
    assert_eq!(cap(&["--cap-drop", "chown"]), default & !CHOWN);
    assert_eq!(cap(&["--cap-drop", "ALL"]), 0);
    assert!(cap(&["--privileged"]) & (1 << 21) != 0); // SYS_ADMIN
    let env = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(env.path(), "# a comment\nFROM_FILE=1\n").unwrap();
    let env_path = env.path().to_str().unwrap();
    assert_eq!(
        ok(&run(
            &["--env-file", env_path, "-e", "B=2"],
            "echo $FROM_FILE$B"
        )),
        "12\n"
    );
    let hosts = ok(&run(
        &["--add-host", "db.local:10.1.2.3"],
        "grep db.local /etc/hosts",
    ));
    assert_eq!(hosts, "10.1.2.3\tdb.local\n");
    assert_eq!(
        ok(&run(
            &["--device", "/dev/null:/dev/mynull"],
            "echo hi > /dev/mynull && echo ok"
        )),
        "ok\n"
    );
    let init = ok(&run(&["--init"], "cat /proc/1/cmdline | tr '\\0' ' '"));
    assert!(init.starts_with("/sbin/docker-init -- sh"), "{init}");
    let out = d.berth(
        &[
            "run",
            "--label",
            "team=blue",
            "--name",
            "labelled",
            IMAGE,
            "true",
        ],
        None,
    );
    ok(&out);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["inspect", "labelled"], None))).unwrap();
    assert_eq!(v[0]["Config"]["Labels"]["team"], "blue");
    let bad = d.berth(&["run", "--rm", "--cap-add", "NOPE", IMAGE, "true"], None);
    assert_eq!(bad.status.code(), Some(125));
    one_line_error(&bad);
}

/// Waits up to 30 s for `cond`; a timeout shows the end of berthd's log.
fn eventually(d: &Daemon, what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        if std::time::Instant::now() >= deadline {
            let log = d.log_text();
            let said: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
            let tail = &said[said.len().saturating_sub(40)..];
            panic!(
                "timed out waiting until {what}; berthd's log ends (debug lines left out):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn detached_rm_is_removed_by_berthd_when_it_exits() {
    let (d, _img) = daemon();
    ok(&d.berth(
        &[
            "run", "-d", "--rm", "--name", "gone", IMAGE, "sh", "-c", "sleep 1",
        ],
        None,
    ));
    assert!(ok(&d.berth(&["ps", "-a"], None)).contains("gone"));
    eventually(&d, "berthd removed the --rm container", || {
        ok(&d.berth(&["ps", "-aq"], None)).is_empty()
    });
}

#[test]
fn restart_on_failure_gives_up_after_its_count() {
    let (d, _img) = daemon();
    ok(&d.berth(
        &[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            IMAGE,
            "sh",
            "-c",
            "echo run; exit 3",
        ],
        None,
    ));
    let inspect = || -> serde_json::Value {
        serde_json::from_str(&ok(&d.berth(&["inspect", "flaky"], None))).unwrap()
    };
    eventually(&d, "two restarts, then the container stays stopped", || {
        let v = inspect();
        v[0]["RestartCount"] == 2 && v[0]["State"]["Status"] == "Exited (3)"
    });
    // The last run's output may reach the log file just after its exit is reported.
    eventually(&d, "three runs logged", || {
        ok(&d.berth(&["logs", "flaky"], None)) == "run\nrun\nrun\n"
    });
    // A container that succeeds is not restarted by on-failure; always restarts it until
    // its user stops it.
    ok(&d.berth(
        &[
            "run",
            "-d",
            "--name",
            "fine",
            "--restart",
            "on-failure",
            IMAGE,
            "true",
        ],
        None,
    ));
    ok(&d.berth(
        &[
            "run",
            "-d",
            "--name",
            "keeper",
            "--restart",
            "always",
            IMAGE,
            "sh",
            "-c",
            "sleep 0.2",
        ],
        None,
    ));
    eventually(&d, "always restarted it", || {
        serde_json::from_str::<serde_json::Value>(&ok(&d.berth(&["inspect", "keeper"], None)))
            .unwrap()[0]["RestartCount"]
            .as_u64()
            .unwrap()
            >= 2
    });
    ok(&d.berth(&["stop", "-t", "1", "keeper"], None));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["inspect", "fine"], None))).unwrap();
    assert_eq!(v[0]["RestartCount"], 0);
    let bad = d.berth(&["run", "--restart", "sometimes", IMAGE, "true"], None);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let both = d.berth(&["run", "--rm", "--restart", "always", IMAGE, "true"], None);
    assert_eq!(both.status.code(), Some(125));
}

#[test]
fn everyday_verbs_as_docker_has_them() {
    let (d, _img) = daemon();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:80");
    let script = "echo one; echo two; trap 'exit 5' TERM; while :; do sleep 0.1; done";
    ok(&d.berth(
        &[
            "run", "-d", "--name", "web", "-p", &publish, IMAGE, "sh", "-c", script,
        ],
        None,
    ));
    ok(&d.berth(&["run", "--name", "done", IMAGE, "true"], None));
    let ps = |args: &[&str]| {
        let mut a = vec!["ps"];
        a.extend(args);
        ok(&d.berth(&a, None))
    };
    assert_eq!(ps(&["--format", "{{.Names}} {{.Status}}"]), "web Up\n");
    assert_eq!(
        ps(&["-a", "--filter", "status=exited", "--format", "{{.Names}}"]),
        "done\n"
    );
    assert_eq!(ps(&["--filter", "name=nosuch", "-q"]), "");
    let id = ps(&["--format", "{{.ID}}"]);
    assert_eq!(id.trim().len(), 12, "{id}");
    assert_eq!(
        ok(&d.berth(&["port", "web"], None)),
        format!("80/tcp -> 127.0.0.1:{port}\n")
    );
    assert_eq!(
        ok(&d.berth(&["port", "web", "80"], None)),
        format!("127.0.0.1:{port}\n")
    );

    ok(&d.berth(&["pause", "web"], None));
    assert_eq!(ps(&["--format", "{{.Status}}"]), "Up (Paused)\n");
    ok(&d.berth(&["unpause", "web"], None));
    ok(&d.berth(&["rename", "web", "site"], None));
    assert_eq!(ps(&["--format", "{{.Names}}"]), "site\n");
    let taken = d.berth(&["rename", "site", "done"], None);
    assert_eq!(taken.status.code(), Some(1));

    let waiter = d.berth_spawn(&["wait", "site"]);
    ok(&d.berth(&["kill", "-s", "TERM", "site"], None));
    let waited = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&waited.stdout), "5\n");
    let not_running = d.berth(&["kill", "site"], None);
    assert_eq!(not_running.status.code(), Some(1));
    assert!(stderr(&not_running).contains("is not running"));

    ok(&d.berth(&["restart", "-t", "1", "site"], None));
    assert_eq!(ps(&["--format", "{{.Names}} {{.Status}}"]), "site Up\n");
    // exec -i without -t: stdin in, end-of-file passed on.
    assert_eq!(
        ok(&d.berth(&["exec", "-i", "site", "cat"], Some(b"piped\n"))),
        "piped\n"
    );
    let logs = ok(&d.berth(&["logs", "--tail", "1", "site"], None));
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(logs == "two\n" || logs == "one\n", "{logs}");

    let pruned = ok(&d.berth(&["container", "prune", "-f"], None));
    assert!(pruned.lines().count() == 2, "{pruned}");
    assert_eq!(ps(&["-a", "--format", "{{.Names}}"]), "site\n");
    let images = ok(&d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"], None));
    assert!(images.lines().any(|l| l == IMAGE), "{images}");

    // system prune -a leaves only what running containers use.
    ok(&d.berth(&["tag", IMAGE, "test.local/unused:v1"], None));
    ok(&d.berth(&["run", "--name", "stopped", IMAGE, "true"], None));
    let pruned = ok(&d.berth(&["system", "prune", "-a", "-f", "--volumes"], None));
    assert!(
        pruned.contains("untagged: test.local/unused:v1"),
        "{pruned}"
    );
    assert_eq!(ps(&["-a", "--format", "{{.Names}}"]), "site\n");
    let left = ok(&d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"], None));
    assert!(left.lines().all(|l| l == IMAGE), "{left}");
    assert_eq!(
        ok(&d.berth(&["run", "--rm", IMAGE, "echo", "still"], None)),
        "still\n"
    );
}

#[test]
fn berthd_starting_after_a_reboot_starts_always_and_unless_stopped_containers() {
    let (mut d, _img) = daemon();
    let run = |name: &str, policy: &str| {
        ok(&d.berth(
            &[
                "run",
                "-d",
                "--name",
                name,
                "--restart",
                policy,
                IMAGE,
                "sleep",
                "1000",
            ],
            None,
        ));
    };
    run("always", "always");
    run("unless", "unless-stopped");
    run("held", "unless-stopped");
    run("never", "no");
    ok(&d.berth(&["stop", "-t", "1", "held"], None));
    // A reboot: berthd, its shims and their containers gone without a word, /run wiped.
    d.kill().unwrap();
    ok(&d.cleanup());
    std::fs::remove_dir_all(d.state()).unwrap();
    d.restart().unwrap();
    let status = |name: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&d.berth(&["inspect", name], None))).unwrap();
        v[0]["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    eventually(
        &d,
        "berthd started the always and unless-stopped containers",
        || status("always") == "Up" && status("unless") == "Up",
    );
    let ps = ok(&d.berth(&["ps"], None));
    assert!(ps.contains("always") && ps.contains("unless"), "{ps}");
    assert!(!ps.contains("held") && !ps.contains("never"), "{ps}");
    // They run as before: their command (once the started init has executed it; a task is
    // running from its start's answer on), and their restart policy still holds.
    eventually(&d, "the always container runs sleep 1000", || {
        ok(&d.berth(&["top", "always"], None)).contains("sleep 1000")
    });
}

/// `du` of `args`, in bytes (its first column).
fn du(args: &[&str]) -> i64 {
    let out = std::process::Command::new("du")
        .args(args)
        .output()
        .unwrap();
    ok(&out).split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn system_df_counts_what_du_counts() {
    let (d, _img) = daemon();
    let df = || -> serde_json::Value {
        serde_json::from_str(&ok(&d.berth(&["system", "df", "--format", "json"], None))).unwrap()
    };
    // Images: the content blobs they reach (its manifest, config and layers; not the
    // archive's index the import left unreferenced), each once.
    let img: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["images", "inspect", IMAGE], None))).unwrap();
    let m = &img["manifest"];
    let digests: Vec<&str> = [&img["target"], &m["config"]]
        .into_iter()
        .chain(m["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    let blobs = d.root().join("io.containerd.content.v1.content/blobs");
    let blob_bytes: i64 = digests
        .iter()
        .map(|dg| {
            let file = blobs.join(dg.replace(':', "/"));
            du(&["-b", file.to_str().unwrap()])
        })
        .sum();
    let v = df();
    assert_eq!(v[0]["type"], "Images");
    assert_eq!(
        (v[0]["total"].as_i64(), v[0]["active"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(v[0]["size"].as_i64(), Some(blob_bytes), "{v}");
    assert_eq!(v[0]["reclaimable"].as_i64(), Some(blob_bytes));
    // A running container that wrote 300 KiB, a volume with 100000 bytes no container uses.
    ok(&d.berth(&["volume", "create", "data"], None));
    ok(&d.berth(
        &[
            "run",
            "--rm",
            "-v",
            "data:/d",
            IMAGE,
            "sh",
            "-c",
            "head -c 100000 /dev/zero > /d/f",
        ],
        None,
    ));
    ok(&d.berth(
        &[
            "run",
            "-d",
            "--name",
            "writer",
            IMAGE,
            "sh",
            "-c",
            "head -c 307200 /dev/zero > /big && echo done && sleep 1000",
        ],
        None,
    ));
    eventually(&d, "the container wrote its file", || {
        ok(&d.berth(&["logs", "writer"], None)) == "done\n"
    });
    let v = df();
    assert_eq!(
        (v[0]["total"].as_i64(), v[0]["active"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(v[0]["reclaimable"], 0);
    // Containers: the writable layer (overlay's upper directory) as du sees its contents.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = d.root().display().to_string();
    let upper = mountinfo
        .split([',', ' '])
        .filter_map(|o| o.strip_prefix("upperdir="))
        .find(|u| u.starts_with(&root))
        .expect("the container's overlay mount");
    let own = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(upper).unwrap().blocks() as i64 * 512
    };
    let layer = du(&["-s", "-B1", upper]) - own;
    assert!(layer >= 307200, "{layer}");
    assert_eq!(v[1]["type"], "Containers");
    assert_eq!(
        (v[1]["total"].as_i64(), v[1]["active"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(v[1]["size"].as_i64(), Some(layer), "{v}");
    assert_eq!(v[1]["reclaimable"], 0);
    // Volumes: the bytes in the volume's directory.
    let vol: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["volume", "inspect", "data"], None))).unwrap();
    let dir = vol[0]["mountpoint"]
        .as_str()
        .expect("mountpoint")
        .to_string();
    let bytes = du(&["-sb", &format!("{dir}/f")]);
    assert_eq!(bytes, 100000);
    assert_eq!(v[2]["type"], "Local Volumes");
    assert_eq!(
        (v[2]["total"].as_i64(), v[2]["active"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        (v[2]["size"].as_i64(), v[2]["reclaimable"].as_i64()),
        (Some(bytes), Some(bytes))
    );
    // The table as Docker prints it, and -v naming each.
    let table = ok(&d.berth(&["system", "df"], None));
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    let verbose = ok(&d.berth(&["system", "df", "-v"], None));
    assert!(
        verbose.contains("writer") && verbose.contains("data") && verbose.contains(IMAGE),
        "{verbose}"
    );
}

#[test]
fn events_filter_as_docker_filters() {
    use std::io::BufRead;
    let (d, _img) = daemon();
    let mut events = std::process::Command::new(berth_tests::bin("berth"))
        .arg("--address")
        .arg(d.socket())
        .args([
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=die",
            "--filter",
            "container=watched",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // `watched` exits until the subscription (made meanwhile) shows its exit.
    let run = |name: &str| {
        let out = d.berth(&["run", "--name", name, IMAGE, "sh", "-c", "exit 3"], None);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let v: serde_json::Value =
            serde_json::from_str(&ok(&d.berth(&["inspect", name], None))).unwrap();
        v[0]["Id"].as_str().unwrap().to_string()
    };
    let run_watched = || {
        let id = run("watched");
        ok(&d.berth(&["rm", "watched"], None));
        id
    };
    let mut watched = vec![];
    let mut seen = None;
    for _ in 0..60 {
        watched.push(run_watched());
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            seen = Some(line);
            break;
        }
    }
    let line = seen.expect("no event passed the filters");
    let is_watched_exit = |line: &str, ids: &[String]| {
        line.contains("/tasks/exit") && ids.iter().any(|i| line.contains(i.as_str()))
    };
    assert!(is_watched_exit(&line, &watched), "{line}");
    // Another container's exit, and watched's create, start and delete, are left out:
    // only watched's exits come, up to its last.
    let other = run("other");
    let last = run_watched();
    watched.push(last.clone());
    loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        assert!(!line.contains(&other), "{line}");
        assert!(is_watched_exit(&line, &watched), "{line}");
        if line.contains(&last) {
            break;
        }
    }
    events.kill().unwrap();
    events.wait().unwrap();
    let bad = d.berth(&["events", "--filter", "colour=red"], None);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
}
