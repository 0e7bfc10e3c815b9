//! --mount, -v and the image's VOLUME entries, resolved into bind mounts: host directories as
//! they are, volumes made on first use (seeded with what the image holds at their path).

use super::Run;
use anyhow::{anyhow, bail};
use berth_client::Client;
use berth_proto::berth::services::volumes::v1::{
    CreateVolumeRequest, GetVolumeRequest, RemoveVolumeRequest, Volume,
};
use std::collections::HashMap;
use std::path::Path;

/// A bind mount for the spec: (source, destination, options).
pub(super) type Bind = (String, String, Vec<String>);

/// A mount asked for on the command line, before volumes are resolved.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    Bind {
        src: String,
        dst: String,
        opts: Vec<String>,
    },
    /// A named volume, or an anonymous one when `name` is None.
    Volume {
        name: Option<String>,
        dst: String,
        opts: Vec<String>,
    },
}

impl Wanted {
    fn dst(&self) -> &str {
        match self {
            Wanted::Bind { dst, .. } | Wanted::Volume { dst, .. } => dst,
        }
    }
}

fn parse_mount(s: &str) -> anyhow::Result<Wanted> {
    let mut kind = "bind";
    let (mut src, mut dst, mut opts) = (None, None, vec![]);
    for part in s.split(',') {
        let (k, v) = match part.split_once('=') {
            Some(kv) => kv,
            None if part == "ro" || part == "readonly" => ("options", "ro"),
            None => bail!("mount {s:?}: {part:?} is not key=value"),
        };
        match k {
            "type" => kind = v,
            "src" | "source" => src = Some(v.to_string()),
            "dst" | "destination" | "target" => dst = Some(v.to_string()),
            "options" => opts.extend(v.split(':').map(str::to_string)),
            other => bail!("mount {s:?}: unknown key {other:?}"),
        }
    }
    let dst = dst.ok_or_else(|| anyhow!("mount {s:?} needs dst="))?;
    if !dst.starts_with('/') {
        bail!("mount {s:?}: dst must be an absolute path");
    }
    match kind {
        "bind" => {
            let src = src.ok_or_else(|| anyhow!("mount {s:?} needs src="))?;
            if !Path::new(&src).is_absolute() {
                bail!("mount {s:?}: src must be an absolute path");
            }
            Ok(Wanted::Bind { src, dst, opts })
        }
        "volume" => Ok(Wanted::Volume {
            name: src.filter(|n| !n.is_empty()),
            dst,
            opts,
        }),
        other => bail!("mount {s:?}: type {other:?} is not bind or volume"),
    }
}

/// `-v SRC:DST[:ro|rw]`: an absolute SRC is a host directory, anything else a volume name.
fn parse_volume(s: &str) -> anyhow::Result<Wanted> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => ("", *dst, None),
        [src, dst] => (*src, *dst, None),
        [src, dst, mode] => (*src, *dst, Some(*mode)),
        _ => bail!("-v {s:?}: use SRC:DST[:ro]"),
    };
    if !dst.starts_with('/') {
        bail!("-v {s:?}: the container path must be absolute");
    }
    let opts = match mode {
        None | Some("rw") => vec![],
        Some("ro") => vec!["ro".to_string()],
        Some(m) => bail!("-v {s:?}: mode {m:?} is not ro or rw"),
    };
    Ok(if src.starts_with('/') {
        Wanted::Bind {
            src: src.into(),
            dst: dst.into(),
            opts,
        }
    } else {
        Wanted::Volume {
            name: (!src.is_empty()).then(|| src.to_string()),
            dst: dst.into(),
            opts,
        }
    })
}

/// --mount and -v as given, then an anonymous volume for each of the image's VOLUME paths
/// that neither covers.
fn wanted(r: &Run, config: &serde_json::Value) -> anyhow::Result<Vec<Wanted>> {
    let mut wanted = r
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .chain(r.volumes.iter().map(|v| parse_volume(v)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(vols) = config["config"]["Volumes"].as_object() {
        for path in vols.keys() {
            if path.starts_with('/') && !wanted.iter().any(|w| w.dst() == path) {
                wanted.push(Wanted::Volume {
                    name: None,
                    dst: path.clone(),
                    opts: vec![],
                });
            }
        }
    }
    Ok(wanted)
}

/// Resolves --mount, -v and the image's VOLUME entries into bind mounts. Volumes are made
/// on first use and seeded with what the image holds at their path; returns the binds and
/// the anonymous volumes made for this container.
pub(super) async fn binds(
    client: &Client,
    r: &Run,
    config: &serde_json::Value,
    rootfs: &[berth_proto::types::Mount],
) -> anyhow::Result<(Vec<Bind>, Vec<String>)> {
    let mut binds = vec![];
    let mut anonymous = vec![];
    for w in wanted(r, config)? {
        match w {
            Wanted::Bind { src, dst, opts } => binds.push((src, dst, opts)),
            Wanted::Volume { name, dst, opts } => {
                let volume = match create(client, r, name.as_deref(), &dst, rootfs).await {
                    Ok(v) => v,
                    Err(e) if e.code() == tonic::Code::AlreadyExists => {
                        get(client, name.as_deref().unwrap_or_default()).await?
                    }
                    Err(e) => {
                        remove_volumes(client, anonymous, true).await;
                        bail!("volume for {dst}: {}", e.message())
                    }
                }
                .ok_or_else(|| anyhow!("daemon returned no volume"))?;
                if name.is_none() {
                    anonymous.push(volume.name.clone());
                }
                binds.push((volume.mountpoint, dst, opts));
            }
        }
    }
    Ok((binds, anonymous))
}

/// Makes the volume `name` (a new anonymous one, labelled with the container, when None),
/// seeded from the rootfs at `dst`.
async fn create(
    client: &Client,
    r: &Run,
    name: Option<&str>,
    dst: &str,
    rootfs: &[berth_proto::types::Mount],
) -> Result<Option<Volume>, tonic::Status> {
    let mut labels = HashMap::new();
    if name.is_none() {
        labels.insert("berth.container".to_string(), r.id.clone());
    }
    let created = client
        .volumes()
        .create(CreateVolumeRequest {
            name: name.unwrap_or_default().to_string(),
            labels,
            seed_mounts: rootfs.to_vec(),
            seed_path: dst.to_string(),
        })
        .await?;
    Ok(created.into_inner().volume)
}

/// The volume `name`, which exists already.
async fn get(client: &Client, name: &str) -> anyhow::Result<Option<Volume>> {
    let got = client
        .volumes()
        .get(GetVolumeRequest {
            name: name.to_string(),
            usage: false,
        })
        .await
        .map_err(|e| anyhow!("volume {name}: {}", e.message()))?;
    Ok(got.into_inner().volume)
}

/// Removes volumes, best effort; `force` even while a container uses one.
pub(super) async fn remove_volumes(client: &Client, names: Vec<String>, force: bool) {
    for name in names {
        let _ = client
            .volumes()
            .remove(RemoveVolumeRequest { name, force })
            .await;
    }
}
