//! The OCI runtime specs of a pod's sandbox (pause) container and of its containers, from the
//! CRI configs on top of the image's config.

mod container;
mod sandbox;

pub use container::{container, ContainerSpec};
pub use sandbox::{sandbox, SandboxSpec};

use super::seccomp;
use crate::core::error::{Error, Result};
use crate::core::seccomp::Profile;
use crate::core::spec::{
    base_mounts, bounded_caps, image_env, strings, ALL_CAPS, DEFAULT_CAPS, MASKED, READONLY,
};
use berth_proto::cri::v1 as cri;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The cgroup path of `id` under the pod's parent, for the configured driver.
pub fn cgroup_path(parent: &str, id: &str, systemd: bool) -> String {
    if systemd {
        let slice = if parent.is_empty() {
            "system.slice"
        } else {
            parent.rsplit('/').next().unwrap_or(parent)
        };
        format!("{slice}:cri-berth:{id}")
    } else if parent.is_empty() {
        format!("/k8s.io/{id}")
    } else {
        format!("{}/{id}", parent.trim_end_matches('/'))
    }
}

fn resources_json(r: &cri::LinuxContainerResources) -> Value {
    let mut out = json!({});
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    let mut mem = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        mem.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        mem.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !mem.is_empty() {
        out["memory"] = Value::Object(mem);
    }
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

/// Whether the kernel has mount_setattr (Linux 5.12), which recursive read-only mounts use.
pub fn kernel_has_mount_setattr() -> bool {
    static HAS: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut it = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        (major, minor) >= (5, 12)
    });
    *HAS
}

/// The OCI LinuxResources for UpdateContainerResources.
pub fn update_resources(r: &cri::LinuxContainerResources) -> Value {
    resources_json(r)
}

/// Normalises a capability name: "net_admin" and "CAP_NET_ADMIN" are the same.
fn cap_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The capability set from defaults, add and drop (either may say ALL).
pub fn capabilities(c: Option<&cri::Capability>, privileged: bool) -> Result<Vec<String>> {
    let bounding = bounded_caps();
    if privileged {
        return Ok(bounding);
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if let Some(c) = c {
        let all = |v: &[String]| v.iter().any(|x| x.eq_ignore_ascii_case("ALL"));
        if all(&c.add_capabilities) {
            caps = bounding.clone();
        }
        if all(&c.drop_capabilities) {
            caps.clear();
        }
        for a in c
            .add_capabilities
            .iter()
            .filter(|x| !x.eq_ignore_ascii_case("ALL"))
        {
            let n = cap_name(a);
            if !ALL_CAPS.contains(&n.as_str()) {
                return Err(Error::invalid(format!("unknown capability {a:?}")));
            }
            if !bounding.contains(&n) {
                return Err(Error::invalid(format!(
                    "capability {n} is outside berthd's own bounding set, so no container can have it"
                )));
            }
            if !caps.contains(&n) {
                caps.push(n);
            }
        }
        for d in c
            .drop_capabilities
            .iter()
            .filter(|x| !x.eq_ignore_ascii_case("ALL"))
        {
            let n = cap_name(d);
            caps.retain(|x| *x != n);
        }
    }
    Ok(caps)
}

/// The seccomp section for a profile choice; None is unconfined.
pub fn seccomp_for(
    profile: Option<&cri::SecurityProfile>,
    deprecated_path: &str,
    privileged: bool,
    caps: &[String],
) -> Result<Option<Value>> {
    use cri::security_profile::ProfileType;
    let chosen = if privileged {
        Profile::Unconfined
    } else if let Some(p) = profile {
        match ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::RuntimeDefault) {
            ProfileType::RuntimeDefault => Profile::RuntimeDefault,
            ProfileType::Unconfined => Profile::Unconfined,
            ProfileType::Localhost => Profile::Custom(seccomp::localhost(&p.localhost_ref)?),
        }
    } else {
        match deprecated_path {
            "" | "unconfined" => Profile::Unconfined,
            "runtime/default" | "docker/default" => Profile::RuntimeDefault,
            p if p.starts_with("localhost/") => Profile::Custom(seccomp::localhost(p)?),
            other => return Err(Error::invalid(format!("unknown seccomp profile {other:?}"))),
        }
    };
    Ok(chosen.render(caps))
}

/// Where a sandbox keeps the files its containers share.
pub struct SandboxFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv: PathBuf,
    /// The pod's /dev/shm (a tmpfs), or None to use the host's (IPC NODE).
    pub shm: Option<PathBuf>,
}

/// Checks a pod's user namespace request: NODE (the host's) or POD with exactly one uid and
/// one gid mapping, each mapping container id 0.
pub fn check_userns(u: &cri::UserNamespace) -> Result<()> {
    match cri::NamespaceMode::try_from(u.mode).unwrap_or(cri::NamespaceMode::Node) {
        cri::NamespaceMode::Node => Ok(()),
        cri::NamespaceMode::Pod => {
            for (what, m) in [("uid", &u.uids), ("gid", &u.gids)] {
                if m.len() != 1 {
                    return Err(Error::invalid(format!(
                        "a pod's user namespace takes exactly one {what} mapping, not {}",
                        m.len()
                    )));
                }
                if m[0].container_id != 0 || m[0].length == 0 {
                    return Err(Error::invalid(format!(
                        "the {what} mapping must map container id 0 (it maps {}+{})",
                        m[0].container_id, m[0].length
                    )));
                }
            }
            Ok(())
        }
        other => Err(Error::invalid(format!(
            "user namespace mode {other:?} is not supported for pods: use POD or NODE"
        ))),
    }
}

/// The spec's user namespace entries for a pod's userns options: the namespace (joined at
/// `path` when given) and its mappings; None for the host's.
fn userns_entries(ns: Option<&cri::NamespaceOption>) -> Option<(Value, Value)> {
    let u = ns?.userns_options.as_ref()?;
    if u.mode != cri::NamespaceMode::Pod as i32 {
        return None;
    }
    let maps = |m: &[cri::IdMapping]| -> Value {
        m.iter()
            .map(|x| json!({"containerID": x.container_id, "hostID": x.host_id, "size": x.length}))
            .collect()
    };
    Some((maps(&u.uids), maps(&u.gids)))
}

/// Whether the pod asks for a user namespace of its own.
pub fn pod_userns(config: &cri::PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
        .is_some_and(|u| u.mode == cri::NamespaceMode::Pod as i32)
}

fn ns_opts(sc: Option<&cri::NamespaceOption>) -> (i32, i32, i32) {
    sc.map(|n| (n.network, n.pid, n.ipc)).unwrap_or((0, 0, 0))
}

/// The process arguments: Kubernetes' command replaces the entrypoint, args the image's Cmd.
pub fn process_args(cfg: &cri::ContainerConfig, image_config: &Value) -> Vec<String> {
    let ic = &image_config["config"];
    if !cfg.command.is_empty() {
        let mut a = cfg.command.clone();
        a.extend(cfg.args.iter().cloned());
        return a;
    }
    let mut a = strings(&ic["Entrypoint"]);
    if cfg.args.is_empty() {
        a.extend(strings(&ic["Cmd"]));
    } else {
        a.extend(cfg.args.iter().cloned());
    }
    a
}

pub fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The process spec of an exec: the container's process with other arguments.
pub fn exec_process(container_spec: &Value, cmd: &[String], tty: bool) -> Value {
    let mut p = container_spec["process"].clone();
    p["args"] = json!(cmd);
    p["terminal"] = json!(tty);
    if let Some(m) = p.as_object_mut() {
        m.remove("oomScoreAdj");
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_replaces_entrypoint_and_args_replace_cmd() {
        let img = json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["c1"]}});
        let mut cfg = cri::ContainerConfig::default();
        assert_eq!(process_args(&cfg, &img), vec!["/ep", "c1"]);
        cfg.args = vec!["a".into()];
        assert_eq!(process_args(&cfg, &img), vec!["/ep", "a"]);
        cfg.command = vec!["/bin/sh".into()];
        assert_eq!(process_args(&cfg, &img), vec!["/bin/sh", "a"]);
        cfg.args.clear();
        assert_eq!(process_args(&cfg, &img), vec!["/bin/sh"]);
    }

    #[test]
    fn capabilities_add_drop_and_all() {
        let c = cri::Capability {
            add_capabilities: vec!["sys_admin".into()],
            drop_capabilities: vec!["CAP_CHOWN".into()],
            ..Default::default()
        };
        let caps = capabilities(Some(&c), false).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        let c = cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        };
        assert_eq!(
            capabilities(Some(&c), false).unwrap(),
            vec!["CAP_NET_ADMIN"]
        );
        let c = cri::Capability {
            add_capabilities: vec!["ALL".into()],
            drop_capabilities: vec!["KILL".into()],
            ..Default::default()
        };
        let caps = capabilities(Some(&c), false).unwrap();
        assert!(
            caps.contains(&"CAP_SYS_MODULE".to_string()) && !caps.contains(&"CAP_KILL".to_string())
        );
    }

    #[test]
    fn unknown_capabilities_are_refused() {
        let c = cri::Capability {
            add_capabilities: vec!["CAP_TELEPORT".into()],
            ..Default::default()
        };
        assert!(capabilities(Some(&c), false).is_err());
    }

    #[test]
    fn user_namespace_requests_are_checked() {
        let m = |c: u32, h: u32, l: u32| cri::IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        };
        let pod = |u: Vec<cri::IdMapping>| cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: u.clone(),
            gids: u,
        };
        assert!(check_userns(&pod(vec![m(0, 1000, 65536)])).is_ok());
        assert!(check_userns(&pod(vec![m(0, 1000, 10), m(0, 2000, 10)])).is_err());
        assert!(check_userns(&pod(vec![m(1, 1000, 10)])).is_err());
        let mode = |n: cri::NamespaceMode| cri::UserNamespace {
            mode: n as i32,
            ..Default::default()
        };
        assert!(check_userns(&mode(cri::NamespaceMode::Node)).is_ok());
        assert!(check_userns(&mode(cri::NamespaceMode::Container)).is_err());
        assert!(check_userns(&mode(cri::NamespaceMode::Target)).is_err());
    }

    #[test]
    fn cgroup_paths_follow_the_driver() {
        assert_eq!(
            cgroup_path("/kubepods/pod1", "c", false),
            "/kubepods/pod1/c"
        );
        assert_eq!(cgroup_path("", "c", false), "/k8s.io/c");
        assert_eq!(
            cgroup_path("kubepods-pod1.slice", "c", true),
            "kubepods-pod1.slice:cri-berth:c"
        );
    }

    #[test]
    fn seccomp_choice() {
        let rd = cri::SecurityProfile::default();
        assert!(seccomp_for(Some(&rd), "", false, &[]).unwrap().is_some());
        assert!(seccomp_for(Some(&rd), "", true, &[]).unwrap().is_none());
        assert!(seccomp_for(None, "", false, &[]).unwrap().is_none());
        let lh = cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "/does/not/exist.json".into(),
        };
        assert_eq!(
            seccomp_for(Some(&lh), "", false, &[]).unwrap_err().kind(),
            crate::core::error::Kind::InvalidArgument
        );
    }
}
