//! What the shim knows of its container's processes: a record per process (the init and each
//! exec), how an exit lands in them, and the verbs that read them (State, Wait).

use super::{Service, R};
use crate::cgroups::Cgroup;
use crate::error::Error;
use crate::reaper::Exit;
use crate::stdio::Relay;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::Status;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, MutexGuard};

#[derive(Clone, Default)]
pub(super) struct Proc {
    pub pid: i32,
    pub status: i32,
    pub exit: Option<Exit>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The pty master, when the process has a terminal.
    pub console: Option<Arc<OwnedFd>>,
    /// A write end of the stdin FIFO, held until CloseIO (as containerd's shim holds it): the
    /// process reads the end of its input when the client says so, not when a client (or
    /// berthd itself, restarting) closes its own end.
    pub stdin_hold: Option<Arc<OwnedFd>>,
    /// The copies of its output (without a terminal): its exit is reported once drained.
    pub relay: Option<Arc<Relay>>,
    /// A checkpoint image to restore the init from at Start, in place of `runc start`.
    pub restore_from: Option<std::path::PathBuf>,
}

impl Proc {
    /// A process created but not started, with the stdio the client named.
    pub fn created(stdin: String, stdout: String, stderr: String, terminal: bool) -> Proc {
        Proc {
            status: Status::Created as i32,
            stdin,
            stdout,
            stderr,
            terminal,
            ..Proc::default()
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub init: Option<Proc>,
    pub execs: HashMap<String, Proc>,
    /// The container's cgroup, found once its init exists.
    pub cgroup: Option<Cgroup>,
}

impl State {
    /// The init process for an empty exec id, else that exec.
    fn process(&self, exec_id: &str) -> Option<&Proc> {
        if exec_id.is_empty() {
            self.init.as_ref()
        } else {
            self.execs.get(exec_id)
        }
    }

    fn process_mut(&mut self, exec_id: &str) -> Option<&mut Proc> {
        if exec_id.is_empty() {
            self.init.as_mut()
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// The output relay of the running process `pid`, while its copies are not drained.
    pub fn undrained(&self, pid: i32) -> Option<Arc<Relay>> {
        self.init
            .iter()
            .chain(self.execs.values())
            .find(|p| p.pid == pid && p.exit.is_none())
            .and_then(|p| p.relay.clone())
            .filter(|r| !r.drained())
    }

    /// Marks the running process `pid` stopped with `exit`; returns its id (`init_id` for the
    /// init, else the exec id) when one was.
    pub fn record_exit(&mut self, pid: i32, exit: Exit, init_id: &str) -> Option<String> {
        let mut found = None;
        if let Some(p) = self
            .init
            .as_mut()
            .filter(|p| p.pid == pid && p.exit.is_none())
        {
            p.exit = Some(exit);
            p.status = Status::Stopped as i32;
            found = Some(init_id.to_string());
        }
        for (id, p) in self.execs.iter_mut() {
            if p.pid == pid && p.exit.is_none() {
                p.exit = Some(exit);
                p.status = Status::Stopped as i32;
                found = Some(id.clone());
            }
        }
        found
    }
}

fn ts(e: &Option<Exit>) -> Option<prost_types::Timestamp> {
    e.map(|e| e.at)
}

impl Service {
    pub(super) fn lock_state(&self) -> R<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::internal("state poisoned"))
    }

    /// A copy of the process's record.
    pub(super) fn proc(&self, exec_id: &str) -> R<Proc> {
        let st = self.lock_state()?;
        st.process(exec_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("process {exec_id:?} not found")))
    }

    /// Changes the process's record, if it has one.
    pub(super) fn update(&self, exec_id: &str, f: impl FnOnce(&mut Proc)) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(p) = st.process_mut(exec_id) {
                f(p);
            }
        }
    }

    /// Whether any process of the task is still running.
    pub(super) fn live(&self) -> bool {
        self.state
            .lock()
            .map(|st| {
                st.init.as_ref().is_some_and(|p| p.exit.is_none())
                    || st.execs.values().any(|p| p.pid > 0 && p.exit.is_none())
            })
            .unwrap_or(false)
    }

    pub(super) fn state_of(&self, r: api::StateRequest) -> R<api::StateResponse> {
        let p = self.proc(&r.exec_id)?;
        Ok(api::StateResponse {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            pid: p.pid as u32,
            status: p.status,
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
            terminal: p.terminal,
            exit_status: p.exit.map(|e| e.status as u32).unwrap_or(0),
            exited_at: ts(&p.exit),
            exec_id: r.exec_id,
        })
    }

    /// Waits for the process to exit, even one that has not been started yet.
    pub(super) fn wait(&self, r: api::WaitRequest) -> R<api::WaitResponse> {
        let mut st = self.lock_state()?;
        loop {
            let Some(p) = st.process(&r.exec_id) else {
                return Err(Error::not_found(format!(
                    "process {:?} not found",
                    r.exec_id
                )));
            };
            if let Some(exit) = p.exit {
                return Ok(api::WaitResponse {
                    exit_status: exit.status as u32,
                    exited_at: Some(exit.at),
                });
            }
            st = self
                .exited
                .wait(st)
                .map_err(|_| Error::internal("state poisoned"))?;
        }
    }
}
