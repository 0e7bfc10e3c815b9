//! The dependency arrows of shared/STYLE.md, checked against `cargo metadata`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

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
        (
            "berth-shim",
            BTreeSet::from(["berth-proto", "berth-snapshotters"]),
        ),
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

/// Inside `services/`, the wire stays at the edges: only the gRPC layer (`grpc/`), the
/// daemon's wiring (`daemon.rs`), the runtime's ttrpc edge and the Kubernetes CRI adapter
/// (`cri/`, whose vocabulary is the CRI's own messages) name protobuf, tonic or the gRPC
/// layer. Everything else speaks core types (the shared vocabulary `berth_proto::vocab` aside);
/// the CRI adapter reaches the core only through the core's APIs.
#[test]
fn services_core_names_no_wire_types() {
    const EDGES: &[&str] = &[
        "grpc/",
        "daemon.rs",
        "runtime/ttrpc.rs",
        "runtime/shim_client.rs",
        "cri/",
    ];
    const WIRE: &[&str] = &["crate::grpc", "berth_proto::", "prost", "tonic"];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/src");
    let mut files = vec![];
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() > 20,
        "services/src not found at {}",
        src.display()
    );
    let mut offences = vec![];
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if EDGES.iter().any(|e| rel.starts_with(e)) {
            continue;
        }
        for (n, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let code = code.replace("berth_proto::vocab", "");
            if let Some(w) = WIRE.iter().find(|w| code.contains(*w)) {
                offences.push(format!("services/src/{rel}:{}: names {w}", n + 1));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "core modules must not name wire types (convert at the edge):\n{}",
        offences.join("\n")
    );
}
