//! The shim v2 Task service for one container, on runc.

use crate::cgroups::Cgroup;
use crate::console::{self, ConsoleSocket};
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::reaper::{Exit, Reaper};
use crate::rootfs::{mount_rootfs, unmount_rootfs};
use crate::runc::{read_pid, Runtime, Stdio3};
use crate::server::{Handler, Reply};
use crate::stdio::open_io;
use berth_proto::containerd::events as ev;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::{ProcessInfo, Status};
use prost::Message;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Proc {
    pid: i32,
    status: i32,
    exit: Option<Exit>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    /// The pty master, when the process has a terminal.
    console: Option<Arc<OwnedFd>>,
    /// A write end of the stdin FIFO, held until CloseIO (as containerd's shim holds it): the
    /// process reads the end of its input when the client says so, not when a client (or
    /// berthd itself, restarting) closes its own end.
    stdin_hold: Option<Arc<OwnedFd>>,
}

#[derive(Default)]
struct State {
    init: Option<Proc>,
    execs: HashMap<String, Proc>,
    /// The container's cgroup, found once its init exists.
    cgroup: Option<Cgroup>,
}

pub struct Service {
    pub id: String,
    pub bundle: PathBuf,
    runc: Box<dyn Runtime>,
    reaper: Arc<Reaper>,
    events: Arc<Publisher>,
    state: Arc<Mutex<State>>,
    /// Signalled whenever a process of this task exits.
    exited: Arc<std::sync::Condvar>,
}

type R<T> = Result<T>;

fn ts(e: &Option<Exit>) -> Option<prost_types::Timestamp> {
    e.map(|e| e.at)
}

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
            runc,
            reaper: reaper.clone(),
            events: Arc::new(events),
            state: Arc::default(),
            exited: Arc::default(),
        });
        let (state, events, cid, cv) = (
            s.state.clone(),
            s.events.clone(),
            s.id.clone(),
            s.exited.clone(),
        );
        reaper.on_exit(move |pid, exit| {
            let exec = {
                let Ok(mut st) = state.lock() else { return };
                let mut found = None;
                if let Some(p) = st
                    .init
                    .as_mut()
                    .filter(|p| p.pid == pid && p.exit.is_none())
                {
                    p.exit = Some(exit);
                    p.status = Status::Stopped as i32;
                    found = Some(cid.clone());
                }
                for (id, p) in st.execs.iter_mut() {
                    if p.pid == pid && p.exit.is_none() {
                        p.exit = Some(exit);
                        p.status = Status::Stopped as i32;
                        found = Some(id.clone());
                    }
                }
                found
            };
            cv.notify_all();
            if let Some(id) = exec {
                events.publish(
                    "/tasks/exit",
                    &ev::TaskExit {
                        container_id: cid.clone(),
                        id,
                        pid: pid as u32,
                        exit_status: exit.status as u32,
                        exited_at: Some(exit.at),
                    },
                );
            }
        });
        s
    }

    fn proc(&self, exec_id: &str) -> R<Proc> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::internal("state poisoned"))?;
        let p = if exec_id.is_empty() {
            st.init.clone()
        } else {
            st.execs.get(exec_id).cloned()
        };
        p.ok_or_else(|| Error::not_found(format!("process {exec_id:?} not found")))
    }

    fn update(&self, exec_id: &str, f: impl FnOnce(&mut Proc)) {
        if let Ok(mut st) = self.state.lock() {
            let p = if exec_id.is_empty() {
                st.init.as_mut()
            } else {
                st.execs.get_mut(exec_id)
            };
            if let Some(p) = p {
                f(p);
            }
        }
    }

    fn runc(&self, args: &[&str], stdio: Stdio3) -> R<Vec<u8>> {
        self.runc.run(args, stdio).map_err(|e| Error::internal(e.0))
    }

    fn create(&self, r: api::CreateTaskRequest) -> R<api::CreateTaskResponse> {
        if self.proc("").is_ok() {
            return Err(Error::already_exists(format!(
                "task {} already exists",
                self.id
            )));
        }
        let spec: Option<serde_json::Value> = std::fs::read(self.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match spec.as_ref().and_then(crate::idmap::mappings) {
            Some((uids, gids)) => {
                let mounts: Vec<berth_snapshotters::Mount> =
                    r.rootfs.iter().cloned().map(Into::into).collect();
                crate::idmap::mount_rootfs(
                    &mounts,
                    &self.bundle.join("rootfs"),
                    &self.bundle.join("idmap"),
                    &uids,
                    &gids,
                    &self.reaper,
                )?
            }
            None => mount_rootfs(&r.rootfs, &self.bundle.join("rootfs"))?,
        }
        let (stdio, socket) = self.stdio_for("init", r.terminal, &r.stdin, &r.stdout, &r.stderr)?;
        let pid_file = self.bundle.join("init.pid");
        let bundle = self.bundle.display().to_string();
        let pf = pid_file.display().to_string();
        let log = self.bundle.join("runc.log");
        let sock_path = socket.as_ref().map(|c| c.path().display().to_string());
        let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pf];
        if let Some(p) = &sock_path {
            args.extend(["--console-socket", p.as_str()]);
        }
        args.push(&self.id);
        if let Err(e) = self.runc.launch(&args, stdio, &log) {
            unmount_rootfs(&self.bundle);
            return Err(Error::internal(e.0));
        }
        let console = match &socket {
            Some(sock) => Some(self.attach_console(sock, &r.stdin, &r.stdout)?),
            None => None,
        };
        let stdin_hold = crate::stdio::hold_stdin(&r.stdin).map(Arc::new);
        let pid = read_pid(&pid_file).map_err(|e| Error::internal(e.0))?;
        if let Err(e) = crate::rro::apply(pid, &crate::rro::from_bundle(&self.bundle), &self.reaper)
        {
            let _ = self.runc(&["delete", "--force", &self.id], Stdio3::default());
            unmount_rootfs(&self.bundle);
            return Err(e);
        }
        let cgroup = Cgroup::of_pid(pid);
        if let Some(cg) = &cgroup {
            let (events, id) = (self.events.clone(), self.id.clone());
            cg.watch_oom(move || {
                events.publish(
                    "/tasks/oom",
                    &ev::TaskOom {
                        container_id: id.clone(),
                    },
                )
            });
        }
        if let Ok(mut st) = self.state.lock() {
            st.cgroup = cgroup;
            st.init = Some(Proc {
                pid,
                status: Status::Created as i32,
                exit: None,
                stdin: r.stdin.clone(),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                terminal: r.terminal,
                console,
                stdin_hold,
            });
        }
        self.events.publish(
            "/tasks/create",
            &ev::TaskCreate {
                container_id: self.id.clone(),
                bundle,
                rootfs: r.rootfs,
                io: Some(ev::TaskIo {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    terminal: r.terminal,
                }),
                checkpoint: String::new(),
                pid: pid as u32,
            },
        );
        Ok(api::CreateTaskResponse { pid: pid as u32 })
    }

    fn start(&self, r: api::StartRequest) -> R<api::StartResponse> {
        let p = self.proc(&r.exec_id)?;
        if p.status != Status::Created as i32 {
            return Err(Error::precondition(format!(
                "process {:?} is not in the created state",
                r.exec_id
            )));
        }
        if r.exec_id.is_empty() {
            self.runc(&["start", &self.id], Stdio3::default())?;
            self.update("", |p| {
                if p.exit.is_none() {
                    p.status = Status::Running as i32
                }
            });
            self.events.publish(
                "/tasks/start",
                &ev::TaskStart {
                    container_id: self.id.clone(),
                    pid: p.pid as u32,
                },
            );
            return Ok(api::StartResponse { pid: p.pid as u32 });
        }
        let spec = self.bundle.join(format!("exec-{}.json", r.exec_id));
        let pid_file = self.bundle.join(format!("exec-{}.pid", r.exec_id));
        let (stdio, socket) = self.stdio_for(
            &format!("exec-{}", r.exec_id),
            p.terminal,
            &p.stdin,
            &p.stdout,
            &p.stderr,
        )?;
        // Non-terminal: the reader above exists, so the holder can open before the process
        // runs. With a terminal the reader opens with the console, below.
        let mut stdin_hold = if p.terminal {
            None
        } else {
            crate::stdio::hold_stdin(&p.stdin).map(Arc::new)
        };
        let (sp, pf) = (spec.display().to_string(), pid_file.display().to_string());
        let log = self.bundle.join(format!("exec-{}.log", r.exec_id));
        let sock_path = socket.as_ref().map(|c| c.path().display().to_string());
        let mut args = vec!["exec", "--detach", "--pid-file", &pf, "--process", &sp];
        if let Some(path) = &sock_path {
            args.extend(["--console-socket", path.as_str()]);
        }
        args.push(&self.id);
        self.runc
            .launch(&args, stdio, &log)
            .map_err(|e| Error::internal(e.0))?;
        let console = match &socket {
            Some(sock) => Some(self.attach_console(sock, &p.stdin, &p.stdout)?),
            None => None,
        };
        if p.terminal {
            stdin_hold = crate::stdio::hold_stdin(&p.stdin).map(Arc::new);
        }
        let pid = read_pid(&pid_file).map_err(|e| Error::internal(e.0))?;
        // The pid is published and an exit already reaped is looked for under the state lock,
        // which the reaper's hook also takes: an exit lands either before (found here) or
        // after (the hook then finds the pid). Without the lock, an exit between the look and
        // the pid's assignment was lost, and Wait never returned.
        let early = {
            let mut st = self
                .state
                .lock()
                .map_err(|_| Error::internal("state poisoned"))?;
            let early = self.reaper.exited(pid);
            if let Some(p) = st.execs.get_mut(&r.exec_id) {
                p.pid = pid;
                p.console = console;
                p.stdin_hold = stdin_hold;
                p.status = Status::Running as i32;
                if let Some(e) = early {
                    p.exit = Some(e);
                    p.status = Status::Stopped as i32;
                }
            }
            early
        };
        self.exited.notify_all();
        self.events.publish(
            "/tasks/exec-started",
            &ev::TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: r.exec_id.clone(),
                pid: pid as u32,
            },
        );
        if let Some(e) = early {
            self.events.publish(
                "/tasks/exit",
                &ev::TaskExit {
                    container_id: self.id.clone(),
                    id: r.exec_id,
                    pid: pid as u32,
                    exit_status: e.status as u32,
                    exited_at: Some(e.at),
                },
            );
        }
        Ok(api::StartResponse { pid: pid as u32 })
    }

    fn state_of(&self, r: api::StateRequest) -> R<api::StateResponse> {
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
    fn wait(&self, r: api::WaitRequest) -> R<api::WaitResponse> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::internal("state poisoned"))?;
        loop {
            let p = if r.exec_id.is_empty() {
                st.init.as_ref()
            } else {
                st.execs.get(&r.exec_id)
            };
            let Some(p) = p else {
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

    fn kill(&self, r: api::KillRequest) -> R<()> {
        let p = self.proc(&r.exec_id)?;
        if p.exit.is_some() {
            return Err(Error::not_found("process already finished"));
        }
        if r.exec_id.is_empty() {
            let sig = r.signal.to_string();
            let mut args = vec!["kill"];
            if r.all {
                args.push("--all");
            }
            args.extend([self.id.as_str(), sig.as_str()]);
            self.runc(&args, Stdio3::default())?;
        } else {
            // SAFETY: kill(2) on a pid this shim started and has not reaped.
            if unsafe { libc::kill(p.pid, r.signal as i32) } != 0 {
                return Err(Error::internal(format!(
                    "kill {}: {}",
                    p.pid,
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(())
    }

    fn delete(&self, r: api::DeleteRequest) -> R<api::DeleteResponse> {
        let p = self.proc(&r.exec_id)?;
        if p.status == Status::Running as i32 || p.status == Status::Paused as i32 {
            return Err(Error::precondition(format!(
                "task must be stopped before deletion: process {:?} is running",
                r.exec_id
            )));
        }
        if r.exec_id.is_empty() {
            self.runc(&["delete", "--force", &self.id], Stdio3::default())?;
            unmount_rootfs(&self.bundle);
            if let Ok(mut st) = self.state.lock() {
                st.init = None;
            }
        } else if let Ok(mut st) = self.state.lock() {
            st.execs.remove(&r.exec_id);
        }
        let exit = p.exit.unwrap_or(Exit {
            status: 0,
            at: crate::now(),
        });
        self.events.publish(
            "/tasks/delete",
            &ev::TaskDelete {
                container_id: self.id.clone(),
                pid: p.pid as u32,
                exit_status: exit.status as u32,
                exited_at: Some(exit.at),
                id: if r.exec_id.is_empty() {
                    self.id.clone()
                } else {
                    r.exec_id
                },
            },
        );
        Ok(api::DeleteResponse {
            pid: p.pid as u32,
            exit_status: exit.status as u32,
            exited_at: Some(exit.at),
        })
    }

    fn exec(&self, r: api::ExecProcessRequest) -> R<()> {
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
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::internal("state poisoned"))?;
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
            Proc {
                pid: 0,
                status: Status::Created as i32,
                exit: None,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
                console: None,
                stdin_hold: None,
            },
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

    fn pids(&self) -> R<api::PidsResponse> {
        let out = self.runc(&["ps", "--format", "json", &self.id], Stdio3::default())?;
        let pids: Vec<u32> = serde_json::from_slice(&out).unwrap_or_default();
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo { pid, info: None })
                .collect(),
        })
    }

    fn pause(&self, pause: bool) -> R<()> {
        self.runc(
            &[if pause { "pause" } else { "resume" }, &self.id],
            Stdio3::default(),
        )?;
        let status = if pause {
            Status::Paused
        } else {
            Status::Running
        } as i32;
        self.update("", |p| p.status = status);
        if pause {
            self.events.publish(
                "/tasks/paused",
                &ev::TaskPaused {
                    container_id: self.id.clone(),
                },
            );
        } else {
            self.events.publish(
                "/tasks/resumed",
                &ev::TaskResumed {
                    container_id: self.id.clone(),
                },
            );
        }
        Ok(())
    }

    fn update_resources(&self, r: api::UpdateTaskRequest) -> R<()> {
        let res = r
            .resources
            .ok_or_else(|| Error::invalid("resources must be set"))?;
        let f = self.bundle.join("update.json");
        std::fs::write(&f, &res.value).map_err(|e| Error::internal(e.to_string()))?;
        let fs = f.display().to_string();
        self.runc(&["update", "--resources", &fs, &self.id], Stdio3::default())?;
        Ok(())
    }

    /// runc's stdio: the client's FIFOs, or none and a console socket for a terminal.
    fn stdio_for(
        &self,
        name: &str,
        terminal: bool,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> R<(Stdio3, Option<ConsoleSocket>)> {
        if terminal {
            let sock = ConsoleSocket::bind(&self.bundle, name)
                .map_err(|e| Error::internal(format!("console socket: {e}")))?;
            return Ok((Stdio3::default(), Some(sock)));
        }
        let stdio = Stdio3 {
            stdin: open_io(stdin, false)?,
            stdout: open_io(stdout, true)?,
            stderr: open_io(stderr, true)?,
        };
        Ok((stdio, None))
    }

    /// Takes the pty master runc sent and wires it to the client's FIFOs.
    fn attach_console(&self, sock: &ConsoleSocket, stdin: &str, stdout: &str) -> R<Arc<OwnedFd>> {
        let master = sock
            .receive()
            .map_err(|e| Error::internal(format!("terminal: {e}")))?;
        console::copy(&master, open_io(stdin, false)?, open_io(stdout, true)?)
            .map_err(|e| Error::internal(format!("terminal: {e}")))?;
        Ok(Arc::new(master))
    }

    fn resize_pty(&self, r: api::ResizePtyRequest) -> R<()> {
        let p = self.proc(&r.exec_id)?;
        match &p.console {
            Some(m) => console::resize(m, r.width, r.height)
                .map_err(|e| Error::internal(format!("resize: {e}"))),
            None => Ok(()),
        }
    }

    fn stats(&self) -> R<api::StatsResponse> {
        let cg = self
            .state
            .lock()
            .map_err(|_| Error::internal("state poisoned"))?
            .cgroup
            .clone()
            .ok_or_else(|| Error::not_found(format!("task {} has no cgroup", self.id)))?;
        Ok(api::StatsResponse {
            stats: Some(cg.metrics()),
        })
    }

    fn live(&self) -> bool {
        self.state
            .lock()
            .map(|st| {
                st.init.as_ref().is_some_and(|p| p.exit.is_none())
                    || st.execs.values().any(|p| p.pid > 0 && p.exit.is_none())
            })
            .unwrap_or(false)
    }
}

fn decode<M: Message + Default>(payload: &[u8]) -> R<M> {
    M::decode(payload).map_err(|e| Error::invalid(format!("bad request: {e}")))
}

fn ok<M: Message>(m: M) -> Reply {
    Ok(m.encode_to_vec())
}

impl Handler for Service {
    fn handle(&self, method: &str, p: &[u8]) -> Reply {
        match method {
            "Create" => ok(self.create(decode(p)?)?),
            "Start" => ok(self.start(decode(p)?)?),
            "State" => ok(self.state_of(decode(p)?)?),
            "Wait" => ok(self.wait(decode(p)?)?),
            "Kill" => ok(self.kill(decode(p)?)?),
            "Delete" => ok(self.delete(decode(p)?)?),
            "Exec" => ok(self.exec(decode(p)?)?),
            "Pids" => ok(self.pids()?),
            "Pause" => ok(self.pause(true)?),
            "Resume" => ok(self.pause(false)?),
            "Update" => ok(self.update_resources(decode(p)?)?),
            "ResizePty" => ok(self.resize_pty(decode(p)?)?),
            "CloseIO" => {
                let r: api::CloseIoRequest = decode(p)?;
                if r.stdin {
                    self.update(&r.exec_id, |p| p.stdin_hold = None);
                }
                ok(())
            }
            "Connect" => ok(api::ConnectResponse {
                shim_pid: std::process::id(),
                task_pid: self.proc("").map(|p| p.pid as u32).unwrap_or(0),
                version: concat!("berth ", env!("CARGO_PKG_VERSION")).into(),
            }),
            "Shutdown" => {
                let r: api::ShutdownRequest = decode(p)?;
                if r.now || !self.live() {
                    // Answer first, then go.
                    std::thread::spawn(|| {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        std::process::exit(0);
                    });
                }
                ok(())
            }
            "Stats" => ok(self.stats()?),
            "Checkpoint" => Err(Error::unimplemented(
                "checkpoint needs CRIU, which berth does not drive",
            )),
            other => Err(Error::unimplemented(format!(
                "method {other} is not implemented"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runc::Failed;
    use std::path::Path;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// Stands in for runc: records every command, writes pids for create and exec, and
    /// can make a launched process exit at once (as a crashing exec would).
    #[derive(Default)]
    struct FakeRuntime {
        calls: Mutex<Vec<String>>,
        next_pid: AtomicI32,
        exit_at_launch: Mutex<Option<(Arc<Reaper>, i32)>>,
        /// Set: every launched process exits from another thread right after the launch.
        exit_after_launch: Mutex<Option<Arc<Reaper>>>,
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

    struct Fixture {
        _dir: tempfile::TempDir,
        service: Arc<Service>,
        runtime: Arc<FakeRuntime>,
        reaper: Arc<Reaper>,
    }

    fn fixture() -> Fixture {
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

    fn create(s: &Service) -> R<u32> {
        s.create(api::CreateTaskRequest {
            id: "c1".into(),
            ..Default::default()
        })
        .map(|r| r.pid)
    }

    fn state(s: &Service, exec_id: &str) -> R<api::StateResponse> {
        s.state_of(api::StateRequest {
            id: "c1".into(),
            exec_id: exec_id.into(),
        })
    }

    fn start(s: &Service, exec_id: &str) -> R<u32> {
        s.start(api::StartRequest {
            id: "c1".into(),
            exec_id: exec_id.into(),
        })
        .map(|r| r.pid)
    }

    #[test]
    fn init_lifecycle_create_start_exit_wait_delete() {
        let f = fixture();
        let pid = create(&f.service).unwrap();
        assert_eq!(
            state(&f.service, "").unwrap().status,
            Status::Created as i32
        );
        assert!(matches!(create(&f.service), Err(Error::AlreadyExists(_))));

        assert_eq!(start(&f.service, "").unwrap(), pid);
        assert_eq!(
            state(&f.service, "").unwrap().status,
            Status::Running as i32
        );
        assert!(matches!(
            start(&f.service, ""),
            Err(Error::FailedPrecondition(_))
        ));
        let refused = f.service.delete(api::DeleteRequest {
            id: "c1".into(),
            exec_id: String::new(),
        });
        assert!(matches!(refused, Err(Error::FailedPrecondition(_))));

        // Wait blocks until the reaper sees the exit.
        let svc = f.service.clone();
        let waiter = std::thread::spawn(move || {
            svc.wait(api::WaitRequest {
                id: "c1".into(),
                exec_id: String::new(),
            })
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished());
        f.reaper.record(
            pid as i32,
            Exit {
                status: 3,
                at: crate::now(),
            },
        );
        assert_eq!(waiter.join().unwrap().unwrap().exit_status, 3);
        let s = state(&f.service, "").unwrap();
        assert_eq!((s.status, s.exit_status), (Status::Stopped as i32, 3));
        let kill = f.service.kill(api::KillRequest {
            id: "c1".into(),
            signal: 9,
            ..Default::default()
        });
        assert!(matches!(kill, Err(Error::NotFound(_))));

        let deleted = f
            .service
            .delete(api::DeleteRequest {
                id: "c1".into(),
                exec_id: String::new(),
            })
            .unwrap();
        assert_eq!((deleted.pid, deleted.exit_status), (pid, 3));
        assert!(matches!(state(&f.service, ""), Err(Error::NotFound(_))));
        let calls = f.runtime.calls.lock().unwrap().clone();
        assert!(calls[0].starts_with("create --bundle "), "{calls:?}");
        assert_eq!(&calls[1..], ["start c1", "delete --force c1"]);
    }

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
        f.service
            .delete(api::DeleteRequest {
                id: "c1".into(),
                exec_id: "e1".into(),
            })
            .unwrap();
        assert!(matches!(state(&f.service, "e1"), Err(Error::NotFound(_))));
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
