//! berth containers ls|info|rm|label, and berth tasks ls|kill|ps|pause|resume|rm|metrics.

use crate::output::{labels, ListFlags, Table};
use berth_client::Client;
use berth_proto::containerd::v1::types::Status;
use berth_proto::containers::{
    Container, DeleteContainerRequest, GetContainerRequest, ListContainersRequest,
    UpdateContainerRequest,
};
use berth_proto::snapshots::RemoveSnapshotRequest;
use berth_proto::tasks::{
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, KillRequest, ListPidsRequest,
    ListTasksRequest, MetricsRequest, PauseTaskRequest, ResumeTaskRequest, StartRequest,
};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Containers {
    /// List containers
    #[command(alias = "list")]
    Ls(ContainerLsArgs),
    /// Show a container as JSON (its spec decoded)
    Info(ContainerInfoArgs),
    /// Remove containers (and their snapshots); their tasks must be gone
    #[command(alias = "remove", alias = "delete")]
    Rm(ContainerRmArgs),
    /// Set (key=value) or remove (key=) labels
    Label(ContainerLabelArgs),
    /// Run a container with the id given, as ctr does: run [OPTIONS] IMAGE ID [COMMAND
    /// [ARG...]] (the flags of `berth run`; the id is also its name)
    Run(Box<crate::run::CtrRun>),
    /// Remove every container that is not running
    Prune(crate::everyday::PruneArgs),
}

#[derive(clap::Args)]
pub struct ContainerLsArgs {
    #[command(flatten)]
    pub flags: ListFlags,
    /// Filters, e.g. image~=busybox
    pub filters: Vec<String>,
}

#[derive(clap::Args)]
pub struct ContainerInfoArgs {
    pub id: String,
}

#[derive(clap::Args)]
pub struct ContainerRmArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct ContainerLabelArgs {
    pub id: String,
    #[arg(required = true)]
    pub labels: Vec<String>,
}

#[derive(Subcommand)]
pub enum Tasks {
    /// List tasks
    #[command(alias = "list")]
    Ls(TaskLsArgs),
    /// Send a signal to a task (default: the image's STOPSIGNAL, else SIGTERM)
    Kill(TaskKillArgs),
    /// Processes of a task
    Ps(TaskPsArgs),
    Pause(TaskPauseArgs),
    Resume(TaskResumeArgs),
    /// Delete stopped tasks
    #[command(alias = "remove", alias = "delete")]
    Rm(TaskRmArgs),
    /// Resource usage of a task, as JSON
    Metrics(TaskMetricsArgs),
    /// Run another process in a running task (exit code = the process's)
    Exec(TaskExecArgs),
    /// Start a created task's init process
    Start(TaskStartArgs),
    /// Follow a task's log (berth run -d --log FILE) until it exits; Ctrl-C is forwarded
    Attach(TaskAttachArgs),
}

#[derive(clap::Args)]
pub struct TaskLsArgs {
    #[command(flatten)]
    pub flags: ListFlags,
}

#[derive(clap::Args)]
pub struct TaskKillArgs {
    pub id: String,
    /// Signal number or name (TERM, KILL, INT, HUP, ...)
    #[arg(long, short = 's')]
    pub signal: Option<String>,
    /// Signal every process in the container
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args)]
pub struct TaskPsArgs {
    pub id: String,
}

#[derive(clap::Args)]
pub struct TaskPauseArgs {
    pub id: String,
}

#[derive(clap::Args)]
pub struct TaskResumeArgs {
    pub id: String,
}

#[derive(clap::Args)]
pub struct TaskRmArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct TaskMetricsArgs {
    pub id: String,
}

#[derive(clap::Args)]
pub struct TaskExecArgs {
    /// Give the process a terminal wired to this one (its keys too)
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Pass this one's stdin to the process (`echo x | berth tasks exec -i ID cat`)
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Id of the process within the task (default: generated)
    #[arg(long)]
    pub exec_id: Option<String>,
    /// More environment variables (KEY=VALUE)
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory (default: the task's)
    #[arg(long)]
    pub cwd: Option<String>,
    /// uid[:gid] (default: the task's user)
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    pub id: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(clap::Args)]
pub struct TaskStartArgs {
    pub id: String,
}

#[derive(clap::Args)]
pub struct TaskAttachArgs {
    pub id: String,
}

/// containerd's type URL for an OCI process spec.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The container's process spec with the exec's changes.
fn exec_process(
    spec: &[u8],
    args: &[String],
    tty: bool,
    env: &[String],
    cwd: Option<&str>,
    user: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let spec: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|e| anyhow::anyhow!("the container's spec is not JSON: {e}"))?;
    let mut p = spec["process"].clone();
    if !p.is_object() {
        anyhow::bail!("the container's spec has no process");
    }
    p["args"] = serde_json::json!(args);
    p["terminal"] = serde_json::json!(tty);
    if !env.is_empty() {
        let mut e = p["env"].as_array().cloned().unwrap_or_default();
        e.extend(env.iter().map(|x| serde_json::json!(x)));
        p["env"] = serde_json::json!(e);
    }
    if let Some(c) = cwd {
        p["cwd"] = serde_json::json!(c);
    }
    if let Some(u) = user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u, None),
        };
        let uid: u32 = uid
            .parse()
            .map_err(|_| anyhow::anyhow!("--user {u:?}: give a numeric uid[:gid]"))?;
        p["user"]["uid"] = serde_json::json!(uid);
        if let Some(g) = gid {
            let gid: u32 = g
                .parse()
                .map_err(|_| anyhow::anyhow!("--user {u:?}: give a numeric uid[:gid]"))?;
            p["user"]["gid"] = serde_json::json!(gid);
        }
    }
    if tty {
        p.as_object_mut().map(|o| o.remove("consoleSize"));
    }
    Ok(p)
}

pub(crate) fn status_name(s: i32) -> &'static str {
    match Status::try_from(s) {
        Ok(Status::Created) => "CREATED",
        Ok(Status::Running) => "RUNNING",
        Ok(Status::Stopped) => "STOPPED",
        Ok(Status::Paused) => "PAUSED",
        Ok(Status::Pausing) => "PAUSING",
        _ => "UNKNOWN",
    }
}

pub fn parse_signal(s: &str) -> anyhow::Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Ok(match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "STOP" => 19,
        "CONT" => 18,
        _ => anyhow::bail!("unknown signal {s:?}; use a number or a name like TERM or KILL"),
    })
}

pub async fn containers(client: &Client, cmd: Containers) -> anyhow::Result<()> {
    match cmd {
        Containers::Ls(a) => container_ls(client, a).await?,
        Containers::Info(a) => container_info(client, a).await?,
        Containers::Rm(a) => container_rm(client, a).await?,
        Containers::Label(a) => container_label(client, a).await?,
        // main runs it: it exits with the container's code.
        Containers::Run(_) | Containers::Prune(_) => {
            anyhow::bail!("containers run and prune are run by main")
        }
    }
    Ok(())
}

pub async fn tasks(client: &Client, cmd: Tasks) -> anyhow::Result<()> {
    match cmd {
        Tasks::Ls(a) => task_ls(client, a).await?,
        Tasks::Kill(a) => task_kill(client, a).await?,
        Tasks::Ps(a) => task_ps(client, a).await?,
        Tasks::Pause(a) => task_pause(client, a).await?,
        Tasks::Resume(a) => task_resume(client, a).await?,
        Tasks::Rm(a) => task_rm(client, a).await?,
        Tasks::Exec(a) => task_exec(client, a).await?,
        Tasks::Start(a) => task_start(client, a).await?,
        Tasks::Attach(a) => task_attach(client, a).await?,
        Tasks::Metrics(a) => task_metrics(client, a).await?,
    }
    Ok(())
}

/// The essentials of containerd's cgroup metrics (v1 or v2) as JSON.
pub(crate) fn metrics_json(id: &str, data: &prost_types::Any) -> anyhow::Result<serde_json::Value> {
    use berth_proto::cgroups::{v1, v2};
    use prost::Message;
    let t = data.type_url.rsplit('/').next().unwrap_or_default();
    Ok(match t {
        "io.containerd.cgroups.v1.Metrics" => {
            let m = v1::Metrics::decode(data.value.as_slice())?;
            let mem = m.memory.unwrap_or_default();
            let usage = mem.usage.unwrap_or_default();
            let cpu = m.cpu.unwrap_or_default().usage.unwrap_or_default();
            let pids = m.pids.unwrap_or_default();
            serde_json::json!({
                "id": id, "cgroup": "v1",
                "pids": {"current": pids.current, "limit": pids.limit},
                "cpu": {"usage_ns": cpu.total, "user_ns": cpu.user, "kernel_ns": cpu.kernel},
                "memory": {"usage": usage.usage, "limit": usage.limit, "max_usage": usage.max,
                           "rss": mem.rss, "cache": mem.cache},
                "oom_kills": m.memory_oom_control.unwrap_or_default().oom_kill,
            })
        }
        "io.containerd.cgroups.v2.Metrics" => {
            let m = v2::Metrics::decode(data.value.as_slice())?;
            let mem = m.memory.unwrap_or_default();
            let cpu = m.cpu.unwrap_or_default();
            let pids = m.pids.unwrap_or_default();
            serde_json::json!({
                "id": id, "cgroup": "v2",
                "pids": {"current": pids.current, "limit": pids.limit},
                "cpu": {"usage_usec": cpu.usage_usec, "user_usec": cpu.user_usec, "system_usec": cpu.system_usec},
                "memory": {"usage": mem.usage, "limit": mem.usage_limit, "max_usage": mem.max_usage,
                           "anon": mem.anon, "file": mem.file},
                "oom_kills": m.memory_events.unwrap_or_default().oom_kill,
            })
        }
        other => serde_json::json!({"id": id, "type": other, "bytes": data.value.len()}),
    })
}

pub(crate) async fn container(client: &Client, id: &str) -> anyhow::Result<Container> {
    Ok(client
        .containers()
        .get(GetContainerRequest { id: id.to_string() })
        .await
        .map_err(|e| anyhow::anyhow!("container {id}: {}", e.message()))?
        .into_inner()
        .container
        .unwrap_or_default())
}

async fn container_ls(client: &Client, args: ContainerLsArgs) -> anyhow::Result<()> {
    let ContainerLsArgs { flags, filters } = args;
    let mut svc = client.containers();
    let list = svc
        .list(ListContainersRequest { filters })
        .await?
        .into_inner()
        .containers;
    let mut t = Table::new(&["CONTAINER", "IMAGE", "RUNTIME", "LABELS"]);
    for c in list {
        let runtime = c
            .runtime
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let json = serde_json::json!({"id": c.id, "image": c.image, "runtime": runtime, "labels": c.labels});
        t.row(
            vec![c.id.clone(), c.image.clone(), runtime, labels(&c.labels)],
            json,
        );
    }
    t.print(flags)?;
    Ok(())
}

async fn container_info(client: &Client, args: ContainerInfoArgs) -> anyhow::Result<()> {
    let ContainerInfoArgs { id } = args;
    let mut svc = client.containers();
    let c = svc
        .get(GetContainerRequest { id })
        .await?
        .into_inner()
        .container
        .unwrap_or_default();
    let spec = spec_json(&c);
    let json = serde_json::json!({
        "ID": c.id, "Image": c.image, "Labels": c.labels,
        "Runtime": c.runtime.as_ref().map(|r| r.name.clone()),
        "Snapshotter": c.snapshotter, "SnapshotKey": c.snapshot_key,
        "CreatedAt": crate::output::rfc3339(c.created_at.as_ref()),
        "Spec": spec,
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

async fn container_rm(client: &Client, args: ContainerRmArgs) -> anyhow::Result<()> {
    let ContainerRmArgs { ids } = args;
    let mut svc = client.containers();
    for id in ids {
        let c = svc
            .get(GetContainerRequest { id: id.clone() })
            .await
            .map_err(|e| anyhow::anyhow!("container {id}: {}", e.message()))?
            .into_inner()
            .container
            .unwrap_or_default();
        if client
            .tasks()
            .get(berth_proto::tasks::GetRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            })
            .await
            .is_ok()
        {
            anyhow::bail!(
                "container {id} still has a task; kill it and run `berth tasks rm {id}` first"
            );
        }
        remove_container(client, &c).await?;
        println!("{id}");
    }
    Ok(())
}

/// The container's OCI spec as JSON (Null when it has none or it does not parse).
pub(crate) fn spec_json(c: &Container) -> serde_json::Value {
    c.spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or_default()
}

/// The signal that stops the container: its image's STOPSIGNAL, else SIGTERM.
pub(crate) fn stop_signal(c: &Container) -> anyhow::Result<u32> {
    parse_signal(
        c.labels
            .get(crate::run::STOP_SIGNAL_LABEL)
            .map(String::as_str)
            .unwrap_or("TERM"),
    )
}

/// Deletes a container record (its task must be gone) and its snapshot.
pub(crate) async fn remove_container(client: &Client, c: &Container) -> anyhow::Result<()> {
    client
        .containers()
        .delete(DeleteContainerRequest { id: c.id.clone() })
        .await
        .map_err(|e| anyhow::anyhow!("remove container {}: {}", c.id, e.message()))?;
    if !c.snapshot_key.is_empty() {
        let _ = client
            .snapshots()
            .remove(RemoveSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            })
            .await;
    }
    Ok(())
}

async fn container_label(client: &Client, args: ContainerLabelArgs) -> anyhow::Result<()> {
    let ContainerLabelArgs { id, labels } = args;
    crate::verbs::label(&labels, |labels, mask| async move {
        let c = client
            .containers()
            .update(UpdateContainerRequest {
                container: Some(Container {
                    id,
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(mask),
            })
            .await?
            .into_inner()
            .container
            .unwrap_or_default();
        Ok(c.labels)
    })
    .await
}

async fn task_ls(client: &Client, args: TaskLsArgs) -> anyhow::Result<()> {
    let TaskLsArgs { flags } = args;
    let mut svc = client.tasks();
    let list = svc
        .list(ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    let mut t = Table::new(&["TASK", "PID", "STATUS"]);
    for p in list {
        let json = serde_json::json!({"id": p.id, "pid": p.pid, "status": status_name(p.status), "exit_status": p.exit_status});
        t.row(
            vec![
                p.id.clone(),
                p.pid.to_string(),
                status_name(p.status).into(),
            ],
            json,
        );
    }
    t.print(flags)?;
    Ok(())
}

async fn task_kill(client: &Client, args: TaskKillArgs) -> anyhow::Result<()> {
    let TaskKillArgs { id, signal, all } = args;
    let mut svc = client.tasks();
    let signal = match signal {
        Some(s) => parse_signal(&s)?,
        None => match container(client, &id).await {
            Ok(c) => stop_signal(&c)?,
            Err(_) => libc::SIGTERM as u32,
        },
    };
    svc.kill(KillRequest {
        container_id: id,
        exec_id: String::new(),
        signal,
        all,
    })
    .await?;
    Ok(())
}

async fn task_ps(client: &Client, args: TaskPsArgs) -> anyhow::Result<()> {
    let TaskPsArgs { id } = args;
    let mut svc = client.tasks();
    let ps = svc
        .list_pids(ListPidsRequest { container_id: id })
        .await?
        .into_inner()
        .processes;
    println!("PID");
    for p in ps {
        println!("{}", p.pid);
    }
    Ok(())
}

async fn task_pause(client: &Client, args: TaskPauseArgs) -> anyhow::Result<()> {
    let TaskPauseArgs { id } = args;
    let mut svc = client.tasks();
    svc.pause(PauseTaskRequest { container_id: id }).await?;
    Ok(())
}

async fn task_resume(client: &Client, args: TaskResumeArgs) -> anyhow::Result<()> {
    let TaskResumeArgs { id } = args;
    let mut svc = client.tasks();
    svc.resume(ResumeTaskRequest { container_id: id }).await?;
    Ok(())
}

async fn task_rm(client: &Client, args: TaskRmArgs) -> anyhow::Result<()> {
    let TaskRmArgs { ids } = args;
    let mut svc = client.tasks();
    for id in ids {
        let d = svc
            .delete(DeleteTaskRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("task {id}: {}", e.message()))?
            .into_inner();
        println!("{id} (exit status {})", d.exit_status);
    }
    Ok(())
}

pub(crate) async fn task_exec(client: &Client, args: TaskExecArgs) -> anyhow::Result<()> {
    let TaskExecArgs {
        tty,
        interactive,
        exec_id,
        env,
        cwd,
        user,
        id,
        args,
    } = args;
    let mut svc = client.tasks();
    let c = container(client, &id).await?;
    let spec = c.spec.map(|a| a.value).unwrap_or_default();
    let process = exec_process(&spec, &args, tty, &env, cwd.as_deref(), user.as_deref())?;
    let exec_id = exec_id.unwrap_or_else(|| format!("exec-{}", std::process::id()));
    let dir = tempfile::Builder::new().prefix("berth-io-").tempdir()?;
    let streams = crate::run::Streams {
        tty,
        stdin: interactive || tty,
    };
    let (stdin, stdout, stderr, pumps) =
        crate::run::stdio(dir.path(), &format!("{id}-{exec_id}"), streams)?;
    svc.exec(ExecProcessRequest {
        container_id: id.clone(),
        stdin,
        stdout,
        stderr,
        terminal: tty,
        spec: Some(prost_types::Any {
            type_url: PROCESS_TYPE_URL.into(),
            value: serde_json::to_vec(&process)?,
        }),
        exec_id: exec_id.clone(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("exec in {id}: {}", e.message()))?;
    let status = crate::run::start_and_wait(client, &id, &exec_id, streams, pumps).await;
    let _ = svc
        .delete_process(DeleteProcessRequest {
            container_id: id.clone(),
            exec_id,
        })
        .await;
    let status = status?;
    if status != 0 {
        std::process::exit(status as i32);
    }
    Ok(())
}

async fn task_start(client: &Client, args: TaskStartArgs) -> anyhow::Result<()> {
    let TaskStartArgs { id } = args;
    let mut svc = client.tasks();
    svc.start(StartRequest {
        container_id: id.clone(),
        exec_id: String::new(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("start {id}: {}", e.message()))?;
    println!("{id}");
    Ok(())
}

async fn task_attach(client: &Client, args: TaskAttachArgs) -> anyhow::Result<()> {
    let TaskAttachArgs { id } = args;
    let c = container(client, &id).await?;
    let log = c.labels.get(crate::run::LOG_LABEL).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "task {id} was started without a log; start it with berth run -d --log FILE to attach later"
        )
    })?;
    let status = crate::run::follow(client, &id, std::path::Path::new(&log)).await?;
    if status != 0 {
        std::process::exit(status as i32);
    }
    Ok(())
}

async fn task_metrics(client: &Client, args: TaskMetricsArgs) -> anyhow::Result<()> {
    let TaskMetricsArgs { id } = args;
    let mut svc = client.tasks();
    let m = svc
        .metrics(MetricsRequest {
            filters: vec![format!("id=={id}")],
        })
        .await?
        .into_inner()
        .metrics;
    let m = m
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no metrics for task {id}"))?;
    let data = m.data.unwrap_or_default();
    println!(
        "{}",
        serde_json::to_string_pretty(&metrics_json(&m.id, &data)?)?
    );
    Ok(())
}
