//! Checkpoint and restore with CRIU: a process that counts in memory (the count lives in a
//! shell variable, written out to /tmp/count) is checkpointed and restored into a new
//! container, and counts on from where it was rather than from 1. Through Debian's `ctr`
//! (on Debian's runc shim and on berth's shim with runc) and through `berth checkpoint` /
//! `berth restore`. Skipped, saying so, where CRIU cannot work on this kernel (`criu
//! check` fails: Debian 12's CRIU 3.17 predates kernel 6.13's vDSO layout; CRIU 4.1 or
//! later is needed there).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{import_as_base, oci, ok, stderr, Daemon};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "test.local/base:latest";
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";
const RUNC_SHIM: &str = "io.containerd.runc.v2";
const BERTH_SHIM: &str = "io.containerd.berth.v2";

/// Whether CRIU works here; prints why not when it does not.
fn criu_works() -> bool {
    match Command::new("criu").arg("check").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "SKIP: `criu check` fails on this kernel, so nothing can be checkpointed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIP: criu is not installed (apt-get install criu): {e}");
            false
        }
    }
}

/// [`ok`], with the errors of the CRIU log a failure names.
fn criu_ok(out: &std::process::Output) -> String {
    if !out.status.success() {
        let said = stderr(out);
        if let Some(log) = said.split("log file: ").nth(1) {
            let path = log.split(['"', '\\', ' ']).next().unwrap_or_default();
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error")).collect();
            eprintln!("CRIU's errors in {path}:\n{}", errors.join("\n"));
        }
    }
    ok(out)
}

/// A daemon whose berth shims run containers on runc (the native runtime has no CRIU), with
/// busybox imported as [`IMAGE`]; keep the directory while it runs.
fn daemon_on_runc() -> (Daemon, tempfile::TempDir) {
    let d = Daemon::start_with(|c| {
        c.env("BERTH_SHIM_RUNTIME", "runc");
    })
    .unwrap();
    let (work, archive) = oci::busybox_archive();
    import_as_base(&d, &archive);
    (d, work)
}

/// The counter's value in container `id`, read by an exec; waits (up to 10 s) for the
/// file to be there.
fn count(d: &Daemon, id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let out = d.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            &format!("read{n}"),
            id,
            "cat",
            "/tmp/count",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if let Ok(v) = text.parse() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no count in {id}: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the counter in `id` passes `past`, and returns what it read.
fn counts_past(d: &Daemon, id: &str, past: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = count(d, id);
        if v > past {
            return v;
        }
        assert!(Instant::now() < deadline, "{id} stuck at {v} (<= {past})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn remove(d: &Daemon, id: &str) {
    let _ = d.ctr(&["tasks", "kill", "-s", "9", id]);
    for _ in 0..50 {
        if d.ctr(&["tasks", "delete", id]).status.success()
            || !ok(&d.ctr(&["tasks", "ls"])).contains(id)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&d.ctr(&["containers", "delete", id]));
}

/// `ctr c checkpoint --task --image` of a running counter (which keeps running), then
/// `ctr c restore --live` into a new container: the restored count goes on past the
/// checkpoint's value.
fn ctr_checkpoint_restore(runtime: &str, sfx: &str) {
    if !criu_works() {
        return;
    }
    let (d, _w) = daemon_on_runc();
    let (id, restored) = (format!("count-{sfx}"), format!("again-{sfx}"));
    let checkpoint = format!("test.local/checkpoint-{sfx}:1");
    // ctr's FIFOs stay with the shims, which give the process pipes (CRIU cannot dump a
    // descriptor on a FIFO outside the container's mounts) and hand new ones to the
    // restored process.
    ok(&d.ctr(&[
        "run",
        "-d",
        "--runtime",
        runtime,
        IMAGE,
        &id,
        "sh",
        "-c",
        COUNTER,
    ]));
    // Far enough that a counter restarted from 1 could not get there between the restore
    // and the first read (30 sleeps of 0.1 s).
    let before = counts_past(&d, &id, 30);
    criu_ok(&d.ctr(&[
        "containers",
        "checkpoint",
        "--task",
        "--image",
        &id,
        &checkpoint,
    ]));
    // The checkpointed container keeps running.
    let after = counts_past(&d, &id, before);
    let at_checkpoint = before;
    remove(&d, &id);
    criu_ok(&d.ctr(&["containers", "restore", "--live", &restored, &checkpoint]));
    let resumed = count(&d, &restored);
    eprintln!("{runtime}: checkpoint taken past {at_checkpoint}, restored at {resumed}");
    assert!(
        resumed > at_checkpoint,
        "restored at {resumed}, checkpoint taken past {at_checkpoint}: counting restarted"
    );
    assert!(
        resumed < after + 1000,
        "restored count {resumed} is not the checkpoint's (about {at_checkpoint})"
    );
    counts_past(&d, &restored, resumed);
    remove(&d, &restored);
}

#[test]
fn ctr_checkpoint_and_restore_on_runc_shim() {
    ctr_checkpoint_restore(RUNC_SHIM, "runc");
}

#[test]
fn ctr_checkpoint_and_restore_on_berth_shim() {
    ctr_checkpoint_restore(BERTH_SHIM, "berth");
}

/// Waits (up to 10 s) until `ctr tasks ls` shows `id` stopped.
fn stopped(d: &Daemon, id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ls = ok(&d.ctr(&["tasks", "ls"]));
        if ls
            .lines()
            .any(|l| l.starts_with(id) && l.contains("STOPPED"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `berth checkpoint --exit` stops the counter; `berth restore` brings it back in a new
/// container, counting on; `berth checkpoint` without --exit leaves the restored one running,
/// and a second restore counts on from there too.
#[test]
fn berth_checkpoint_exit_and_leave_running_then_restore() {
    if !criu_works() {
        return;
    }
    let (d, _w) = daemon_on_runc();
    let run = ["run", "-d", "--null-io", "--runtime", BERTH_SHIM, IMAGE];
    ok(&d.ctr(&[&run[..], &["cp-first", "sh", "-c", COUNTER]].concat()));
    let before = counts_past(&d, "cp-first", 30);

    ok(&d.berth(
        &["checkpoint", "--exit", "cp-first", "test.local/cp-exit:1"],
        None,
    ));
    assert!(stopped(&d, "cp-first"), "--exit left cp-first running");
    ok(&d.berth(&["restore", "test.local/cp-exit:1", "cp-second"], None));
    let resumed = count(&d, "cp-second");
    eprintln!("--exit: checkpoint taken past {before}, restored at {resumed}");
    assert!(resumed > before, "restored at {resumed}, was past {before}");

    let before = counts_past(&d, "cp-second", resumed);
    ok(&d.berth(
        &["checkpoint", "cp-second", "test.local/cp-running:1"],
        None,
    ));
    let still = counts_past(&d, "cp-second", before);
    ok(&d.berth(&["restore", "test.local/cp-running:1", "cp-third"], None));
    let third = count(&d, "cp-third");
    eprintln!("running: checkpoint taken past {before}, restored at {third} (source at {still})");
    assert!(third > before, "restored at {third}, was past {before}");
    for id in ["cp-first", "cp-second", "cp-third"] {
        remove(&d, id);
    }
}

/// A process holding open a file it wrote in its container's read-write layer is restored:
/// `berth checkpoint` stores the layer (containerd's rw tar) and `berth restore` applies it
/// before CRIU reopens the file. Without the layer this restore fails every time.
#[test]
fn a_process_holding_a_file_it_wrote_is_restored_with_it() {
    if !criu_works() {
        return;
    }
    let (d, _w) = daemon_on_runc();
    let holder = "echo 7 > /tmp/count; exec 3</tmp/count; while :; do sleep 0.1; done";
    let run = ["run", "-d", "--null-io", "--runtime", BERTH_SHIM, IMAGE];
    ok(&d.ctr(&[&run[..], &["hold-first", "sh", "-c", holder]].concat()));
    assert_eq!(count(&d, "hold-first"), 7);
    let image = "test.local/hold:1";
    ok(&d.berth(&["checkpoint", "--exit", "hold-first", image], None));
    ok(&d.berth(&["restore", image, "hold-second"], None));
    assert_eq!(count(&d, "hold-second"), 7);
    for id in ["hold-first", "hold-second"] {
        remove(&d, id);
    }
}

/// The native runtime has no CRIU driver: a checkpoint of its container is refused with a
/// precondition that names runc, and the container keeps running.
#[test]
fn native_runtime_refuses_checkpoint_naming_runc() {
    let d = Daemon::start().unwrap();
    let (_w, archive) = oci::busybox_archive();
    import_as_base(&d, &archive);
    let run = ["run", "-d", "--null-io", "--runtime", BERTH_SHIM, IMAGE];
    ok(&d.ctr(&[&run[..], &["native-count", "sh", "-c", COUNTER]].concat()));
    let before = counts_past(&d, "native-count", 0);
    let out = d.berth(&["checkpoint", "native-count", "test.local/no:1"], None);
    assert!(!out.status.success(), "native checkpoint succeeded");
    let said = stderr(&out);
    assert!(
        said.contains("FailedPrecondition") || said.contains("precondition"),
        "{said}"
    );
    assert!(said.contains("runc"), "{said}");
    counts_past(&d, "native-count", before);
    remove(&d, "native-count");
}
