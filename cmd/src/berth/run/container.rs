//! The container record `berth run` creates: an OCI spec from the image's config and the
//! flags (the user looked up in the image's own files), the runtime, and the labels berthd
//! and the other verbs read back.

use super::options::Security;
use super::volumes::Bind;
use super::{adjust, image::local_mounts, Run, LOG_LABEL};
use anyhow::{anyhow, bail, Context};
use berth_client::Client;
use berth_proto::containers::{container::Runtime, Container, CreateContainerRequest};
use berth_services::core::restart::{Policy, AUTO_REMOVE_LABEL, POLICY_LABEL};
use berth_services::spec::{self, Options, SPEC_TYPE_URL};
use std::collections::HashMap;

/// Label carrying the image's STOPSIGNAL, as containerd names it; `berth tasks kill`
/// sends it by default.
pub use berth_proto::vocab::labels::STOP_SIGNAL as STOP_SIGNAL_LABEL;

/// Creates the container `r.id` on its prepared rootfs `mounts`.
pub(super) async fn create(
    client: &Client,
    r: &Run,
    config: &serde_json::Value,
    mounts: &[berth_proto::types::Mount],
    binds: Vec<Bind>,
    networks: Vec<(&'static str, String)>,
    security: &Security,
) -> anyhow::Result<()> {
    let config = &with_entrypoint(config, r.entrypoint.as_deref());
    let opts = spec_options(client, r, config, mounts, binds)?;
    if spec::args(config, &r.args).is_empty() {
        bail!("no command: the image has none and none was given");
    }
    let mut spec = spec::build(config, &opts);
    adjust::apply(&mut spec, r, security)?;
    client
        .containers()
        .create(CreateContainerRequest {
            container: Some(Container {
                id: r.id.clone(),
                image: r.image.clone(),
                runtime: Some(runtime(r)),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&spec)?,
                }),
                snapshotter: r.snapshotter.clone(),
                snapshot_key: r.id.clone(),
                labels: labels(r, config, networks)?,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| anyhow!("container {}: {}", r.id, e.message()))?;
    Ok(())
}

/// The image's config with --entrypoint in place of its ENTRYPOINT; its CMD goes too, as in
/// Docker (an empty --entrypoint leaves the command alone to run).
fn with_entrypoint(config: &serde_json::Value, entrypoint: Option<&str>) -> serde_json::Value {
    let mut config = config.clone();
    if let Some(e) = entrypoint {
        config["config"]["Entrypoint"] = if e.is_empty() {
            serde_json::json!([])
        } else {
            serde_json::json!([e])
        };
        config["config"]["Cmd"] = serde_json::json!([]);
    }
    config
}

/// What the flags decide about the spec, on top of the image's config.
fn spec_options(
    client: &Client,
    r: &Run,
    config: &serde_json::Value,
    mounts: &[berth_proto::types::Mount],
    binds: Vec<Bind>,
) -> anyhow::Result<Options> {
    let (uid, gid, extra) = user_ids(r, config, mounts)?;
    Ok(Options {
        id: r.id.clone(),
        namespace: client.namespace().to_string(),
        args: r.args.clone(),
        env: r.environment()?,
        cwd: r.cwd.clone(),
        uid,
        gid,
        additional_gids: extra,
        terminal: r.tty,
        memory: match &r.memory {
            Some(m) => Some(
                spec::parse_size(m)
                    .ok_or_else(|| anyhow!("--memory {m:?} is not a size like 256m"))?,
            ),
            None => None,
        },
        cpus: r.cpus,
        pids: r.pids_limit,
        host_network: r.host_network(),
        binds,
        seccomp: r.seccomp.clone(),
    })
}

/// The user (-u, else the image's USER) as (uid, gid, supplementary gids), names looked up
/// in the rootfs's /etc/passwd and /etc/group; root without either.
fn user_ids(
    r: &Run,
    config: &serde_json::Value,
    mounts: &[berth_proto::types::Mount],
) -> anyhow::Result<(u32, u32, Vec<u32>)> {
    let user = r.user.clone().or_else(|| {
        config["config"]["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    Ok(match &user {
        // Read from the snapshot's directories where that is exact, else from the rootfs
        // mounted for the purpose.
        Some(u) => spec::resolve_user_in_mounts(&local_mounts(mounts), u)
            .context("resolve the user in the rootfs")?,
        None => (0, 0, vec![0]),
    })
}

/// The shim, and the low-level runtime under it when --runc-binary names one.
fn runtime(r: &Run) -> Runtime {
    Runtime {
        name: r.runtime.clone(),
        options: r.runc_binary.as_ref().map(|b| {
            berth_proto::to_any(&berth_proto::containerd::runc::v1::Options {
                binary_name: b.clone(),
                ..Default::default()
            })
        }),
    }
}

/// The record's labels: the user's (--label), then berth's own (name, networks, stop
/// signal, log, restart policy), which the user's cannot replace.
fn labels(
    r: &Run,
    config: &serde_json::Value,
    networks: Vec<(&'static str, String)>,
) -> anyhow::Result<HashMap<String, String>> {
    let mut labels = crate::output::parse_labels(&r.labels)?;
    labels.extend(networks.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(name) = &r.name {
        labels.insert(crate::names::NAME_LABEL.to_string(), name.clone());
    }
    if r.restart != Policy::No {
        labels.insert(POLICY_LABEL.to_string(), r.restart.to_string());
    }
    if r.rm && r.detach {
        labels.insert(AUTO_REMOVE_LABEL.to_string(), "true".to_string());
    }
    if !r.add_host.is_empty() {
        labels.insert(
            super::task::EXTRA_HOSTS_LABEL.to_string(),
            r.add_host.join(","),
        );
    }
    if let Some(sig) = config["config"]["StopSignal"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        labels.insert(STOP_SIGNAL_LABEL.to_string(), sig.to_string());
    }
    if let Some(log) = &r.log {
        labels.insert(LOG_LABEL.to_string(), log.display().to_string());
    }
    Ok(labels)
}
