//! ExecSync: a command run to completion in a running container, its output returned. A
//! timeout kills the process and fails the call with DEADLINE_EXCEEDED.

use super::{spec, Cri};
use crate::core::error::{Error, Kind, Result};
use crate::core::metadata::containers::AnyValue;
use crate::core::runtime::{ExecProcess, ProcessRef, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Output kept per stream; more is read and dropped.
const MAX_OUTPUT: usize = 16 << 20;

/// What an ExecSync returns.
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

async fn collect(mut rx: tokio::net::unix::pipe::Receiver) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}

impl Cri {
    /// The process spec of a command run in container `id`: its own process (user, env,
    /// cwd, capabilities) with `cmd` as the arguments.
    pub(in crate::edge::cri) async fn exec_spec(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<serde_json::Value> {
        let rec = self.records.get(self.ns.clone(), id.to_string()).await?;
        let oci: serde_json::Value = rec
            .spec
            .as_ref()
            .map(|s| serde_json::from_slice(&s.value))
            .transpose()?
            .unwrap_or_default();
        Ok(spec::exec_process(&oci, cmd, tty))
    }

    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: i64) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::invalid("exec needs a command"));
        }
        let c = self.container(id)?;
        if Self::container_state(&c) != berth_proto::cri::v1::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let process = self.exec_spec(&c.id, &cmd, false).await?;
        let exec_id = format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let dir = self.container_state_dir(&c.id).join(&exec_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let result = self.exec_in(&c.id, &exec_id, &dir, process, timeout).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn exec_in(
        &self,
        id: &str,
        exec_id: &str,
        dir: &std::path::Path,
        process: serde_json::Value,
        timeout: i64,
    ) -> Result<ExecOutput> {
        for f in ["stdout", "stderr"] {
            super::logs::mkfifo(&dir.join(f))?;
        }
        let p = ProcessRef {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        self.tasks
            .exec(
                self.ns.clone(),
                ExecProcess {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    io: Stdio {
                        stdin: String::new(),
                        stdout: dir.join("stdout").display().to_string(),
                        stderr: dir.join("stderr").display().to_string(),
                        terminal: false,
                    },
                    spec: Some(AnyValue {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process"
                            .into(),
                        value: serde_json::to_vec(&process)?,
                    }),
                },
            )
            .await?;
        let open = |f: &str| {
            let path = dir.join(f);
            super::logs::open_fifo(&path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))
        };
        let ((out_rx, out_hold), (err_rx, err_hold)) = (open("stdout")?, open("stderr")?);
        let out = tokio::spawn(collect(out_rx));
        let err = tokio::spawn(collect(err_rx));
        let ran = async {
            let started = self.tasks.start(self.ns.clone(), p.clone()).await;
            // The process holds its own write ends now (or never will).
            drop((out_hold, err_hold));
            started?;
            self.tasks.wait(self.ns.clone(), p.clone()).await
        };
        let waited = if timeout > 0 {
            tokio::time::timeout(Duration::from_secs(timeout as u64), ran)
                .await
                .ok()
        } else {
            Some(ran.await)
        };
        let exited = match waited {
            Some(r) => r,
            None => {
                let _ = self
                    .tasks
                    .kill(self.ns.clone(), p.clone(), libc::SIGKILL as u32, false)
                    .await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    self.tasks.wait(self.ns.clone(), p.clone()),
                )
                .await;
                let _ = self.tasks.delete_process(self.ns.clone(), p).await;
                out.abort();
                err.abort();
                return Err(Error::new(
                    Kind::DeadlineExceeded,
                    format!("command did not finish within {timeout} s and was killed"),
                ));
            }
        };
        let deleted = self.tasks.delete_process(self.ns.clone(), p).await;
        let exited = match exited {
            Ok(e) => e,
            Err(e) => {
                out.abort();
                err.abort();
                return Err(e);
            }
        };
        if let Err(e) = deleted {
            tracing::debug!(container = id, exec = exec_id, error = %e, "delete exec");
        }
        Ok(ExecOutput {
            stdout: super::logs::finish(out).await.unwrap_or_default(),
            stderr: super::logs::finish(err).await.unwrap_or_default(),
            exit_code: exited.exit_status as i32,
        })
    }
}
