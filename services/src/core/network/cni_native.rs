//! The CNI DELs berth does in process, for plugins configured so plainly that their DEL's
//! work is known exactly (containernetworking-plugins' bridge, host-local and portmap, the
//! same from 1.1.1, Debian's, through today's): one plugin process fewer each, and for the
//! bridge its host-local process too. Anything else in the plugin's configuration, a CNI
//! version, name, id, interface or CNI_ARGS the plugin would refuse, or a plugin binary
//! missing from the bin dir, and the plugin runs as before, so every outcome is the plugin's.
//!
//! - portmap with no port mappings: the plugin parses its configuration and returns; there
//!   is nothing to do (and its ADD hands the previous result on: [`add_passes_on`]).
//! - bridge with host-local IPAM and no IP masquerade: `eth0` (the ifname) is deleted inside
//!   the namespace (its veth peer on the bridge goes with it; a namespace or link already gone
//!   is fine), then host-local's leases of the id and ifname are given back
//!   ([`ipam::release_as_host_local`]). The plugin touches no firewall rule without `ipMasq`.

use super::cni::Attachment;
use super::ipam;
use super::netlink::Socket;
use crate::core::error::{Error, Result};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// host-local's lease directory when the configuration names none.
const DEFAULT_IPAM_DIR: &str = "/var/lib/cni/networks";

/// The CNI versions every plugin release since 1.0 accepts.
const VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// What berth does in place of a plugin's DEL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Del {
    /// The plugin would return without doing anything.
    Nothing,
    /// The bridge plugin's DEL with host-local's inside it.
    Bridge { ipam_dir: PathBuf, network: String },
}

/// The in-process DEL for `conf` (the plugin's configuration as it would be handed to it,
/// built from the conflist's `plugin`), or None to run the plugin.
pub(super) fn plan(bin_dir: &Path, plugin: &Value, conf: &Value, a: &Attachment) -> Option<Del> {
    let kind = plugin["type"].as_str()?;
    if !skel_accepts(conf, a) || !bin_dir.join(kind).is_file() {
        return None;
    }
    match kind {
        "portmap" if plain_portmap(plugin) && conf.get("runtimeConfig").is_none() => {
            prev_result_parses(conf.get("prevResult")).then_some(Del::Nothing)
        }
        "bridge" if bin_dir.join("host-local").is_file() => {
            plain_bridge(conf).map(|dir| Del::Bridge {
                ipam_dir: dir,
                network: conf["name"].as_str().unwrap_or_default().to_string(),
            })
        }
        _ => None,
    }
}

/// Whether `plugin`'s ADD would print its previous result unchanged: portmap without port
/// mappings (it parses its configuration, then prints the previous result in its CNI
/// version, which is already the result's own).
pub(super) fn add_passes_on(bin_dir: &Path, plugin: &Value, conf: &Value, a: &Attachment) -> bool {
    plugin["type"] == "portmap"
        && conf["prevResult"].is_object()
        && conf["prevResult"]["cniVersion"] == conf["cniVersion"]
        && plan(bin_dir, plugin, conf, a) == Some(Del::Nothing)
}

/// Does `del` for the attachment `a` (blocking: netlink and the lease files).
pub(super) fn run(del: &Del, a: &Attachment) -> Result<()> {
    match del {
        Del::Nothing => Ok(()),
        Del::Bridge { ipam_dir, network } => {
            delete_link_in(&a.netns, &a.ifname)?;
            ipam::release_as_host_local(ipam_dir, network, &a.id, &a.ifname)
        }
    }
}

/// The bridge plugin's unwiring: the interface deleted inside the namespace; a namespace or
/// interface already gone is fine (a DEL may come twice). No namespace: nothing to unwire.
fn delete_link_in(netns: &Path, ifname: &str) -> Result<()> {
    if netns.as_os_str().is_empty() {
        return Ok(());
    }
    let err = |e: std::io::Error| Error::io(format!("delete {ifname} in {}", netns.display()), e);
    let mut sock = match Socket::open_in(netns) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let gone = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
    };
    match sock.link_index(ifname) {
        Ok(_) => match sock.delete_link(ifname) {
            Err(e) if !gone(&e) => Err(err(e)),
            _ => Ok(()),
        },
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// What every plugin checks before its DEL: a CNI version it knows, a valid network name,
/// container id and interface name, and CNI_ARGS it can parse.
fn skel_accepts(conf: &Value, a: &Attachment) -> bool {
    let version = conf["cniVersion"].as_str().unwrap_or_default();
    VERSIONS.contains(&version)
        && conf["name"].as_str().is_some_and(valid_name)
        && valid_name(&a.id)
        && valid_ifname(&a.ifname)
        && args_parse(&a.args)
}

/// CNI's names (networks, container ids): a letter or digit, then letters, digits, `_.-`.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// CNI's interface names: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white space.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// CNI_ARGS as the plugins parse them: `K=V` pairs split at `;`, each with exactly one `=`;
/// keys the plugins read (IP, MAC) are theirs to judge; others need `IgnoreUnknown` true.
fn args_parse(args: &str) -> bool {
    if args.is_empty() {
        return true;
    }
    let mut ignore_unknown = false;
    let mut unknown = false;
    for pair in args.split(';') {
        let mut kv = pair.split('=');
        let (Some(k), Some(v), None) = (kv.next(), kv.next(), kv.next()) else {
            return false;
        };
        match k {
            "IgnoreUnknown" => match v.to_ascii_lowercase().as_str() {
                "1" | "true" => ignore_unknown = true,
                "0" | "false" => ignore_unknown = false,
                _ => return false,
            },
            "IP" | "MAC" => return false,
            _ => unknown = true,
        }
    }
    ignore_unknown || !unknown
}

/// `{"type":"portmap"}`, with at most the `portMappings` capability.
fn plain_portmap(plugin: &Value) -> bool {
    let Some(m) = plugin.as_object() else {
        return false;
    };
    m.iter().all(|(k, v)| match k.as_str() {
        "type" => true,
        "capabilities" => v
            .as_object()
            .is_some_and(|c| c.iter().all(|(k, v)| k == "portMappings" && v.is_boolean())),
        _ => false,
    })
}

/// The bridge configuration's host-local lease directory when the bridge plugin's DEL is
/// known exactly: the bridge settings that only ADD reads, no IP masquerade, host-local
/// with one IPv4 subnet and plain routes.
fn plain_bridge(conf: &Value) -> Option<PathBuf> {
    let m = conf.as_object()?;
    for (k, v) in m {
        let ok = match k.as_str() {
            "type" | "name" | "cniVersion" | "prevResult" | "ipam" => true,
            "bridge" => v.is_string(),
            "isGateway" | "isDefaultGateway" | "forceAddress" | "hairpinMode" | "promiscMode" => {
                v.is_boolean()
            }
            "ipMasq" => v == &Value::Bool(false),
            "mtu" => v.as_i64().is_some(),
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    plain_host_local(m.get("ipam")?.as_object()?)
}

/// host-local with exactly one range, an IPv4 subnet it can allocate from, routes of valid
/// destinations and gateways: the lease directory it would use.
fn plain_host_local(ipam: &Map<String, Value>) -> Option<PathBuf> {
    let mut dir = PathBuf::from(DEFAULT_IPAM_DIR);
    for (k, v) in ipam {
        match k.as_str() {
            "type" if v == "host-local" => {}
            "dataDir" => dir = PathBuf::from(v.as_str()?),
            "ranges" => {
                let [set] = v.as_array()?.as_slice() else {
                    return None;
                };
                let [range] = set.as_array()?.as_slice() else {
                    return None;
                };
                let range = range.as_object()?;
                if range.len() != 1 || !allocatable_v4_subnet(range.get("subnet")?.as_str()?) {
                    return None;
                }
            }
            "routes" => {
                for r in v.as_array()? {
                    let r = r.as_object()?;
                    let ok = r.iter().all(|(k, v)| match k.as_str() {
                        "dst" => v.as_str().is_some_and(|s| cidr(s).is_some()),
                        "gw" => v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
                        _ => false,
                    });
                    if !ok || !r.contains_key("dst") {
                        return None;
                    }
                }
            }
            _ => return None,
        }
    }
    (ipam.get("type")? == "host-local" && ipam.contains_key("ranges")).then_some(dir)
}

/// `addr/len` with a prefix length that fits the address.
fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// An IPv4 subnet host-local accepts: its network address, at most /30.
fn allocatable_v4_subnet(s: &str) -> bool {
    let Some((IpAddr::V4(ip), len)) = cidr(s) else {
        return false;
    };
    let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    len <= 30 && u32::from(ip) & host_bits == 0
}

/// Whether a plugin would parse the previous result: none, or one whose addresses and routes
/// are valid (it is the chain's own ADD result, as the plugins printed it).
fn prev_result_parses(prev: Option<&Value>) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    let Some(m) = prev.as_object() else {
        return false;
    };
    let all = |key: &str, field: &str| {
        m.get(key).is_none_or(|v| {
            v.as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|i| i[field].as_str().is_some_and(|s| cidr(s).is_some()))
            })
        })
    };
    all("ips", "address") && all("routes", "dst")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_conf() -> Value {
        json!({
            "type": "bridge", "name": "net", "cniVersion": "1.0.0", "bridge": "cni-x0",
            "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": "/tmp/ipam",
                     "ranges": [[{"subnet": "10.231.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}
        })
    }

    fn pod() -> Attachment {
        Attachment {
            id: "0123abcd".into(),
            netns: PathBuf::from("/run/netns/x"),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p".into(),
            ifname: "eth0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_plain_bridges_with_host_local_are_done_in_process() {
        let c = bridge_conf();
        assert_eq!(plain_bridge(&c), Some(PathBuf::from("/tmp/ipam")));
        let mut no_dir = c.clone();
        no_dir["ipam"].as_object_mut().unwrap().remove("dataDir");
        assert_eq!(plain_bridge(&no_dir), Some(PathBuf::from(DEFAULT_IPAM_DIR)));
        let refused = [
            ("ipMasq", json!(true)),
            ("macspoofchk", json!(true)),
            ("vlan", json!(5)),
            ("isGateway", json!("yes")),
            ("dns", json!({})),
        ];
        for (k, v) in refused {
            let mut x = c.clone();
            x[k] = v;
            assert_eq!(plain_bridge(&x), None, "{k}");
        }
        let ipams = [
            json!({"type": "dhcp"}),
            json!({"type": "host-local", "subnet": "10.1.0.0/16"}),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "fd00::/64"}]]}),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16", "rangeStart": "10.1.0.9"}]]}),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.1/16"}]]}),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/31"}]]}),
            json!({"type": "host-local", "ranges": [[{"subnet": "fd00::/64"}]]}),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}]], "routes": [{"dst": "x"}]}),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}]], "resolvConf": "/r"}),
            json!({"type": "host-local"}),
        ];
        for ipam in ipams {
            let mut x = c.clone();
            x["ipam"] = ipam.clone();
            assert_eq!(plain_bridge(&x), None, "{ipam}");
        }
    }

    #[test]
    fn what_a_plugin_would_refuse_runs_the_plugin() {
        let bin = tempfile::tempdir().unwrap();
        for p in ["bridge", "host-local", "portmap"] {
            std::fs::write(bin.path().join(p), "").unwrap();
        }
        let c = bridge_conf();
        let plugin = json!({"type": "bridge"});
        assert!(matches!(
            plan(bin.path(), &plugin, &c, &pod()),
            Some(Del::Bridge { .. })
        ));
        let mut old = c.clone();
        old["cniVersion"] = json!("1.1.0");
        assert_eq!(plan(bin.path(), &plugin, &old, &pod()), None);
        for (id, ifname, args) in [
            ("-bad", "eth0", ""),
            ("ok", "eth0/1", ""),
            ("ok", "a-very-long-ifname", ""),
            ("ok", "eth0", "K8S_POD_NAME=p"),
            ("ok", "eth0", "IgnoreUnknown=1;IP=10.0.0.5"),
            ("ok", "eth0", "IgnoreUnknown=1;K=a=b"),
            ("ok", "eth0", "IgnoreUnknown=maybe;K=v"),
        ] {
            let a = Attachment {
                id: id.into(),
                ifname: ifname.into(),
                args: args.into(),
                ..pod()
            };
            assert_eq!(
                plan(bin.path(), &plugin, &c, &a),
                None,
                "{id} {ifname} {args}"
            );
        }
        std::fs::remove_file(bin.path().join("host-local")).unwrap();
        assert_eq!(plan(bin.path(), &plugin, &c, &pod()), None);
    }

    #[test]
    fn portmap_is_skipped_only_without_port_mappings() {
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(bin.path().join("portmap"), "").unwrap();
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let conf = json!({"type": "portmap", "name": "net", "cniVersion": "1.0.0",
            "prevResult": {"ips": [{"address": "10.231.0.5/16", "interface": 2}]}});
        assert_eq!(plan(bin.path(), &plugin, &conf, &pod()), Some(Del::Nothing));
        assert!(
            !add_passes_on(bin.path(), &plugin, &conf, &pod()),
            "a result of another version"
        );
        let mut same = conf.clone();
        same["prevResult"]["cniVersion"] = json!("1.0.0");
        assert!(add_passes_on(bin.path(), &plugin, &same, &pod()));
        let mut mapped = conf.clone();
        mapped["runtimeConfig"] = json!({"portMappings": [{"hostPort": 80, "containerPort": 80}]});
        assert_eq!(plan(bin.path(), &plugin, &mapped, &pod()), None);
        let snat = json!({"type": "portmap", "snat": false});
        assert_eq!(plan(bin.path(), &snat, &conf, &pod()), None);
        let mut bad = conf.clone();
        bad["prevResult"]["ips"][0]["address"] = json!("10.231.0.5");
        assert_eq!(plan(bin.path(), &plugin, &bad, &pod()), None);
        let mut none = conf.clone();
        none.as_object_mut().unwrap().remove("prevResult");
        assert_eq!(plan(bin.path(), &plugin, &none, &pod()), Some(Del::Nothing));
        std::fs::remove_file(bin.path().join("portmap")).unwrap();
        assert_eq!(plan(bin.path(), &plugin, &conf, &pod()), None);
    }
}
