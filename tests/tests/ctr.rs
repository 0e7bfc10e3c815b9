//! Debian's containerd `ctr`, an independent client, against berthd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{ok, sha256, Daemon};

#[test]
fn ctr_version_and_plugins() {
    let d = Daemon::start().unwrap();
    let out = ok(&d.ctr(&["version"]));
    assert!(out.contains("Server:"), "{out}");
    assert!(out.contains("UUID:"), "{out}");
    let out = ok(&d.ctr(&["plugins", "ls"]));
    assert!(out.contains("io.containerd.grpc.v1"), "{out}");
    assert!(out.contains("io.containerd.content.v1"), "{out}");
}

#[test]
fn ctr_namespaces() {
    let d = Daemon::start().unwrap();
    ok(&d.ctr(&["namespaces", "create", "ctr-ns", "team=a"]));
    let ls = ok(&d.ctr(&["namespaces", "ls"]));
    assert!(ls.contains("ctr-ns") && ls.contains("team=a"), "{ls}");
    ok(&d.ctr(&["namespaces", "label", "ctr-ns", "team=b"]));
    let ls = ok(&d.ctr(&["namespaces", "ls"]));
    assert!(ls.contains("team=b"), "{ls}");
    ok(&d.ctr(&["namespaces", "rm", "ctr-ns"]));
    let ls = ok(&d.ctr(&["namespaces", "ls", "-q"]));
    assert!(!ls.contains("ctr-ns"), "{ls}");
    let bad = d.ctr(&["namespaces", "create", "bad/name"]);
    assert!(!bad.status.success());
}

#[test]
fn ctr_content_ingest_ls_get_rm() {
    let d = Daemon::start().unwrap();
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 13) as u8).collect();
    let digest = sha256(&data);
    ok(&d.ctr_stdin(
        &[
            "content",
            "ingest",
            "--expected-digest",
            &digest,
            "--expected-size",
            &data.len().to_string(),
            "ctr-ref",
        ],
        Some(&data),
    ));
    let ls = ok(&d.ctr(&["content", "ls"]));
    assert!(ls.contains(&digest), "{ls}");
    let got = d.ctr(&["content", "get", &digest]);
    assert!(got.status.success());
    assert_eq!(got.stdout, data);
    ok(&d.ctr(&["content", "label", &digest, "a=b"]));
    let ls = ok(&d.ctr(&["content", "ls"]));
    assert!(ls.contains("a=b"), "{ls}");
    ok(&d.ctr(&["content", "rm", &digest]));
    let ls = ok(&d.ctr(&["content", "ls", "-q"]));
    assert!(!ls.contains(&digest), "{ls}");

    // A digest that does not match the bytes is refused and nothing is stored.
    let wrong = sha256(b"other");
    let out = d.ctr_stdin(
        &["content", "ingest", "--expected-digest", &wrong, "liar"],
        Some(b"payload"),
    );
    assert!(!out.status.success());
    let ls = ok(&d.ctr(&["content", "ls", "-q"]));
    assert!(!ls.contains(&wrong), "{ls}");
}

#[test]
fn ctr_images_and_leases() {
    let d = Daemon::start().unwrap();
    let ls = ok(&d.ctr(&["images", "ls"]));
    assert!(ls.starts_with("REF"), "{ls}");
    let id = ok(&d.ctr(&["leases", "create", "--id", "ctr-lease"]));
    assert!(id.contains("ctr-lease"), "{id}");
    let ls = ok(&d.ctr(&["leases", "ls"]));
    assert!(ls.contains("ctr-lease"), "{ls}");
    ok(&d.ctr(&["leases", "rm", "ctr-lease"]));
    let ls = ok(&d.ctr(&["leases", "ls", "-q"]));
    assert!(!ls.contains("ctr-lease"), "{ls}");
}

#[test]
fn ctr_events_see_another_clients_writes() {
    let d = Daemon::start().unwrap();
    let ctr = berth_tests::require_tool("ctr");
    let mut events = std::process::Command::new(ctr)
        .arg("--address")
        .arg(d.socket())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // ctr subscribes asynchronously; keep creating until it has seen one.
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = None;
    for i in 0..50 {
        ok(&d.ctr(&["namespaces", "create", &format!("ev{i}")]));
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let line = seen.expect("ctr events printed nothing");
    assert!(line.contains("/namespaces/create"), "{line}");
}
