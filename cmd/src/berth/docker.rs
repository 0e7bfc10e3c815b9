//! Docker-style verbs over berth's own API, for fingers that know Docker: ps, logs, exec,
//! stop, start, rm, inspect, stats, top. (images, rmi, pull, push and tag are the images
//! group's own commands under Docker's names; see main.rs.)

use crate::containers::{
    container, metrics_json, spec_json, status_name, stop_signal, TaskExecArgs,
};
use crate::names;
use crate::output::{age, each_id, rfc3339, ListFlags, Table};
use anyhow::{anyhow, bail};
use berth_client::Client;
use berth_proto::berth::services::networks::v1::AddressesRequest;
use berth_proto::containerd::v1::types::Process;
use berth_proto::containers::{Container, ListContainersRequest};
use berth_proto::tasks::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest, ListPidsRequest,
    ListTasksRequest, MetricsRequest, StartRequest, WaitRequest,
};
use berth_services::network::cni::PortMapping;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PsArgs {
    /// Show every container (default: running ones)
    #[arg(long, short = 'a')]
    all: bool,
    /// Only containers that match: name=, id=, label=KEY[=VALUE], status=(created|running|
    /// paused|exited), ancestor=IMAGE (several: all must match)
    #[arg(long = "filter")]
    filter: Vec<String>,
    #[command(flatten)]
    flags: ListFlags,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Keep following the log until the container exits
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only the last N lines (of what is there now)
    #[arg(long)]
    tail: Option<usize>,
    /// Only lines from this time on: RFC 3339 (2026-12-06T21:00:00Z), Unix seconds, or a
    /// duration before now (10m, 1h30m)
    #[arg(long)]
    since: Option<String>,
    /// Only lines up to this time (as --since)
    #[arg(long)]
    until: Option<String>,
    /// Each line prefixed with the time it was written
    #[arg(long, short = 't')]
    timestamps: bool,
    id: String,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open (with -t, the terminal's)
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Give the process a terminal wired to this one
    #[arg(long, short = 't')]
    tty: bool,
    /// More environment variables (KEY=VALUE)
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory (default: the container's)
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// uid[:gid] (default: the container's user)
    #[arg(long, short = 'u')]
    user: Option<String>,
    id: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before killing
    #[arg(long, short = 't', default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct StartArgs {
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(long, short = 'f')]
    force: bool,
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Containers or images
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Print one sample and exit (default: refresh every second until Ctrl-C)
    #[arg(long)]
    no_stream: bool,
    /// Containers (default: every running one)
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct TopArgs {
    id: String,
}

/// The container's task (its last run), None without one.
pub(crate) async fn task_of(client: &Client, id: &str) -> Option<Process> {
    client
        .tasks()
        .get(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().process)
}

/// Whether the container's task is up: running, or paused (Docker's "Up (Paused)").
pub(crate) async fn is_up(client: &Client, id: &str) -> bool {
    task_of(client, id)
        .await
        .is_some_and(|t| status_text(Some(&t)).starts_with("Up"))
}

pub(crate) fn status_text(task: Option<&Process>) -> String {
    match task {
        None => "Created".into(),
        Some(p) => match status_name(p.status) {
            "RUNNING" => "Up".into(),
            "PAUSED" => "Up (Paused)".into(),
            "STOPPED" => format!("Exited ({})", p.exit_status),
            "CREATED" => "Created".into(),
            other => other.to_lowercase(),
        },
    }
}

fn command_of(c: &Container) -> String {
    let spec = spec_json(c);
    let args: Vec<&str> = spec["process"]["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut cmd = args.join(" ");
    if cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    format!("\"{cmd}\"")
}

/// Published ports from the container's label, as Docker prints them.
pub(crate) fn ports_of(c: &Container) -> String {
    let ports: Vec<PortMapping> = c
        .labels
        .get(berth_services::network::PORTS_LABEL)
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn ps(client: &Client, a: PsArgs) -> anyhow::Result<()> {
    let list = client
        .containers()
        .list(ListContainersRequest { filters: vec![] })
        .await
        .map_err(|e| anyhow!("cannot list containers: {}", e.message()))?
        .into_inner()
        .containers;
    // Every task in one call, not one call per container.
    let tasks: std::collections::HashMap<String, Process> = client
        .tasks()
        .list(ListTasksRequest::default())
        .await
        .map_err(|e| anyhow!("cannot list tasks: {}", e.message()))?
        .into_inner()
        .tasks
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let mut t = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for c in list {
        let task = tasks.get(&c.id);
        let running = task
            .as_ref()
            .is_some_and(|p| matches!(status_name(p.status), "RUNNING" | "PAUSED"));
        let (status, command, ports) = (status_text(task), command_of(&c), ports_of(&c));
        // A status filter looks at stopped containers too, as Docker's does.
        let asked_status = a.filter.iter().any(|f| f.starts_with("status="));
        if (!a.all && !running && !asked_status) || !passes(&a.filter, &c, &status)? {
            continue;
        }
        let json = serde_json::json!({
            "id": c.id, "name": names::name_of(&c), "image": c.image, "command": command,
            "created_at": rfc3339(c.created_at.as_ref()), "status": status,
            "ports": ports, "pid": task.map(|p| p.pid),
        });
        let short = names::short_id(&c.id).to_string();
        let cells = if a.flags.quiet {
            vec![short]
        } else {
            vec![
                short,
                c.image.clone(),
                command,
                age(c.created_at.as_ref()),
                status,
                ports,
                names::name_of(&c).to_string(),
            ]
        };
        t.row(cells, json);
    }
    t.print(a.flags)?;
    Ok(())
}

fn log_of(c: &Container) -> anyhow::Result<std::path::PathBuf> {
    c.labels
        .get(crate::run::LOG_LABEL)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| {
            anyhow!(
                "container {} keeps no log: it ran in the foreground or was made by another client",
                c.id
            )
        })
}

pub async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| crate::run::parse_time_flag(flag, v, now))
            .transpose()
    };
    let view = crate::run::View {
        since: time("--since", &a.since)?,
        until: time("--until", &a.until)?,
        timestamps: a.timestamps,
    };
    let c = names::find(client, &a.id).await?;
    let log = log_of(&c)?;
    let running = task_of(client, &c.id)
        .await
        .is_some_and(|p| status_name(p.status) == "RUNNING");
    if a.follow && running {
        crate::run::follow_view(client, &c.id, &log, view).await?;
        return Ok(());
    }
    let text = std::fs::read(&log).map_err(|e| anyhow!("open the log {}: {e}", log.display()))?;
    crate::run::print_log(&text, view, a.tail)?;
    Ok(())
}

/// Whether the container passes every `ps --filter`.
fn passes(filters: &[String], c: &Container, status: &str) -> anyhow::Result<bool> {
    for f in filters {
        let (key, want) = f.split_once('=').ok_or_else(|| {
            anyhow!("--filter {f:?}: use KEY=VALUE (name, id, label, status, ancestor)")
        })?;
        let ok = match key {
            "name" => names::name_of(c).contains(want),
            "id" => c.id.starts_with(want),
            "label" => match want.split_once('=') {
                Some((k, v)) => c.labels.get(k).is_some_and(|x| x == v),
                None => c.labels.contains_key(want),
            },
            "status" => {
                let s = status.to_ascii_lowercase();
                match want {
                    "running" => s.starts_with("up") && !s.contains("paused"),
                    "paused" => s.contains("paused"),
                    "exited" => s.starts_with("exited"),
                    "created" => s == "created",
                    other => {
                        bail!("--filter status={other}: use created, running, paused or exited")
                    }
                }
            }
            "ancestor" => {
                c.image == want
                    || c.image.ends_with(&format!("/{want}"))
                    || c.image
                        .strip_suffix(":latest")
                        .is_some_and(|i| i == want || i.ends_with(&format!("/{want}")))
            }
            other => {
                bail!("--filter {other}: berth filters on name, id, label, status and ancestor")
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<()> {
    crate::containers::task_exec(
        client,
        TaskExecArgs {
            tty: a.tty,
            interactive: a.interactive,
            exec_id: None,
            env: a.env,
            cwd: a.workdir,
            user: a.user,
            id: names::resolve(client, &a.id).await?,
            args: a.args,
        },
    )
    .await
}

/// Signals the container's init, or with `all` every process in it.
pub(crate) async fn kill(client: &Client, id: &str, signal: u32, all: bool) -> anyhow::Result<()> {
    client
        .tasks()
        .kill(KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all,
        })
        .await
        .map_err(|e| anyhow!("kill {id}: {}", e.message()))?;
    Ok(())
}

/// Waits up to `limit` for the container's init to exit; true if it did.
async fn wait_exit(client: &Client, id: &str, limit: Duration) -> bool {
    let mut tasks = client.tasks();
    let wait = tasks.wait(WaitRequest {
        container_id: id.to_string(),
        exec_id: String::new(),
    });
    matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
}

/// The stop signal, then SIGKILL after `grace`; the stopped task stays (its exit status
/// shows in `ps -a`) until `start` or `rm`.
pub(crate) async fn stop_one(client: &Client, id: &str, grace: Duration) -> anyhow::Result<()> {
    let c = container(client, id).await?;
    let Some(task) = task_of(client, id).await else {
        return Ok(());
    };
    if status_name(task.status) == "STOPPED" {
        return Ok(());
    }
    mark_stopped(client, id, true).await?;
    kill(client, id, stop_signal(&c)?, false).await?;
    if !wait_exit(client, id, grace).await {
        kill_all(client, id).await?;
    }
    Ok(())
}

/// Marks the container stopped by its user (berthd's restart policy then leaves it be), or
/// started again (which also counts its restarts afresh).
async fn mark_stopped(client: &Client, id: &str, stopped: bool) -> anyhow::Result<()> {
    use berth_services::core::restart::{COUNT_LABEL, STOPPED_LABEL};
    let mut labels = std::collections::HashMap::new();
    if stopped {
        labels.insert(STOPPED_LABEL.to_string(), "true".to_string());
    } else {
        labels.insert(STOPPED_LABEL.to_string(), String::new());
        labels.insert(COUNT_LABEL.to_string(), String::new());
    }
    let mask = crate::output::label_mask(&labels);
    // Empty values remove the labels.
    labels.retain(|_, v| !v.is_empty());
    client
        .containers()
        .update(berth_proto::containers::UpdateContainerRequest {
            container: Some(Container {
                id: id.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(mask),
        })
        .await
        .map_err(|e| anyhow!("container {id}: {}", crate::output::said(&e)))?;
    Ok(())
}

/// SIGKILL to every process in the container, and up to 10 s for its init to be gone.
async fn kill_all(client: &Client, id: &str) -> anyhow::Result<()> {
    kill(client, id, libc::SIGKILL as u32, true).await?;
    if !wait_exit(client, id, Duration::from_secs(10)).await {
        bail!("container {id} did not stop after SIGKILL");
    }
    Ok(())
}

/// Deletes the container's stopped task (the record of its last run).
async fn delete_task(client: &Client, id: &str) -> anyhow::Result<()> {
    client
        .tasks()
        .delete(DeleteTaskRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(|e| anyhow!("delete {id}'s task: {}", e.message()))?;
    Ok(())
}

pub async fn stop(client: &Client, a: StopArgs) -> anyhow::Result<()> {
    let grace = Duration::from_secs(a.time);
    each_id(&a.ids, |id| async move {
        stop_one(client, &names::resolve(client, &id).await?, grace).await
    })
    .await
}

/// A new task for a container whose last one ended: its output appended to its log.
pub(crate) async fn start_one(client: &Client, id: &str) -> anyhow::Result<()> {
    let c = container(client, id).await?;
    if let Some(t) = task_of(client, id).await {
        if status_name(t.status) != "STOPPED" {
            bail!("container {id} is already running");
        }
        delete_task(client, id).await?;
    }
    mark_stopped(client, id, false).await?;
    let uri = log_of(&c)
        .map(|l| berth_proto::vocab::crilog::log_uri(&l.display().to_string()))
        .unwrap_or_default();
    let mut tasks = client.tasks();
    tasks
        .create(CreateTaskRequest {
            container_id: id.to_string(),
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("start {id}: {}", e.message()))?;
    tasks
        .start(StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .map_err(|e| anyhow!("start {id}: {}", e.message()))?;
    Ok(())
}

pub async fn start(client: &Client, a: StartArgs) -> anyhow::Result<()> {
    each_id(&a.ids, |id| async move {
        start_one(client, &names::resolve(client, &id).await?).await
    })
    .await
}

pub(crate) async fn rm_one(client: &Client, id: &str, force: bool) -> anyhow::Result<()> {
    let c = container(client, id).await?;
    if let Some(t) = task_of(client, id).await {
        if status_name(t.status) != "STOPPED" {
            if !force {
                bail!("container {id} is running: stop it first, or use rm -f");
            }
            mark_stopped(client, id, true).await?;
            kill_all(client, id).await?;
        }
        delete_task(client, id).await?;
    }
    crate::containers::remove_container(client, &c).await?;
    if let Ok(log) = log_of(&c) {
        let _ = std::fs::remove_file(log);
    }
    Ok(())
}

pub async fn rm(client: &Client, a: RmArgs) -> anyhow::Result<()> {
    let force = a.force;
    each_id(&a.ids, |id| async move {
        rm_one(client, &names::resolve(client, &id).await?, force).await
    })
    .await
}

async fn inspect_container(client: &Client, c: Container) -> anyhow::Result<serde_json::Value> {
    let task = task_of(client, &c.id).await;
    let spec = spec_json(&c);
    let networks: serde_json::Map<String, serde_json::Value> = client
        .networks()
        .addresses(AddressesRequest {
            container_id: c.id.clone(),
        })
        .await
        .map(|r| r.into_inner().networks)
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.network, serde_json::json!({"IPAddresses": n.ips})))
        .collect();
    Ok(serde_json::json!({
        "Id": c.id, "Name": names::name_of(&c), "Image": c.image,
        "Created": rfc3339(c.created_at.as_ref()),
        "State": {
            "Status": status_text(task.as_ref()),
            "Running": task.as_ref().is_some_and(|p| status_name(p.status) == "RUNNING"),
            "Pid": task.as_ref().map(|p| p.pid).unwrap_or(0),
            "ExitCode": task.as_ref().map(|p| p.exit_status).unwrap_or(0),
        },
        "Config": {"Cmd": spec["process"]["args"], "Env": spec["process"]["env"], "WorkingDir": spec["process"]["cwd"], "Hostname": spec["hostname"], "Labels": c.labels},
        "NetworkSettings": {"Networks": networks, "Ports": ports_of(&c)},
        "Mounts": spec["mounts"],
        "Runtime": c.runtime.map(|r| r.name), "Snapshotter": c.snapshotter, "SnapshotKey": c.snapshot_key,
        "LogPath": c.labels.get(crate::run::LOG_LABEL),
        "RestartCount": c.labels.get(berth_services::core::restart::COUNT_LABEL).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0),
    }))
}

pub async fn inspect(client: &Client, a: InspectArgs) -> anyhow::Result<()> {
    let mut out = vec![];
    for name in &a.names {
        match names::find(client, name).await.ok() {
            Some(c) => out.push(inspect_container(client, c).await?),
            None => out.push(
                crate::images::inspect_json(client, name)
                    .await
                    .map_err(|e| anyhow!("no container or image {name}: {e:#}"))?,
            ),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// (cpu time in ns, memory usage, memory limit, pids) from a metrics sample.
fn figures(m: &serde_json::Value) -> (u64, u64, u64, u64) {
    let cpu = m["cpu"]["usage_ns"]
        .as_u64()
        .or_else(|| m["cpu"]["usage_usec"].as_u64().map(|u| u * 1000))
        .unwrap_or(0);
    (
        cpu,
        m["memory"]["usage"].as_u64().unwrap_or(0),
        m["memory"]["limit"].as_u64().unwrap_or(0),
        m["pids"]["current"].as_u64().unwrap_or(0),
    )
}

async fn samples(
    client: &Client,
    ids: &[String],
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let filters = ids.iter().map(|id| format!("id=={id}")).collect();
    let metrics = client
        .tasks()
        .metrics(MetricsRequest { filters })
        .await
        .map_err(|e| anyhow!("metrics: {}", e.message()))?
        .into_inner()
        .metrics;
    let mut out = vec![];
    for m in metrics {
        if let Some(data) = &m.data {
            out.push((m.id.clone(), metrics_json(&m.id, data)?));
        }
    }
    Ok(out)
}

pub async fn stats(client: &Client, mut a: StatsArgs) -> anyhow::Result<()> {
    let interval = Duration::from_secs(1);
    for id in a.ids.iter_mut() {
        *id = names::resolve(client, id).await?;
    }
    let mut before = samples(client, &a.ids).await?;
    if !a.ids.is_empty() && before.len() < a.ids.len() {
        let missing: Vec<&String> = a
            .ids
            .iter()
            .filter(|id| !before.iter().any(|(b, _)| b == *id))
            .collect();
        bail!("no running container {missing:?}");
    }
    loop {
        tokio::time::sleep(interval).await;
        let now = samples(client, &a.ids).await?;
        let mut t = Table::new(&["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]);
        for (id, m) in &now {
            let (cpu, mem, limit, pids) = figures(m);
            let cpu0 = before
                .iter()
                .find(|(b, _)| b == id)
                .map(|(_, m)| figures(m).0)
                .unwrap_or(cpu);
            let pct = cpu.saturating_sub(cpu0) as f64 / interval.as_nanos() as f64 * 100.0;
            let unlimited = limit == 0 || limit >= (1 << 62);
            let mem_pct = if unlimited {
                0.0
            } else {
                mem as f64 / limit as f64 * 100.0
            };
            let lim = if unlimited {
                "-".to_string()
            } else {
                crate::output::size(limit as i64)
            };
            let json = serde_json::json!({"id": id, "cpu_percent": pct, "memory_usage": mem, "memory_limit": (!unlimited).then_some(limit), "pids": pids});
            t.row(
                vec![
                    id.clone(),
                    format!("{pct:.2}%"),
                    format!("{} / {lim}", crate::output::size(mem as i64)),
                    format!("{mem_pct:.2}%"),
                    pids.to_string(),
                ],
                json,
            );
        }
        if !a.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        t.print(ListFlags::default())?;
        if a.no_stream {
            return Ok(());
        }
        before = now;
    }
}

pub async fn top(client: &Client, a: TopArgs) -> anyhow::Result<()> {
    let id = names::resolve(client, &a.id).await?;
    let pids = client
        .tasks()
        .list_pids(ListPidsRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(|e| anyhow!("container {}: {}", a.id, e.message()))?
        .into_inner()
        .processes;
    let mut t = Table::new(&["PID", "CMD"]);
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        t.row(
            vec![p.pid.to_string(), cmd.clone()],
            serde_json::json!({"pid": p.pid, "cmd": cmd}),
        );
    }
    t.print(ListFlags::default())?;
    Ok(())
}
