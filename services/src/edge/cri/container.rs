//! CRI containers: created from the full ContainerConfig in a pod's namespaces, their output
//! in the kubelet's log format, their exit (code, reason, times) recorded when it happens.

use super::logs::{self, mkfifo, LogFile};
use super::spec;
use super::{
    ext_json, ext_proto, init_ref, Container, ContainerMeta, Cri, CONFIG_EXT, KIND_LABEL, META_EXT,
};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::containers::{AnyValue, ContainerRecord, Runtime};
use crate::core::metadata::Labels;
use crate::core::runtime::{CreateTask, Stdio};
use berth_proto::cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Signal numbers of the CRI's Signal enum.
fn signal_number(s: i32) -> Option<u32> {
    use cri::Signal as S;
    Some(match S::try_from(s).ok()? {
        S::RuntimeDefault => return None,
        S::Sigabrt | S::Sigiot => libc::SIGABRT,
        S::Sigalrm => libc::SIGALRM,
        S::Sigbus => libc::SIGBUS,
        S::Sigchld | S::Sigcld => libc::SIGCHLD,
        S::Sigcont => libc::SIGCONT,
        S::Sigfpe => libc::SIGFPE,
        S::Sighup => libc::SIGHUP,
        S::Sigill => libc::SIGILL,
        S::Sigint => libc::SIGINT,
        S::Sigio | S::Sigpoll => libc::SIGIO,
        S::Sigkill => libc::SIGKILL,
        S::Sigpipe => libc::SIGPIPE,
        S::Sigprof => libc::SIGPROF,
        S::Sigpwr => libc::SIGPWR,
        S::Sigquit => libc::SIGQUIT,
        S::Sigsegv => libc::SIGSEGV,
        S::Sigstkflt => libc::SIGSTKFLT,
        S::Sigstop => libc::SIGSTOP,
        S::Sigsys => libc::SIGSYS,
        S::Sigterm => libc::SIGTERM,
        S::Sigtrap => libc::SIGTRAP,
        S::Sigtstp => libc::SIGTSTP,
        S::Sigttin => libc::SIGTTIN,
        S::Sigttou => libc::SIGTTOU,
        S::Sigurg => libc::SIGURG,
        S::Sigusr1 => libc::SIGUSR1,
        S::Sigusr2 => libc::SIGUSR2,
        S::Sigvtalrm => libc::SIGVTALRM,
        S::Sigwinch => libc::SIGWINCH,
        S::Sigxcpu => libc::SIGXCPU,
        S::Sigxfsz => libc::SIGXFSZ,
        other => {
            let n = other as i32;
            if (35..=50).contains(&n) {
                libc::SIGRTMIN() + (n - 35)
            } else {
                libc::SIGRTMAX() - (65 - n)
            }
        }
    } as u32)
}

fn signal_by_name(name: &str) -> Option<u32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n).to_string();
    if let Ok(v) = n.parse::<u32>() {
        return Some(v);
    }
    Some(match n.as_str() {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "STOP" => libc::SIGSTOP,
        _ => return None,
    } as u32)
}

impl Cri {
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        let sb = self.sandbox(sandbox_id)?;
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("the container config has no metadata"))?;
        if md.name.is_empty() {
            return Err(Error::invalid("the container config needs a name"));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid("the container config names no image"))?;
        let image = self.image_find(&image_ref).await?.ok_or_else(|| {
            Error::not_found(format!("image {image_ref:?} is not present: pull it first"))
        })?;
        let pm = sb.config.metadata.clone().unwrap_or_default();
        let name = format!(
            "{}_{}_{}_{}_{}",
            md.name, pm.name, pm.namespace, pm.uid, md.attempt
        );
        let id = self.names.reserve("container", &name)?;
        let made = self
            .create_container_inner(&id, &name, &sb, config, image, image_ref)
            .await;
        if made.is_err() {
            let _ = self
                .snapshots
                .remove(self.ns.clone(), &self.cfg.snapshotter, id.clone())
                .await;
            let _ = self.records.delete(self.ns.clone(), id.clone()).await;
            let _ = std::fs::remove_dir_all(self.container_state_dir(&id));
            self.names.release(&name);
            self.containers.remove(&id);
        }
        made.map(|()| id)
    }

    async fn create_container_inner(
        &self,
        id: &str,
        name: &str,
        sb: &super::Sandbox,
        config: cri::ContainerConfig,
        image: super::image::ImageInfo,
        image_ref: String,
    ) -> Result<()> {
        let parent = self.image_unpack(&image).await?;
        let mounts = self
            .snapshots
            .prepare(
                self.ctx(),
                &self.cfg.snapshotter,
                id.to_string(),
                parent,
                Labels::new(),
            )
            .await?;
        let user = self.resolve_user(&config, &image, &mounts).await?;
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let target_pid = match sc.namespace_options.as_ref() {
            Some(n) if n.pid == cri::NamespaceMode::Target as i32 => {
                let t = self.container(&n.target_id)?;
                (t.meta.pid != 0).then_some(t.meta.pid)
            }
            _ => None,
        };
        let files = self.sandbox_files(sb);
        let parent_cg = sb
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or("");
        let netns = (!sb.meta.netns.is_empty()).then(|| PathBuf::from(&sb.meta.netns));
        let oci = spec::container(&spec::ContainerSpec {
            id,
            sandbox_id: &sb.id,
            config: &config,
            sandbox: &sb.config,
            image_config: &image.config,
            sandbox_pid: sb.meta.pid,
            netns: netns.as_deref(),
            target_pid,
            files: &files,
            user: user.clone(),
            cgroup: spec::cgroup_path(parent_cg, id, self.cfg.systemd_cgroup()),
            restrict_oom_score_adj: self.cfg.restrict_oom_score_adj,
        })?;
        let log_path = match (&sb.config.log_directory, &config.log_path) {
            (d, p) if !d.is_empty() && !p.is_empty() => Path::new(d).join(p).display().to_string(),
            _ => String::new(),
        };
        let meta = ContainerMeta {
            name: name.to_string(),
            sandbox_id: sb.id.clone(),
            image_ref,
            image_id: image.id.clone(),
            log_path,
            created_at: crate::core::metadata::now(),
            uid: user.0,
            gid: user.1,
            groups: user.2,
            stop_signal: image.config["config"]["StopSignal"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            ..Default::default()
        };
        let (dir, stdin) = (self.container_state_dir(id), config.stdin);
        blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            for f in ["stdout", "stderr"] {
                mkfifo(&dir.join(f))?;
            }
            if stdin {
                mkfifo(&dir.join("stdin"))?;
            }
            Ok(())
        })
        .await?;
        let mut labels: Labels = config.labels.clone().into_iter().collect();
        labels.insert(KIND_LABEL.into(), "container".into());
        labels.insert("io.kubernetes.sandbox.id".into(), sb.id.clone());
        let mut record = ContainerRecord {
            id: id.to_string(),
            labels,
            image: image.names.first().cloned().unwrap_or_default(),
            runtime: Runtime {
                name: self.cfg.runtime.clone(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&oci)?,
            }),
            snapshotter: self.cfg.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        record.extensions.insert(META_EXT.into(), ext_json(&meta)?);
        record
            .extensions
            .insert(CONFIG_EXT.into(), ext_proto(&config));
        self.records.create(self.ns.clone(), record).await?;
        let c = Container {
            id: id.to_string(),
            config,
            meta,
        };
        self.containers.insert(id, c.clone());
        self.event(&c, cri::ContainerEventType::ContainerCreatedEvent);
        Ok(())
    }

    /// (uid, gid, supplementary groups) from run_as_user/run_as_group/run_as_username or the
    /// image's User, resolved in the container's rootfs; groups per the policy.
    async fn resolve_user(
        &self,
        config: &cri::ContainerConfig,
        image: &super::image::ImageInfo,
        mounts: &[berth_snapshotters::Mount],
    ) -> Result<(i64, i64, Vec<i64>)> {
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(Error::invalid(
                "run_as_group needs run_as_user or run_as_username",
            ));
        }
        let image_user = image.config["config"]["User"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let user = if let Some(u) = &sc.run_as_user {
            u.value.to_string()
        } else if !sc.run_as_username.is_empty() {
            sc.run_as_username.clone()
        } else {
            image_user.split(':').next().unwrap_or("").to_string()
        };
        let group = match &sc.run_as_group {
            Some(g) => Some(g.value.to_string()),
            None if sc.run_as_user.is_none() && sc.run_as_username.is_empty() => {
                image_user.split_once(':').map(|(_, g)| g.to_string())
            }
            None => None,
        };
        let spec_user = match (&group, user.is_empty()) {
            (Some(g), true) => format!("0:{g}"),
            (Some(g), false) => format!("{user}:{g}"),
            (None, true) => "0".to_string(),
            (None, false) => user.clone(),
        };
        let m = mounts.to_vec();
        let (uid, gid, mut groups) = blocking(move || {
            let mounted = berth_snapshotters::mount::TempMount::new(&m)?;
            crate::core::spec::resolve_user(mounted.path(), &spec_user)
        })
        .await?;
        let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
        if strict {
            groups = vec![gid];
        }
        let mut out: Vec<i64> = groups.into_iter().map(i64::from).collect();
        for g in &sc.supplemental_groups {
            if !out.contains(g) {
                out.push(*g);
            }
        }
        Ok((uid as i64, gid as i64, out))
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        let mut c = self.container(&c.id)?;
        if c.meta.started_at != 0 {
            return Err(Error::precondition(format!(
                "container {} was started already; create a new one",
                c.id
            )));
        }
        let sb = self.sandbox(&c.meta.sandbox_id)?;
        if !self.sandbox_ready(&sb) {
            return Err(Error::precondition(format!(
                "pod sandbox {} is not ready",
                sb.id
            )));
        }
        let dir = self.container_state_dir(&c.id);
        let io = Stdio {
            stdin: if c.config.stdin {
                dir.join("stdin").display().to_string()
            } else {
                String::new()
            },
            stdout: dir.join("stdout").display().to_string(),
            stderr: if c.config.tty {
                String::new()
            } else {
                dir.join("stderr").display().to_string()
            },
            terminal: c.config.tty,
        };
        let holds = self.attach_logs(&c);
        // The shim holds stdin open from create until CloseIO; this end only covers the
        // moment before it does.
        let stdin_hold = if c.config.stdin {
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(dir.join("stdin"))
                .map_err(|e| tracing::warn!(container = c.id, error = %e, "cannot open the container's stdin"))
                .ok()
        } else {
            None
        };
        let created = self
            .tasks
            .create(
                self.ns.clone(),
                CreateTask {
                    container_id: c.id.clone(),
                    io,
                    options: self.runtime_options(),
                    ..Default::default()
                },
            )
            .await;
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                drop(holds);
                self.start_failed(&mut c, &e).await;
                return Err(e);
            }
        };
        let started = self.tasks.start(self.ns.clone(), init_ref(&c.id)).await;
        drop(holds);
        drop(stdin_hold);
        if let Err(e) = started {
            let _ = self.tasks.delete(self.ns.clone(), c.id.clone()).await;
            self.start_failed(&mut c, &e).await;
            return Err(e);
        }
        c.meta.pid = pid;
        c.meta.started_at = crate::core::metadata::now();
        self.persist_container(&c).await?;
        self.watch_container(&c.id);
        self.event(&c, cri::ContainerEventType::ContainerStartedEvent);
        Ok(())
    }

    /// A start that failed: the container ends as exited with StartError and the reason.
    async fn start_failed(&self, c: &mut Container, e: &Error) {
        self.detach_logs(&c.id).await;
        c.meta.started_at = crate::core::metadata::now();
        c.meta.finished_at = c.meta.started_at;
        c.meta.exit_code = 128;
        c.meta.reason = "StartError".into();
        c.meta.message = e.to_string();
        let _ = self.persist_container(c).await;
    }

    /// Starts copying the container's FIFOs into its log (when it has one); returns the write
    /// ends to hold until the process has its own.
    fn attach_logs(&self, c: &Container) -> Vec<tokio::net::unix::pipe::Sender> {
        let dir = self.container_state_dir(&c.id);
        let log = if c.meta.log_path.is_empty() {
            LogFile::discard()
        } else {
            LogFile::open(Path::new(&c.meta.log_path)).unwrap_or_else(|e| {
                tracing::warn!(container = c.id, path = c.meta.log_path, error = %e, "cannot open the container log");
                LogFile::discard()
            })
        };
        let mut handles = Vec::new();
        let mut holds = Vec::new();
        let mut streams = vec![("stdout", dir.join("stdout"))];
        if !c.config.tty {
            streams.push(("stderr", dir.join("stderr")));
        }
        for (name, fifo) in streams {
            match logs::open_fifo(&fifo) {
                Ok((rx, tx)) => {
                    handles.push(tokio::spawn(logs::copy(rx, name, log.clone())));
                    holds.push(tx);
                }
                Err(e) => {
                    tracing::warn!(container = c.id, fifo = %fifo.display(), error = %e, "cannot open the container's output")
                }
            }
        }
        self.logs.insert(&c.id, log, handles);
        holds
    }

    /// Waits (a bounded time) for the log copiers to reach the end of the output.
    async fn detach_logs(&self, id: &str) {
        let entry = self.logs.remove(id);
        if let Some(handles) = entry {
            for h in handles {
                logs::finish(h).await;
            }
        }
    }

    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let Some(reopened) = self.logs.with(&c.id, |log| log.reopen()) else {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        };
        reopened.map_err(|e| Error::io(format!("reopen {}", c.meta.log_path), e))
    }

    /// After a berthd restart: the log copiers and exit waiter of a container that was
    /// running, or its exit recorded if it ended meanwhile.
    pub(super) async fn reattach(&self, c: &Container) {
        match self.tasks.state(self.ns.clone(), init_ref(&c.id)).await {
            Ok(p)
                if p.status == crate::core::runtime::Status::Running
                    || p.status == crate::core::runtime::Status::Paused =>
            {
                drop(self.attach_logs(c));
                self.watch_container(&c.id);
            }
            Ok(p) => {
                drop(self.attach_logs(c));
                self.container_exited(&c.id, Some((p.exit_status, p.exited_at)))
                    .await;
            }
            Err(_) => self.container_exited(&c.id, None).await,
        }
    }

    fn watch_container(&self, id: &str) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            match this.tasks.wait(this.ns.clone(), init_ref(&id)).await {
                Ok(e) => {
                    let lock = this.lock_for(&id);
                    let _held = lock.lock().await;
                    this.container_exited(&id, Some((e.exit_status, e.exited_at)))
                        .await;
                }
                Err(e) => tracing::debug!(container = id, error = %e, "wait ended"),
            }
        });
    }

    /// Records how the container ended (once): the task is deleted, the log flushed, exit
    /// code, time and reason kept. `None`: the task is gone and its exit unknown.
    async fn container_exited(&self, id: &str, exit: Option<(u32, i64)>) {
        let Ok(mut c) = self.container(id) else {
            return;
        };
        if c.meta.finished_at != 0 {
            return;
        }
        let deleted = self.tasks.delete(self.ns.clone(), id.to_string()).await;
        let (status, at) = match (exit, deleted) {
            (Some((s, at)), _) => (s, at),
            (None, Ok(e)) => (e.exit_status, e.exited_at),
            (None, Err(_)) => (crate::core::runtime::KILLED_EXIT_STATUS, 0),
        };
        self.detach_logs(id).await;
        c.meta.finished_at = if at > 0 {
            at
        } else {
            crate::core::metadata::now()
        };
        c.meta.exit_code = status as i32;
        c.meta.pid = 0;
        let oom = self.oom.take(id);
        c.meta.reason = if oom {
            "OOMKilled".into()
        } else if status == 0 {
            "Completed".into()
        } else {
            "Error".into()
        };
        if let Err(e) = self.persist_container(&c).await {
            tracing::warn!(container = id, error = %e, "cannot record the container's exit");
        }
        self.event(&c, cri::ContainerEventType::ContainerStoppedEvent);
    }

    /// Stops a running container: its stop signal, then SIGKILL after `timeout` seconds.
    /// Unknown ids and stopped containers are not errors.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if c.meta.started_at == 0 || c.meta.finished_at != 0 {
            return Ok(());
        }
        let init = init_ref(&c.id);
        if timeout > 0 {
            let sig = signal_number(c.config.stop_signal)
                .or_else(|| self.image_stop_signal(&c))
                .unwrap_or(libc::SIGTERM as u32);
            match self
                .tasks
                .kill(self.ns.clone(), init.clone(), sig, false)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => tracing::debug!(container = c.id, error = %e, "stop signal"),
            }
            let waited = tokio::time::timeout(
                Duration::from_secs(timeout as u64),
                self.tasks.wait(self.ns.clone(), init.clone()),
            )
            .await;
            if let Ok(Ok(e)) = waited {
                let lock = self.lock_for(&c.id);
                let _held = lock.lock().await;
                self.container_exited(&c.id, Some((e.exit_status, e.exited_at)))
                    .await;
                return Ok(());
            }
        }
        match self
            .tasks
            .kill(self.ns.clone(), init.clone(), libc::SIGKILL as u32, true)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => tracing::debug!(container = c.id, error = %e, "SIGKILL"),
        }
        let exit = match tokio::time::timeout(
            Duration::from_secs(30),
            self.tasks.wait(self.ns.clone(), init),
        )
        .await
        {
            Ok(Ok(e)) => Some((e.exit_status, e.exited_at)),
            Ok(Err(_)) => None,
            Err(_) => {
                return Err(Error::new(
                    Kind::DeadlineExceeded,
                    format!("container {} did not die 30 s after SIGKILL", c.id),
                ))
            }
        };
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        self.container_exited(&c.id, exit).await;
        Ok(())
    }

    fn image_stop_signal(&self, c: &Container) -> Option<u32> {
        Some(c.meta.stop_signal.as_str())
            .filter(|s| !s.is_empty())
            .and_then(signal_by_name)
    }

    /// Removes a container (stopping it first). Unknown ids are not errors.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_container(&c.id, 0).await?;
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        let _ = self.tasks.delete(self.ns.clone(), c.id.clone()).await;
        self.detach_logs(&c.id).await;
        match self
            .snapshots
            .remove(self.ns.clone(), &self.cfg.snapshotter, c.id.clone())
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        match self.records.delete(self.ns.clone(), c.id.clone()).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_dir_all(self.container_state_dir(&c.id));
        {
            self.containers.remove(&c.id);
            self.names.release(&c.meta.name);
        }
        self.gc.schedule();
        self.event(&c, cri::ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }

    pub fn container_state(c: &Container) -> cri::ContainerState {
        if c.meta.finished_at != 0 {
            cri::ContainerState::ContainerExited
        } else if c.meta.started_at != 0 {
            cri::ContainerState::ContainerRunning
        } else {
            cri::ContainerState::ContainerCreated
        }
    }

    pub fn container_status(&self, c: &Container) -> cri::ContainerStatus {
        let image = cri::ImageSpec {
            image: c.meta.image_ref.clone(),
            annotations: c
                .config
                .image
                .as_ref()
                .map(|i| i.annotations.clone())
                .unwrap_or_default(),
            user_specified_image: c
                .config
                .image
                .as_ref()
                .map(|i| i.user_specified_image.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        let res = c.config.linux.as_ref().and_then(|l| l.resources.clone());
        cri::ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: Self::container_state(c) as i32,
            created_at: c.meta.created_at,
            started_at: c.meta.started_at,
            finished_at: c.meta.finished_at,
            exit_code: c.meta.exit_code,
            image: Some(image),
            image_ref: c.meta.image_id.clone(),
            reason: c.meta.reason.clone(),
            message: c.meta.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path: c.meta.log_path.clone(),
            resources: res.map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
            image_id: c.meta.image_id.clone(),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: c.meta.uid,
                    gid: c.meta.gid,
                    supplemental_groups: c.meta.groups.clone(),
                }),
            }),
            stop_signal: c.config.stop_signal,
        }
    }

    pub fn container_list(&self, f: Option<&cri::ContainerFilter>) -> Vec<cri::Container> {
        let mut out: Vec<cri::Container> = self
            .containers
            .filter(|_| true)
            .iter()
            .map(|c| cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.meta.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: c.meta.image_ref.clone(),
                    ..Default::default()
                }),
                image_ref: c.meta.image_id.clone(),
                state: Self::container_state(c) as i32,
                created_at: c.meta.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.meta.image_id.clone(),
            })
            .filter(|c| match f {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || c.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty()
                            || c.pod_sandbox_id.starts_with(&f.pod_sandbox_id))
                        && f.state.as_ref().is_none_or(|s| s.state == c.state)
                        && super::labels_match(&c.labels, &f.label_selector)
                }
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        out
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        r: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let c = self.container(id)?;
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        let mut c = self.container(&c.id)?;
        let resources = spec::update_resources(r);
        // The stored spec and config change too, so a restart keeps the new limits.
        let rec = self.records.get(self.ns.clone(), c.id.clone()).await?;
        if let Some(s) = &rec.spec {
            let mut v: serde_json::Value = serde_json::from_slice(&s.value)?;
            let devices = v["linux"]["resources"]["devices"].clone();
            v["linux"]["resources"] = resources.clone();
            v["linux"]["resources"]["devices"] = devices;
            let update = ContainerRecord {
                id: c.id.clone(),
                spec: Some(AnyValue {
                    type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&v)?,
                }),
                ..Default::default()
            };
            self.records
                .update(self.ns.clone(), update, vec!["spec".into()])
                .await?;
        }
        if c.meta.started_at != 0 && c.meta.finished_at == 0 {
            self.tasks
                .update(
                    self.ns.clone(),
                    crate::core::runtime::UpdateTask {
                        container_id: c.id.clone(),
                        resources: Some(AnyValue {
                            type_url:
                                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                    .into(),
                            value: serde_json::to_vec(&resources)?,
                        }),
                        annotations: Labels::new(),
                    },
                )
                .await?;
        }
        if let Some(l) = c.config.linux.as_mut() {
            l.resources = Some(r.clone());
        } else {
            c.config.linux = Some(cri::LinuxContainerConfig {
                resources: Some(r.clone()),
                security_context: None,
            });
        }
        let mut update = ContainerRecord {
            id: c.id.clone(),
            ..Default::default()
        };
        update
            .extensions
            .insert(CONFIG_EXT.into(), ext_proto(&c.config));
        self.records
            .update(
                self.ns.clone(),
                update,
                vec![format!("extensions.{CONFIG_EXT}")],
            )
            .await?;
        self.containers.insert(&c.id.clone(), c);
        Ok(())
    }

    /// Tells GetContainerEvents subscribers about `c`.
    fn event(&self, c: &Container, kind: cri::ContainerEventType) {
        let sandbox = self.sandbox(&c.meta.sandbox_id).ok();
        let ev = cri::ContainerEventResponse {
            container_id: c.id.clone(),
            container_event_type: kind as i32,
            created_at: crate::core::metadata::now(),
            pod_sandbox_status: sandbox.as_ref().map(|s| self.sandbox_status(s)),
            containers_statuses: vec![self.container_status(c)],
        };
        self.notify(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map() {
        assert_eq!(
            signal_number(cri::Signal::Sigterm as i32),
            Some(libc::SIGTERM as u32)
        );
        assert_eq!(signal_number(cri::Signal::RuntimeDefault as i32), None);
        assert_eq!(
            signal_number(cri::Signal::Sigrtmin as i32),
            Some(libc::SIGRTMIN() as u32)
        );
        assert_eq!(
            signal_number(cri::Signal::Sigrtmax as i32),
            Some(libc::SIGRTMAX() as u32)
        );
        assert_eq!(signal_by_name("SIGQUIT"), Some(libc::SIGQUIT as u32));
        assert_eq!(signal_by_name("9"), Some(9));
        assert_eq!(signal_by_name("NOPE"), None);
    }
}
