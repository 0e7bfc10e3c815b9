//! UpdatePodSandboxResources (KEP-5419, pod-level resources): NRI plugins have their say,
//! the pod's cgroup (its `cgroup_parent`, which the kubelet made for the pod) gets the new
//! limits, and the pod's config keeps them for its status, NRI and the Sandbox API.

use super::*;
use crate::edge::cri::{ext_proto, CONFIG_EXT};

/// The Sandbox API extension holding a pod's updated resources, as containerd names it.
pub const UPDATED_RESOURCES_EXT: &str = "updated-resources";

impl Cri {
    pub async fn update_pod_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<cri::LinuxContainerResources>,
        resources: Option<cri::LinuxContainerResources>,
    ) -> Result<()> {
        let s = self.sandbox(id)?;
        let lock = self.lock_for(&s.id);
        let _held = lock.lock().await;
        let mut s = self.sandbox(&s.id)?;
        self.nri_update_pod(&s, overhead.as_ref(), resources.as_ref())
            .await?;
        let linux = s.config.linux.get_or_insert_with(Default::default);
        linux.overhead = overhead;
        linux.resources = resources;
        let parent = linux.cgroup_parent.clone();
        let total = pod_total(linux.overhead.as_ref(), linux.resources.as_ref());
        if parent.is_empty() {
            tracing::debug!(
                sandbox = s.id,
                "pod has no cgroup parent: its resources are recorded, no cgroup to apply them to"
            );
        } else if let Some(total) = total {
            let dir = pod_cgroup_dir(&parent, self.cfg.systemd_cgroup());
            blocking(move || cgroups::apply(&dir, &total)).await?;
        }
        let mut rec = ContainerRecord {
            id: s.id.clone(),
            ..Default::default()
        };
        rec.extensions
            .insert(CONFIG_EXT.into(), ext_proto(&s.config));
        self.records
            .update(
                self.ns.clone(),
                rec,
                vec![format!("extensions.{CONFIG_EXT}")],
            )
            .await?;
        self.sandboxes.insert(&s.id, s.clone());
        self.nri_post_update_pod(&s).await;
        Ok(())
    }
}

/// What the pod's cgroup is limited to: its containers' sum plus the pod's overhead.
fn pod_total(
    overhead: Option<&cri::LinuxContainerResources>,
    resources: Option<&cri::LinuxContainerResources>,
) -> Option<cri::LinuxContainerResources> {
    let mut out = resources.cloned().or_else(|| overhead.cloned())?;
    let (Some(o), Some(_)) = (overhead, resources) else {
        return Some(out);
    };
    let add = |a: i64, b: i64| if a > 0 && b > 0 { a + b } else { a };
    out.cpu_shares = add(out.cpu_shares, o.cpu_shares);
    out.memory_limit_in_bytes = add(out.memory_limit_in_bytes, o.memory_limit_in_bytes);
    if out.cpu_quota > 0 && o.cpu_quota > 0 && (o.cpu_period == 0 || o.cpu_period == out.cpu_period)
    {
        out.cpu_quota += o.cpu_quota;
    }
    Some(out)
}

/// The pod cgroup's path under a hierarchy's root: the parent itself for cgroupfs; for
/// systemd, the slice nested as systemd nests it (a-b-c.slice in a.slice/a-b.slice/).
pub(in crate::edge::cri) fn pod_cgroup_dir(parent: &str, systemd: bool) -> PathBuf {
    if !systemd || !parent.ends_with(".slice") || parent.contains('/') {
        return PathBuf::from(parent.trim_start_matches('/'));
    }
    let name = parent.trim_end_matches(".slice");
    let mut dir = PathBuf::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        dir.push(format!("{prefix}.slice"));
    }
    dir
}

/// Writing limits into a cgroup that already holds processes, v1 or v2.
pub(in crate::edge::cri) mod cgroups {
    use super::*;

    const ROOT: &str = "/sys/fs/cgroup";

    fn unified() -> bool {
        Path::new(ROOT).join("cgroup.controllers").exists()
    }

    /// Every file name here is built from the request (unified keys, hugepage sizes):
    /// one that leaves the cgroup's directory is refused before anything is written.
    fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
        if file.contains('/') || file.starts_with('.') {
            return Err(Error::invalid(format!("{file:?} is not a cgroup file")));
        }
        let path = dir.join(file);
        std::fs::write(&path, value)
            .map_err(|e| Error::io(format!("write {value:?} to {}", path.display()), e))
    }

    /// v1 wants memory.limit_in_bytes ≤ memory.memsw.limit_in_bytes at every step: the
    /// order that keeps it depends on whether the limit grows.
    fn v1_memory(dir: &Path, limit: i64, swap: i64) -> Result<()> {
        if swap <= 0 {
            return if limit > 0 {
                write(dir, "memory.limit_in_bytes", &limit.to_string())
            } else {
                Ok(())
            };
        }
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if !memsw.exists() {
            return write(dir, "memory.limit_in_bytes", &limit.to_string());
        }
        if limit > 0 && write(dir, "memory.limit_in_bytes", &limit.to_string()).is_ok() {
            return write(dir, "memory.memsw.limit_in_bytes", &swap.to_string());
        }
        write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
        if limit > 0 {
            write(dir, "memory.limit_in_bytes", &limit.to_string())?;
        }
        Ok(())
    }

    fn v1(rel: &Path, r: &cri::LinuxContainerResources) -> Result<()> {
        let at = |ctrl: &str| -> Result<PathBuf> {
            let d = Path::new(ROOT).join(ctrl).join(rel);
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("mkdir {}", d.display()), e))?;
            Ok(d)
        };
        if r.cpu_shares > 0 || r.cpu_period > 0 || r.cpu_quota != 0 {
            let d = at("cpu")?;
            if r.cpu_shares > 0 {
                write(&d, "cpu.shares", &r.cpu_shares.to_string())?;
            }
            if r.cpu_period > 0 {
                write(&d, "cpu.cfs_period_us", &r.cpu_period.to_string())?;
            }
            if r.cpu_quota != 0 {
                write(&d, "cpu.cfs_quota_us", &r.cpu_quota.to_string())?;
            }
        }
        if !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty() {
            let d = at("cpuset")?;
            if !r.cpuset_cpus.is_empty() {
                write(&d, "cpuset.cpus", &r.cpuset_cpus)?;
            }
            if !r.cpuset_mems.is_empty() {
                write(&d, "cpuset.mems", &r.cpuset_mems)?;
            }
        }
        if r.memory_limit_in_bytes > 0 || r.memory_swap_limit_in_bytes > 0 {
            v1_memory(
                &at("memory")?,
                r.memory_limit_in_bytes,
                r.memory_swap_limit_in_bytes,
            )?;
        }
        if !r.hugepage_limits.is_empty() {
            let d = at("hugetlb")?;
            for h in &r.hugepage_limits {
                let file = format!("hugetlb.{}.limit_in_bytes", h.page_size);
                write(&d, &file, &h.limit.to_string())?;
            }
        }
        if !r.unified.is_empty() {
            return Err(Error::invalid(
                "unified (cgroup v2) resources on a cgroup v1 host",
            ));
        }
        Ok(())
    }

    /// cgroup v2's weight for v1 shares (2..262144 onto 1..10000), as runc converts.
    pub fn weight(shares: i64) -> i64 {
        1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
    }

    fn v2(rel: &Path, r: &cri::LinuxContainerResources) -> Result<()> {
        let d = Path::new(ROOT).join(rel);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("mkdir {}", d.display()), e))?;
        if r.cpu_shares > 0 {
            write(&d, "cpu.weight", &weight(r.cpu_shares).to_string())?;
        }
        if r.cpu_quota != 0 || r.cpu_period > 0 {
            let quota = if r.cpu_quota > 0 {
                r.cpu_quota.to_string()
            } else {
                "max".to_string()
            };
            let period = if r.cpu_period > 0 {
                r.cpu_period
            } else {
                100_000
            };
            write(&d, "cpu.max", &format!("{quota} {period}"))?;
        }
        if !r.cpuset_cpus.is_empty() {
            write(&d, "cpuset.cpus", &r.cpuset_cpus)?;
        }
        if !r.cpuset_mems.is_empty() {
            write(&d, "cpuset.mems", &r.cpuset_mems)?;
        }
        if r.memory_limit_in_bytes > 0 {
            write(&d, "memory.max", &r.memory_limit_in_bytes.to_string())?;
            if r.memory_swap_limit_in_bytes > 0 && d.join("memory.swap.max").exists() {
                let swap = (r.memory_swap_limit_in_bytes - r.memory_limit_in_bytes).max(0);
                write(&d, "memory.swap.max", &swap.to_string())?;
            }
        }
        for h in &r.hugepage_limits {
            write(
                &d,
                &format!("hugetlb.{}.max", h.page_size),
                &h.limit.to_string(),
            )?;
        }
        for (k, v) in &r.unified {
            write(&d, k, v)?;
        }
        Ok(())
    }

    #[cfg(test)]
    #[test]
    fn a_file_name_naming_another_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pod");
        std::fs::create_dir(&dir).unwrap();
        for name in ["hugetlb./../escaped.max", "../escaped", ".."] {
            assert!(write(&dir, name, "1").is_err(), "{name}");
        }
        assert!(!tmp.path().join("escaped.max").exists());
        assert!(!tmp.path().join("escaped").exists());
        write(&dir, "memory.max", "1").unwrap();
    }

    /// Writes `r` into the cgroup at `rel` (relative to each hierarchy's root).
    pub fn apply(rel: &Path, r: &cri::LinuxContainerResources) -> Result<()> {
        // The pod's cgroup_parent names it: it stays under each hierarchy's root.
        if !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::invalid(format!(
                "cgroup {} is not under {ROOT}",
                rel.display()
            )));
        }
        if unified() {
            v2(rel, r)
        } else {
            v1(rel, r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_slices_nest_by_their_dashes() {
        assert_eq!(
            pod_cgroup_dir("kubepods-burstable-pod12.slice", true),
            PathBuf::from("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice")
        );
        assert_eq!(
            pod_cgroup_dir("/kubepods/burstable/pod12", false),
            PathBuf::from("kubepods/burstable/pod12")
        );
    }

    #[test]
    fn the_pod_total_adds_overhead_to_what_is_limited() {
        let r = cri::LinuxContainerResources {
            memory_limit_in_bytes: 100 << 20,
            cpu_shares: 512,
            ..Default::default()
        };
        let o = cri::LinuxContainerResources {
            memory_limit_in_bytes: 10 << 20,
            cpu_shares: 10,
            ..Default::default()
        };
        let t = pod_total(Some(&o), Some(&r)).unwrap_or_default();
        assert_eq!(t.memory_limit_in_bytes, 110 << 20);
        assert_eq!(t.cpu_shares, 522);
        assert!(pod_total(None, None).is_none());
        assert_eq!(cgroups::weight(1024), 39);
        assert_eq!(cgroups::weight(2), 1);
    }

    #[test]
    fn a_pod_cgroup_outside_the_hierarchy_is_refused() {
        let r = cri::LinuxContainerResources::default();
        let e = cgroups::apply(&pod_cgroup_dir("/kubepods/../../../tmp", false), &r).unwrap_err();
        assert_eq!(e.kind(), crate::core::error::Kind::InvalidArgument, "{e}");
    }
}
