//! berthd as a process: flags and config, permissions, the root lock, graceful shutdown,
//! and crash recovery of ingests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_client::proto::content::{InfoRequest, StatusRequest, WriteAction, WriteContentRequest};
use berth_tests::{bin, ok, require_root, sha256, stderr, Daemon};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use tokio_stream::StreamExt;
use tonic::Code;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn config_default_prints_every_key() {
    let out = Command::new(bin("berthd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "root = \"/var/lib/berth\"",
        "state = \"/run/berth\"",
        "address = \"/run/berth/berth.sock\"",
        "log_level = \"info\"",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}

#[test]
fn config_file_is_read_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berthd.toml");
    std::fs::write(&cfg, "root = \"/from/file\"\nlog_level = \"debug\"\n").unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["--state", "/from/flag", "config", "dump"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("root = \"/from/file\""), "{text}");
    assert!(text.contains("state = \"/from/flag\""), "{text}");
    assert!(text.contains("log_level = \"debug\""), "{text}");

    std::fs::write(&cfg, "rooot = \"/typo\"\n").unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rooot"), "{err}");
}

#[test]
fn permissions_lock_and_graceful_shutdown() {
    let mut d = Daemon::start().unwrap();
    assert_eq!(mode(&d.root()), 0o700);
    // The state dir is passable (not listable): user-namespaced containers reach their rootfs.
    assert_eq!(mode(&d.state()), 0o711);
    let sock = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&sock), 0);
    let mut ttrpc = d.socket().into_os_string();
    ttrpc.push(".ttrpc");
    let ttrpc = std::fs::metadata(&ttrpc).unwrap();
    assert_eq!(ttrpc.permissions().mode() & 0o777, 0o600);

    // A second daemon on the same root refuses to start and says why.
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(d.root())
        .arg("--state")
        .arg(d.dir.path().join("state2"))
        .arg("--address")
        .arg(d.dir.path().join("second.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using root"), "{err}");
    assert!(err.contains(&d.pid().unwrap().to_string()), "{err}");

    let status = d.terminate().unwrap();
    assert!(status.success(), "berthd exited with {status}");
    assert!(
        !d.socket().exists(),
        "socket left behind after graceful shutdown"
    );
}

#[tokio::test]
async fn sigkill_mid_ingest_then_resume() {
    require_root();
    let mut d = Daemon::start().unwrap();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = sha256(&data);
    {
        let c = d.client().await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: "crashy".into(),
            total: data.len() as i64,
            expected: digest.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut replies = c
            .content()
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        replies.next().await.unwrap().unwrap();
        tx.send(WriteContentRequest {
            action: WriteAction::Write as i32,
            offset: 0,
            data: data[..1_000_000].to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
        let r = replies.next().await.unwrap().unwrap();
        assert_eq!(r.offset, 1_000_000);
        // Crash with the stream open.
        d.kill().unwrap();
    }
    d.restart().unwrap();
    let c = d.client().await.unwrap();
    // Nothing half-written is visible as content.
    let e = c
        .content()
        .info(InfoRequest {
            digest: digest.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let blobs = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    // The ingest survived with its bytes and resumes from there.
    let st = c
        .content()
        .status(StatusRequest {
            r#ref: "crashy".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.offset, 1_000_000);
    assert_eq!(st.expected, digest);
    let got = c
        .ingest(
            "crashy",
            data.as_slice(),
            data.len() as i64,
            Some(&digest),
            HashMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(got, digest);
    assert_eq!(c.read_blob(&digest, 0, 0).await.unwrap(), data);
}

#[tokio::test]
async fn metadata_survives_sigkill() {
    let mut d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    // A gc root: nothing else refers to it, and the restarted daemon collects garbage.
    let root = HashMap::from([("containerd.io/gc.root".to_string(), "test".to_string())]);
    let digest = c
        .ingest("durable", &b"durable bytes"[..], 0, None, root)
        .await
        .unwrap();
    // The RPC answered, so the write is durable: a crash right now loses nothing.
    d.kill().unwrap();
    d.restart().unwrap();
    let c = d.client().await.unwrap();
    assert_eq!(c.read_blob(&digest, 0, 0).await.unwrap(), b"durable bytes");
}

/// Started with the common soft limit of 1024 open files, berthd raises it to the hard one.
#[test]
fn open_file_soft_limit_is_raised_to_the_hard_one() {
    use std::os::unix::process::CommandExt;
    let d = Daemon::start_with(|cmd| {
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = lim.rlim_max.min(1024);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
    })
    .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid().unwrap())).unwrap();
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(nofile[3], nofile[4], "soft limit not raised: {limits}");
}

/// `berth check` audits a running daemon (read-only); `berthd check` refuses a root in use,
/// and with the daemon stopped reports and repairs.
#[test]
fn check_finds_corruption_live_and_offline_and_repairs() {
    let mut d = Daemon::start().unwrap();
    let clean = ok(&d.berth(&["check"], None));
    assert!(clean.contains("no corruption"), "{clean}");
    let digest = ok(&d.berth(&["content", "ingest", "precious"], Some(b"precious bytes")));
    let digest = digest.trim().to_string();
    let blob = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::write(&blob, b"rotted bytes!!").unwrap();

    let live = d.berth(&["check"], None);
    assert_eq!(live.status.code(), Some(1));
    let text = String::from_utf8_lossy(&live.stdout);
    assert!(text.contains("CORRUPT") && text.contains(&digest), "{text}");

    let (root, state) = (d.root(), d.state());
    let offline = |extra: &[&str]| {
        Command::new(bin("berthd"))
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("check")
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = offline(&[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("berth check"),
        "{}",
        stderr(&refused)
    );
    d.terminate().unwrap();
    let repaired = offline(&["--repair"]);
    assert_eq!(repaired.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&repaired.stdout).contains("(repaired)"));
    let after = offline(&[]);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    d.restart().unwrap();
    assert!(!ok(&d.berth(&["content", "ls", "-q"], None)).contains(&digest));
}
