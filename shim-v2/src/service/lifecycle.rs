//! The init process's verbs: Create (the rootfs, `runc create`, recursive read-only mounts,
//! the cgroup's OOM watch), Start, Kill and Delete. Start hands an exec id to `exec`.

use super::state::Proc;
use super::{Service, R};
use crate::cgroups::Cgroup;
use crate::error::Error;
use crate::reaper::Exit;
use crate::rootfs::{mount_bundle_rootfs, unmount_rootfs};
use crate::runc::{read_pid, Stdio3};
use berth_proto::containerd::events as ev;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::Status;

impl Service {
    pub(super) fn create(&self, r: api::CreateTaskRequest) -> R<api::CreateTaskResponse> {
        if self.proc("").is_ok() {
            return Err(Error::already_exists(format!(
                "task {} already exists",
                self.id
            )));
        }
        mount_bundle_rootfs(&r.rootfs, &self.bundle, &self.reaper)?;
        if !r.checkpoint.is_empty() {
            if let Ok(mut st) = self.state.lock() {
                st.init = Some(self.created_for_restore(&r));
            }
            self.publish_create(r, 0);
            return Ok(api::CreateTaskResponse { pid: 0 });
        }
        let init = self.create_init(&r)?;
        let pid = init.pid;
        self.make_rro_mounts(pid)?;
        let cgroup = self.watch_cgroup(pid);
        if let Ok(mut st) = self.state.lock() {
            st.cgroup = cgroup;
            st.init = Some(init);
        }
        self.publish_create(r, pid);
        Ok(api::CreateTaskResponse { pid: pid as u32 })
    }

    /// Runs `runc create` with the client's stdio (the rootfs goes again if it fails); the
    /// init's record, created.
    fn create_init(&self, r: &api::CreateTaskRequest) -> R<Proc> {
        let mut io = self.stdio_for("init", r.terminal, &r.stdin, &r.stdout, &r.stderr)?;
        let pid_file = self.bundle.join("init.pid");
        let bundle = self.bundle.display().to_string();
        let pf = pid_file.display().to_string();
        let head = ["create", "--bundle", &bundle, "--pid-file", &pf];
        let log = self.bundle.join("runc.log");
        let stdio = std::mem::take(&mut io.stdio);
        if let Err(e) = self.launch(&head, io.socket.as_ref(), stdio, &log) {
            unmount_rootfs(&self.bundle);
            return Err(e);
        }
        let console = self.attach_console(io.socket.as_ref(), &r.stdin, &r.stdout)?;
        let stdin_hold = io.stdin_hold(&r.stdin);
        let pid = read_pid(&pid_file)?;
        Ok(Proc {
            pid,
            console,
            stdin_hold,
            relay: io.relay,
            ..Proc::created(
                r.stdin.clone(),
                r.stdout.clone(),
                r.stderr.clone(),
                r.terminal,
            )
        })
    }

    /// Makes the spec's `rro` mounts recursively read-only inside the created container
    /// (runc 1.1 leaves them writable); when that fails, the container and its rootfs go.
    fn make_rro_mounts(&self, pid: i32) -> R<()> {
        let targets = crate::rro::from_bundle(&self.bundle);
        if let Err(e) = crate::rro::apply(pid, &targets, &self.reaper) {
            let _ = self.runc(&["delete", "--force", &self.id], Stdio3::default());
            unmount_rootfs(&self.bundle);
            return Err(e);
        }
        Ok(())
    }

    /// The init's cgroup, watched: each OOM kill in it is published as `/tasks/oom`.
    pub(super) fn watch_cgroup(&self, pid: i32) -> Option<Cgroup> {
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
        cgroup
    }

    fn publish_create(&self, r: api::CreateTaskRequest, pid: i32) {
        self.events.publish(
            "/tasks/create",
            &ev::TaskCreate {
                container_id: self.id.clone(),
                bundle: self.bundle.display().to_string(),
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
    }

    pub(super) fn start(&self, r: api::StartRequest) -> R<api::StartResponse> {
        let p = self.proc(&r.exec_id)?;
        if p.status != Status::Created as i32 {
            return Err(Error::precondition(format!(
                "process {:?} is not in the created state",
                r.exec_id
            )));
        }
        let pid = if r.exec_id.is_empty() {
            self.start_init(&p)?
        } else {
            self.start_exec(r.exec_id, &p)?
        };
        Ok(api::StartResponse { pid: pid as u32 })
    }

    /// `runc start`: the created init runs its program.
    fn start_init(&self, p: &Proc) -> R<i32> {
        let pid = match &p.restore_from {
            Some(image) => self.restore_init(p, image)?,
            None => {
                self.runc(&["start", &self.id], Stdio3::default())?;
                p.pid
            }
        };
        self.update("", |p| {
            if p.exit.is_none() {
                p.status = Status::Running as i32
            }
        });
        self.events.publish(
            "/tasks/start",
            &ev::TaskStart {
                container_id: self.id.clone(),
                pid: pid as u32,
            },
        );
        Ok(pid)
    }

    pub(super) fn kill(&self, r: api::KillRequest) -> R<()> {
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

    pub(super) fn delete(&self, r: api::DeleteRequest) -> R<api::DeleteResponse> {
        let p = self.proc(&r.exec_id)?;
        if p.status == Status::Running as i32 || p.status == Status::Paused as i32 {
            return Err(Error::precondition(format!(
                "task must be stopped before deletion: process {:?} is running",
                r.exec_id
            )));
        }
        if r.exec_id.is_empty() {
            // The rootfs is detached while the runtime deletes the container (its cgroups,
            // its state): neither needs the other, and the unmount waits on the disk (the
            // overlay syncs its upper layer) and on an RCU grace period.
            let deleted = std::thread::scope(|s| {
                let unmounted = s.spawn(|| unmount_rootfs(&self.bundle));
                let deleted = self.runc(&["delete", "--force", &self.id], Stdio3::default());
                let _ = unmounted.join();
                deleted
            });
            // A task created from a checkpoint whose restore never ran has nothing in runc
            // (its delete fails, and that is fine); one whose restore failed part-way may
            // have left runc's state, which the delete above removes.
            if p.restore_from.is_none() {
                deleted?;
            }
            if let Ok(mut st) = self.state.lock() {
                st.init = None;
            }
        } else {
            if let Ok(mut st) = self.state.lock() {
                st.execs.remove(&r.exec_id);
            }
            self.remove_exec_files(&r.exec_id, &["json", "pid", "log"]);
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, fixture, start, state};
    use crate::error::Error;
    use crate::reaper::Exit;
    use berth_proto::containerd::task::v2 as api;
    use berth_proto::containerd::v1::types::Status;

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
}
