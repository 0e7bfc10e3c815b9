//! What a daemon's networks put on the host — its bridges, the veths on them, the CNI
//! plugins' iptables rules and chains and its own (the in-process bridge's), its pinned
//! namespaces' leases — found by the daemon's identity rather than by its files, so that
//! `berthd cleanup` takes them away even after its root is gone. The identity is the tag of
//! its state directory ([`tag`]): it ends every CNI container id the daemon uses (so it is in
//! each rule the plugins comment with that id), it begins the comment of every rule berth
//! writes itself (`berth:<tag>:…`), and it is the alias of every bridge the daemon claims
//! (`ip link show` prints `alias berth:<tag>`).

use super::define::{Definition, Subnet};
use crate::core::error::{Error, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A daemon's networks' directory, under `--root` (conflists) and `--state` (runtime state).
pub const NETWORK_DIR: &str = "io.berth.network.v1";

/// The chains the CNI plugins share between every container on the host: never removed,
/// only the rules of ours inside them.
const SHARED_CHAINS: [&str; 6] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
    "CNI-FORWARD",
    "CNI-ADMIN",
    "CNI-ISOLATION-STAGE-1",
];

/// The daemon's identity on the host, from its `--state` directory (the same for every run on
/// it, whether or not the directory still exists).
pub fn tag(state: &Path) -> String {
    tag_of_dir(&state.join(NETWORK_DIR))
}

/// [`tag`] from the network state directory itself.
pub(super) fn tag_of_dir(dir: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes()))[..8].to_string()
}

/// The alias a daemon gives the bridges it claims.
pub fn bridge_alias(tag: &str) -> String {
    format!("berth:{tag}")
}

/// A link as `/sys/class/net` shows it.
#[derive(Debug, Clone)]
struct Link {
    name: String,
    alias: String,
    is_bridge: bool,
    /// For a bridge: the interfaces enslaved to it.
    ports: Vec<String>,
}

fn links() -> Vec<Link> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return vec![];
    };
    let mut out = vec![];
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let alias = std::fs::read_to_string(dir.join("ifalias"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let ports = std::fs::read_dir(dir.join("brif"))
            .map(|p| {
                p.flatten()
                    .map(|p| p.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Link {
            is_bridge: dir.join("bridge").is_dir(),
            name,
            alias,
            ports,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The IPv4 prefixes on a link (`ip -o -4 addr show dev NAME`).
fn link_subnets(name: &str) -> Vec<Subnet> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", name])
        .output()
    else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            let (ip, len) = words.next()?.split_once('/')?;
            let (ip, len): (Ipv4Addr, u8) = (ip.parse().ok()?, len.parse().ok()?);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Some(Subnet {
                addr: Ipv4Addr::from(u32::from(ip) & mask),
                len,
            })
        })
        .collect()
}

/// berth's definitions among the conflists in `conf_dir` (none when it is gone).
fn definitions(conf_dir: &Path) -> Vec<Definition> {
    super::conflists(conf_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| Definition::from_conflist(&n.conf))
        .collect()
}

/// Whether `bridge` is the one a network of this daemon claimed: it carries the daemon's
/// alias, or (made before bridges carried one, or made again by the bridge plugin) it carries
/// none and its address lies in the subnet of the definition that names it.
fn owned(link: &Link, alias: &str, defs: &[Definition]) -> bool {
    if link.alias == alias {
        return true;
    }
    link.alias.is_empty()
        && defs
            .iter()
            .any(|d| d.bridge == link.name && link_subnets(&link.name).contains(&d.subnet))
}

/// Whether the bridge `name` belongs to the daemon whose network state is `dir`: the bridge
/// of a network it defines is removed with the network only then (another daemon may have
/// claimed the name since).
pub(super) fn owns_bridge(dir: &Path, def: &Definition) -> bool {
    links().iter().any(|l| {
        l.name == def.bridge
            && owned(
                l,
                &bridge_alias(&tag_of_dir(dir)),
                std::slice::from_ref(def),
            )
    })
}

/// What [`cleanup`] removed, one line per host object, and what it could not.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

/// Removes from the host what the daemon on `state` (with its conflists in `conf_dir`) made
/// for its networks: the iptables rules whose comment names one of its CNI container ids and
/// the chains they lead to, the firewall plugin's rules for its subnets, the veths on its
/// bridges and the bridges, then its leases, attachment records and network files (they
/// describe what is gone now). Its pinned namespaces are mounts under `state`: the caller
/// unmounts those first, so that their veths go with them.
pub fn cleanup(state: &Path, conf_dir: &Path) -> Cleaned {
    let tag = tag(state);
    let alias = bridge_alias(&tag);
    let defs = definitions(conf_dir);
    let mut done = Cleaned::default();
    let all = links();
    let bridges: Vec<&Link> = all
        .iter()
        .filter(|l| l.is_bridge && owned(l, &alias, &defs))
        .collect();
    let subnets: Vec<Subnet> = bridges.iter().flat_map(|b| link_subnets(&b.name)).collect();
    for tool in ["iptables", "ip6tables"] {
        iptables_cleanup(tool, &tag, &subnets, &mut done);
    }
    for b in &bridges {
        for port in &b.ports {
            delete_link(port, "veth", &mut done);
        }
        delete_link(&b.name, "bridge", &mut done);
    }
    let dir = state.join(NETWORK_DIR);
    for sub in ["attachments", "ipam", "files", "netns"] {
        let p = dir.join(sub);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => done.removed.push(format!("network state {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => done.failed.push(format!("remove {}: {e}", p.display())),
        }
    }
    done
}

fn delete_link(name: &str, what: &str, done: &mut Cleaned) {
    match Command::new("ip").args(["link", "delete", name]).output() {
        Ok(o) if o.status.success() => done.removed.push(format!("{what} {name}")),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            // A veth goes by itself when its namespace does.
            if !err.contains("Cannot find device") {
                done.failed.push(format!("{what} {name}: {}", err.trim()));
            }
        }
        Err(e) => done.failed.push(format!("{what} {name}: run ip: {e}")),
    }
}

/// One table's rules to remove, as `iptables-restore --noflush` input lines.
#[derive(Debug, Default, PartialEq)]
struct TablePlan {
    table: String,
    /// `-D CHAIN …`, the saved rule with its `-A` turned into `-D`.
    deletes: Vec<String>,
    /// Chains of ours, flushed and then removed.
    chains: Vec<String>,
}

impl TablePlan {
    fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.chains.is_empty()
    }

    fn restore_input(&self) -> String {
        let mut s = format!("*{}\n", self.table);
        for d in &self.deletes {
            s.push_str(d);
            s.push('\n');
        }
        for c in &self.chains {
            s.push_str(&format!("-F {c}\n"));
        }
        for c in &self.chains {
            s.push_str(&format!("-X {c}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// From `iptables-save` output: per table, the rules that are ours — their comment names a
/// CNI container id ending in `-<tag>` or begins `berth:<tag>:`, or they sit in a shared
/// chain and match an address in one of `subnets` (the firewall plugin writes no comment) —
/// and the chains (`CNI-…`, not shared) our rules jump to.
fn plan(saved: &str, tag: &str, subnets: &[Subnet]) -> Vec<TablePlan> {
    let needle = format!("-{tag}\\\"");
    let own = super::nat::comment_prefix(tag);
    plan_by(saved, |chain, rule| {
        rule.contains(&needle)
            || rule.contains(&own)
            || (SHARED_CHAINS.contains(&chain)
                && rule_addresses(rule).any(|a| subnets.iter().any(|s| s.contains(a))))
    })
}

/// From `iptables-save` output: per table, the rules `ours(chain, rule)` picks and the
/// chains (`CNI-…`, not shared) they jump to.
fn plan_by(saved: &str, ours: impl Fn(&str, &str) -> bool) -> Vec<TablePlan> {
    let mut plans: Vec<TablePlan> = vec![];
    for line in saved.lines() {
        if let Some(table) = line.strip_prefix('*') {
            plans.push(TablePlan {
                table: table.to_string(),
                ..Default::default()
            });
            continue;
        }
        let (Some(p), Some(rule)) = (plans.last_mut(), line.strip_prefix("-A ")) else {
            continue;
        };
        let chain = rule.split(' ').next().unwrap_or_default();
        let our_chain = p.chains.iter().any(|c| c == chain);
        if !ours(chain, rule) || our_chain {
            continue;
        }
        p.deletes.push(format!("-D {rule}"));
        if let Some(target) = jump_target(rule) {
            if target.starts_with("CNI-")
                && !SHARED_CHAINS.contains(&target)
                && !p.chains.iter().any(|c| c == target)
            {
                p.chains.push(target.to_string());
            }
        }
    }
    // Rules inside our chains go with the flush.
    for p in &mut plans {
        let chains = p.chains.clone();
        p.deletes.retain(|d| {
            let chain = d["-D ".len()..].split(' ').next().unwrap_or_default();
            !chains.iter().any(|c| c == chain)
        });
    }
    plans.retain(|p| !p.is_empty());
    plans
}

/// The addresses a rule matches by source or destination (`-s`/`-d ADDR[/LEN]`).
fn rule_addresses(rule: &str) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let words: Vec<&str> = rule.split(' ').collect();
    let mut out = vec![];
    for w in words.windows(2) {
        if w[0] == "-s" || w[0] == "-d" {
            let ip = w[1].split('/').next().unwrap_or_default();
            if let Ok(ip) = ip.parse() {
                out.push(ip);
            }
        }
    }
    out.into_iter()
}

fn jump_target(rule: &str) -> Option<&str> {
    let words: Vec<&str> = rule.split(' ').collect();
    words
        .windows(2)
        .find(|w| w[0] == "-j" || w[0] == "-g")
        .map(|w| w[1])
}

fn iptables_cleanup(tool: &str, tag: &str, subnets: &[Subnet], done: &mut Cleaned) {
    let Ok(out) = Command::new(format!("{tool}-save")).output() else {
        return; // no iptables: no rules of ours either
    };
    let saved = String::from_utf8_lossy(&out.stdout);
    for p in plan(&saved, tag, subnets) {
        match restore(tool, &p.restore_input()) {
            Ok(()) => {
                done.removed.extend(
                    p.deletes
                        .iter()
                        .map(|d| format!("{tool} -t {} {d}", p.table)),
                );
                done.removed.extend(
                    p.chains
                        .iter()
                        .map(|c| format!("{tool} -t {} chain {c}", p.table)),
                );
            }
            Err(e) => {
                done.failed
                    .push(format!("{tool} -t {}: {e}: {}", p.table, p.restore_input()))
            }
        }
    }
}

/// Removes the IPv4 rules of `saved` (iptables-save's output) that `pick` chooses.
pub(super) fn remove_matching(saved: &str, pick: impl Fn(&str) -> bool) -> Result<()> {
    for p in plan_by(saved, |_, rule| pick(rule)) {
        restore("iptables", &p.restore_input())?;
    }
    Ok(())
}

/// Feeds `input` to `<tool>-restore --noflush`: one batch, applied whole or not at all.
pub(super) fn restore(tool: &str, input: &str) -> Result<()> {
    use std::io::Write;
    let bin = format!("{tool}-restore");
    let mut child = Command::new(&bin)
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("run {bin}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| Error::io(format!("write to {bin}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("wait for {bin}"), e))?;
    if !out.status.success() {
        return Err(Error::new(
            crate::core::error::Kind::Internal,
            format!("{bin}: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    Ok(())
}

/// The mount points below any of `dirs` in this process's mount table, deepest first; not
/// the directories themselves (a root may well be a filesystem of its own).
pub fn mounts_under(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| dirs.iter().any(|d| p.starts_with(d) && p != d))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-0a1b2c - [0:0]
:CNI-5f5e5d - [0:0]
:CNI-999999 - [0:0]
-A POSTROUTING -s 10.213.0.2/32 -m comment --comment "name: \"bridge\" id: \"default-web-abcd1234\"" -j CNI-5f5e5d
-A POSTROUTING -s 10.213.9.2/32 -m comment --comment "name: \"bridge\" id: \"default-web-ffff0000\"" -j CNI-999999
-A CNI-5f5e5d -d 10.213.0.0/24 -m comment --comment "name: \"bridge\" id: \"default-web-abcd1234\"" -j ACCEPT
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"bridge\" id: \"default-web-abcd1234\"" -m multiport --dports 8080 -j CNI-DN-0a1b2c
-A CNI-DN-0a1b2c -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.213.0.2:80
-A POSTROUTING -s 10.213.0.0/24 ! -o berth0 -m comment --comment "berth:abcd1234:net:bridge:masq" -j MASQUERADE
-A OUTPUT -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 81 -m comment --comment "berth:ffff0000:ctr:default/x:" -j DNAT --to-destination 10.213.9.3:80
COMMIT
*filter
:CNI-FORWARD - [0:0]
-A CNI-FORWARD -d 10.213.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A CNI-FORWARD -s 10.213.0.2/32 -j ACCEPT
-A CNI-FORWARD -s 10.213.9.2/32 -j ACCEPT
-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
COMMIT
"#;

    #[test]
    fn only_our_rules_and_chains_are_planned() {
        let ours = [Subnet::parse("10.213.0.0/24").unwrap()];
        let plans = plan(SAVED, "abcd1234", &ours);
        assert_eq!(plans.len(), 2, "{plans:#?}");
        let nat = &plans[0];
        assert_eq!(nat.table, "nat");
        assert_eq!(nat.chains, ["CNI-5f5e5d", "CNI-DN-0a1b2c"]);
        assert_eq!(nat.deletes.len(), 3, "{:#?}", nat.deletes);
        assert!(nat.deletes[2].contains("berth:abcd1234:net:bridge:masq"));
        assert!(nat.deletes[0].starts_with("-D POSTROUTING -s 10.213.0.2/32"));
        assert!(nat.deletes[1].starts_with("-D CNI-HOSTPORT-DNAT"));
        let input = nat.restore_input();
        assert!(input.starts_with("*nat\n") && input.ends_with("-X CNI-DN-0a1b2c\nCOMMIT\n"));
        assert!(!input.contains("ffff0000") && !input.contains("CNI-999999"));
        let filter = &plans[1];
        assert!(filter.chains.is_empty());
        assert_eq!(filter.deletes.len(), 2, "{:#?}", filter.deletes);
        assert!(filter.deletes.iter().all(|d| d.contains("10.213.0.2/32")));
        // Another tag, no subnets: only its own comment-named rules.
        let other = plan(SAVED, "ffff0000", &[]);
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].chains, ["CNI-999999"]);
        assert_eq!(other[0].deletes.len(), 2, "{:#?}", other[0].deletes);
        assert!(other[0].deletes[1].starts_with("-D OUTPUT -p tcp"));
        assert!(plan(SAVED, "00000000", &[]).is_empty());
    }

    #[test]
    fn the_tag_is_the_state_directorys() {
        let t = tag(Path::new("/run/berth"));
        assert_eq!(t.len(), 8);
        assert_eq!(t, tag_of_dir(Path::new("/run/berth/io.berth.network.v1")));
        assert_ne!(t, tag(Path::new("/run/berth2")));
        assert_eq!(bridge_alias("abcd1234"), "berth:abcd1234");
    }
}
