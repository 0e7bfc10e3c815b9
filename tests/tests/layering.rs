//! The dependency arrows of shared/STYLE.md, checked against `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};

/// crate -> the workspace crates it may depend on.
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    BTreeMap::from([
        ("berth-proto", BTreeSet::new()),
        ("berth-snapshotters", BTreeSet::from(["berth-proto"])),
        (
            "berth-services",
            BTreeSet::from(["berth-proto", "berth-snapshotters"]),
        ),
        ("berth-shim", BTreeSet::from(["berth-proto"])),
        ("berth-client", BTreeSet::from(["berth-proto"])),
        (
            "berth-cmd",
            BTreeSet::from([
                "berth-services",
                "berth-client",
                "berth-proto",
                "berth-snapshotters",
            ]),
        ),
        (
            "berth-tests",
            BTreeSet::from(["berth-client", "berth-proto"]),
        ),
    ])
}

#[test]
fn workspace_dependencies_follow_the_layout() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed = allowed();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        allowed.keys().copied().collect(),
        "workspace crates changed: update STYLE arrows"
    );
    for p in packages {
        let name = p["name"].as_str().unwrap();
        for dep in p["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            if names.contains(dep_name) {
                assert!(
                    allowed[name].contains(dep_name),
                    "{name} must not depend on {dep_name} (see shared/STYLE.md)"
                );
            }
        }
    }
}
