//! Records the git revision berth was built from, for the Version service; links the CLI
//! position-dependent, and berthd's release build with its functions in the order of
//! `berthd-link-order.txt`.
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
/// start until idle, then what its requests add; recorded by `scripts/berthd-order.sh`): the
/// kernel maps a binary 64 KB or a page-cache folio at a time around each fault, so start-up
/// code scattered over 21 MB of text kept ~12 MB of it mapped in an idle berthd. Names the
/// file has that a build lacks are skipped; rerun the script when they are many.
fn order_berthd() {
    println!("cargo:rerun-if-changed=berthd-link-order.txt");
    println!("cargo:rerun-if-env-changed=PATH");
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let has_lld = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ld.lld").is_file()));
    if !has_lld {
        println!("cargo:warning=ld.lld not found: berthd links without its function order (more memory when idle); apt-get install lld");
        return;
    }
    let order = concat!(env!("CARGO_MANIFEST_DIR"), "/berthd-link-order.txt");
    for arg in [
        "-fuse-ld=lld".to_string(),
        format!("-Wl,--symbol-ordering-file={order}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=berthd={arg}");
    }
}
