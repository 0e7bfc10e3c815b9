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

/// Inside `services/`, the wire stays at the edges: `src/edge/` (the gRPC layer, the CRI,
/// HTTP, the daemon's wiring) converts; `src/core/` speaks core types only (the shared
/// vocabulary `berth_proto::vocab` aside) and never reaches into an edge. The layout is the
/// rule: a module is an edge because of the folder it is in.
#[test]
fn services_core_names_no_wire_types() {
    const WIRE: &[&str] = &[
        "crate::edge",
        "berth_proto::",
        "prost",
        "tonic",
        "hyper",
        "Event::Raw",
    ];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/src");
    let core = src.join("core");
    let mut files = vec![];
    let mut dirs = vec![core.clone()];
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
        "services/src/core not found at {}",
        core.display()
    );
    let mut offences = vec![];
    for f in files {
        let rel = f
            .strip_prefix(&core)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may build wire values to feed the core.
        let code_part = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code_part.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let code = code.replace("berth_proto::vocab", "");
            // events.rs defines the opaque variant; nothing else in the core may look in it.
            let wire = WIRE
                .iter()
                .filter(|w| !(rel == "events.rs" && **w == "Event::Raw"));
            if let Some(w) = wire.into_iter().find(|w| code.contains(**w)) {
                offences.push(format!("services/src/core/{rel}:{}: names {w}", n + 1));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "core modules must not name wire types or edges (convert at the edge):\n{}",
        offences.join("\n")
    );
    // Every other module of services/src is an edge, in its folder.
    let top: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut top = top;
    top.sort();
    assert_eq!(
        top,
        ["core", "edge", "lib.rs"],
        "services/src holds core/ and edge/ only"
    );
}
