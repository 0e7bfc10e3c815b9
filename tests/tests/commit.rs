//! berth commit: a container's changes become one new layer; the new image runs with them
//! (files added, files deleted through whiteouts) and with the config changes asked for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci;
use berth_tests::{import_as_base, ok, Daemon};

/// A daemon with busybox imported as `test.local/base:latest`.
fn daemon_with_base() -> Daemon {
    let d = Daemon::start().unwrap();
    let (_w, archive) = oci::busybox_archive();
    import_as_base(&d, &archive);
    d
}

#[test]
fn commit_round_trip() {
    let d = daemon_with_base();
    // A container that adds a file and deletes one of the image's.
    ok(&d.berth(
        &[
            "containers",
            "run",
            "test.local/base:latest",
            "changer",
            "sh",
            "-c",
            "echo committed > /etc/motd2; rm /bin/ls",
        ],
        None,
    ));
    ok(&d.berth(&["tasks", "rm", "changer"], None));
    let out = ok(&d.berth(
        &[
            "commit",
            "changer",
            "test.local/committed:v1",
            "--change",
            r#"CMD=["cat","/etc/motd2"]"#,
            "--change",
            "ENV=STAGE=committed",
            "-m",
            "test commit",
        ],
        None,
    ));
    assert!(out.starts_with("test.local/committed:v1 sha256:"), "{out}");
    // The image's own command now prints the added file.
    let motd = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "test.local/committed:v1",
            "after1",
        ],
        None,
    ));
    assert_eq!(motd, "committed\n");
    let gone = d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "test.local/committed:v1",
            "after2",
            "ls",
            "/",
        ],
        None,
    );
    assert!(!gone.status.success(), "the deleted file came back");
    let env = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "test.local/committed:v1",
            "after3",
            "env",
        ],
        None,
    ));
    assert!(env.contains("STAGE=committed"), "{env}");
    let inspect = ok(&d.berth(&["images", "inspect", "test.local/committed:v1"], None));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v["config"]["rootfs"]["diff_ids"].as_array().unwrap().len(),
        2
    );
    assert_eq!(v["manifest"]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["config"]["history"].as_array().unwrap().last().unwrap()["comment"],
        "test commit"
    );
    // The base image is untouched.
    let base = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "test.local/base:latest",
            "base1",
            "ls",
            "/bin/ls",
        ],
        None,
    ));
    assert!(base.contains("/bin/ls"), "{base}");
    // Committing a container that does not exist says so.
    let missing = d.berth(&["commit", "nope", "x:y"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

/// A running container is paused while its files are read, then runs on.
#[test]
fn commit_of_a_running_container_pauses_it_and_resumes() {
    let d = daemon_with_base();
    ok(&d.berth(
        &[
            "containers",
            "run",
            "-d",
            "test.local/base:latest",
            "live",
            "sh",
            "-c",
            "echo live > /etc/state; exec sleep 300",
        ],
        None,
    ));
    let mut written = false;
    for _ in 0..100 {
        let ps = ok(&d.berth(&["tasks", "ls"], None));
        if ps.contains("RUNNING") {
            written = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(written, "the container did not start");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = ok(&d.berth(&["commit", "live", "test.local/live:v1"], None));
    assert!(out.starts_with("test.local/live:v1 sha256:"), "{out}");
    let ls = ok(&d.berth(&["tasks", "ls"], None));
    assert!(ls.contains("RUNNING") && !ls.contains("PAUSED"), "{ls}");
    let state = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "test.local/live:v1",
            "check",
            "cat",
            "/etc/state",
        ],
        None,
    ));
    assert_eq!(state, "live\n");
    ok(&d.berth(&["tasks", "kill", "live", "--signal", "KILL"], None));
}
