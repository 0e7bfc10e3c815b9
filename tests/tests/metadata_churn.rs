//! Issue #30: tags made and removed through berthd, as the soak's load mix does, leave the
//! image records as they found them. The metadata file's size before and after is printed;
//! that churn alone does not grow it is asserted by the images table's unit test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{daemon_with_busybox, ok, Daemon, LoadMix};

/// Rounds of the mix per client; each round makes one tag and removes one.
const ROUNDS: u64 = 300;
const CLIENTS: usize = 3;

fn images(d: &Daemon) -> usize {
    ok(&d.berth(&["images", "ls", "-q"], None)).lines().count()
}

fn redb_bytes(d: &Daemon) -> u64 {
    let path = d.root().join("io.containerd.metadata.v1.redb/meta.redb");
    std::fs::metadata(path).unwrap().len()
}

/// Runs the tag and untag steps of the mix's rounds `from..to` for every client.
fn churn(d: &Daemon, mix: &LoadMix, from: u64, to: u64) {
    for i in from * 6..to * 6 {
        for c in 0..CLIENTS {
            let (kind, args) = mix.step(c, i);
            if kind != "tag" && kind != "untag" {
                continue;
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = d.berth(&args, None);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || LoadMix::expected_failure(kind, &err),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn tag_churn_leaves_the_image_records_as_found() {
    let (d, _work) = daemon_with_busybox("test.local/base");
    let mix = LoadMix {
        archive: String::new(),
        reference: String::new(),
        base: "test.local/base:latest".into(),
        service: String::new(),
    };
    let baseline = images(&d);
    churn(&d, &mix, 0, ROUNDS / 6);
    assert_eq!(
        images(&d),
        baseline,
        "tags left after {} rounds",
        ROUNDS / 6
    );
    let warm = redb_bytes(&d);
    churn(&d, &mix, ROUNDS / 6, ROUNDS);
    assert_eq!(images(&d), baseline, "tags left after {ROUNDS} rounds");
    eprintln!(
        "metadata file: {warm} bytes after {} rounds, {} after {ROUNDS}",
        ROUNDS / 6,
        redb_bytes(&d)
    );
}
