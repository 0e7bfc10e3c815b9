//! What an init's exit does to the rest of its container.

use super::tests::{create, fixture, start};
use crate::reaper::Exit;
use berth_proto::containerd::task::v2 as api;

/// Writes the bundle's spec with these namespaces, runs the init, lets it exit and waits
/// for the exit to be reported; returns the runtime's commands after `start`.
fn exit_with_namespaces(namespaces: serde_json::Value) -> Vec<String> {
    let f = fixture();
    let spec = serde_json::json!({"linux": {"namespaces": namespaces}});
    std::fs::write(f.service.bundle.join("config.json"), spec.to_string()).unwrap();
    let pid = create(&f.service).unwrap();
    start(&f.service, "").unwrap();
    let at = crate::now();
    f.reaper.record(pid as i32, Exit { status: 0, at });
    let waited = f.service.wait(api::WaitRequest {
        id: "c1".into(),
        exec_id: String::new(),
    });
    assert_eq!(waited.unwrap().exit_status, 0);
    let calls = f.runtime.calls.lock().unwrap().clone();
    let after = calls.iter().position(|c| c == "start c1").unwrap() + 1;
    calls[after..].to_vec()
}

#[test]
fn an_init_sharing_its_pid_namespace_takes_the_rest_of_the_container_with_it() {
    let pod = serde_json::json!([{"type": "mount"}, {"type": "pid", "path": "/proc/1/ns/pid"}]);
    assert_eq!(exit_with_namespaces(pod), ["kill --all c1 9"]);
    let host = serde_json::json!([{"type": "mount"}]);
    assert_eq!(exit_with_namespaces(host), ["kill --all c1 9"]);
}

#[test]
fn an_init_with_its_own_pid_namespace_leaves_the_killing_to_the_kernel() {
    let own = serde_json::json!([{"type": "pid"}, {"type": "mount"}]);
    assert!(exit_with_namespaces(own).is_empty());
}
