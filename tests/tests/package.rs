//! The Debian package: built by scripts/build-deb.sh from the test binaries, its metadata and
//! files checked, installed with dpkg into a clean root (its maintainer scripts see
//! DPKG_ROOT and leave this machine's services alone), and berthd, berth and the shim run
//! from that root: `berthd config default`, a daemon on the packaged config, `berth version`,
//! and `berth run`. Removal keeps the conffile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin_dir, oci, ok, require_root, require_tool, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args))
}

#[test]
fn package_installs_into_a_clean_root_and_runs() {
    require_root();
    require_tool("dpkg-deb");
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-deb.sh");
    let built = ok(&run(Command::new(&script)
        .arg(work.path().join("out"))
        .env("BIN_DIR", bin_dir())));
    let deb = PathBuf::from(built.trim().lines().last().unwrap());
    assert!(deb.exists(), "{built}");

    let info = ok(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    for want in [
        "Package: berth",
        "runc",
        "containernetworking-plugins",
        "postinst",
    ] {
        assert!(info.contains(want), "{want} missing from:\n{info}");
    }
    let contents = ok(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    for want in [
        "./usr/bin/berthd",
        "./usr/bin/berth",
        "./usr/bin/containerd-shim-berth-v2",
        "./usr/bin/berth-snapshotter",
        "./lib/systemd/system/berthd.service",
        "./etc/berth/config.toml",
        "./usr/share/bash-completion/completions/berth",
        "./usr/share/zsh/vendor-completions/_berth",
        "./usr/share/man/man1/berth.1.gz",
        "./usr/share/man/man1/berthd.1.gz",
        "./usr/share/man/man1/berth-network-create.1.gz",
    ] {
        assert!(contents.contains(want), "{want} missing from the package");
    }

    // A clean root: an empty dpkg database and nothing else.
    let root = work.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let out = dpkg(&root, &["-i", deb.to_str().unwrap()]);
    assert!(out.status.success(), "dpkg -i: {}", stderr(&out));
    let status = ok(&dpkg(&root, &["-s", "berth"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    let usr_bin = root.join("usr/bin");
    let defaults = ok(&run(
        Command::new(usr_bin.join("berthd")).args(["config", "default"])
    ));
    assert!(defaults.contains("root = \"/var/lib/berth\""), "{defaults}");
    let shipped = std::fs::read_to_string(root.join("etc/berth/config.toml")).unwrap();
    assert!(
        shipped.contains(defaults.trim()),
        "the shipped config is not the defaults"
    );

    // berthd from the package, on the packaged config (paths moved to this test's dir).
    let state = work.path().join("run");
    let sock = state.join("berth.sock");
    let mut daemon = Command::new(usr_bin.join("berthd"))
        .arg("--config")
        .arg(root.join("etc/berth/config.toml"))
        .arg("--root")
        .arg(work.path().join("lib"))
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(&sock)
        .stdout(std::fs::File::create(work.path().join("berthd.log")).unwrap())
        .stderr(std::fs::File::create(work.path().join("berthd.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "packaged berthd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let berth = |args: &[&str]| {
        run(Command::new(usr_bin.join("berth"))
            .arg("--address")
            .arg(&sock)
            .args(args))
    };
    let version = ok(&berth(&["version"]));
    assert!(
        version.contains("Server:") && version.contains("v0."),
        "{version}"
    );
    let (_w, archive) = oci::busybox_archive();
    ok(&berth(&[
        "images",
        "import",
        "--base-name",
        "test.local/pkg",
        archive.to_str().unwrap(),
    ]));
    let out = ok(&berth(&[
        "containers",
        "run",
        "--rm",
        "--network",
        "none",
        "test.local/pkg:latest",
        "pkg",
        "echo",
        "from the package",
    ]));
    assert_eq!(out, "from the package\n");
    let _ = daemon.kill();
    let _ = daemon.wait();

    // Removal keeps the conffile (purge would take it).
    ok(&dpkg(&root, &["-r", "berth"]));
    assert!(!usr_bin.join("berthd").exists());
    assert!(root.join("etc/berth/config.toml").exists());
}
