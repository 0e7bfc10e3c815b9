//! Records the git revision berth was built from, for the Version service.
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
}
