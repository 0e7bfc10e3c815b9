//! berth's own bridge networks joined in-process, in place of the CNI bridge, portmap and
//! firewall plugins: an address from [`ipam`] (host-local's leases), a veth pair made by
//! netlink with its peer born inside the container's namespace, on the bridge with hairpin
//! on, the address and default route inside; DNAT rules only for published ports (the
//! network's masquerade and forwarding are set once, by [`nat::ensure_network`]). Leaving
//! deletes the host end (the peer goes with it), gives the lease back and, for a container
//! that published ports, takes its rules away.
//!
//! The answer has the shape of the bridge plugin's ADD result, so the attachment record,
//! `network inspect` and the files are the same whichever path joined.

use super::cni::PortMapping;
use super::define::Definition;
use super::netlink::{Socket, VethPair};
use super::{ipam, nat};
use crate::core::error::{Error, Kind, Result};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// One container's interface on one of berth's own networks.
pub struct Join {
    pub def: Definition,
    /// The id its lease is under (the CNI container id the plugins would get).
    pub id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub ipam_dir: PathBuf,
    /// The comment on its port rules ([`nat::container_comment`]).
    pub comment: String,
    pub ports: Vec<PortMapping>,
}

/// The host end's name: fixed by the lease id and interface, so that leaving finds it
/// without asking the namespace, and unique per daemon (the id ends in its tag).
pub fn host_veth(id: &str, ifname: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(id.as_bytes());
    h.update([0]);
    h.update(ifname.as_bytes());
    format!("veth{}", &hex::encode(h.finalize())[..11])
}

fn netlink_error(what: &str, e: std::io::Error) -> Error {
    Error::io(format!("netlink: {what}"), e)
}

/// Joins: lease, wire, publish. A failure undoes what was done and leaves nothing.
pub fn add(j: &Join) -> Result<Value> {
    let d = &j.def;
    let ip = ipam::allocate(&j.ipam_dir, &d.name, d.subnet, d.gateway, &j.id, &j.ifname)?;
    let veth = host_veth(&j.id, &j.ifname);
    let done = wire(j, &veth, ip).and_then(|()| nat::publish(&j.comment, d, ip, &j.ports));
    if let Err(e) = done {
        if let Ok(mut s) = Socket::open() {
            let _ = s.delete_link(&veth);
        }
        let _ = ipam::release(&j.ipam_dir, &d.name, &j.id, &j.ifname);
        return Err(e);
    }
    let mut result = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": d.bridge},
            {"name": veth},
            {"name": j.ifname, "sandbox": j.netns},
        ],
        "ips": [{
            "address": format!("{ip}/{}", d.subnet.len),
            "gateway": d.gateway.to_string(),
            "interface": 2,
        }],
        "dns": {},
    });
    if !d.internal {
        result["routes"] = json!([{"dst": "0.0.0.0/0", "gw": d.gateway.to_string()}]);
    }
    Ok(result)
}

/// The veth pair, its host end on the bridge (hairpin on), the address and route inside.
fn wire(j: &Join, veth: &str, ip: Ipv4Addr) -> Result<()> {
    let d = &j.def;
    let mut host = Socket::open().map_err(|e| netlink_error("open a socket", e))?;
    let master = host.link_index(&d.bridge).map_err(|e| {
        Error::new(
            Kind::FailedPrecondition,
            format!("network {}: bridge {}: {e}", d.name, d.bridge),
        )
    })?;
    let ns = std::fs::File::open(&j.netns)
        .map_err(|e| Error::io(format!("open {}", j.netns.display()), e))?;
    let pair = VethPair {
        host: veth,
        master,
        peer: &j.ifname,
        netns: &ns,
    };
    if let Err(e) = host.add_veth(&pair) {
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(netlink_error(&format!("add veth {veth}"), e));
        }
        // Left by a join that died half-way under the same id: ours to replace.
        let _ = host.delete_link(veth);
        host.add_veth(&pair)
            .map_err(|e| netlink_error(&format!("add veth {veth}"), e))?;
    }
    let index = host
        .link_index(veth)
        .map_err(|e| netlink_error(&format!("find {veth}"), e))?;
    host.set_hairpin(index)
        .map_err(|e| netlink_error(&format!("hairpin on {veth}"), e))?;
    let mut inside =
        Socket::open_in(&j.netns).map_err(|e| netlink_error("open a socket in the netns", e))?;
    let eth = inside
        .link_index(&j.ifname)
        .map_err(|e| netlink_error(&format!("find {}", j.ifname), e))?;
    inside
        .add_address(eth, ip, d.subnet.len)
        .map_err(|e| netlink_error(&format!("address {ip} on {}", j.ifname), e))?;
    inside
        .set_up(eth)
        .map_err(|e| netlink_error(&format!("set {} up", j.ifname), e))?;
    if !d.internal {
        inside
            .add_default_route(eth, d.gateway)
            .map_err(|e| netlink_error(&format!("default route via {}", d.gateway), e))?;
    }
    Ok(())
}

/// Leaves: the veth pair, the lease, the port rules (`ip` from the join's result; without
/// it no port was published). Absent pieces are fine; every piece is tried.
pub fn del(j: &Join, ip: Option<Ipv4Addr>) -> Result<()> {
    let veth = host_veth(&j.id, &j.ifname);
    let mut first = None;
    match Socket::open().and_then(|mut s| s.delete_link(&veth)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
        Err(e) => {
            first.get_or_insert(netlink_error(&format!("delete {veth}"), e));
        }
    }
    if let Some(ip) = ip {
        if let Err(e) = nat::unpublish(&j.comment, &j.def, ip, &j.ports) {
            first.get_or_insert(e);
        }
    }
    if let Err(e) = ipam::release(&j.ipam_dir, &j.def.name, &j.id, &j.ifname) {
        first.get_or_insert(e);
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_fit_and_differ() {
        let a = host_veth("default-web-abcd1234", "eth0");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with("veth"));
        assert_eq!(a, host_veth("default-web-abcd1234", "eth0"));
        assert_ne!(a, host_veth("default-web-abcd1234", "eth1"));
        assert_ne!(a, host_veth("default-web-ffff0000", "eth0"));
    }
}
