//! The pause container's OCI spec: the pod's namespaces, made, and little else.

use super::*;

/// The pause container's spec.
pub struct SandboxSpec<'a> {
    pub id: &'a str,
    pub config: &'a cri::PodSandboxConfig,
    pub image_config: &'a Value,
    pub netns: Option<&'a Path>,
    pub cgroup: String,
    pub restrict_oom_score_adj: bool,
}

// The deprecated seccomp_profile_path is still honoured for older kubelets.
#[allow(deprecated)]
pub fn sandbox(s: &SandboxSpec<'_>) -> Result<Value> {
    let linux = s.config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let (net, _, _) = ns_opts(sc.namespace_options.as_ref());
    let node = cri::NamespaceMode::Node as i32;
    let cfg = &s.image_config["config"];
    let mut args = strings(&cfg["Entrypoint"]);
    args.extend(strings(&cfg["Cmd"]));
    if args.is_empty() {
        args.push("/pause".into());
    }
    let env = image_env(s.image_config);
    let userns = userns_entries(sc.namespace_options.as_ref());
    let namespaces = namespaces(&sc, userns.is_some(), s.netns);
    let caps = capabilities(None, sc.privileged)?;
    let uid = sc.run_as_user.as_ref().map(|v| v.value).unwrap_or(0);
    let gid = sc.run_as_group.as_ref().map(|v| v.value).unwrap_or(0);
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": sc.supplemental_groups},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
            "oomScoreAdj": if s.restrict_oom_score_adj { own_oom_score_adj().max(-998) } else { -998 },
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": base_mounts(sc.privileged),
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": s.id,
            "io.kubernetes.cri.sandbox-name": s.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            "io.kubernetes.cri.sandbox-namespace": s.config.metadata.as_ref().map(|m| m.namespace.clone()).unwrap_or_default(),
        },
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}], "cpu": {"shares": 2}},
            "cgroupsPath": s.cgroup,
            "namespaces": namespaces,
            "sysctl": linux.sysctls,
        },
    });
    if net != node && !s.config.hostname.is_empty() {
        spec["hostname"] = json!(s.config.hostname);
    }
    if let Some((uids, gids)) = userns {
        spec["linux"]["uidMappings"] = uids;
        spec["linux"]["gidMappings"] = gids;
    }
    if !sc.privileged {
        spec["linux"]["maskedPaths"] = json!(MASKED);
        spec["linux"]["readonlyPaths"] = json!(READONLY);
    }
    let seccomp = seccomp_for(
        sc.seccomp.as_ref(),
        &sc.seccomp_profile_path,
        sc.privileged,
        &caps,
    )?;
    if let Some(p) = seccomp {
        spec["linux"]["seccomp"] = p;
    }
    Ok(spec)
}

/// The pod's namespaces, new (the network one pinned at `netns` when given), except those
/// it shares with the node.
fn namespaces(
    sc: &cri::LinuxSandboxSecurityContext,
    userns: bool,
    netns: Option<&Path>,
) -> Vec<Value> {
    let (net, pid, ipc) = ns_opts(sc.namespace_options.as_ref());
    let node = cri::NamespaceMode::Node as i32;
    let mut namespaces = vec![json!({"type": "mount"})];
    if userns {
        namespaces.push(json!({"type": "user"}));
    }
    if pid != node {
        namespaces.push(json!({"type": "pid"}));
    }
    if ipc != node {
        namespaces.push(json!({"type": "ipc"}));
    }
    if net != node {
        namespaces.push(json!({"type": "uts"}));
        match netns {
            Some(p) => namespaces.push(json!({"type": "network", "path": p})),
            // A user-namespaced pod makes its own (owned by its user namespace).
            None => namespaces.push(json!({"type": "network"})),
        }
    }
    namespaces
}
