//! What a client asks of berthd's container networks: the container labels berthd reads
//! when it creates the task (networks to join, ports to publish, nameservers), and port
//! mappings in CNI's form, parsed from Docker's `-p` notation. The labels and the mapping
//! are berthd's own (`services/src/core/network`), spoken from this side of the API.

use serde::{Deserialize, Serialize};

/// Comma-separated networks a container joins (its first gets published ports).
pub const NETWORKS_LABEL: &str = "berth.networks";
/// JSON list of CNI port mappings to publish.
pub const PORTS_LABEL: &str = "berth.ports";
/// Comma-separated nameservers for the container's resolv.conf.
pub const DNS_LABEL: &str = "berth.dns";

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

/// A port mapping that is not one, naming what was given and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{given:?}: {why}")]
    Publish { given: String, why: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `[IP:]HOST:CONTAINER[/PROTO]` (Docker's `-p`) as CNI port mappings; `[::1]:80:80` for
/// IPv6; equal-length ranges (`8000-8009:80-89`) map port by port.
pub fn parse_publish(s: &str) -> Result<Vec<PortMapping>> {
    let bad = |why: String| Error::Publish {
        given: s.to_string(),
        why,
    };
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (s, "tcp"),
    };
    if !["tcp", "udp", "sctp"].contains(&proto) {
        return Err(bad(format!("protocol {proto:?} is not tcp, udp or sctp")));
    }
    let (ip, rest) = split_ip(spec).ok_or_else(|| bad(ip_usage(spec).into()))?;
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!("{ip:?} is not an IP address")));
    }
    let (host, ctr) = rest
        .split_once(':')
        .ok_or_else(|| bad("use [IP:]HOST_PORT:CONTAINER_PORT".into()))?;
    let ((h0, h1), (c0, c1)) = (
        port_range(host).map_err(bad)?,
        port_range(ctr).map_err(bad)?,
    );
    if h1 - h0 != c1 - c0 {
        return Err(bad("the host and container ranges differ in length".into()));
    }
    Ok((0..=h1 - h0)
        .map(|i| PortMapping {
            host_port: h0 + i,
            container_port: c0 + i,
            protocol: proto.to_string(),
            host_ip: ip.clone(),
        })
        .collect())
}

/// `[IPv6]:REST`, `IP:HOST:CONTAINER` or `HOST:CONTAINER` as (the IP or "", the ports).
fn split_ip(spec: &str) -> Option<(String, &str)> {
    if let Some(r) = spec.strip_prefix('[') {
        let (ip, rest) = r.split_once("]:")?;
        return Some((ip.to_string(), rest));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.len() {
        2 => Some((String::new(), spec)),
        3 => Some((parts[0].to_string(), &spec[parts[0].len() + 1..])),
        _ => None,
    }
}

/// What [`split_ip`] wanted and did not find.
fn ip_usage(spec: &str) -> &'static str {
    if spec.starts_with('[') {
        "use [IPv6]:HOST:CONTAINER"
    } else {
        "use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"
    }
}

/// `P` or `FIRST-LAST`, ports from 1 to 65535, as (first, last).
fn port_range(r: &str) -> std::result::Result<(i32, i32), String> {
    let port = |p: &str| match p.parse::<i32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n),
        _ => Err(format!("{p:?} is not a port (1-65535)")),
    };
    match r.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!("range {r:?} runs backwards"));
            }
            Ok((a, b))
        }
        None => port(r).map(|p| (p, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let one = parse_publish("127.0.0.1:18080:80").unwrap();
        assert_eq!(
            serde_json::to_value(&one).unwrap(),
            serde_json::json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
        let udp = parse_publish("53:5353/udp").unwrap();
        assert_eq!(udp[0].protocol, "udp");
        assert_eq!(udp[0].host_ip, "");
        let v6 = parse_publish("[::1]:8080:80").unwrap();
        assert_eq!(v6[0].host_ip, "::1");
        let range = parse_publish("8000-8002:80-82").unwrap();
        assert_eq!(range.len(), 3);
        assert_eq!(range[2].host_port, 8002);
        assert_eq!(range[2].container_port, 82);
        for bad in [
            "80",
            "0:80",
            "80:70000",
            "x:80",
            "1.2.3:80:80",
            "80:80/icmp",
            "8000-8001:80",
            "9-8:9-8",
            "a:b:c:d",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mistakes_name_what_was_given() {
        let said = |s: &str| parse_publish(s).unwrap_err().to_string();
        assert_eq!(
            said("80"),
            r#""80": use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"#
        );
        assert_eq!(
            said("[::1]80:80"),
            r#""[::1]80:80": use [IPv6]:HOST:CONTAINER"#
        );
        assert_eq!(
            said("70000:80"),
            r#""70000:80": "70000" is not a port (1-65535)"#
        );
        assert_eq!(said("9-8:9-8"), r#""9-8:9-8": range "9-8" runs backwards"#);
    }
}
