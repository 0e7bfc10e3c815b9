//! What the service's unit tests share (the tests themselves sit beside the code they test,
//! in `lifecycle` and `exec`): a fake runc and a service over it.

use super::{Service, R};
use crate::events::Publisher;
use crate::reaper::{Exit, Reaper};
use crate::runc::{Failed, Runtime, Stdio3};
use berth_proto::containerd::task::v2 as api;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

/// Stands in for runc: records every command, writes pids for create and exec, and
/// can make a launched process exit at once (as a crashing exec would).
#[derive(Default)]
pub(super) struct FakeRuntime {
    pub calls: Mutex<Vec<String>>,
    next_pid: AtomicI32,
    pub exit_at_launch: Mutex<Option<(Arc<Reaper>, i32)>>,
    /// Set: every launched process exits from another thread right after the launch.
    pub exit_after_launch: Mutex<Option<Arc<Reaper>>>,
}

struct Shared(Arc<FakeRuntime>);

impl Runtime for Shared {
    fn run(&self, args: &[&str], _stdio: Stdio3) -> Result<Vec<u8>, Failed> {
        self.0.calls.lock().unwrap().push(args.join(" "));
        Ok(b"[]".to_vec())
    }
    fn launch(&self, args: &[&str], _stdio: Stdio3, _log: &Path) -> Result<(), Failed> {
        self.0.calls.lock().unwrap().push(args.join(" "));
        let pid = 4_000_000 + self.0.next_pid.fetch_add(1, Ordering::SeqCst);
        let at = args.iter().position(|a| *a == "--pid-file").unwrap();
        std::fs::write(args[at + 1], pid.to_string()).unwrap();
        if let Some((reaper, status)) = self.0.exit_at_launch.lock().unwrap().take() {
            reaper.record(
                pid,
                Exit {
                    status,
                    at: crate::now(),
                },
            );
        }
        if let Some(reaper) = self.0.exit_after_launch.lock().unwrap().clone() {
            std::thread::spawn(move || {
                let pause = std::time::Duration::from_micros((pid % 50) as u64);
                std::thread::sleep(pause);
                let at = crate::now();
                reaper.record(pid, Exit { status: 0, at });
            });
        }
        Ok(())
    }
}

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub service: Arc<Service>,
    pub runtime: Arc<FakeRuntime>,
    pub reaper: Arc<Reaper>,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let reaper = Arc::new(Reaper::default());
    let service = Service::new(
        "c1".into(),
        dir.path().to_path_buf(),
        Box::new(Shared(runtime.clone())),
        reaper.clone(),
        Publisher::new(
            dir.path().join("no-daemon").display().to_string(),
            "default".into(),
        ),
    );
    Fixture {
        _dir: dir,
        service,
        runtime,
        reaper,
    }
}

pub(super) fn create(s: &Service) -> R<u32> {
    s.create(api::CreateTaskRequest {
        id: "c1".into(),
        ..Default::default()
    })
    .map(|r| r.pid)
}

pub(super) fn state(s: &Service, exec_id: &str) -> R<api::StateResponse> {
    s.state_of(api::StateRequest {
        id: "c1".into(),
        exec_id: exec_id.into(),
    })
}

pub(super) fn start(s: &Service, exec_id: &str) -> R<u32> {
    s.start(api::StartRequest {
        id: "c1".into(),
        exec_id: exec_id.into(),
    })
    .map(|r| r.pid)
}
