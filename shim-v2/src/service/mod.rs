//! The shim v2 Task service for one container, on runc (or the native runtime, which speaks
//! runc's command line). Where each part lives:
//! - `state`: the record of each process (init and execs), how exits land in it, State, Wait;
//! - `lifecycle`: the init's verbs (Create, Start, Kill, Delete);
//! - `exec`: an exec's own path (Exec, and Start for an exec id);
//! - `checkpoint`: Checkpoint, and the restore a task created from a checkpoint starts with;
//! - `container`: verbs on the container as a whole (Pause, Resume, Update, Pids, Stats);
//! - `io`: a process's stdio, the client's FIFOs or a terminal (and ResizePty, CloseIO);
//! - `handler`: the ttrpc face, decoding each method's request and encoding its answer.

mod checkpoint;
mod container;
mod exec;
mod handler;
mod io;
mod lifecycle;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_exit;

use crate::console::ConsoleSocket;
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::reaper::{Exit, Reaper};
use crate::runc::{Runtime, Stdio3};
use berth_proto::containerd::events as ev;
use state::State;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct Service {
    pub id: String,
    pub bundle: PathBuf,
    runc: Arc<dyn Runtime>,
    reaper: Arc<Reaper>,
    events: Arc<Publisher>,
    state: Arc<Mutex<State>>,
    /// Signalled whenever a process of this task exits.
    exited: Arc<std::sync::Condvar>,
}

type R<T> = Result<T>;

impl Service {
    pub fn new(
        id: String,
        bundle: PathBuf,
        runc: Box<dyn Runtime>,
        reaper: Arc<Reaper>,
        events: Publisher,
    ) -> Arc<Self> {
        let s = Arc::new(Service {
            id,
            bundle,
            runc: Arc::from(runc),
            reaper: reaper.clone(),
            events: Arc::new(events),
            state: Arc::default(),
            exited: Arc::default(),
        });
        let report = s.exits();
        reaper.on_exit(move |pid, exit| report.exited(pid, exit));
        s
    }

    fn exits(&self) -> Exits {
        Exits {
            state: self.state.clone(),
            events: self.events.clone(),
            container_id: self.id.clone(),
            exited: self.exited.clone(),
            bundle: self.bundle.clone(),
            runc: self.runc.clone(),
        }
    }

    /// Runs a runc command to completion.
    fn runc(&self, args: &[&str], stdio: Stdio3) -> R<Vec<u8>> {
        self.runc.run(args, stdio).map_err(Error::from)
    }

    /// Runs a runc command that starts a process (`head` is its verb and flags): with the
    /// console socket's flag when the process has a terminal, for this container.
    fn launch(
        &self,
        head: &[&str],
        socket: Option<&ConsoleSocket>,
        stdio: Stdio3,
        log: &Path,
    ) -> R<()> {
        let sock_path = socket.map(|c| c.path().display().to_string());
        let mut args = head.to_vec();
        if let Some(p) = &sock_path {
            args.extend(["--console-socket", p.as_str()]);
        }
        args.push(&self.id);
        self.runc.launch(&args, stdio, log).map_err(Error::from)
    }
}

/// How a process's exit is reported (recorded, so Wait returns, and published), once the
/// copies of its output have drained: a client that saw the exit has all of the output.
#[derive(Clone)]
struct Exits {
    state: Arc<Mutex<State>>,
    events: Arc<Publisher>,
    container_id: String,
    exited: Arc<std::sync::Condvar>,
    bundle: PathBuf,
    runc: Arc<dyn Runtime>,
}

/// How long the copies of an exited process's output may move no data before its exit is
/// reported anyway (a child it left holds the pipe).
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

impl Exits {
    /// Process `pid` exited: reported now, or by a thread once what is left of the container
    /// is killed (the init of a container that does not own its pid namespace) and its output
    /// has drained (the reaper's thread, which calls this, must not wait).
    fn exited(&self, pid: i32, exit: Exit) {
        let (relay, init) = match self.state.lock() {
            Ok(st) => (
                st.undrained(pid),
                st.init
                    .as_ref()
                    .is_some_and(|p| p.pid == pid && p.exit.is_none()),
            ),
            Err(_) => (None, false),
        };
        let kill_rest = init && shares_pid_namespace(&self.bundle);
        if relay.is_none() && !kill_rest {
            return self.report(pid, exit);
        }
        let me = self.clone();
        let waiter = std::thread::Builder::new()
            .name("drain".into())
            .stack_size(64 << 10)
            .spawn(move || {
                if kill_rest {
                    me.kill_left_behind();
                }
                if let Some(relay) = relay {
                    relay.wait_drained(DRAIN_IDLE);
                }
                me.report(pid, exit)
            });
        if waiter.is_err() {
            self.report(pid, exit);
        }
    }

    /// The init of a container in a pid namespace it does not own (a pod's shared one, the
    /// host's) exited: its other processes live on (the kernel kills them only with the
    /// namespace's own init), so they are killed here, as containerd's runc shim does, and
    /// the container is gone when its exit is reported (its output's pipes closed with it).
    fn kill_left_behind(&self) {
        let sig = libc::SIGKILL.to_string();
        if let Err(e) = self.runc.run(
            &["kill", "--all", &self.container_id, &sig],
            Stdio3::default(),
        ) {
            tracing::debug!(error = %e, "killing the container's remaining processes");
        }
    }

    fn report(&self, pid: i32, exit: Exit) {
        let exited = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            st.record_exit(pid, exit, &self.container_id)
        };
        self.exited.notify_all();
        if let Some(id) = exited {
            publish_exit(&self.events, &self.container_id, id, pid, exit);
        }
    }
}

/// Whether the bundle's spec puts the container in a pid namespace it does not own: one it
/// joins by path, or the host's (no pid namespace asked for). A bundle without a readable
/// spec (runc would not have run it) has nothing to say.
fn shares_pid_namespace(bundle: &Path) -> bool {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    let owns = spec["linux"]["namespaces"].as_array().is_some_and(|nss| {
        nss.iter()
            .any(|n| n["type"] == "pid" && n["path"].as_str().unwrap_or("").is_empty())
    });
    !owns
}

/// `/tasks/exit` for process `id` (the container's id for its init).
fn publish_exit(events: &Publisher, container_id: &str, id: String, pid: i32, exit: Exit) {
    events.publish(
        "/tasks/exit",
        &ev::TaskExit {
            container_id: container_id.to_string(),
            id,
            pid: pid as u32,
            exit_status: exit.status as u32,
            exited_at: Some(exit.at),
        },
    );
}
