//! Runtime handlers (a RuntimeClass's `handler`): the shim, low-level runtime and
//! snapshotter a pod and its containers get, resolved from `[cri.runtimes]`.

use super::config::{CriConfig, Handler};
use super::{AnyValue, Container, Cri, Sandbox};
use crate::core::error::{Error, Result};

/// Logs, at start, each handler whose snapshotter is none of `available` or whose runtime
/// binary is nowhere to be found: its pods will not start (berthd serves the rest, as for
/// a snapshotter that failed to open).
pub(super) fn warn_unavailable(cfg: &CriConfig, available: &[String]) {
    for name in cfg.handler_names() {
        let Some(h) = cfg.handler(&name) else {
            continue;
        };
        let known = h.snapshotter.is_empty() || available.contains(&h.snapshotter);
        if !known {
            tracing::warn!(
                handler = name,
                snapshotter = h.snapshotter,
                available = available.join(", "),
                "the runtime handler's snapshotter is not available here; its pods cannot start"
            );
        }
        let binary = h.runtime_binary.as_str();
        let found = matches!(binary, "" | "native")
            || crate::core::runtime::shim::locate(binary, None).is_some();
        if !found {
            tracing::warn!(
                handler = name,
                runtime = binary,
                "the runtime handler's runtime binary is neither a path to a file nor on PATH; its pods cannot start"
            );
        }
    }
}

impl Cri {
    /// The handler a RunPodSandbox or PullImage names; an unknown one is refused, naming
    /// those configured.
    pub(super) fn runtime_handler(&self, name: &str) -> Result<Handler> {
        self.cfg.handler(name).ok_or_else(|| {
            let known: Vec<String> = self
                .cfg
                .handler_names()
                .iter()
                .map(|n| format!("{n:?}"))
                .collect();
            Error::invalid(format!(
                "runtime handler {name:?} is not configured (configured: {}; \"\" is the default); \
                 add [cri.runtimes.{name:?}] to berthd's config",
                known.join(", ")
            ))
        })
    }

    /// The handler pod `sb` was made with, as configured now (the default's settings if it
    /// has since left the configuration), with the snapshotter the pod was made with
    /// whatever the configuration says now: its snapshots are there.
    pub(super) fn pod_handler(&self, sb: &Sandbox) -> Handler {
        let mut h = self
            .cfg
            .handler(&sb.meta.runtime_handler)
            .unwrap_or_else(|| self.cfg.default_handler());
        h.snapshotter = self.pod_snapshotter(sb);
        h
    }

    /// Where pod `sb`'s snapshots (and its containers') are.
    pub(super) fn pod_snapshotter(&self, sb: &Sandbox) -> String {
        if sb.meta.snapshotter.is_empty() {
            self.cfg.snapshotter.clone()
        } else {
            sb.meta.snapshotter.clone()
        }
    }

    /// Where container `c`'s snapshot is: its pod's snapshotter.
    pub(super) fn container_snapshotter(&self, c: &Container) -> String {
        match self.sandbox(&c.meta.sandbox_id) {
            Ok(sb) => self.pod_snapshotter(&sb),
            Err(_) => self.cfg.snapshotter.clone(),
        }
    }

    /// runc options for the tasks of pod `sb` and its containers: its handler's low-level
    /// runtime, and the systemd cgroup driver when configured.
    pub(super) fn runtime_options(&self, sb: &Sandbox) -> Option<AnyValue> {
        let binary_name = self.pod_handler(sb).runtime_binary;
        if !self.cfg.systemd_cgroup() && binary_name.is_empty() {
            return None;
        }
        use prost::Message;
        let o = berth_proto::containerd::runc::v1::Options {
            systemd_cgroup: self.cfg.systemd_cgroup(),
            binary_name,
            ..Default::default()
        };
        Some(AnyValue {
            type_url: "containerd.runc.v1.Options".into(),
            value: o.encode_to_vec(),
        })
    }
}
