//! Masquerade, forwarding and published ports of berth's own bridge networks, in the
//! kernel's netfilter through one `iptables-restore --noflush` batch at a time: a network's
//! rules once (its first container after berthd starts finds them, or adds what is missing),
//! a container's DNAT rules only when it publishes ports. Every rule carries a comment
//! `berth:<tag>:…` naming the daemon, so `berthd cleanup` finds them without any file.
//!
//! What the CNI path does per container (bridge's masquerade chain, firewall's forward
//! rules) is here per network, over the subnet: the same packets pass.

use super::cni::PortMapping;
use super::define::{Definition, Subnet};
use crate::core::error::{Error, Kind, Result};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The comment prefix of every rule of the daemon tagged `tag`.
pub fn comment_prefix(tag: &str) -> String {
    format!("berth:{tag}:")
}

fn network_comment(tag: &str, network: &str, what: &str) -> String {
    format!("{}net:{network}:{what}", comment_prefix(tag))
}

/// The comment on a container's port rules; the trailing `:` keeps `a` from naming `a1`'s.
pub fn container_comment(tag: &str, key: &str) -> String {
    format!("{}ctr:{key}:", comment_prefix(tag))
}

/// A table's lines for `iptables-restore --noflush`.
#[derive(Debug, Default, PartialEq)]
struct Batch {
    nat: Vec<String>,
    filter: Vec<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.nat.is_empty() && self.filter.is_empty()
    }

    fn input(&self) -> String {
        let mut s = String::new();
        for (table, lines) in [("nat", &self.nat), ("filter", &self.filter)] {
            if lines.is_empty() {
                continue;
            }
            s.push_str(&format!("*{table}\n"));
            for l in lines {
                s.push_str(l);
                s.push('\n');
            }
            s.push_str("COMMIT\n");
        }
        s
    }
}

/// The network's rules as (comment, table is nat, line): each comment names its rule, the
/// subnet and the bridge, so a rule left for an earlier network of the same name (a root
/// wiped without `berthd cleanup`, then the network made again) is told apart.
fn network_rules(tag: &str, d: &Definition) -> Vec<(String, bool, String)> {
    let (s, b) = (d.subnet, &d.bridge);
    let mut wanted = vec![];
    if !d.internal {
        wanted.push((
            "masq",
            true,
            format!("-A POSTROUTING -s {s} ! -o {b}"),
            "MASQUERADE",
        ));
    }
    // A port published on 127.0.0.1 arrives from loopback: the reply must come back to it.
    wanted.extend([
        (
            "local",
            true,
            format!("-A POSTROUTING -s 127.0.0.0/8 -o {b}"),
            "MASQUERADE",
        ),
        ("out", false, format!("-I FORWARD -s {s}"), "ACCEPT"),
        (
            "in",
            false,
            format!("-I FORWARD -d {s} -m conntrack --ctstate RELATED,ESTABLISHED"),
            "ACCEPT",
        ),
    ]);
    wanted
        .into_iter()
        .map(|(what, nat, matches, target)| {
            let c = network_comment(tag, &d.name, &format!("{what}:{s}:{b}"));
            let line = format!("{matches} -m comment --comment {c} -j {target}");
            (c, nat, line)
        })
        .collect()
}

/// The lines of `wanted` whose comment `saved` (iptables-save's output) lacks.
fn missing(saved: &str, wanted: Vec<(String, bool, String)>) -> Batch {
    let mut b = Batch::default();
    for (comment, nat, line) in wanted {
        let present = saved.lines().any(|l| has_comment(l, &comment));
        if !present {
            if nat { &mut b.nat } else { &mut b.filter }.push(line);
        }
    }
    b
}

fn has_comment(line: &str, comment: &str) -> bool {
    line.split(' ').any(|w| w.trim_matches('"') == comment)
}

/// Puts the network's masquerade and forwarding rules in place if any is missing (and takes
/// away rules of its name that are not its own: an earlier network's), and turns IPv4
/// forwarding on (as the bridge plugin does for a gateway).
pub fn ensure_network(tag: &str, d: &Definition) -> Result<()> {
    let saved = save()?;
    let wanted = network_rules(tag, d);
    let name_prefix = network_comment(tag, &d.name, "");
    super::host::remove_matching(&saved, |rule| {
        rule.contains(&name_prefix) && !wanted.iter().any(|(c, _, _)| has_comment(rule, c))
    })?;
    let b = missing(&saved, wanted);
    if !b.is_empty() {
        restore(&b.input())?;
    }
    sysctl("/proc/sys/net/ipv4/ip_forward")
}

/// Removes a network's rules (when the network goes).
pub fn remove_network(tag: &str, network: &str) -> Result<()> {
    remove_commented(&network_comment(tag, network, ""))
}

/// A container's published ports: DNAT from the host's addresses (or the one each names),
/// from outside and from the host itself, and masquerade for what reaches it that way from
/// its own subnet (itself, through hairpin, or a neighbour), so the answer comes back
/// through the host as the plugins' portmap does.
fn port_rules(
    op: char,
    comment: &str,
    ip: Ipv4Addr,
    subnet: Subnet,
    ports: &[PortMapping],
) -> Vec<String> {
    let mut lines = vec![];
    for p in ports {
        if p.host_ip.contains(':') {
            continue; // the container has no IPv6 address to forward to
        }
        let proto = &p.protocol;
        let dst = if p.host_ip.is_empty() {
            String::new()
        } else {
            format!("-d {}/32 ", p.host_ip)
        };
        let (hp, cp) = (p.host_port, p.container_port);
        for chain in ["PREROUTING", "OUTPUT"] {
            lines.push(format!(
                "-{op} {chain} {dst}-p {proto} -m addrtype --dst-type LOCAL -m {proto} --dport {hp} -m comment --comment {comment} -j DNAT --to-destination {ip}:{cp}"
            ));
        }
        lines.push(format!(
            "-{op} POSTROUTING -s {subnet} -d {ip}/32 -p {proto} -m {proto} --dport {cp} -m conntrack --ctstate DNAT -m comment --comment {comment} -j MASQUERADE"
        ));
    }
    lines
}

/// Publishes a container's ports; nothing to run when it publishes none.
pub fn publish(comment: &str, d: &Definition, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
    let nat = port_rules('A', comment, ip, d.subnet, ports);
    if nat.is_empty() {
        return Ok(());
    }
    // DNAT to a container from 127.0.0.1 routes a loopback source onto the bridge.
    sysctl(&format!(
        "/proc/sys/net/ipv4/conf/{}/route_localnet",
        d.bridge
    ))?;
    restore(
        &Batch {
            nat,
            ..Default::default()
        }
        .input(),
    )
}

/// Takes a container's published ports away: its rules exactly, or — when one is already
/// gone — every rule carrying its comment.
pub fn unpublish(comment: &str, d: &Definition, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
    let nat = port_rules('D', comment, ip, d.subnet, ports);
    if nat.is_empty() {
        return Ok(());
    }
    let exact = Batch {
        nat,
        ..Default::default()
    };
    if restore(&exact.input()).is_ok() {
        return Ok(());
    }
    remove_commented(comment)
}

fn sysctl(path: &str) -> Result<()> {
    if std::fs::read(path).is_ok_and(|v| v.starts_with(b"1")) {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| Error::io(format!("write 1 to {path}"), e))
}

fn save() -> Result<String> {
    let out = Command::new("iptables-save")
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io("run iptables-save (install iptables)", e))?;
    if !out.status.success() {
        return Err(Error::new(
            Kind::Internal,
            format!(
                "iptables-save: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes every IPv4 rule whose comment contains `needle` (each rule here is commented
/// with what it belongs to).
fn remove_commented(needle: &str) -> Result<()> {
    let saved = save()?;
    super::host::remove_matching(&saved, |rule| rule.contains(needle))
}

fn restore(input: &str) -> Result<()> {
    super::host::restore("iptables", input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(internal: bool) -> Definition {
        Definition {
            name: "n1".into(),
            subnet: Subnet::parse("10.213.4.0/24").unwrap(),
            gateway: Ipv4Addr::new(10, 213, 4, 1),
            bridge: "berth4".into(),
            internal,
            labels: Default::default(),
            created: 0,
        }
    }

    #[test]
    fn a_network_adds_only_what_is_missing() {
        let all = missing("", network_rules("t1", &def(false)));
        assert_eq!(all.nat.len(), 2);
        assert_eq!(all.filter.len(), 2);
        assert!(
            all.nat[0].contains("-s 10.213.4.0/24 ! -o berth4"),
            "{all:?}"
        );
        assert!(all.filter.iter().all(|l| l.starts_with("-I FORWARD")));
        let saved = "*nat\n-A POSTROUTING -s 10.213.4.0/24 ! -o berth4 -m comment --comment \"berth:t1:net:n1:masq:10.213.4.0/24:berth4\" -j MASQUERADE\n";
        let rest = missing(saved, network_rules("t1", &def(false)));
        assert_eq!(rest.nat.len(), 1);
        assert!(rest.nat[0].contains(":local"));
        // Internal: no masquerade beyond the bridge.
        let internal = missing("", network_rules("t1", &def(true)));
        assert!(!internal.nat.iter().any(|l| l.contains(":masq")));
        // The same network made again on another subnet: the old rule is not its own.
        let again = Definition {
            subnet: Subnet::parse("10.213.5.0/24").unwrap(),
            ..def(false)
        };
        assert_eq!(missing(saved, network_rules("t1", &again)).nat.len(), 2);
        // Another daemon's rule is not ours.
        let other = saved.replace("berth:t1:", "berth:t2:");
        assert_eq!(
            missing(&other, network_rules("t1", &def(false))).nat.len(),
            2
        );
    }

    #[test]
    fn ports_make_dnat_and_hairpin_rules() {
        let ports = [
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
            },
            PortMapping {
                host_port: 53,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 9,
                container_port: 9,
                protocol: "tcp".into(),
                host_ip: "::1".into(),
            },
        ];
        let c = container_comment("t1", "default/web");
        let ip = Ipv4Addr::new(10, 213, 4, 2);
        let subnet = Subnet::parse("10.213.4.0/24").unwrap();
        let add = port_rules('A', &c, ip, subnet, &ports);
        assert_eq!(add.len(), 6, "{add:#?}");
        assert!(add[0].starts_with("-A PREROUTING -d 127.0.0.1/32 -p tcp"));
        assert!(add[0].ends_with("--dport 8080 -m comment --comment berth:t1:ctr:default/web: -j DNAT --to-destination 10.213.4.2:80"));
        assert!(add[4].starts_with("-A OUTPUT -p udp -m addrtype"));
        assert!(add[5].contains("-s 10.213.4.0/24 -d 10.213.4.2/32 -p udp -m udp --dport 53"));
        let del = port_rules('D', &c, ip, subnet, &ports);
        assert!(del
            .iter()
            .zip(&add)
            .all(|(d, a)| d[2..] == a[2..] && d.starts_with("-D")));
        assert!(port_rules('A', &c, ip, subnet, &[]).is_empty());
    }
}
