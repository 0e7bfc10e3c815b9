//! A container's OCI spec: its config on top of the image's, in its pod's namespaces, with
//! the pod's files.

use super::*;
use crate::core::error::Kind;
use crate::edge::cri::image_volume;

/// A container's spec inputs beyond its config.
pub struct ContainerSpec<'a> {
    pub id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub image_config: &'a Value,
    /// The pause process: the pod's namespaces are joined through /proc/<pid>/ns.
    pub sandbox_pid: u32,
    pub netns: Option<&'a Path>,
    /// The pid whose pid namespace a TARGET container joins.
    pub target_pid: Option<u32>,
    pub files: &'a SandboxFiles,
    pub user: (i64, i64, Vec<i64>),
    pub cgroup: String,
    pub restrict_oom_score_adj: bool,
    /// Where the config's image volumes are mounted on the host.
    pub image_volumes: &'a image_volume::Sources,
}

fn propagation(p: i32) -> (&'static str, &'static str) {
    match cri::MountPropagation::try_from(p).unwrap_or(cri::MountPropagation::PropagationPrivate) {
        cri::MountPropagation::PropagationPrivate => ("rprivate", ""),
        cri::MountPropagation::PropagationHostToContainer => ("rslave", "rslave"),
        cri::MountPropagation::PropagationBidirectional => ("rshared", "rshared"),
    }
}

fn device_entry(d: &cri::Device) -> Result<(Value, Value)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(&d.host_path)
        .map_err(|e| Error::invalid(format!("device {}: {e}", d.host_path)))?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(Error::invalid(format!("{} is not a device", d.host_path)));
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let path = if d.container_path.is_empty() {
        &d.host_path
    } else {
        &d.container_path
    };
    let perms = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    Ok((
        json!({"path": path, "type": kind, "major": major, "minor": minor, "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid()}),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": perms}),
    ))
}

// The deprecated seccomp_profile_path is still honoured for older kubelets.
#[allow(deprecated)]
pub fn container(s: &ContainerSpec<'_>) -> Result<Value> {
    let cfg = s.config;
    let linux = cfg.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let pod_sc = s
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let (pod_net, _, pod_ipc) = ns_opts(pod_sc.namespace_options.as_ref());
    let node = cri::NamespaceMode::Node as i32;
    let args = process_args(cfg, s.image_config);
    if args.is_empty() {
        return Err(Error::invalid(
            "the container has no command: the image sets none and the config gives none",
        ));
    }
    let caps = capabilities(sc.capabilities.as_ref(), sc.privileged)?;
    let mut mounts = base_mounts(sc.privileged);
    mounts.extend(pod_file_mounts(s, &sc, pod_ipc == node));
    let (user_mounts, rootfs_propagation) = user_mounts(cfg, s.image_volumes)?;
    mounts.extend(user_mounts);
    let userns = userns_entries(pod_sc.namespace_options.as_ref());
    let namespaces = namespaces(s, &sc, &pod_sc, userns.is_some())?;
    let (resources, devices) = resources_and_devices(cfg, &sc, &res)?;
    let mut oom = res.oom_score_adj;
    if s.restrict_oom_score_adj {
        oom = oom.max(own_oom_score_adj());
    }
    let (uid, gid, groups) = &s.user;
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": cfg.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": args,
            "env": env(cfg, s.image_config),
            "cwd": working_dir(cfg, s.image_config),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sc.no_new_privs,
            "oomScoreAdj": oom,
        },
        "root": {"path": "rootfs", "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": annotations(s),
        "linux": {
            "resources": resources,
            "cgroupsPath": s.cgroup,
            "namespaces": namespaces,
            "devices": devices,
        },
    });
    if pod_net != node && !s.sandbox.hostname.is_empty() {
        spec["hostname"] = json!(s.sandbox.hostname);
    }
    if !rootfs_propagation.is_empty() {
        spec["linux"]["rootfsPropagation"] = json!(rootfs_propagation);
    }
    if let Some((uids, gids)) = userns {
        spec["linux"]["uidMappings"] = uids;
        spec["linux"]["gidMappings"] = gids;
    }
    confine(&mut spec, &sc, &pod_sc, &caps)?;
    Ok(spec)
}

/// The image's environment, the config's on top, and TERM with a terminal.
fn env(cfg: &cri::ContainerConfig, image_config: &Value) -> Vec<String> {
    let mut env = image_env(image_config);
    for kv in &cfg.envs {
        env.retain(|x| x.split('=').next() != Some(kv.key.as_str()));
        env.push(format!("{}={}", kv.key, kv.value));
    }
    if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    env
}

/// The config's working directory, else the image's, else `/`.
fn working_dir(cfg: &cri::ContainerConfig, image_config: &Value) -> String {
    if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else {
        image_config["config"]["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    }
}

/// Bind mounts of the pod's hostname, hosts, resolv.conf and /dev/shm (the host's with
/// `host_ipc`), where the config mounts nothing of its own.
fn pod_file_mounts(
    s: &ContainerSpec<'_>,
    sc: &cri::LinuxContainerSecurityContext,
    host_ipc: bool,
) -> Vec<Value> {
    let user_dsts: Vec<&str> = s
        .config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    let mut shared = vec![
        ("/etc/hostname", &s.files.hostname),
        ("/etc/hosts", &s.files.hosts),
        ("/etc/resolv.conf", &s.files.resolv),
    ];
    let host_shm = PathBuf::from("/dev/shm");
    let shm = match (&s.files.shm, host_ipc) {
        (_, true) => Some(&host_shm),
        (Some(p), false) => Some(p),
        (None, false) => None,
    };
    if let Some(p) = shm {
        shared.push(("/dev/shm", p));
    }
    let mut mounts = Vec::new();
    for (dst, src) in shared {
        if user_dsts.contains(&dst) {
            continue;
        }
        let mut opts = vec!["rbind", "rprivate"];
        if dst != "/dev/shm" && sc.readonly_rootfs {
            opts.push("ro");
        } else {
            opts.push("rw");
        }
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": opts}));
    }
    mounts
}

/// The config's mounts (host paths made when missing, symlinks resolved on the host; an
/// image volume from where it is mounted, read-only), and the rootfs propagation they need
/// ("" for none).
fn user_mounts(
    cfg: &cri::ContainerConfig,
    image_volumes: &image_volume::Sources,
) -> Result<(Vec<Value>, &'static str)> {
    let mut mounts = Vec::new();
    let mut rootfs_propagation = "";
    for (index, m) in cfg.mounts.iter().enumerate() {
        check_mount(m)?;
        let image_volume = image_volume::image_of(m).is_some();
        let src = if image_volume {
            image_volumes.get(&index).cloned().ok_or_else(|| {
                Error::new(
                    Kind::Internal,
                    format!("the image volume at {} is not mounted", m.container_path),
                )
            })?
        } else {
            host_source(m)?
        };
        let (prop, rootfs_prop) = propagation(m.propagation);
        if rootfs_prop == "rshared" || (rootfs_prop == "rslave" && rootfs_propagation != "rshared")
        {
            rootfs_propagation = rootfs_prop;
        }
        let mut opts = vec!["rbind", prop, if m.readonly { "ro" } else { "rw" }];
        if image_volume {
            // An image's files, not the node's: no device nodes and no set-id programs.
            opts.extend(["nosuid", "nodev"]);
        }
        if m.recursive_read_only {
            // Read by the shim (and by runc 1.2 itself).
            opts.push("rro");
        }
        mounts.push(json!({"destination": m.container_path, "type": "bind", "source": src, "options": opts}));
    }
    Ok((mounts, rootfs_propagation))
}

/// A host path mount's source: made when missing, its symlinks followed on the host (never
/// inside the container).
fn host_source(m: &cri::Mount) -> Result<PathBuf> {
    let src = Path::new(&m.host_path);
    if !src.exists() {
        std::fs::create_dir_all(src)
            .map_err(|e| Error::invalid(format!("host path {}: {e}", m.host_path)))?;
    }
    std::fs::canonicalize(src)
        .map_err(|e| Error::invalid(format!("host path {}: {e}", m.host_path)))
}

/// What a config's mount may ask for: an absolute path, what an image volume may (see
/// [`image_volume::check`]), and recursive read-only only when read-only and private.
fn check_mount(m: &cri::Mount) -> Result<()> {
    if m.container_path.is_empty() || !m.container_path.starts_with('/') {
        return Err(Error::invalid(format!(
            "mount container path {:?} must be absolute",
            m.container_path
        )));
    }
    image_volume::check(m)?;
    if m.recursive_read_only {
        if !m.readonly {
            return Err(Error::invalid(format!(
                "mount {}: recursive read-only needs readonly too",
                m.container_path
            )));
        }
        if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return Err(Error::invalid(format!(
                "mount {}: recursive read-only needs private propagation",
                m.container_path
            )));
        }
    }
    Ok(())
}

/// The namespaces: a mount namespace of its own, the pod's others (joined through the pause
/// process), and the PID namespace its mode names.
fn namespaces(
    s: &ContainerSpec<'_>,
    sc: &cri::LinuxContainerSecurityContext,
    pod_sc: &cri::LinuxSandboxSecurityContext,
    userns: bool,
) -> Result<Vec<Value>> {
    let (pod_net, _, pod_ipc) = ns_opts(pod_sc.namespace_options.as_ref());
    let (_, pid_mode, _) = ns_opts(sc.namespace_options.as_ref());
    let node = cri::NamespaceMode::Node as i32;
    let mut namespaces = vec![json!({"type": "mount"})];
    let proc_ns = |kind: &str| format!("/proc/{}/ns/{kind}", s.sandbox_pid);
    if userns {
        namespaces.push(json!({"type": "user", "path": proc_ns("user")}));
    }
    if pod_net != node {
        match s.netns {
            Some(p) => namespaces.push(json!({"type": "network", "path": p})),
            None => namespaces.push(json!({"type": "network", "path": proc_ns("net")})),
        }
        namespaces.push(json!({"type": "uts", "path": proc_ns("uts")}));
    }
    if pod_ipc != node {
        namespaces.push(json!({"type": "ipc", "path": proc_ns("ipc")}));
    }
    match cri::NamespaceMode::try_from(pid_mode).unwrap_or(cri::NamespaceMode::Pod) {
        cri::NamespaceMode::Node => {}
        cri::NamespaceMode::Container => namespaces.push(json!({"type": "pid"})),
        cri::NamespaceMode::Pod => namespaces.push(json!({"type": "pid", "path": proc_ns("pid")})),
        cri::NamespaceMode::Target => match s.target_pid {
            Some(p) => namespaces.push(json!({"type": "pid", "path": format!("/proc/{p}/ns/pid")})),
            None => {
                return Err(Error::invalid(
                    "pid namespace TARGET needs a running target container",
                ))
            }
        },
    }
    Ok(namespaces)
}

/// The cgroup resources with their device rules, and the config's devices.
fn resources_and_devices(
    cfg: &cri::ContainerConfig,
    sc: &cri::LinuxContainerSecurityContext,
    res: &cri::LinuxContainerResources,
) -> Result<(Value, Vec<Value>)> {
    let mut resources = resources_json(res);
    let mut dev_rules = vec![json!({"allow": false, "access": "rwm"})];
    let mut devices = Vec::new();
    if sc.privileged {
        dev_rules = vec![json!({"allow": true, "access": "rwm"})];
    }
    for d in &cfg.devices {
        let (dev, rule) = device_entry(d)?;
        devices.push(dev);
        dev_rules.push(rule);
    }
    resources["devices"] = json!(dev_rules);
    Ok((resources, devices))
}

/// The config's annotations and the CRI's own.
fn annotations(s: &ContainerSpec<'_>) -> HashMap<String, String> {
    let cfg = s.config;
    let mut labels_ann: HashMap<String, String> = cfg.annotations.clone();
    labels_ann.insert(
        "io.kubernetes.cri.container-type".into(),
        "container".into(),
    );
    labels_ann.insert("io.berth.cri.container-id".into(), s.id.into());
    labels_ann.insert("io.kubernetes.cri.sandbox-id".into(), s.sandbox_id.into());
    labels_ann.insert(
        "io.kubernetes.cri.container-name".into(),
        cfg.metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
    );
    // The pod's identity and the image, as containerd puts them on every container: tools
    // reading a spec or a checkpoint's spec.dump (checkpointctl's pod and namespace) use them.
    let pod = s.sandbox.metadata.clone().unwrap_or_default();
    for (key, value) in [
        ("io.kubernetes.cri.sandbox-name", pod.name),
        ("io.kubernetes.cri.sandbox-namespace", pod.namespace),
        ("io.kubernetes.cri.sandbox-uid", pod.uid),
        (
            "io.kubernetes.cri.image-name",
            cfg.image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
        ),
    ] {
        labels_ann.insert(key.into(), value);
    }
    labels_ann
}

/// What confines an unprivileged container (masked and read-only paths) and every one
/// (its seccomp profile); a privileged one needs a privileged pod.
#[allow(deprecated)]
fn confine(
    spec: &mut Value,
    sc: &cri::LinuxContainerSecurityContext,
    pod_sc: &cri::LinuxSandboxSecurityContext,
    caps: &[String],
) -> Result<()> {
    if !sc.privileged {
        let masked: Vec<String> = if sc.masked_paths.is_empty() {
            MASKED.iter().map(|s| s.to_string()).collect()
        } else {
            sc.masked_paths.clone()
        };
        let ro: Vec<String> = if sc.readonly_paths.is_empty() {
            READONLY.iter().map(|s| s.to_string()).collect()
        } else {
            sc.readonly_paths.clone()
        };
        spec["linux"]["maskedPaths"] = json!(masked);
        spec["linux"]["readonlyPaths"] = json!(ro);
    }
    if sc.privileged && !pod_sc.privileged {
        return Err(Error::invalid(
            "a privileged container needs a privileged pod sandbox",
        ));
    }
    if let Some(p) = seccomp_for(
        sc.seccomp.as_ref(),
        &sc.seccomp_profile_path,
        sc.privileged,
        caps,
    )? {
        spec["linux"]["seccomp"] = p;
    }
    Ok(())
}
