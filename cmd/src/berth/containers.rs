//! berth containers ls|info|rm|label, and berth tasks ls|kill|ps|pause|resume|rm|metrics.

use crate::output::{labels, parse_labels, ListFlags, Table};
use berth_client::Client;
use berth_proto::containerd::v1::types::Status;
use berth_proto::containers::{
    Container, DeleteContainerRequest, GetContainerRequest, ListContainersRequest,
    UpdateContainerRequest,
};
use berth_proto::snapshots::RemoveSnapshotRequest;
use berth_proto::tasks::{
    DeleteTaskRequest, KillRequest, ListPidsRequest, ListTasksRequest, MetricsRequest,
    PauseTaskRequest, ResumeTaskRequest,
};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Containers {
    /// List containers
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
        /// Filters, e.g. image~=busybox
        filters: Vec<String>,
    },
    /// Show a container as JSON (its spec decoded)
    Info { id: String },
    /// Remove containers (and their snapshots); their tasks must be gone
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set (key=value) or remove (key=) labels
    Label {
        id: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum Tasks {
    /// List tasks
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
    },
    /// Send a signal (default SIGTERM) to a task
    Kill {
        id: String,
        /// Signal number or name (TERM, KILL, INT, HUP, ...)
        #[arg(long, short = 's', default_value = "TERM")]
        signal: String,
        /// Signal every process in the container
        #[arg(long)]
        all: bool,
    },
    /// Processes of a task
    Ps {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Delete stopped tasks
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Resource usage of a task, as JSON
    Metrics {
        id: String,
    },
}

fn status_name(s: i32) -> &'static str {
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
    let mut svc = client.containers();
    match cmd {
        Containers::Ls { flags, filters } => {
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
        }
        Containers::Info { id } => {
            let c = svc
                .get(GetContainerRequest { id })
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            let spec: serde_json::Value = c
                .spec
                .as_ref()
                .and_then(|s| serde_json::from_slice(&s.value).ok())
                .unwrap_or_default();
            let json = serde_json::json!({
                "ID": c.id, "Image": c.image, "Labels": c.labels,
                "Runtime": c.runtime.as_ref().map(|r| r.name.clone()),
                "Snapshotter": c.snapshotter, "SnapshotKey": c.snapshot_key,
                "CreatedAt": crate::output::rfc3339(c.created_at.as_ref()),
                "Spec": spec,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Containers::Rm { ids } => {
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
                    anyhow::bail!("container {id} still has a task; kill it and run `berth tasks rm {id}` first");
                }
                svc.delete(DeleteContainerRequest { id: id.clone() })
                    .await?;
                if !c.snapshot_key.is_empty() {
                    let _ = client
                        .snapshots()
                        .remove(RemoveSnapshotRequest {
                            snapshotter: c.snapshotter.clone(),
                            key: c.snapshot_key.clone(),
                        })
                        .await;
                }
                println!("{id}");
            }
        }
        Containers::Label { id, labels: l } => {
            let l = parse_labels(&l)?;
            let mask = crate::output::label_mask(&l);
            let c = svc
                .update(UpdateContainerRequest {
                    container: Some(Container {
                        id,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                })
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            println!("{}", labels(&c.labels));
        }
    }
    Ok(())
}

pub async fn tasks(client: &Client, cmd: Tasks) -> anyhow::Result<()> {
    let mut svc = client.tasks();
    match cmd {
        Tasks::Ls { flags } => {
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
        }
        Tasks::Kill { id, signal, all } => {
            let signal = parse_signal(&signal)?;
            svc.kill(KillRequest {
                container_id: id,
                exec_id: String::new(),
                signal,
                all,
            })
            .await?;
        }
        Tasks::Ps { id } => {
            let ps = svc
                .list_pids(ListPidsRequest { container_id: id })
                .await?
                .into_inner()
                .processes;
            println!("PID");
            for p in ps {
                println!("{}", p.pid);
            }
        }
        Tasks::Pause { id } => {
            svc.pause(PauseTaskRequest { container_id: id }).await?;
        }
        Tasks::Resume { id } => {
            svc.resume(ResumeTaskRequest { container_id: id }).await?;
        }
        Tasks::Rm { ids } => {
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
        }
        Tasks::Metrics { id } => {
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
                serde_json::json!({"id": m.id, "type": data.type_url, "bytes": data.value.len()})
            );
        }
    }
    Ok(())
}
