//! ExecSync: a command run to completion in a running container, its output returned. A
//! timeout kills the process and fails the call with DEADLINE_EXCEEDED.

use super::{spec, Cri};
use crate::core::error::{Error, Kind, Result};
use crate::core::metadata::containers::AnyValue;
use crate::core::runtime::{ExecProcess, ProcessRef, Stdio};
use crate::edge::cri::logs::{mkfifo, open_fifo};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Output kept per stream; more is read and dropped.
const MAX_OUTPUT: usize = 16 << 20;

/// What an ExecSync returns.
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// Which of an exec's streams exist, and whether it has a terminal (which merges stderr
/// into stdout).
#[derive(Debug, Clone, Copy)]
pub(in crate::edge::cri) struct ExecIo {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// What an exec is: where, under which id, in which directory, which process, which I/O.
pub(in crate::edge::cri) struct ExecSpec<'a> {
    pub container_id: &'a str,
    pub exec_id: &'a str,
    pub dir: &'a Path,
    pub process: serde_json::Value,
    pub io: ExecIo,
}

/// An exec created and not yet started: its process, the ends of its FIFOs this side
/// reads and writes, and the write ends held until it starts.
pub(in crate::edge::cri) struct NewExec {
    pub process: ProcessRef,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub stdin: Option<pipe::Sender>,
    pub holds: Vec<pipe::Sender>,
}

async fn collect(mut rx: pipe::Receiver) -> Vec<u8> {
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

    /// A new exec's id (`<kind>-<16 hex>`) and its directory, made, under container `id`'s.
    pub(in crate::edge::cri) fn exec_dir(&self, id: &str, kind: &str) -> Result<(String, PathBuf)> {
        let exec_id = format!(
            "{kind}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let dir = self.container_state_dir(id).join(&exec_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok((exec_id, dir))
    }

    /// The one home of running a command in a container: the FIFOs `io` asks for made in
    /// the exec's directory, the process created in the container's task and its FIFOs
    /// opened; [`Cri::exec_start`] starts it.
    pub(in crate::edge::cri) async fn exec_create(&self, x: ExecSpec<'_>) -> Result<NewExec> {
        let path = |f: &str| x.dir.join(f);
        let use_err = x.io.stderr && !x.io.tty;
        for (f, on) in [
            ("stdin", x.io.stdin),
            ("stdout", x.io.stdout),
            ("stderr", use_err),
        ] {
            if on {
                mkfifo(&path(f))?;
            }
        }
        let name = |f: &str, on: bool| {
            if on {
                path(f).display().to_string()
            } else {
                String::new()
            }
        };
        self.tasks
            .exec(
                self.ns.clone(),
                ExecProcess {
                    container_id: x.container_id.to_string(),
                    exec_id: x.exec_id.to_string(),
                    io: Stdio {
                        stdin: name("stdin", x.io.stdin),
                        stdout: name("stdout", x.io.stdout),
                        stderr: name("stderr", use_err),
                        terminal: x.io.tty,
                    },
                    spec: Some(AnyValue {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process"
                            .into(),
                        value: serde_json::to_vec(&x.process)?,
                    }),
                },
            )
            .await?;
        let io_err = |f: &str| {
            let p = path(f);
            move |e: std::io::Error| Error::io(format!("open {}", p.display()), e)
        };
        let mut holds = Vec::new();
        let mut open = |f: &str, on: bool| -> Result<Option<pipe::Receiver>> {
            if !on {
                return Ok(None);
            }
            let (rx, hold) = open_fifo(&path(f)).map_err(io_err(f))?;
            holds.push(hold);
            Ok(Some(rx))
        };
        let (stdout, stderr) = (open("stdout", x.io.stdout)?, open("stderr", use_err)?);
        let stdin = if x.io.stdin {
            Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(path("stdin"))
                    .map_err(io_err("stdin"))?,
            )
        } else {
            None
        };
        Ok(NewExec {
            process: ProcessRef {
                container_id: x.container_id.to_string(),
                exec_id: x.exec_id.to_string(),
            },
            stdout,
            stderr,
            stdin,
            holds,
        })
    }

    /// Starts an exec made by [`Cri::exec_create`]; the process holds its own write ends
    /// after (or never will), so these are let go.
    pub(in crate::edge::cri) async fn exec_start(
        &self,
        p: &ProcessRef,
        holds: Vec<pipe::Sender>,
    ) -> Result<()> {
        let started = self.tasks.start(self.ns.clone(), p.clone()).await;
        drop(holds);
        started.map(drop)
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
        // The exec's process joins the container's cgroups a few milliseconds from now; the
        // kernel's wait for a grace period before that move starts here instead.
        crate::core::runtime::warmup::begin();
        let process = self.exec_spec(&c.id, &cmd, false).await?;
        let (exec_id, dir) = self.exec_dir(&c.id, "exec")?;
        let x = ExecSpec {
            container_id: &c.id,
            exec_id: &exec_id,
            dir: &dir,
            process,
            io: ExecIo {
                stdin: false,
                stdout: true,
                stderr: true,
                tty: false,
            },
        };
        let result = self.exec_collect(x, timeout).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Runs an exec to its end (or `timeout` seconds, then kills it), its output collected.
    async fn exec_collect(&self, x: ExecSpec<'_>, timeout: i64) -> Result<ExecOutput> {
        let (id, exec_id) = (x.container_id, x.exec_id);
        let e = self.exec_create(x).await?;
        let p = e.process;
        let collected = |rx: Option<pipe::Receiver>| {
            tokio::spawn(async move {
                match rx {
                    Some(rx) => collect(rx).await,
                    None => Vec::new(),
                }
            })
        };
        let (out, err) = (collected(e.stdout), collected(e.stderr));
        let ran = async {
            self.exec_start(&p, e.holds).await?;
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
            stdout: crate::edge::cri::logs::finish(out)
                .await
                .unwrap_or_default(),
            stderr: crate::edge::cri::logs::finish(err)
                .await
                .unwrap_or_default(),
            exit_code: exited.exit_status as i32,
        })
    }
}
