//! Records the git revision berth was built from, for the Version service; links the CLI
//! position-dependent, and berthd's release build with its functions in the order of
//! `berthd-link-order.txt`.
#[path = "../shim-v2/link_order.rs"]
mod link_order;

fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=BERTH_REVISION={rev}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    // The CLI starts once per command: linked at a fixed address, it skips the loader's
    // ~20,000 relocations at every start (as the shim does; see shim-v2/build.rs).
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
    // berthd stays a PIE: a long-running root daemon that parses what registries and clients
    // send keeps its code at a random address (ASLR). Position-dependent it idled ~2 MB lower
    // (its relocations dirty .data.rel.ro at start; docs/perf/memory-2026-12-07.md), a
    // hardening trade not worth that much.
    order_berthd();
}

/// In release builds linked by lld with `berthd-link-order.txt` first (what berthd runs from
/// start until idle, then what its requests add; recorded by `scripts/berthd-order.sh`):
/// start-up code scattered over 21 MB of text kept ~12 MB of it mapped in an idle berthd.
fn order_berthd() {
    link_order::link_in_order(
        "berthd-link-order.txt",
        "rustc-link-arg-bin=berthd",
        "berthd",
    );
}
