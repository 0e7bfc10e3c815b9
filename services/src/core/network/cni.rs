//! CNI: network configurations (conflists) and the plugins that wire a network namespace
//! into them (ADD when it comes up, DEL when it goes, with the ADD result kept for the DEL).
//! Both the CRI's pods and `berth run`'s containers go through here.

use super::cni_native;
use crate::core::error::{Error, Kind, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The interface name inside every pod and container.
pub const IFNAME: &str = "eth0";

/// Longest a CNI plugin may take before it is killed.
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A CNI network: the conflist (or a single .conf, wrapped) found in the conf dir.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Value>,
    pub file: PathBuf,
    /// The whole file, as read.
    pub conf: Value,
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
    load_file(&file)
}

/// A network from one CNI configuration file: a `.conflist`, or a single plugin's `.conf`.
pub fn load_file(file: &Path) -> Result<Network> {
    let text = std::fs::read(file).map_err(|e| Error::io(format!("read {}", file.display()), e))?;
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("CNI config {}: {e}", file.display())))?;
    Network::parse(v, file)
}

impl Network {
    /// A network from its configuration as JSON (read from `file`).
    pub fn parse(v: Value, file: &Path) -> Result<Network> {
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
            file: file.to_path_buf(),
            conf: v,
        })
    }
}

/// A published port: CNI's `portMappings` entry, which the portmap plugin reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// What a namespace brings to a network: who it is (CNI_CONTAINERID, CNI_ARGS), where it
/// is, the ports it publishes.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub id: String,
    pub netns: PathBuf,
    /// CNI_ARGS, `K=V;K=V`.
    pub args: String,
    pub port_mappings: Vec<PortMapping>,
    /// The interface inside the namespace ([`IFNAME`] for the first).
    pub ifname: String,
    /// Where host-local IPAM keeps its leases, when the network does not say.
    pub ipam_data_dir: Option<PathBuf>,
}

impl Attachment {
    fn runtime_config(&self, plugin: &Value) -> Option<Value> {
        let caps = &plugin["capabilities"];
        let mut rc = serde_json::Map::new();
        if caps["portMappings"].as_bool() == Some(true) && !self.port_mappings.is_empty() {
            rc.insert("portMappings".into(), json!(self.port_mappings));
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
        if let Some(dir) = &a.ipam_data_dir {
            let ipam = &mut conf["ipam"];
            if ipam["type"] == "host-local" && ipam.get("dataDir").is_none() {
                ipam["dataDir"] = json!(dir);
            }
        }
        conf
    }

    /// ADD through every plugin; returns the final result. A failure undoes what was added.
    pub async fn add(&self, bin_dir: &Path, a: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for (i, plugin) in self.plugins.iter().enumerate() {
            if prev.is_some() && is_plain_loopback(plugin) {
                // With a previous result the loopback plugin only brings `lo` up and hands
                // that result on unchanged: done here, without a process.
                if let Err(e) = loopback(&a.netns, true).await {
                    let _ = self.del_plugins(bin_dir, a, prev.as_ref(), i + 1).await;
                    return Err(e);
                }
                continue;
            }
            let conf = self.plugin_conf(plugin, a, prev.as_ref());
            if prev.is_some() && cni_native::add_passes_on(bin_dir, plugin, &conf, a) {
                continue;
            }
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
        self.del_plugins_with(bin_dir, a, result, n, true).await
    }

    /// DEL through the first `n` plugins, last first; with `native`, those whose DEL berth
    /// knows exactly ([`cni_native`]) are done in process.
    async fn del_plugins_with(
        &self,
        bin_dir: &Path,
        a: &Attachment,
        result: Option<&Value>,
        n: usize,
        native: bool,
    ) -> Result<()> {
        let mut first_err = None;
        for plugin in self.plugins[..n].iter().rev() {
            let conf = self.plugin_conf(plugin, a, result);
            let plan = native
                .then(|| cni_native::plan(bin_dir, plugin, &conf, a))
                .flatten();
            let del = || async {
                if is_plain_loopback(plugin) {
                    loopback(&a.netns, false).await
                } else if let Some(del) = plan.clone() {
                    let a = a.clone();
                    crate::core::error::blocking(move || cni_native::run(&del, &a)).await
                } else {
                    exec(bin_dir, "DEL", plugin, &conf, a).await.map(drop)
                }
            };
            // DEL is idempotent: one that failed (a netfilter table busy with another
            // writer, say) is tried once more before the record is kept for later.
            let mut done = del().await;
            if let Err(e) = &done {
                tracing::debug!(id = a.id, error = %e, "CNI DEL failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                done = del().await;
            }
            if let Err(e) = done {
                tracing::warn!(id = a.id, error = %e, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Whether the plugin is the loopback plugin with nothing configured (`{"type":
/// "loopback"}`), whose work berth does itself: `lo` up on ADD, down on DEL.
fn is_plain_loopback(plugin: &Value) -> bool {
    plugin
        .as_object()
        .is_some_and(|m| m.len() == 1 && m.get("type").and_then(Value::as_str) == Some("loopback"))
}

/// The loopback plugin's work: `lo` in the namespace at `netns` up (ADD) or down (DEL). A DEL
/// for a namespace that is gone has nothing to do, as the plugin says.
async fn loopback(netns: &Path, up: bool) -> Result<()> {
    let netns = netns.to_path_buf();
    crate::core::error::blocking(move || {
        let what = if up { "up" } else { "down" };
        let set = || -> std::io::Result<()> {
            let mut sock = super::netlink::Socket::open_in(&netns)?;
            let lo = sock.link_index("lo")?;
            if up {
                sock.set_up(lo)
            } else {
                sock.set_down(lo)
            }
        };
        match set() {
            Err(e) if !up && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| Error::io(format!("set lo {what} in {}", netns.display()), e)),
        }
    })
    .await
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
            "CNI plugin {} is missing: install containernetworking-plugins or set cni_bin_dir ([cri] or [network]); berth run --network none needs no plugin",
            bin.display()
        )));
    }
    let mut child = tokio::process::Command::new(&bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &a.id)
        .env("CNI_NETNS", &a.netns)
        .env("CNI_IFNAME", &a.ifname)
        .env("CNI_PATH", bin_dir)
        .env("CNI_ARGS", &a.args)
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

/// The namespace's addresses from a CNI result: those on `ifname` (or on no named
/// interface), without their prefix length, IPv4 first.
pub fn ips_on(result: &Value, ifname: &str) -> Vec<String> {
    let ifaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|ip| match ip["interface"].as_u64() {
                    Some(i) => ifaces
                        .get(i as usize)
                        .map(|f| {
                            f["name"] == ifname
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
        assert_eq!(ips_on(&r, IFNAME), vec!["10.88.0.5", "fd00::5"]);
    }

    #[test]
    fn only_a_loopback_plugin_with_nothing_configured_is_done_in_process() {
        assert!(is_plain_loopback(&json!({"type": "loopback"})));
        assert!(!is_plain_loopback(&json!({"type": "loopback", "x": 1})));
        assert!(!is_plain_loopback(&json!({"type": "bridge"})));
    }

    #[tokio::test]
    async fn loopback_comes_up_and_goes_down_in_the_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: making a network namespace needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        super::super::netns::create_netns(&ns).unwrap();
        let lo_up = || {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={}", ns.display()))
                .args(["ip", "-o", "link", "show", "lo"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(text.contains("lo:"), "{text}");
            text.contains(",UP")
        };
        assert!(!lo_up());
        loopback(&ns, true).await.unwrap();
        assert!(lo_up());
        loopback(&ns, false).await.unwrap();
        assert!(!lo_up());
        super::super::netns::remove_netns(&ns).unwrap();
        // A DEL for a namespace already gone has nothing to do.
        loopback(&ns, false).await.unwrap();
        assert!(loopback(&ns, true).await.is_err());
    }

    /// A DEL that fails once (a netfilter table busy with another writer) is tried again:
    /// the plugin's second answer is the one that counts.
    #[tokio::test]
    async fn a_del_that_fails_once_is_tried_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("flaky");
        let (tried, done) = (dir.path().join("tried"), dir.path().join("done"));
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\ncat >/dev/null\nif [ ! -e {t} ]; then touch {t}; \
                 echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"busy\"}}'; exit 1; fi\n\
                 touch {d}\n",
                t = tried.display(),
                d = done.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = json!({"cniVersion": "1.0.0", "name": "flaky", "plugins": [{"type": "flaky"}]});
        let net = Network::parse(conf, &dir.path().join("flaky.conflist")).unwrap();
        let a = Attachment {
            id: "c1".into(),
            netns: dir.path().join("ns"),
            args: String::new(),
            port_mappings: vec![],
            ifname: IFNAME.into(),
            ipam_data_dir: None,
        };
        net.del(dir.path(), &a, None).await.unwrap();
        assert!(done.exists(), "the second DEL did not run");
        // One that keeps failing is told.
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"busy\"}'\nexit 1\n",
        )
        .unwrap();
        assert!(net.del(dir.path(), &a, None).await.is_err());
    }

    /// Runs `cmd` and gives its standard output.
    fn sh(cmd: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The host's firewall rules, without counters and comments.
    fn rules() -> Vec<String> {
        let mut r: Vec<String> = sh("iptables-save 2>/dev/null; ip6tables-save 2>/dev/null")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect();
        r.sort();
        r
    }

    /// Deletes the test's bridge however the test ends.
    struct BridgeGone(String);

    impl Drop for BridgeGone {
        fn drop(&mut self) {
            sh(&format!("ip link del {} 2>/dev/null", self.0));
        }
    }

    #[tokio::test]
    async fn in_process_del_leaves_what_the_plugins_leave() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: CNI plugins need root");
            return;
        }
        let bin = Path::new("/usr/lib/cni");
        if !["bridge", "host-local", "portmap"]
            .iter()
            .all(|p| bin.join(p).is_file())
        {
            eprintln!("skipped: no CNI plugins in /usr/lib/cni (containernetworking-plugins)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tag = std::process::id() % 200 + 20;
        let bridge = format!("cnt-native{tag}");
        let _gone = BridgeGone(bridge.clone());
        let ipam = dir.path().join("ipam");
        let net = Network::parse(
            json!({"cniVersion": "1.0.0", "name": "native-test", "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                 "hairpinMode": true, "ipam": {"type": "host-local", "dataDir": ipam,
                 "ranges": [[{"subnet": format!("10.244.{tag}.0/24")}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}]}),
            Path::new("test.conflist"),
        )
        .unwrap();
        let rules_before = rules();
        let attach = |name: &str| {
            let ns = dir.path().join(name);
            super::super::netns::create_netns(&ns).unwrap();
            Attachment {
                id: format!("{name}{tag}"),
                netns: ns,
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p".into(),
                ifname: IFNAME.into(),
                ..Default::default()
            }
        };
        let leases = || {
            let mut v: Vec<String> = std::fs::read_dir(ipam.join("native-test"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            v.sort();
            v
        };
        let host_veth = |r: &Value| r["interfaces"][1]["name"].as_str().unwrap().to_string();
        let link_there =
            |name: &str| sh(&format!("ip -o link show {name} 2>/dev/null")).contains(name);
        let eth0_in = |a: &Attachment| {
            sh(&format!(
                "nsenter --net={} ip -o link show eth0 2>/dev/null",
                a.netns.display()
            ))
            .contains("eth0")
        };
        // The real plugins add both; berth takes one away, the plugins the other.
        let (a, b) = (attach("pa"), attach("pb"));
        let (ra, rb) = (
            net.add(bin, &a).await.unwrap(),
            net.add(bin, &b).await.unwrap(),
        );
        let (va, vb) = (host_veth(&ra), host_veth(&rb));
        assert!(link_there(&va) && link_there(&vb) && eth0_in(&a) && eth0_in(&b));
        assert_eq!(leases().len(), 4, "{:?}", leases()); // two leases, lock, last reserved
        let planned = |i: usize| {
            let conf = net.plugin_conf(&net.plugins[i], &a, Some(&ra));
            cni_native::plan(bin, &net.plugins[i], &conf, &a)
        };
        assert!(matches!(planned(0), Some(cni_native::Del::Bridge { .. })));
        assert_eq!(planned(1), Some(cni_native::Del::Nothing));
        // portmap's ADD, skipped above, prints the bridge's result as it came.
        let pm = net.plugin_conf(&net.plugins[1], &a, Some(&ra));
        assert!(cni_native::add_passes_on(bin, &net.plugins[1], &pm, &a));
        let printed = exec(bin, "ADD", &net.plugins[1], &pm, &a).await.unwrap();
        assert_eq!(printed, ra);
        net.del(bin, &a, Some(&ra)).await.unwrap();
        assert!(!link_there(&va) && !eth0_in(&a), "berth's DEL left {va}");
        let after_native = leases();
        net.del_plugins_with(bin, &b, Some(&rb), net.plugins.len(), false)
            .await
            .unwrap();
        assert!(!link_there(&vb) && !eth0_in(&b));
        assert_eq!(after_native.len(), 3, "{after_native:?}");
        assert_eq!(leases(), vec!["last_reserved_ip.0", "lock"]);
        assert_eq!(rules(), rules_before);
        // A second DEL has nothing to do; one for a namespace already gone gives the lease back.
        net.del(bin, &a, Some(&ra)).await.unwrap();
        let c = attach("pc");
        let rc = net.add(bin, &c).await.unwrap();
        super::super::netns::remove_netns(&c.netns).unwrap();
        net.del(bin, &c, Some(&rc)).await.unwrap();
        // (Its veth goes with the namespace, when the kernel gets round to it.)
        assert_eq!(leases(), vec!["last_reserved_ip.0", "lock"]);
        for x in [&a, &b] {
            super::super::netns::remove_netns(&x.netns).unwrap();
        }
        assert_eq!(rules(), rules_before);
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
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..Default::default()
        };
        let net = Network {
            name: "n".into(),
            version: "1.0.0".into(),
            plugins: vec![],
            file: PathBuf::new(),
            conf: Value::Null,
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
