//! Checkpoint and restore of the init process through runc and CRIU: Checkpoint dumps the
//! container into the image directory the caller names (`runc checkpoint`), and a task
//! created with a checkpoint directory is restored from it at Start (`runc restore`) instead
//! of being created fresh, as containerd's runc shim does. The native runtime has no CRIU
//! driver: it refuses both, and says to run the container on runc.

use super::state::Proc;
use super::{Service, R};
use crate::error::Error;
use crate::runc::read_pid;
use berth_proto::containerd::events as ev;
use berth_proto::containerd::runc::v1::CheckpointOptions;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::Status;
use prost::Message;
use std::path::{Path, PathBuf};

const CHECKPOINT_OPTIONS: &str = "containerd.runc.v1.CheckpointOptions";

/// The request's CheckpointOptions (defaults when none came).
fn options(any: Option<&prost_types::Any>) -> R<CheckpointOptions> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(CheckpointOptions::default());
    };
    if !any.type_url.ends_with(CHECKPOINT_OPTIONS) {
        return Err(Error::invalid(format!(
            "checkpoint options of type {:?}: want {CHECKPOINT_OPTIONS}",
            any.type_url
        )));
    }
    CheckpointOptions::decode(any.value.as_slice())
        .map_err(|e| Error::invalid(format!("bad checkpoint options: {e}")))
}

/// `runc checkpoint`'s arguments for `opts`, dumping into `image` with CRIU's logs in `work`.
fn checkpoint_args(id: &str, image: &str, work: &str, opts: &CheckpointOptions) -> Vec<String> {
    let mut args: Vec<String> = ["checkpoint", "--image-path", image, "--work-path", work]
        .map(String::from)
        .into();
    let flags = [
        (!opts.exit, "--leave-running"),
        (opts.open_tcp, "--tcp-established"),
        (opts.external_unix_sockets, "--ext-unix-sk"),
        (opts.terminal, "--shell-job"),
        (opts.file_locks, "--file-locks"),
    ];
    args.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| f.to_string()),
    );
    for ns in &opts.empty_namespaces {
        args.extend(["--empty-ns".to_string(), ns.clone()]);
    }
    if !opts.cgroups_mode.is_empty() {
        args.extend(["--manage-cgroups-mode".into(), opts.cgroups_mode.clone()]);
    }
    args.push(id.to_string());
    args
}

/// Adds what a runtime's refusal means for checkpoints: the native runtime has no CRIU.
fn explain(e: Error) -> Error {
    let said = e.to_string();
    if said.contains("native runtime has no") {
        return Error::precondition(format!(
            "{said}: checkpoint and restore go through runc and CRIU; run the container on runc (runc options' binary_name, or BERTH_SHIM_RUNTIME=runc)"
        ));
    }
    e
}

impl Service {
    /// Checkpoint: the running init dumped into `r.path` (or the options' image path); it
    /// keeps running unless the options say exit, in which case its exit is reported as any.
    pub(super) fn checkpoint(&self, r: api::CheckpointTaskRequest) -> R<()> {
        let p = self.proc("")?;
        if p.status != Status::Running as i32 && p.status != Status::Paused as i32 {
            return Err(Error::precondition(format!(
                "container {} must be running to be checkpointed",
                self.id
            )));
        }
        let opts = options(r.options.as_ref())?;
        let image = if opts.image_path.is_empty() {
            r.path.clone()
        } else {
            opts.image_path.clone()
        };
        if image.is_empty() {
            return Err(Error::invalid("checkpoint needs an image path"));
        }
        let work = if opts.work_path.is_empty() {
            self.bundle.join("criu-work").display().to_string()
        } else {
            opts.work_path.clone()
        };
        for dir in [&image, &work] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("checkpoint: create {dir}: {e}")))?;
        }
        let args = checkpoint_args(&self.id, &image, &work, &opts);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.runc(&args, Default::default()).map_err(explain)?;
        self.events.publish(
            "/tasks/checkpoint",
            &ev::TaskCheckpointed {
                container_id: self.id.clone(),
                checkpoint: image,
            },
        );
        Ok(())
    }

    /// Create with a checkpoint: the rootfs mounted and the init recorded as created, to be
    /// restored from `checkpoint` at Start.
    pub(super) fn created_for_restore(&self, r: &api::CreateTaskRequest) -> Proc {
        Proc {
            restore_from: Some(PathBuf::from(&r.checkpoint)),
            ..Proc::created(
                r.stdin.clone(),
                r.stdout.clone(),
                r.stderr.clone(),
                r.terminal,
            )
        }
    }

    /// Start of a task created from a checkpoint: `runc restore --detach` with new relayed
    /// pipes (runc hands them to the restored process in place of the dumped one's pipes).
    pub(super) fn restore_init(&self, p: &Proc, image: &Path) -> R<i32> {
        let mut io = self.stdio_for("init", p.terminal, &p.stdin, &p.stdout, &p.stderr)?;
        let pid_file = self.bundle.join("init.pid");
        let (bundle, pf) = (
            self.bundle.display().to_string(),
            pid_file.display().to_string(),
        );
        let work = self.bundle.join("criu-work");
        let _ = std::fs::create_dir_all(&work);
        let (image, work) = (image.display().to_string(), work.display().to_string());
        let mut head = vec![
            "restore",
            "--detach",
            "--image-path",
            &image,
            "--work-path",
            &work,
            "--bundle",
            &bundle,
            "--pid-file",
            &pf,
        ];
        if p.terminal {
            head.push("--shell-job");
        }
        let log = self.bundle.join("runc.log");
        let stdio = std::mem::take(&mut io.stdio);
        self.launch(&head, io.socket.as_ref(), stdio, &log)
            .map_err(explain)?;
        let console = self.attach_console(io.socket.as_ref(), &p.stdin, &p.stdout)?;
        let stdin_hold = io.stdin_hold(&p.stdin);
        let pid = read_pid(&pid_file)?;
        let cgroup = self.watch_cgroup(pid);
        if let Ok(mut st) = self.state.lock() {
            st.cgroup = cgroup;
            if let Some(init) = st.init.as_mut() {
                init.pid = pid;
                init.console = console;
                init.stdin_hold = stdin_hold;
                init.relay = io.relay;
                init.restore_from = None;
                if init.exit.is_none() {
                    init.status = Status::Running as i32;
                }
            }
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_running_unless_exit_and_flags_follow_options() {
        let opts = CheckpointOptions {
            open_tcp: true,
            cgroups_mode: "soft".into(),
            empty_namespaces: vec!["network".into()],
            ..Default::default()
        };
        let args = checkpoint_args("c1", "/img", "/work", &opts);
        assert_eq!(
            args.join(" "),
            "checkpoint --image-path /img --work-path /work --leave-running --tcp-established --empty-ns network --manage-cgroups-mode soft c1"
        );
        let exit = CheckpointOptions {
            exit: true,
            ..Default::default()
        };
        assert!(!checkpoint_args("c1", "/i", "/w", &exit).contains(&"--leave-running".into()));
    }

    #[test]
    fn options_of_another_type_are_refused() {
        let any = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
        };
        assert!(matches!(
            options(Some(&any)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(!options(None).unwrap().exit);
    }
}
