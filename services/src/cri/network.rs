//! Pod networking: network namespaces of berth's own (bind-mounted under the state directory,
//! so they outlive berthd restarts), and the CNI plugins that wire them (ADD on run, DEL on
//! stop and remove, with the ADD result kept for the DEL).

use crate::error::{Error, Kind, Result};
use serde_json::{json, Value};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The interface name inside every pod.
pub const IFNAME: &str = "eth0";

/// Longest a CNI plugin may take before it is killed.
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{} has a NUL byte", p.display())))
}

/// Pins the namespace file `ns` at `path` (a bind mount onto a file made for it); the file
/// goes again if the mount fails. `bind` runs the mount (on a thread of its own for a
/// namespace that only that thread is in).
fn pin(
    ns: &str,
    path: &Path,
    bind: impl FnOnce(CString, CString) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    std::fs::File::create(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let (src, target) = (cstr(Path::new(ns))?, cstr(path)?);
    if let Err(e) = bind(src, target) {
        let _ = std::fs::remove_file(path);
        return Err(Error::io(
            format!("pin network namespace {ns} at {}", path.display()),
            e,
        ));
    }
    Ok(())
}

fn bind_mount(src: &CString, target: &CString) -> std::io::Result<()> {
    // SAFETY: a bind mount between two NUL-terminated paths.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a new network namespace and pins it at `path`, from a thread of its own so no
/// other thread changes namespace.
pub fn create_netns(path: &Path) -> Result<()> {
    pin("/proc/thread-self/ns/net", path, |src, target| {
        std::thread::spawn(move || {
            // SAFETY: unshare only changes this (short-lived, dedicated) thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            bind_mount(&src, &target)
        })
        .join()
        .map_err(|_| std::io::Error::other("the network namespace thread panicked"))?
    })
}

/// Pins an existing network namespace (`/proc/<pid>/ns/net`) at `path`.
pub fn pin_netns(ns: &str, path: &Path) -> Result<()> {
    pin(ns, path, |src, target| bind_mount(&src, &target))
}

/// Unpins and removes a network namespace made by [`create_netns`]; absent is fine.
pub fn remove_netns(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let c = cstr(path)?;
    // SAFETY: umount2 on a NUL-terminated path; EINVAL means "not a mount point".
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::io(format!("unmount {}", path.display()), e));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

/// A CNI network: the conflist (or a single .conf, wrapped) found in the conf dir.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Value>,
    pub file: PathBuf,
}

/// The pod network from `conf_dir`: the first `.conflist`, `.conf` or `.json` by name.
pub fn load(conf_dir: &Path) -> Result<Network> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(|e| Error::io(format!("read CNI config dir {}", conf_dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
        .collect();
    files.sort();
    let file = files.into_iter().next().ok_or_else(|| {
        Error::precondition(format!(
            "no CNI network configuration in {}: put a .conflist there (cni_conf_dir)",
            conf_dir.display()
        ))
    })?;
    let text =
        std::fs::read(&file).map_err(|e| Error::io(format!("read {}", file.display()), e))?;
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("CNI config {}: {e}", file.display())))?;
    let version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
    let name = v["name"].as_str().unwrap_or_default().to_string();
    let plugins = match v["plugins"].as_array() {
        Some(p) => p.clone(),
        None if v["type"].is_string() => vec![v.clone()],
        None => {
            return Err(Error::invalid(format!(
                "CNI config {} has neither plugins nor a type",
                file.display()
            )))
        }
    };
    if name.is_empty() || plugins.is_empty() {
        return Err(Error::invalid(format!(
            "CNI config {} needs a name and at least one plugin",
            file.display()
        )));
    }
    Ok(Network {
        name,
        version,
        plugins,
        file,
    })
}

/// What a pod brings to its network: identity for CNI_ARGS and the port mappings.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub sandbox_id: String,
    pub netns: PathBuf,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// (host_port, container_port, protocol, host_ip)
    pub port_mappings: Vec<(i32, i32, String, String)>,
}

impl Attachment {
    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod_namespace, self.pod_name, self.sandbox_id, self.pod_uid
        )
    }

    fn runtime_config(&self, plugin: &Value) -> Option<Value> {
        let caps = &plugin["capabilities"];
        let mut rc = serde_json::Map::new();
        if caps["portMappings"].as_bool() == Some(true) && !self.port_mappings.is_empty() {
            let maps: Vec<Value> = self
                .port_mappings
                .iter()
                .map(|(h, c, p, ip)| json!({"hostPort": h, "containerPort": c, "protocol": p, "hostIP": ip}))
                .collect();
            rc.insert("portMappings".into(), Value::Array(maps));
        }
        (!rc.is_empty()).then_some(Value::Object(rc))
    }
}

impl Network {
    fn plugin_conf(&self, plugin: &Value, a: &Attachment, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = json!(self.name);
        conf["cniVersion"] = json!(self.version);
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        if let Some(rc) = a.runtime_config(plugin) {
            conf["runtimeConfig"] = rc;
        }
        if let Some(m) = conf.as_object_mut() {
            m.remove("capabilities");
        }
        conf
    }

    /// ADD through every plugin; returns the final result. A failure undoes what was added.
    pub async fn add(&self, bin_dir: &Path, a: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for (i, plugin) in self.plugins.iter().enumerate() {
            let conf = self.plugin_conf(plugin, a, prev.as_ref());
            match exec(bin_dir, "ADD", plugin, &conf, a).await {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    let _ = self.del_plugins(bin_dir, a, prev.as_ref(), i + 1).await;
                    return Err(e);
                }
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through every plugin, last first; errors are collected, every plugin is asked.
    pub async fn del(&self, bin_dir: &Path, a: &Attachment, result: Option<&Value>) -> Result<()> {
        self.del_plugins(bin_dir, a, result, self.plugins.len())
            .await
    }

    async fn del_plugins(
        &self,
        bin_dir: &Path,
        a: &Attachment,
        result: Option<&Value>,
        n: usize,
    ) -> Result<()> {
        let mut first_err = None;
        for plugin in self.plugins[..n].iter().rev() {
            let conf = self.plugin_conf(plugin, a, result);
            if let Err(e) = exec(bin_dir, "DEL", plugin, &conf, a).await {
                tracing::warn!(sandbox = a.sandbox_id, error = %e, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

async fn exec(
    bin_dir: &Path,
    command: &str,
    plugin: &Value,
    conf: &Value,
    a: &Attachment,
) -> Result<Value> {
    let kind = plugin["type"].as_str().unwrap_or_default();
    if kind.is_empty() || kind.contains('/') {
        return Err(Error::invalid(format!(
            "CNI plugin type {kind:?} is invalid"
        )));
    }
    let bin = bin_dir.join(kind);
    if !bin.exists() {
        return Err(Error::precondition(format!(
            "CNI plugin {} is missing: install containernetworking-plugins or set cni_bin_dir",
            bin.display()
        )));
    }
    let mut child = tokio::process::Command::new(&bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &a.sandbox_id)
        .env("CNI_NETNS", &a.netns)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_PATH", bin_dir)
        .env("CNI_ARGS", a.cni_args())
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("run CNI plugin {}", bin.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let bytes = serde_json::to_vec(conf)?;
        stdin
            .write_all(&bytes)
            .await
            .map_err(|e| Error::io(format!("write to CNI plugin {kind}"), e))?;
    }
    let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::new(
                Kind::DeadlineExceeded,
                format!("CNI plugin {kind} {command} took longer than {PLUGIN_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| Error::io(format!("wait for CNI plugin {kind}"), e))?;
    if !out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let msg = v["msg"].as_str().map(str::to_string).unwrap_or_else(|| {
            String::from_utf8_lossy(if out.stdout.is_empty() {
                &out.stderr
            } else {
                &out.stdout
            })
            .trim()
            .to_string()
        });
        let details = v["details"].as_str().unwrap_or_default();
        return Err(Error::new(
            Kind::Internal,
            format!("CNI plugin {kind} {command} failed: {msg} {details}")
                .trim()
                .to_string(),
        ));
    }
    if command == "DEL" || out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::invalid(format!(
            "CNI plugin {kind} answered {command} with bad JSON: {e}"
        ))
    })
}

/// The pod's addresses from a CNI result: those on [`IFNAME`] (or on no named interface),
/// without their prefix length, IPv4 first.
pub fn pod_ips(result: &Value) -> Vec<String> {
    let ifaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|ip| match ip["interface"].as_u64() {
                    Some(i) => ifaces
                        .get(i as usize)
                        .map(|f| {
                            f["name"] == IFNAME
                                && f["sandbox"].as_str().is_some_and(|s| !s.is_empty())
                        })
                        .unwrap_or(true),
                    None => true,
                })
                .filter_map(|ip| ip["address"].as_str())
                .map(|s| s.split('/').next().unwrap_or(s).to_string())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_come_from_the_pod_interface() {
        let r = json!({
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 2, "address": "fd00::5/64"}, {"interface": 2, "address": "10.88.0.5/16"}, {"interface": 0, "address": "10.88.0.1/16"}]
        });
        assert_eq!(pod_ips(&r), vec!["10.88.0.5", "fd00::5"]);
    }

    #[tokio::test]
    async fn plugin_types_cannot_name_paths() {
        let a = Attachment::default();
        for kind in ["../../bin/sh", "/bin/sh", ""] {
            let plugin = json!({"type": kind});
            let e = exec(Path::new("/usr/lib/cni"), "ADD", &plugin, &plugin, &a)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument, "{kind}");
        }
    }

    #[test]
    fn port_mappings_only_for_plugins_that_ask() {
        let a = Attachment {
            port_mappings: vec![(8080, 80, "tcp".into(), "".into())],
            ..Default::default()
        };
        let net = Network {
            name: "n".into(),
            version: "1.0.0".into(),
            plugins: vec![],
            file: PathBuf::new(),
        };
        let pm = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let c = net.plugin_conf(&pm, &a, None);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(c.get("capabilities").is_none());
        let br = json!({"type": "bridge"});
        assert!(net
            .plugin_conf(&br, &a, None)
            .get("runtimeConfig")
            .is_none());
    }
}

#[cfg(test)]
mod netns_tests {
    use super::*;

    #[test]
    fn netns_is_pinned_and_removed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ns1");
        create_netns(&p).unwrap();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", p.display()))
            .args(["ip", "-o", "link"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            links.lines().count(),
            1,
            "a new namespace has only lo: {links}"
        );
        remove_netns(&p).unwrap();
        assert!(!p.exists());
        remove_netns(&p).unwrap();
    }
}
