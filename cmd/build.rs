//! Records the git revision berth was built from, for the Version service, and links the
//! CLI and berthd position-dependent.
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
    // berthd too: as a PIE its ~39,000 relocations (a 913 KB table, read once) dirty every
    // page of .data.rel.ro (650 KB) at start, and both stay resident: ~1.3 MB of an idle
    // daemon's RSS (docs/perf/memory-2026-12-07.md).
    println!("cargo:rustc-link-arg-bin=berthd=-no-pie");
}
