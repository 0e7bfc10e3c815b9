//! Restart policies (`berth run --restart`): the policy a container record carries as a
//! label, the back-off between restarts as Docker's engine applies them, and the
//! [`Supervisor`] in berthd that restarts (or, for `run -d --rm`, removes) a container when
//! its task's init exits.

use crate::core::containers::Containers;
use crate::core::context::Namespace;
use crate::core::error::Result;
use crate::core::events::{Event, Exchange};
use crate::core::filters::Filter;
use crate::core::metadata::containers::ContainerRecord;
use crate::core::metadata::MetadataStore;
use crate::core::runtime::{CreateTask, ProcessRef, Stdio, Tasks};
use crate::core::snapshots::Snapshots;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Label naming the file a detached container's output is appended to (`berth run -d`),
/// in the kubelet's log format ([`berth_proto::vocab::crilog::log_uri`]); a restarted task
/// appends there too.
pub const LOG_LABEL: &str = "berth.log";

/// Label on a container record naming its restart policy (`no`, `on-failure[:N]`,
/// `always`, `unless-stopped`); berthd restarts its task by it.
pub const POLICY_LABEL: &str = "berth.restart";
/// Label set when a user stopped the container on purpose (`berth stop`): `unless-stopped`
/// and `always` leave it stopped until it is started again (`always` only until berthd
/// starts again, as Docker's).
pub const STOPPED_LABEL: &str = "berth.restart.stopped";
/// Label on a container started with `run -d --rm`: berthd removes it (its task, record
/// and rootfs snapshot) when its task exits.
pub const AUTO_REMOVE_LABEL: &str = "berth.auto-remove";
/// Label counting the restarts of the container's current run (reset by `berth start`).
pub const COUNT_LABEL: &str = "berth.restart.count";

/// When berthd restarts a container whose task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Never (the default).
    #[default]
    No,
    /// After a non-zero exit, at most `max` times in a row (0: without limit).
    OnFailure { max: u32 },
    /// After any exit, and when berthd starts, unless the user stopped it.
    Always,
    /// As `Always`, but a user's stop outlives berthd's restart too.
    UnlessStopped,
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "restart policy {s:?}: use no, on-failure[:MAX_RETRIES], always or unless-stopped"
            )
        };
        Ok(match s.split_once(':') {
            None if s == "no" || s.is_empty() => Policy::No,
            None if s == "always" => Policy::Always,
            None if s == "unless-stopped" => Policy::UnlessStopped,
            None if s == "on-failure" => Policy::OnFailure { max: 0 },
            Some(("on-failure", n)) => Policy::OnFailure {
                max: n.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        })
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::No => f.write_str("no"),
            Policy::OnFailure { max: 0 } => f.write_str("on-failure"),
            Policy::OnFailure { max } => write!(f, "on-failure:{max}"),
            Policy::Always => f.write_str("always"),
            Policy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl Policy {
    /// Whether a task that exited with `status`, restarted `count` times already, is
    /// started again; `stopped`: the user stopped it.
    pub fn restarts(&self, status: u32, count: u32, stopped: bool) -> bool {
        match self {
            Policy::No => false,
            Policy::OnFailure { max } => status != 0 && (*max == 0 || count < *max),
            Policy::Always | Policy::UnlessStopped => !stopped,
        }
    }

    /// Whether berthd starts the container when it starts itself (the host rebooted or
    /// berthd restarted) and finds its task gone.
    pub fn at_daemon_start(&self, stopped: bool) -> bool {
        match self {
            Policy::Always => true,
            Policy::UnlessStopped => !stopped,
            Policy::No | Policy::OnFailure { .. } => false,
        }
    }
}

/// Docker's back-off: 100 ms before the first restart, doubling each time, at most a minute;
/// a run that lasted 10 s or more starts the doubling over.
pub fn backoff(previous: Duration, ran_for: Duration) -> Duration {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(60);
    if ran_for >= Duration::from_secs(10) || previous.is_zero() {
        return FIRST;
    }
    (previous * 2).min(MAX)
}

/// Restarts containers by their policy when their init exits, and removes `run -d --rm`
/// ones: one task per berthd, fed by the event exchange's `/tasks/exit`.
pub struct Supervisor {
    pub tasks: Tasks,
    pub containers: Containers,
    pub snapshots: Snapshots,
    pub events: Exchange,
    /// Per container: the last back-off and when its task last started.
    runs: Mutex<HashMap<(String, String), (Duration, Instant)>>,
}

impl Supervisor {
    pub fn new(
        tasks: Tasks,
        containers: Containers,
        snapshots: Snapshots,
        events: Exchange,
    ) -> Self {
        Supervisor {
            tasks,
            containers,
            snapshots,
            events,
            runs: Mutex::default(),
        }
    }

    /// Subscribes now (no exit is missed) and handles exits until berthd stops.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let filter = Filter::parse_all(&["topic==/tasks/exit"]).unwrap_or_default();
        let mut exits = self.events.subscribe(filter);
        let this = Arc::new(self);
        tokio::spawn(async move {
            while let Some(env) = exits.next().await {
                let Event::TaskExit {
                    container_id,
                    id,
                    exit_status,
                    ..
                } = env.event
                else {
                    continue;
                };
                // An exec's exit is not the container's.
                let (Ok(ns), true) = (Namespace::parse(&env.namespace), container_id == id) else {
                    continue;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.exited(ns, container_id.clone(), exit_status).await {
                        tracing::warn!(id = %container_id, error = %e, "restart policy not applied");
                    }
                });
            }
        })
    }

    async fn exited(&self, ns: Namespace, id: String, status: u32) -> Result<()> {
        let c = self.containers.get(ns.clone(), id.clone()).await?;
        if c.labels.get(AUTO_REMOVE_LABEL).is_some_and(|v| v == "true") {
            return self.remove(ns, c).await;
        }
        let Some(policy) = c
            .labels
            .get(POLICY_LABEL)
            .and_then(|p| p.parse::<Policy>().ok())
        else {
            return Ok(());
        };
        let count: u32 = c
            .labels
            .get(COUNT_LABEL)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if !policy.restarts(status, count, stopped(&c)) {
            return Ok(());
        }
        let delay = self.next_delay(&ns, &id);
        tracing::info!(id = %id, status, count, delay_ms = delay.as_millis() as u64, policy = %policy, "restarting container");
        tokio::time::sleep(delay).await;
        // Removed or stopped by its user meanwhile: that stands.
        let c = self.containers.get(ns.clone(), id.clone()).await?;
        if stopped(&c) {
            return Ok(());
        }
        self.set_count(&ns, &c, count + 1).await?;
        start(&self.tasks, ns, &c).await
    }

    /// The back-off before this restart (see [`backoff`]).
    fn next_delay(&self, ns: &Namespace, id: &str) -> Duration {
        let key = (ns.to_string(), id.to_string());
        let Ok(mut runs) = self.runs.lock() else {
            return backoff(Duration::ZERO, Duration::ZERO);
        };
        let (previous, started) = runs
            .get(&key)
            .copied()
            .unwrap_or((Duration::ZERO, Instant::now()));
        let delay = backoff(previous, started.elapsed());
        runs.insert(key, (delay, Instant::now() + delay));
        delay
    }

    async fn set_count(&self, ns: &Namespace, c: &ContainerRecord, n: u32) -> Result<()> {
        let mut update = ContainerRecord {
            id: c.id.clone(),
            ..Default::default()
        };
        update.labels.insert(COUNT_LABEL.to_string(), n.to_string());
        self.containers
            .update(ns.clone(), update, vec![format!("labels.{COUNT_LABEL}")])
            .await
            .map(drop)
    }

    /// `run -d --rm`: the exited task, the record and its rootfs go.
    async fn remove(&self, ns: Namespace, c: ContainerRecord) -> Result<()> {
        let _ = self.tasks.delete(ns.clone(), c.id.clone()).await;
        self.containers.delete(ns.clone(), c.id.clone()).await?;
        if !c.snapshot_key.is_empty() {
            let _ = self
                .snapshots
                .remove(ns, &c.snapshotter, c.snapshot_key.clone())
                .await;
        }
        Ok(())
    }
}

/// A new task for the container (its last one deleted), output appended to its log.
async fn start(tasks: &Tasks, ns: Namespace, c: &ContainerRecord) -> Result<()> {
    let _ = tasks.delete(ns.clone(), c.id.clone()).await;
    let log = c
        .labels
        .get(LOG_LABEL)
        .map(|l| berth_proto::vocab::crilog::log_uri(l))
        .unwrap_or_default();
    tasks
        .create(
            ns.clone(),
            CreateTask {
                container_id: c.id.clone(),
                rootfs: vec![],
                io: Stdio {
                    stdout: log.clone(),
                    stderr: log,
                    ..Default::default()
                },
                options: None,
            },
        )
        .await?;
    tasks
        .start(
            ns,
            ProcessRef {
                container_id: c.id.clone(),
                exec_id: String::new(),
            },
        )
        .await
        .map(drop)
}

/// berthd starting (after a host reboot or its own restart), its tasks recovered: every
/// container whose policy runs it at daemon start (`always`; `unless-stopped` its user did
/// not stop) and whose task is gone or has exited is started again, its restart count
/// afresh. An `always` container its user had stopped runs again too, as Docker's, and
/// its exits restart it again from then on. Returns the containers started.
pub async fn start_at_daemon_start(store: &MetadataStore, tasks: &Tasks) -> Vec<(String, String)> {
    let mut started = vec![];
    let namespaces = store.namespace_list().unwrap_or_default();
    for (name, _) in namespaces {
        let Ok(ns) = Namespace::parse(&name) else {
            continue;
        };
        for c in store.container_list(&ns).unwrap_or_default() {
            let wanted = c
                .labels
                .get(POLICY_LABEL)
                .and_then(|p| p.parse::<Policy>().ok())
                .is_some_and(|p| p.at_daemon_start(stopped(&c)));
            if !wanted || tasks.is_running(&ns, &c.id).await {
                continue;
            }
            let fresh = store.container_update(&ns, &c.id, |c| {
                c.labels.remove(STOPPED_LABEL);
                c.labels.remove(COUNT_LABEL);
                Ok(())
            });
            let result = match fresh {
                Ok(c) => start(tasks, ns.clone(), &c).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    tracing::info!(namespace = %ns, id = %c.id, "restart policy: started at berthd start");
                    started.push((name.clone(), c.id.clone()));
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, id = %c.id, error = %e, "restart policy: cannot start at berthd start")
                }
            }
        }
    }
    started
}

fn stopped(c: &ContainerRecord) -> bool {
    c.labels.get(STOPPED_LABEL).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_docker_spells_them() {
        for s in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        assert_eq!("on-failure:2".parse(), Ok(Policy::OnFailure { max: 2 }));
        for bad in ["sometimes", "on-failure:x", "always:2", "on-failure:-1"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn on_failure_counts_and_ignores_success() {
        let p = Policy::OnFailure { max: 2 };
        assert!(p.restarts(1, 0, false) && p.restarts(1, 1, false));
        assert!(!p.restarts(1, 2, false) && !p.restarts(0, 0, false));
        assert!(Policy::OnFailure { max: 0 }.restarts(3, 1000, false));
        assert!(!Policy::No.restarts(1, 0, false));
    }

    #[test]
    fn a_user_stop_holds_as_docker_holds_it() {
        assert!(Policy::Always.restarts(0, 9, false) && !Policy::Always.restarts(0, 9, true));
        assert!(Policy::Always.at_daemon_start(true));
        assert!(!Policy::UnlessStopped.at_daemon_start(true));
        assert!(Policy::UnlessStopped.at_daemon_start(false));
        assert!(!Policy::OnFailure { max: 0 }.at_daemon_start(false));
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_long_run() {
        let mut d = Duration::ZERO;
        let short = Duration::from_secs(1);
        let mut seen = vec![];
        for _ in 0..12 {
            d = backoff(d, short);
            seen.push(d);
        }
        assert_eq!(seen[0], Duration::from_millis(100));
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(60));
        assert_eq!(
            backoff(d, Duration::from_secs(10)),
            Duration::from_millis(100)
        );
    }
}
