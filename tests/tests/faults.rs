//! Fault injection: berthd is SIGKILLed at a random moment while it imports, pulls, deletes
//! images, commits, builds and runs containers (create, start, delete), for several rounds.
//! (A killed shim is the `tasks` suite's.) After every restart it must serve, and
//! `berthd check` on the stopped root must find nothing corrupt; an image that is listed is
//! complete. Rounds and seed: BERTH_FAULT_ROUNDS (default 5) and BERTH_FAULT_SEED (default:
//! the clock); the seed is printed so a failure can be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin, busybox_everywhere, ok, Daemon};
use std::process::Command;
use std::time::Duration;

/// A small deterministic generator (xorshift), enough to spread the kills.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `berth check` on the running daemon, then stops it gracefully, runs `berthd check` on its
/// root, and starts it again.
fn check_root(d: &mut Daemon, round: u64, seed: u64) {
    let live = d.berth(&["check"], None);
    let report = String::from_utf8_lossy(&live.stdout);
    assert!(
        live.status.success() && !report.contains("CORRUPT"),
        "round {round} (seed {seed}): berth check (live) found corruption:\n{report}"
    );
    let st = d.terminate().unwrap();
    assert!(
        st.success(),
        "berthd did not stop cleanly (round {round}, seed {seed})"
    );
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(d.root())
        .arg("--state")
        .arg(d.state())
        .arg("check")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !report.contains("CORRUPT"),
        "round {round} (seed {seed}): berthd check found corruption:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.restart().unwrap();
}

#[test]
fn sigkill_at_random_moments_loses_and_half_makes_nothing() {
    let seed = env_or(
        "BERTH_FAULT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    let rounds = env_or("BERTH_FAULT_ROUNDS", 5);
    eprintln!("fault injection: {rounds} rounds, BERTH_FAULT_SEED={seed}");
    let mut rng = Rng(seed);

    let mut d = Daemon::start().unwrap();
    // test.local/base:v1, which every round keeps: it must survive every crash whole.
    let image = busybox_everywhere(&d, "faults/busybox");
    let (reference, archive) = (image.reference.clone(), image.archive.clone());

    // A build context whose RUN step makes a container and a layer.
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM test.local/base:v1\nRUN echo built > /built\n",
    )
    .unwrap();
    let ctx = context.path().to_str().unwrap().to_string();

    for round in 0..rounds {
        let ns = format!("round{round}");
        let arch = archive.to_str().unwrap().to_string();
        // A stopped container to commit while the daemon is killed.
        let changed = format!("cm{round}");
        ok(&d.berth(
            &[
                "containers",
                "run",
                "test.local/base:v1",
                &changed,
                "sh",
                "-c",
                "echo c > /c",
            ],
            None,
        ));
        let _ = d.berth(&["tasks", "rm", &changed], None);
        let ops: Vec<Vec<String>> = vec![
            vec![
                "--namespace",
                &ns,
                "images",
                "import",
                "--base-name",
                "test.local/imp",
                &arch,
            ],
            vec![
                "--namespace",
                &ns,
                "images",
                "pull",
                "--plain-http",
                &reference,
            ],
            vec!["images", "rm", "--sync", "test.local/gone:latest"],
            vec!["commit", &changed, &format!("test.local/committed:{round}")],
            vec![
                "build",
                "--no-cache",
                "-t",
                &format!("test.local/built:{round}"),
                &ctx,
            ],
            vec![
                "containers",
                "run",
                "--rm",
                "test.local/base:v1",
                &format!("r{round}"),
                "sh",
                "-c",
                "echo x > /f",
            ],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_string).collect())
        .collect();
        if round % 2 == 0 {
            ok(&d.berth(
                &[
                    "images",
                    "tag",
                    "test.local/base:v1",
                    "test.local/gone:latest",
                ],
                None,
            ));
        }
        let children: Vec<_> = ops
            .iter()
            .map(|args| {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                d.berth_spawn(&a)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        d.restart().unwrap(); // SIGKILL, then start
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Serving, and what it lists is whole.
        ok(&d.berth(&["version"], None));
        for namespace in ["default", ns.as_str()] {
            let checked = d.berth(&["--namespace", namespace, "images", "check"], None);
            let text = String::from_utf8_lossy(&checked.stdout);
            assert!(
                !text.contains("incomplete") && !text.contains("missing"),
                "round {round} (seed {seed}): a half-visible image in {namespace}:\n{text}"
            );
        }
        let base = ok(&d.berth(&["images", "ls", "-q"], None));
        assert!(
            base.contains("test.local/base:v1"),
            "round {round} (seed {seed}): {base}"
        );
        // Containers killed mid-run are cleaned up through the API.
        let _ = d.berth(
            &["tasks", "kill", &format!("r{round}"), "--signal", "KILL"],
            None,
        );
        std::thread::sleep(Duration::from_millis(200));
        let _ = d.berth(&["tasks", "rm", &format!("r{round}")], None);
        let _ = d.berth(&["containers", "rm", &format!("r{round}")], None);
        let _ = d.berth(&["containers", "rm", &changed], None);
        check_root(&mut d, round, seed);
    }
    // The image every round relied on still runs.
    assert_eq!(
        ok(&d.berth(
            &[
                "containers",
                "run",
                "--rm",
                "test.local/base:v1",
                "final",
                "echo",
                "ok"
            ],
            None
        )),
        "ok\n"
    );
}
