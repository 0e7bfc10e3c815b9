//! The container's task: its stdio chosen (the log file, nothing, or FIFOs to this
//! terminal), created, and started; an attached run waits for it to exit.

use super::{start_and_wait, stdio, Pumps, Run, Streams};
use anyhow::{anyhow, bail, Context};
use berth_client::Client;
use berth_proto::tasks::{CreateTaskRequest, DeleteTaskRequest, StartRequest};
use std::io::Write;

/// Label with a container's `--add-host` entries (HOST:IP, comma-separated), written into
/// its /etc/hosts each time its task is made.
pub const EXTRA_HOSTS_LABEL: &str = "berth.extra-hosts";

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
            let uri = berth_proto::vocab::crilog::log_uri(&log.display().to_string());
            return Ok(none(uri.clone(), uri));
        }
        if r.detach {
            return Ok(none(String::new(), String::new()));
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-io-")
            .tempdir_in(std::env::temp_dir())?;
        let (stdin, stdout, stderr, pumps) = stdio(dir.path(), &r.id, streams(r))?;
        Ok(TaskIo {
            stdin,
            stdout,
            stderr,
            pumps,
            _fifo_dir: Some(dir),
        })
    }
}

fn streams(r: &Run) -> Streams {
    Streams {
        tty: r.tty,
        stdin: r.stdin(),
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
    let created = tasks
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
        .map_err(|e| anyhow!("{}", crate::output::said(&e)))?
        .into_inner();
    add_hosts(created.pid, &r.add_host.join(","))?;
    if r.detach {
        tasks
            .start(StartRequest {
                container_id: r.id.clone(),
                exec_id: String::new(),
            })
            .await
            .map_err(|e| anyhow!("{}", crate::output::said(&e)))?;
        println!("{}", r.id);
        return Ok(0);
    }
    let status = start_and_wait(client, &r.id, "", streams(r), io.pumps).await?;
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

/// Checks --add-host's HOST:IP entries.
pub(super) fn check_hosts(entries: &[String]) -> anyhow::Result<()> {
    for e in entries {
        parse_host(e)?;
    }
    Ok(())
}

fn parse_host(entry: &str) -> anyhow::Result<(&str, std::net::IpAddr)> {
    let (host, ip) = entry
        .split_once([':', '='])
        .ok_or_else(|| anyhow!("--add-host {entry:?}: use HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| anyhow!("--add-host {entry:?}: {ip:?} is not an IP address"))?;
    // A comma would split the entry where berth keeps the list (a label, comma-separated),
    // and a '#' would start a comment in /etc/hosts.
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ',' || c == '#') {
        bail!("--add-host {entry:?}: {host:?} is not a host name");
    }
    Ok((host, ip))
}

/// Appends the `entries` (HOST:IP, comma-separated) to the /etc/hosts of the created (not
/// yet started) task whose init is `pid`: the file berthd made for its network, seen
/// through the init's root.
pub fn add_hosts(pid: u32, entries: &str) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut lines = String::new();
    for e in entries.split(',') {
        let (host, ip) = parse_host(e)?;
        lines.push_str(&format!("{ip}\t{host}\n"));
    }
    let path = format!("/proc/{pid}/root/etc/hosts");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .with_context(|| format!("--add-host: write the container's /etc/hosts ({path})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_take_dockers_forms() {
        assert_eq!(parse_host("db:10.0.0.2").unwrap().0, "db");
        assert!(parse_host("v6:[::1]").unwrap().1.is_ipv6());
        assert!(parse_host("v6:fe80::1").unwrap().1.is_ipv6());
        assert!(parse_host("db=10.0.0.2").is_ok());
        for bad in [
            "db",
            "db:nope",
            ":10.0.0.1",
            "a,b:10.0.0.1",
            "db#x:10.0.0.1",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }
}
