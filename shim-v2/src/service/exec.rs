//! Execs: Exec records a process to run in the container (its spec written to the bundle),
//! and Start with its id runs it (`runc exec --detach`), its exit looked for under the state
//! lock so that an exec ending at once is never lost.

use super::state::Proc;
use super::{Service, R};
use crate::error::Error;
use crate::reaper::Exit;
use crate::runc::read_pid;
use crate::stdio::Relay;
use berth_proto::containerd::events as ev;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::Status;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// What `runc exec` made: the process and, with a terminal, its pty master.
struct Launched {
    pid: i32,
    console: Option<Arc<OwnedFd>>,
    stdin_hold: Option<Arc<OwnedFd>>,
    relay: Option<Arc<Relay>>,
}

impl Service {
    pub(super) fn exec(&self, r: api::ExecProcessRequest) -> R<()> {
        let init = self.proc("")?;
        if init.exit.is_some() {
            return Err(Error::precondition("the container has exited"));
        }
        let spec = r
            .spec
            .ok_or_else(|| Error::invalid("exec needs a process spec"))?;
        serde_json::from_slice::<serde_json::Value>(&spec.value)
            .map_err(|e| Error::invalid(format!("process spec is not JSON: {e}")))?;
        if r.exec_id.is_empty() || r.exec_id.contains('/') || r.exec_id.len() > 76 {
            return Err(Error::invalid("exec id must be a short name without '/'"));
        }
        let mut st = self.lock_state()?;
        if st.execs.contains_key(&r.exec_id) {
            return Err(Error::already_exists(format!(
                "exec {} already exists",
                r.exec_id
            )));
        }
        std::fs::write(
            self.bundle.join(format!("exec-{}.json", r.exec_id)),
            &spec.value,
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        st.execs.insert(
            r.exec_id.clone(),
            Proc::created(r.stdin, r.stdout, r.stderr, r.terminal),
        );
        drop(st);
        self.events.publish(
            "/tasks/exec-added",
            &ev::TaskExecAdded {
                container_id: self.id.clone(),
                exec_id: r.exec_id,
            },
        );
        Ok(())
    }

    /// Runs the created exec `p`; its pid. A launch that fails leaves none of the runtime's
    /// files behind (the spec stays for another Start, until Delete).
    pub(super) fn start_exec(&self, exec_id: String, p: &Proc) -> R<i32> {
        let launched = self.launch_exec(&exec_id, p).inspect_err(|_| {
            self.remove_exec_files(&exec_id, &["pid", "log"]);
        })?;
        let pid = launched.pid;
        let early = self.record_started(&exec_id, launched)?;
        self.exited.notify_all();
        self.events.publish(
            "/tasks/exec-started",
            &ev::TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: exec_id.clone(),
                pid: pid as u32,
            },
        );
        if let Some(e) = early {
            self.exits().exited(pid, e);
        }
        Ok(pid)
    }

    /// Removes the exec's files in the bundle with these extensions (spec `json`, `pid`,
    /// runtime `log`): a long-running container sees thousands of execs, and an exec's files
    /// serve only its launch.
    pub(super) fn remove_exec_files(&self, exec_id: &str, extensions: &[&str]) {
        for ext in extensions {
            let _ = std::fs::remove_file(self.bundle.join(format!("exec-{exec_id}.{ext}")));
        }
    }

    /// `runc exec --detach` with the exec's spec and stdio.
    fn launch_exec(&self, exec_id: &str, p: &Proc) -> R<Launched> {
        let spec = self.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        let mut io = self.stdio_for(
            &format!("exec-{exec_id}"),
            p.terminal,
            &p.stdin,
            &p.stdout,
            &p.stderr,
        )?;
        let (sp, pf) = (spec.display().to_string(), pid_file.display().to_string());
        let log = self.bundle.join(format!("exec-{exec_id}.log"));
        let head = ["exec", "--detach", "--pid-file", &pf, "--process", &sp];
        let stdio = std::mem::take(&mut io.stdio);
        self.launch(&head, io.socket.as_ref(), stdio, &log)?;
        let console = self.attach_console(io.socket.as_ref(), &p.stdin, &p.stdout)?;
        let stdin_hold = io.stdin_hold(&p.stdin);
        let pid = read_pid(&pid_file)?;
        Ok(Launched {
            pid,
            console,
            stdin_hold,
            relay: io.relay,
        })
    }

    /// Records the exec running; returns its exit if that was reaped already (the caller
    /// then reports it).
    ///
    /// The pid is published and an exit already reaped is looked for under the state lock,
    /// which the reaper's hook also takes: an exit lands either before (found here) or after
    /// (the hook then finds the pid). Without the lock, an exit between the look and the
    /// pid's assignment was lost, and Wait never returned.
    fn record_started(&self, exec_id: &str, launched: Launched) -> R<Option<Exit>> {
        let mut st = self.lock_state()?;
        let early = self.reaper.exited(launched.pid);
        if let Some(p) = st.execs.get_mut(exec_id) {
            p.pid = launched.pid;
            p.console = launched.console;
            p.stdin_hold = launched.stdin_hold;
            p.relay = launched.relay;
            p.status = Status::Running as i32;
        }
        Ok(early)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, fixture, start, state};
    use crate::error::Error;
    use berth_proto::containerd::task::v2 as api;
    use berth_proto::containerd::v1::types::Status;

    #[test]
    fn execs_are_validated_once_each_and_an_early_exit_is_kept() {
        let f = fixture();
        create(&f.service).unwrap();
        start(&f.service, "").unwrap();
        let exec = |id: &str, spec: &[u8]| {
            f.service.exec(api::ExecProcessRequest {
                id: "c1".into(),
                exec_id: id.into(),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: spec.to_vec(),
                }),
                ..Default::default()
            })
        };
        assert!(matches!(
            exec("e1", b"not json"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(exec("a/b", b"{}"), Err(Error::InvalidArgument(_))));
        exec("e1", b"{}").unwrap();
        assert!(matches!(exec("e1", b"{}"), Err(Error::AlreadyExists(_))));
        assert_eq!(
            state(&f.service, "e1").unwrap().status,
            Status::Created as i32
        );

        // The process exits before `start` has read its pid: the exit is not lost.
        *f.runtime.exit_at_launch.lock().unwrap() = Some((f.reaper.clone(), 7));
        let pid = start(&f.service, "e1").unwrap();
        let s = state(&f.service, "e1").unwrap();
        assert_eq!(
            (s.pid, s.status, s.exit_status),
            (pid, Status::Stopped as i32, 7)
        );
        let calls = f.runtime.calls.lock().unwrap().clone();
        assert!(
            calls
                .last()
                .unwrap()
                .starts_with("exec --detach --pid-file "),
            "{calls:?}"
        );
        let exec_files = || {
            let mut names: Vec<String> = std::fs::read_dir(&f.service.bundle)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("exec-"))
                .collect();
            names.sort();
            names
        };
        assert_eq!(exec_files(), ["exec-e1.json", "exec-e1.pid"]);
        f.service
            .delete(api::DeleteRequest {
                id: "c1".into(),
                exec_id: "e1".into(),
            })
            .unwrap();
        assert!(matches!(state(&f.service, "e1"), Err(Error::NotFound(_))));
        assert!(exec_files().is_empty(), "{:?}", exec_files());
        // The init process is untouched by the exec's deletion.
        assert_eq!(
            state(&f.service, "").unwrap().status,
            Status::Running as i32
        );
    }

    /// Execs that exit the moment they start: wherever the exit lands, Wait returns.
    #[test]
    fn an_exec_exiting_while_start_records_it_is_never_lost() {
        let f = fixture();
        create(&f.service).unwrap();
        start(&f.service, "").unwrap();
        *f.runtime.exit_after_launch.lock().unwrap() = Some(f.reaper.clone());
        for i in 0..300 {
            let id = format!("e{i}");
            f.service
                .exec(api::ExecProcessRequest {
                    id: "c1".into(),
                    exec_id: id.clone(),
                    spec: Some(prost_types::Any {
                        type_url: String::new(),
                        value: b"{}".to_vec(),
                    }),
                    ..Default::default()
                })
                .unwrap();
            start(&f.service, &id).unwrap();
            let svc = f.service.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let waited = id.clone();
            std::thread::spawn(move || {
                let _ = tx.send(svc.wait(api::WaitRequest {
                    id: "c1".into(),
                    exec_id: waited,
                }));
            });
            let got = rx.recv_timeout(std::time::Duration::from_secs(5));
            assert!(got.is_ok(), "exec {id}: its exit was lost");
        }
    }
}
