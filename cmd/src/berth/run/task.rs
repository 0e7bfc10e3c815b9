//! The container's task: its stdio chosen (the log file, nothing, or FIFOs to this
//! terminal), created, and started; an attached run waits for it to exit.

use super::{start_and_wait, stdio, Pumps, Run};
use anyhow::anyhow;
use berth_client::Client;
use berth_proto::tasks::{CreateTaskRequest, DeleteTaskRequest, StartRequest};

/// Where the task's stdio goes: paths or URIs for the shim (empty for none), the pumps
/// copying an attached run's output here, and the directory of its FIFOs, removed when
/// dropped.
struct TaskIo {
    stdin: String,
    stdout: String,
    stderr: String,
    pumps: Pumps,
    _fifo_dir: Option<tempfile::TempDir>,
}

impl TaskIo {
    fn new(r: &Run) -> anyhow::Result<TaskIo> {
        let none = |stdout: String, stderr: String| TaskIo {
            stdin: String::new(),
            stdout,
            stderr,
            pumps: Pumps::default(),
            _fifo_dir: None,
        };
        if let Some(log) = &r.log {
            let uri = format!("file://{}", log.display());
            return Ok(none(uri.clone(), uri));
        }
        if r.detach {
            return Ok(none(String::new(), String::new()));
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-io-")
            .tempdir_in(std::env::temp_dir())?;
        let (stdin, stdout, stderr, pumps) = stdio(dir.path(), &r.id, r.tty)?;
        Ok(TaskIo {
            stdin,
            stdout,
            stderr,
            pumps,
            _fifo_dir: Some(dir),
        })
    }
}

/// Creates and starts the container's task: detached, prints the id and returns 0;
/// attached, returns the container's exit code (and with --rm deletes the task).
pub(super) async fn run(
    client: &Client,
    r: &Run,
    mounts: &[berth_proto::types::Mount],
) -> anyhow::Result<i32> {
    let io = TaskIo::new(r)?;
    let mut tasks = client.tasks();
    tasks
        .create(CreateTaskRequest {
            container_id: r.id.clone(),
            rootfs: mounts.to_vec(),
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            terminal: r.tty,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("task {}: {}", r.id, e.message()))?;
    if r.detach {
        tasks
            .start(StartRequest {
                container_id: r.id.clone(),
                exec_id: String::new(),
            })
            .await
            .map_err(|e| anyhow!("start {}: {}", r.id, e.message()))?;
        println!("{}", r.id);
        return Ok(0);
    }
    let status = start_and_wait(client, &r.id, "", r.tty, io.pumps).await?;
    if r.rm {
        tasks
            .delete(DeleteTaskRequest {
                container_id: r.id.clone(),
            })
            .await
            .map_err(|e| anyhow!("delete task {}: {}", r.id, e.message()))?;
    }
    Ok(status as i32)
}
