//! Image volumes (KEP-4639): a container mount that names an OCI image instead of a host path.
//! The kubelet has pulled the image already; it is unpacked here if it is not, a read-only view
//! of its layers is made for the container and mounted under the container's state directory,
//! and the spec binds that (or one directory of it, `image_sub_path`) read-only into the
//! container. The image's id goes into the mount's `image_ref`, which ContainerStatus reports
//! (KEP-5365). The views live as long as the container and go with it, or with a creation that
//! fails half way.

use super::{Cri, Sandbox};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::Labels;
use berth_proto::cri::v1 as cri;
use berth_snapshotters::idmap::{IdMap, Mapping};
use berth_snapshotters::layer::root::Root;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What containerd and CRI-O put before every error mounting an image volume (the CRI's
/// `ErrImageVolumeMountFailed`), so the kubelet's events read the same on berth.
const MOUNT_FAILED: &str = "ImageVolumeMountFailed";

/// A container's image volumes on the host: where each is to be bound from, by the index of
/// its mount in the container's config.
pub type Sources = BTreeMap<usize, PathBuf>;

/// The image a mount names, when it is an image volume.
pub fn image_of(m: &cri::Mount) -> Option<&str> {
    m.image
        .as_ref()
        .map(|i| i.image.as_str())
        .filter(|s| !s.is_empty())
}

/// What an image volume may ask for: no host path, read-only, and a sub path that stays
/// inside the image; a sub path without an image means nothing.
pub fn check(m: &cri::Mount) -> Result<()> {
    if image_of(m).is_none() {
        if !m.image_sub_path.is_empty() {
            return Err(Error::invalid(format!(
                "mount {}: image_sub_path is set but the mount names no image",
                m.container_path
            )));
        }
        return Ok(());
    }
    if !m.host_path.is_empty() {
        return Err(Error::invalid(format!(
            "mount {}: an image volume takes no host path (got {:?})",
            m.container_path, m.host_path
        )));
    }
    if !m.readonly {
        return Err(Error::invalid(format!(
            "mount {}: image volumes are read-only; set readonly",
            m.container_path
        )));
    }
    sub_path(m).map(|_| ())
}

/// The mount's `image_sub_path` as a path below the image's root (None: the whole image).
/// Absolute paths and `..` are refused rather than cleaned: they say something else than
/// what would be mounted.
fn sub_path(m: &cri::Mount) -> Result<Option<PathBuf>> {
    let mut rel = PathBuf::new();
    for c in Path::new(&m.image_sub_path).components() {
        match c {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "mount {}: image_sub_path {:?} must be a relative path that stays inside \
                     the image (no leading / and no ..)",
                    m.container_path, m.image_sub_path
                )))
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// The directory `rel` leads to inside the image mounted on `root`, symlinks resolved as
/// the image's own (by the kernel, inside the root: nothing leads out of it).
fn resolve_sub_path(root: &Path, rel: &Path) -> Result<PathBuf> {
    let real = Root::open(root)?
        .resolve(rel)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Error::not_found(format!(
                "image_sub_path {:?} does not exist in the image",
                rel.display()
            )),
            _ => Error::io(format!("resolve image_sub_path {}", rel.display()), e),
        })?;
    if !real.is_dir() {
        return Err(Error::invalid(format!(
            "image_sub_path {:?} is not a directory: only directories of an image are mounted",
            rel.display()
        )));
    }
    Ok(real)
}

/// The labels that remap a user-namespaced pod's views (containerd's, honoured by the overlay
/// snapshotter where the kernel can idmap layers): the image's files then show as the pod's
/// root's, as its rootfs does. None for a pod in the node's user namespace.
fn remap_labels(pod: &cri::PodSandboxConfig) -> Labels {
    let userns = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
        .filter(|u| u.mode == cri::NamespaceMode::Pod as i32);
    let Some(u) = userns else {
        return Labels::new();
    };
    let maps = |maps: &[cri::IdMapping]| {
        maps.iter()
            .map(|m| Mapping {
                container: m.container_id,
                host: m.host_id,
                size: m.length,
            })
            .collect()
    };
    IdMap {
        uids: maps(&u.uids),
        gids: maps(&u.gids),
    }
    .labels()
}

/// The snapshot key of a container's `index`th mount's view.
fn view_key(id: &str, index: usize) -> String {
    format!("{id}-image-volume-{index}")
}

impl Cri {
    fn image_volumes_dir(&self, id: &str) -> PathBuf {
        self.container_state_dir(id).join("image-volumes")
    }

    /// Mounts the image volumes among `config`'s mounts for container `id` of pod `sb`
    /// (views in the pod's snapshotter), and records each image's id in its mount's
    /// `image_ref`. Every mount is checked before anything is made; when one cannot be
    /// mounted, none stays.
    pub(super) async fn mount_image_volumes(
        &self,
        id: &str,
        sb: &Sandbox,
        config: &mut cri::ContainerConfig,
    ) -> Result<Sources> {
        config.mounts.iter().try_for_each(check)?;
        let snapshotter = self.pod_snapshotter(sb);
        let mut labels = remap_labels(&sb.config);
        labels.insert(
            berth_proto::vocab::labels::GC_BREF_CONTAINER.to_string(),
            id.to_string(),
        );
        let mut sources = Sources::new();
        for index in 0..config.mounts.len() {
            let m = &config.mounts[index];
            if image_of(m).is_none() {
                continue;
            }
            let mounted = self
                .mount_image_volume(id, index, m, labels.clone(), &snapshotter)
                .await;
            let (source, image_id) = match mounted {
                Ok(v) => v,
                Err(e) => {
                    let e = e.context(format!(
                        "{MOUNT_FAILED}: image volume at {}",
                        m.container_path
                    ));
                    let undone = self
                        .unmount_image_volumes(id, &config.mounts, &snapshotter)
                        .await;
                    if let Err(u) = undone {
                        tracing::warn!(container = id, error = %u, "cannot undo image volumes");
                    }
                    return Err(e);
                }
            };
            sources.insert(index, source);
            if let Some(spec) = config.mounts[index].image.as_mut() {
                spec.image_ref = image_id;
            }
        }
        Ok(sources)
    }

    /// One image volume: the image's view in `snapshotter` (labelled `labels`) mounted on
    /// the host; returns where to bind from and the image's id.
    async fn mount_image_volume(
        &self,
        id: &str,
        index: usize,
        m: &cri::Mount,
        labels: Labels,
        snapshotter: &str,
    ) -> Result<(PathBuf, String)> {
        let reference = image_of(m).unwrap_or_default();
        let image = self.image_find(reference).await?.ok_or_else(|| {
            Error::not_found(format!("image {reference:?} is not present: pull it first"))
        })?;
        let parent = self.image_unpack(&image, snapshotter).await?;
        let mounts = self
            .snapshots
            .view(self.ctx(), snapshotter, view_key(id, index), parent, labels)
            .await?;
        let target = self.image_volumes_dir(id).join(index.to_string());
        let rel = sub_path(m)?;
        let source = blocking(move || {
            std::fs::create_dir_all(&target)
                .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
            berth_snapshotters::mount::mount_all(&mounts, &target)?;
            match rel {
                None => Ok(target),
                Some(rel) => resolve_sub_path(&target, &rel),
            }
        })
        .await?;
        Ok((source, image.id))
    }

    /// Unmounts and removes the image volumes of container `id` whose config mounts are
    /// `mounts`, whatever part of them exists. A mount point that stays mounted is an error:
    /// the container's state directory must not be removed over it.
    pub(super) async fn unmount_image_volumes(
        &self,
        id: &str,
        mounts: &[cri::Mount],
        snapshotter: &str,
    ) -> Result<()> {
        let dir = self.image_volumes_dir(id);
        for (index, _) in mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| image_of(m).is_some())
        {
            let target = dir.join(index.to_string());
            blocking(move || {
                berth_snapshotters::mount::unmount(&target);
                match std::fs::remove_dir(&target) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(Error::io(format!("remove {}", target.display()), e))
                    }
                    _ => Ok(()),
                }
            })
            .await?;
            match self
                .snapshots
                .remove(self.ns.clone(), snapshotter, view_key(id, index))
                .await
            {
                Err(e) if e.kind() != Kind::NotFound => return Err(e),
                _ => {}
            }
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_snapshotters::idmap::{GID_MAPPING_LABEL, UID_MAPPING_LABEL};

    fn image_mount(sub: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/data".into(),
            readonly: true,
            image: Some(cri::ImageSpec {
                image: "sha256:abc".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_image_volume_is_read_only_without_a_host_path() {
        assert!(check(&image_mount("")).is_ok());
        let mut rw = image_mount("");
        rw.readonly = false;
        let e = check(&rw).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert!(e.to_string().contains("read-only"), "{e}");
        let mut host = image_mount("");
        host.host_path = "/etc".into();
        assert_eq!(check(&host).unwrap_err().kind(), Kind::InvalidArgument);
        let stray = cri::Mount {
            container_path: "/x".into(),
            host_path: "/tmp".into(),
            image_sub_path: "etc".into(),
            ..Default::default()
        };
        assert_eq!(check(&stray).unwrap_err().kind(), Kind::InvalidArgument);
        // An empty ImageSpec is no image volume: the mount is a host path's.
        let plain = cri::Mount {
            container_path: "/x".into(),
            host_path: "/tmp".into(),
            image: Some(cri::ImageSpec::default()),
            ..Default::default()
        };
        assert!(check(&plain).is_ok());
    }

    #[test]
    fn a_sub_path_stays_inside_the_image() {
        assert_eq!(sub_path(&image_mount("")).unwrap(), None);
        assert_eq!(sub_path(&image_mount(".")).unwrap(), None);
        assert_eq!(
            sub_path(&image_mount("./etc/ssl/")).unwrap(),
            Some(PathBuf::from("etc/ssl"))
        );
        for bad in ["/etc", "../etc", "etc/../../x", "etc/.."] {
            let e = check(&image_mount(bad)).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument, "{bad}");
            assert!(e.to_string().contains("inside"), "{e}");
        }
    }

    #[test]
    fn a_user_namespaced_pod_remaps_its_views() {
        assert!(remap_labels(&cri::PodSandboxConfig::default()).is_empty());
        let map = |container_id, host_id, length| cri::IdMapping {
            container_id,
            host_id,
            length,
        };
        let userns = cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![map(0, 200000, 1000), map(1000, 300000, 64536)],
            gids: vec![map(0, 200000, 65536)],
        };
        let mut pod = cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        userns_options: Some(userns),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let labels = remap_labels(&pod);
        assert_eq!(labels[UID_MAPPING_LABEL], "0:200000:1000,1000:300000:64536");
        assert_eq!(labels[GID_MAPPING_LABEL], "0:200000:65536");
        let linux = pod.linux.as_mut().unwrap();
        let sc = linux.security_context.as_mut().unwrap();
        let ns = sc.namespace_options.as_mut().unwrap();
        ns.userns_options.as_mut().unwrap().mode = cri::NamespaceMode::Node as i32;
        assert!(remap_labels(&pod).is_empty());
    }

    #[test]
    fn sub_paths_resolve_in_the_image_and_must_be_directories() {
        let image = tempfile::tempdir().unwrap();
        let root = image.path();
        std::fs::create_dir_all(root.join("etc/ssl")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        // Absolute and climbing links are the image's own: they end inside it.
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/ssl", root.join("climb")).unwrap();
        let real = std::fs::canonicalize(root).unwrap();
        let resolve = |p: &str| resolve_sub_path(root, Path::new(p));
        assert_eq!(resolve("etc").unwrap(), real.join("etc"));
        assert_eq!(resolve("abs").unwrap(), real.join("etc"));
        assert_eq!(resolve("climb").unwrap(), real.join("etc/ssl"));
        assert_eq!(resolve("nope").unwrap_err().kind(), Kind::NotFound);
        assert_eq!(resolve("etc/passwd/x").unwrap_err().kind(), Kind::NotFound);
        let e = resolve("etc/passwd").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
