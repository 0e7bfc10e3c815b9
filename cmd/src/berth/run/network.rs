//! The networks `berth run` asks berthd to join the container to, and the ports it publishes
//! there: both travel as container labels, which berthd reads when it creates the task.

use super::Run;
use anyhow::{anyhow, bail};
use berth_client::network::{parse_publish, DNS_LABEL, NETWORKS_LABEL, PORTS_LABEL};

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
        ports.extend(parse_publish(p).map_err(|e| anyhow!("-p {e}"))?);
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
