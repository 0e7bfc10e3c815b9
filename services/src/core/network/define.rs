//! What a berth network is on disk: a CNI conflist berth writes (bridge with its own subnet
//! and masquerade, portmap for published ports, firewall so a host with a dropping FORWARD
//! policy still forwards), plus berth's own description of it under the `berth` key.

use crate::core::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The network `berth run` uses unless told otherwise; made on first use.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's Linux bridge.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Subnets handed out when none is asked for: 10.213.N.0/24.
const POOL: [u8; 2] = [10, 213];

/// berth's description of a network, kept in its conflist under `berth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// No masquerade: containers reach each other and the host, not beyond.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: i64,
}

/// An IPv4 prefix, normalised (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "subnet {s:?} is not an IPv4 prefix like 10.1.2.0/24"
            ))
        };
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&len) {
            return Err(Error::invalid(format!(
                "subnet {s:?}: the prefix length must be between 8 and 30"
            )));
        }
        let sub = Subnet { addr, len };
        if u32::from(addr) & !sub.mask() != 0 {
            return Err(Error::invalid(format!(
                "subnet {s:?} has host bits set; did you mean {}?",
                Subnet {
                    addr: Ipv4Addr::from(u32::from(addr) & sub.mask()),
                    len
                }
            )));
        }
        Ok(sub)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = if self.len <= other.len { self } else { other };
        let longer = if self.len <= other.len { other } else { self };
        shorter.contains(longer.addr)
    }

    /// The first host address: the gateway by habit.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Subnet::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Network names become file and bridge names: short, plain, no surprises.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok || ["host", "none"].contains(&name) {
        return Err(Error::invalid(format!(
            "network name {name:?}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit (not host or none)"
        )));
    }
    Ok(())
}

/// The Linux bridges a network may take, in order of preference: `berth0`, `berth1`, … for
/// the default one; `br-` and 12 hex digits of a hash of the name and the daemon's conf dir
/// for the others (interface names stop at 15 bytes), so that two daemons on one host pick
/// different ones.
pub fn bridge_names(name: &str, conf_dir: &std::path::Path) -> Vec<String> {
    if name == DEFAULT_NETWORK {
        return (0..100)
            .map(|i| format!("{}{i}", DEFAULT_BRIDGE.trim_end_matches('0')))
            .collect();
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(conf_dir.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    vec![format!("br-{}", &hex::encode(h.finalize())[..12])]
}

/// The first 10.213.N.0/24 that overlaps neither `taken` nor a route of the host.
pub fn free_subnet(taken: &[Subnet], host_routes: &[Subnet]) -> Result<Subnet> {
    (0..=255u8)
        .map(|n| Subnet {
            addr: Ipv4Addr::new(POOL[0], POOL[1], n, 0),
            len: 24,
        })
        .find(|s| !taken.iter().chain(host_routes).any(|t| t.overlaps(s)))
        .ok_or_else(|| Error::precondition("every 10.213.N.0/24 subnet is in use: pass --subnet"))
}

/// The host's routed prefixes other than the default route (from /proc/net/route).
pub fn host_routes() -> Vec<Subnet> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return vec![];
    };
    let hex_ip = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dst, mask) = (hex_ip(f.get(1)?)?, hex_ip(f.get(7)?)?);
            let len = u32::from(mask).count_ones() as u8;
            (len > 0).then_some(Subnet { addr: dst, len })
        })
        .collect()
}

impl Definition {
    /// The conflist berth writes for this network.
    pub fn conflist(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "berth": self,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": !self.internal,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet.to_string(), "gateway": self.gateway.to_string()}]],
                        "routes": if self.internal { json!([]) } else { json!([{"dst": "0.0.0.0/0"}]) }
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "firewall"}
            ]
        })
    }

    /// berth's description inside a conflist, when berth wrote it.
    pub fn from_conflist(conf: &Value) -> Option<Self> {
        serde_json::from_value(conf.get("berth")?.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_strictly_and_overlap() {
        let s = Subnet::parse("10.1.2.0/24").unwrap();
        assert_eq!(s.to_string(), "10.1.2.0/24");
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 1, 2, 1));
        for bad in [
            "10.1.2.5/24",
            "10.1.2.0",
            "10.1.2.0/33",
            "10.1.2.0/4",
            "x/24",
            "::1/64",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        let wide = Subnet::parse("10.0.0.0/8").unwrap();
        assert!(wide.overlaps(&s) && s.overlaps(&wide));
        assert!(!s.overlaps(&Subnet::parse("10.1.3.0/24").unwrap()));
    }

    #[test]
    fn free_subnets_skip_what_is_taken_and_routed() {
        let taken = [Subnet::parse("10.213.0.0/24").unwrap()];
        let routes = [Subnet::parse("10.213.1.0/25").unwrap()];
        assert_eq!(
            free_subnet(&taken, &routes).unwrap().to_string(),
            "10.213.2.0/24"
        );
        let all = [Subnet::parse("10.213.0.0/16").unwrap()];
        assert!(free_subnet(&all, &[]).is_err());
    }

    #[test]
    fn names_and_bridges() {
        for ok in ["bridge", "my-net", "a.b_c", "n1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "host", "none", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let dir = std::path::Path::new("/etc/berth/net.d");
        assert_eq!(bridge_names("bridge", dir)[..2], ["berth0", "berth1"]);
        let b = &bridge_names("my-net", dir)[0];
        assert!(b.starts_with("br-") && b.len() == 15, "{b}");
        assert_ne!(b, &bridge_names("my-net", std::path::Path::new("/x"))[0]);
    }

    #[test]
    fn the_conflist_carries_the_definition() {
        let d = Definition {
            name: "n".into(),
            subnet: Subnet::parse("10.5.0.0/24").unwrap(),
            gateway: Ipv4Addr::new(10, 5, 0, 1),
            bridge: "br-x".into(),
            internal: true,
            labels: BTreeMap::from([("k".into(), "v".into())]),
            created: 5,
        };
        let c = d.conflist();
        assert_eq!(Definition::from_conflist(&c), Some(d));
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
    }
}
