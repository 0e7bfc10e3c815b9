//! The networks `berth run` asks berthd to join the container to, and the ports it publishes
//! there: both travel as container labels, which berthd reads when it creates the task.

use super::Run;
use anyhow::{anyhow, bail};
use berth_services::network::cni::PortMapping;
use berth_services::network::{DNS_LABEL, NETWORKS_LABEL, PORTS_LABEL};

/// The labels that ask berthd to join the container to its networks.
pub(super) fn labels(r: &Run) -> anyhow::Result<Vec<(&'static str, String)>> {
    let without = if r.host_network() {
        Some("host")
    } else {
        (r.network == "none").then_some("none")
    };
    if let Some(net) = without {
        if !r.publish.is_empty() {
            bail!("-p needs a network to publish from; --network {net} has none");
        }
        if !r.dns.is_empty() {
            bail!("--dns needs a network of berth's; --network {net} has none");
        }
        return Ok(vec![]);
    }
    let mut ports = vec![];
    for p in &r.publish {
        ports.extend(parse_publish(p)?);
    }
    let mut labels = vec![(NETWORKS_LABEL, r.network.clone())];
    if !ports.is_empty() {
        labels.push((PORTS_LABEL, serde_json::to_string(&ports)?));
    }
    if !r.dns.is_empty() {
        labels.push((DNS_LABEL, r.dns.join(",")));
    }
    Ok(labels)
}

/// `-p [IP:]HOST:CONTAINER[/PROTO]` as CNI port mappings; `[::1]:80:80` for IPv6; equal-length
/// ranges map port by port.
fn parse_publish(s: &str) -> anyhow::Result<Vec<PortMapping>> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (s, "tcp"),
    };
    if !["tcp", "udp", "sctp"].contains(&proto) {
        bail!("-p {s:?}: protocol {proto:?} is not tcp, udp or sctp");
    }
    let (ip, rest) = if let Some(r) = spec.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| anyhow!("-p {s:?}: use [IPv6]:HOST:CONTAINER"))?;
        (ip.to_string(), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            2 => (String::new(), spec),
            3 => (parts[0].to_string(), &spec[parts[0].len() + 1..]),
            _ => bail!("-p {s:?}: use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        bail!("-p {s:?}: {ip:?} is not an IP address");
    }
    let (host, ctr) = rest
        .split_once(':')
        .ok_or_else(|| anyhow!("-p {s:?}: use [IP:]HOST_PORT:CONTAINER_PORT"))?;
    let range = |r: &str| -> anyhow::Result<(i32, i32)> {
        let port = |p: &str| -> anyhow::Result<i32> {
            match p.parse::<i32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n),
                _ => bail!("-p {s:?}: {p:?} is not a port (1-65535)"),
            }
        };
        match r.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if b < a {
                    bail!("-p {s:?}: range {r:?} runs backwards");
                }
                Ok((a, b))
            }
            None => port(r).map(|p| (p, p)),
        }
    };
    let ((h0, h1), (c0, c1)) = (range(host)?, range(ctr)?);
    if h1 - h0 != c1 - c0 {
        bail!("-p {s:?}: the host and container ranges differ in length");
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
}
