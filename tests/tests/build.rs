//! berth build: a Dockerfile of every supported instruction builds inside berthd, runs,
//! rebuilds entirely from cache to the same image, is pushed to a loopback registry and
//! pulled and run by containerd itself; errors name the Dockerfile line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::Registry;
use berth_tests::{daemon_with_busybox, ok, stderr, Containerd};
use std::path::Path;

const DOCKERFILE: &str = r#"# a build of every instruction berth supports
ARG BASE=test.local/busybox:latest
FROM $BASE
ARG GREETING=hello
ENV APP_HOME=/app \
    MODE=test
WORKDIR $APP_HOME
COPY files/ ./
ADD bundle.tar /opt/bundle/
RUN echo "$GREETING from build" > greeting.txt && rm -f /bin/ls
LABEL org.example.team=core version="1.0"
EXPOSE 8080
VOLUME /data
USER 0:0
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/greeting.txt /app/hello.txt /opt/bundle/inner.txt"]
"#;

fn context(dir: &Path) {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/hello.txt"), "copied from the context\n").unwrap();
    std::fs::write(dir.join("files/x.secret"), "must not be sent\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "**/*.secret\n").unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(dir.join("bundle.tar")).unwrap());
    let mut h = tar::Header::new_gnu();
    let data = b"extracted by ADD\n";
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", &data[..]).unwrap();
    b.finish().unwrap();
}

#[test]
fn build_run_cache_push_and_containerd_runs_it() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    context(&ctx);
    let ctx_s = ctx.to_str().unwrap();
    let out = ok(&d.berth(
        &[
            "build",
            "-t",
            "test.local/built:v1",
            "--build-arg",
            "GREETING=howdy",
            ctx_s,
        ],
        None,
    ));
    assert!(
        out.contains("Step 1/15 : ARG BASE=test.local/busybox:latest"),
        "{out}"
    );
    assert!(out.contains("Step 8/15 : RUN"), "{out}");
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();

    let run = ok(&d.berth(
        &["containers", "run", "--rm", "test.local/built:v1", "b1"],
        None,
    ));
    assert_eq!(
        run,
        "howdy from build\ncopied from the context\nextracted by ADD\n"
    );
    let check = ok(&d.berth(
        &["containers", "run", "--rm", "test.local/built:v1", "b2",
          "test -e /app/x.secret && echo leaked || echo ignored; test -e /bin/ls || echo no-ls; echo $MODE; pwd"],
        None,
    ));
    assert_eq!(check, "ignored\nno-ls\ntest\n/app\n");
    let inspect = ok(&d.berth(&["images", "inspect", "test.local/built:v1"], None));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let cfg = &v["config"]["config"];
    assert_eq!(cfg["Labels"]["org.example.team"], "core");
    assert_eq!(cfg["Labels"]["version"], "1.0");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
    assert!(cfg["Volumes"]["/data"].is_object());
    assert_eq!(cfg["StopSignal"], "SIGUSR1");
    assert_eq!(cfg["WorkingDir"], "/app");
    // busybox's layer + COPY + ADD + RUN.
    assert_eq!(v["manifest"]["layers"].as_array().unwrap().len(), 4);

    // Nothing changed: every step that makes a layer (and FROM) is cached, and the image
    // is the same one.
    let again = ok(&d.berth(
        &[
            "build",
            "-t",
            "test.local/built:v1",
            "--build-arg",
            "GREETING=howdy",
            ctx_s,
        ],
        None,
    ));
    assert_eq!(again.matches(" ---> CACHED").count(), 4, "{again}");
    assert!(again.contains(&format!("built {digest}")), "{again}");
    // A changed file rebuilds from its COPY on.
    std::fs::write(ctx.join("files/hello.txt"), "changed\n").unwrap();
    let changed = ok(&d.berth(
        &[
            "build",
            "-t",
            "test.local/built:v2",
            "--build-arg",
            "GREETING=howdy",
            ctx_s,
        ],
        None,
    ));
    assert_eq!(
        changed.matches(" ---> CACHED").count(),
        1,
        "only FROM: {changed}"
    );
    let run = ok(&d.berth(
        &["containers", "run", "--rm", "test.local/built:v2", "b3"],
        None,
    ));
    assert!(run.contains("changed"), "{run}");

    // Pushed to a registry, pulled and run by containerd with its own shim.
    let reg = Registry::start().unwrap();
    let remote = format!("{}/built/app:v1", reg.addr);
    ok(&d.berth(
        &[
            "images",
            "push",
            "--plain-http",
            "test.local/built:v1",
            &remote,
        ],
        None,
    ));
    let c = Containerd::start().unwrap();
    ok(&c.ctr(&["images", "pull", "--plain-http", &remote]));
    let out = ok(&c.ctr(&["run", "--rm", &remote, "built-by-berth"]));
    assert_eq!(
        out.replace('\r', ""),
        "howdy from build\ncopied from the context\nextracted by ADD\n"
    );
}

#[test]
fn build_errors_name_the_line() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(work.path().join("outside"), "secret").unwrap();
    let build = |dockerfile: &str| {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        d.berth(
            &["build", "-t", "test.local/bad:x", ctx.to_str().unwrap()],
            None,
        )
    };
    let out = build("FROM test.local/busybox:latest\nFROOM x\n");
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("FROOM"),
        "{}",
        stderr(&out)
    );
    let out = build("FROM test.local/busybox:latest\nRUN echo about to fail; exit 3\n");
    let e = stderr(&out);
    assert!(
        e.contains("line 2") && e.contains("status 3") && e.contains("about to fail"),
        "{e}"
    );
    let out = build("FROM test.local/busybox:latest\nCOPY missing.txt /x\n");
    assert!(stderr(&out).contains("missing.txt"), "{}", stderr(&out));
    let out = build("FROM test.local/busybox:latest\nCOPY ../outside /x\n");
    assert!(
        stderr(&out).contains("outside the build context"),
        "{}",
        stderr(&out)
    );
    let out = build("FROM test.local/busybox:latest\nADD http://example.com/x /x\n");
    assert!(stderr(&out).contains("remote sources"), "{}", stderr(&out));
    // Hostile: a variable doubling itself (4 GB from a few hundred bytes) and symlinks in the
    // context that point at the host. A clear error each, and berthd keeps serving.
    let doubling = format!(
        "FROM test.local/busybox:latest\nENV A=0123456789abcdef\n{}",
        "ENV A=$A$A\n".repeat(40)
    );
    let e = stderr(&build(&doubling));
    assert!(e.contains("more than") && e.contains("bytes"), "{e}");
    std::os::unix::fs::symlink("/etc", ctx.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", ctx.join("up")).unwrap();
    for src in ["evil/hostname", "up/hostname", "evil/shadow"] {
        let e = stderr(&build(&format!(
            "FROM test.local/busybox:latest\nCOPY {src} /x\n"
        )));
        assert!(e.contains("no such file"), "{src}: {e}");
    }
    std::fs::remove_file(ctx.join("evil")).unwrap();
    std::fs::remove_file(ctx.join("up")).unwrap();
    ok(&d.berth(&["version"], None));
    // Nothing half-made: no image, no containers, no snapshots left from the failed steps.
    assert!(!ok(&d.berth(&["images", "ls", "-q"], None)).contains("bad"));
    assert!(ok(&d.berth(&["containers", "ls", "-q"], None))
        .trim()
        .is_empty());
    let snaps = ok(&d.berth(&["snapshots", "ls"], None));
    assert!(!snaps.contains("build-"), "{snaps}");
    // FROM scratch with a COPY is a one-layer image.
    std::fs::write(ctx.join("only.txt"), "x").unwrap();
    let out = build("FROM scratch\nCOPY only.txt /\n");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `system df`'s Build Cache row: the cache's records, and the bytes `du` counts for them.
#[test]
fn system_df_sizes_the_build_cache_as_du_does() {
    let (d, _w) = daemon_with_busybox("test.local/busybox");
    let cache_row = || -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&d.berth(&["system", "df", "--format", "json"], None)))
                .unwrap();
        let rows = v.as_array().unwrap();
        rows.iter()
            .find(|r| r["type"] == "Build Cache")
            .unwrap_or_else(|| panic!("no Build Cache row: {v}"))
            .clone()
    };
    let before = cache_row();
    assert_eq!(
        (before["total"].as_i64(), before["size"].as_i64()),
        (Some(0), Some(0)),
        "{before}"
    );

    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM test.local/busybox:latest\nRUN echo one > /one\nRUN echo two > /two\n",
    )
    .unwrap();
    ok(&d.berth(
        &[
            "build",
            "-t",
            "test.local/cached:v1",
            work.path().to_str().unwrap(),
        ],
        None,
    ));
    let cache = d.root().join("io.berth.build.v1");
    let du = ok(&std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(&cache)
        .output()
        .unwrap());
    let du: i64 = du.split_whitespace().next().unwrap().parse().unwrap();
    let records = std::process::Command::new("find")
        .arg(&cache)
        .args(["-name", "*.json"])
        .output()
        .unwrap();
    let records = String::from_utf8_lossy(&records.stdout).lines().count() as i64;
    let after = cache_row();
    assert!(records >= 2, "two RUN steps, {records} records");
    assert_eq!(after["total"].as_i64(), Some(records), "{after}");
    assert_eq!(after["size"].as_i64(), Some(du), "{after}");
    assert_eq!(after["reclaimable"].as_i64(), Some(du), "{after}");
    let table = ok(&d.berth(&["system", "df"], None));
    assert!(
        table.lines().any(|l| l.starts_with("Build Cache")),
        "{table}"
    );
}
