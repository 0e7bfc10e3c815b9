//! rtnetlink over a raw `NETLINK_ROUTE` socket: the few requests berth's own bridge networks
//! make — a veth pair with one end in a container's namespace and the other on a bridge,
//! hairpin on that port, an address, a route, a link up or deleted — each one message the
//! kernel acknowledges. Hand-written rather than a crate: six message shapes, no new
//! dependency in berthd, and the only `unsafe` of berth's networking lives here.
//!
//! A socket works in the network namespace it was opened in ([`Socket::open_in`] opens one
//! inside a container's from a thread of its own), whatever thread later uses it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

// Message types and flags (linux/rtnetlink.h, linux/netlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

// Link attributes (linux/if_link.h, linux/veth.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_TXQLEN: u16 = 13;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BRPORT_MODE: u16 = 4;

// Address and route attributes (linux/if_addr.h, linux/rtnetlink.h).
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const IFF_UP: u32 = libc::IFF_UP as u32;
const HEADER_LEN: usize = 16;

/// One netlink request under construction: the header, a fixed struct, then attributes
/// (each padded to 4 bytes), nested ones closed by [`Message::end`].
struct Message {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by send
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        Message { buf, open: vec![] }
    }

    /// `struct ifinfomsg`: family, type, index, flags and the flags to change.
    fn ifinfo(mut self, family: u8, index: i32, flags: u32, change: u32) -> Self {
        push_ifinfo(&mut self.buf, family, index, flags, change);
        self
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn str_attr(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(kind, &b)
    }

    /// Opens a nested attribute; its length is written by [`Message::end`].
    fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(at) = self.open.pop() {
            let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn push_ifinfo(buf: &mut Vec<u8>, family: u8, index: i32, flags: u32, change: u32) {
    buf.extend_from_slice(&[family, 0]);
    buf.extend_from_slice(&0u16.to_ne_bytes()); // device type
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

/// A veth pair to make: `host` on the bridge with index `master` (hairpin on, up), and
/// `peer` inside the namespace open as `netns`.
pub struct VethPair<'a> {
    pub host: &'a str,
    pub master: i32,
    pub peer: &'a str,
    pub netns: &'a std::fs::File,
}

/// A `NETLINK_ROUTE` socket bound in the namespace it was opened in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the descriptor is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Socket { fd, seq: 0 })
    }

    /// A socket inside the network namespace pinned at `netns`, opened from a short-lived
    /// thread of its own so that no other thread changes namespace.
    pub fn open_in(netns: &Path) -> io::Result<Socket> {
        let ns = std::fs::File::open(netns)?;
        std::thread::spawn(move || {
            // SAFETY: setns on a namespace file we hold open; it changes only this thread,
            // which ends once the socket is made.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Socket::open()
        })
        .join()
        .map_err(|_| io::Error::other("the netlink namespace thread panicked"))?
    }

    /// Sends `msg` and waits for the kernel's answer: the replies before its
    /// acknowledgement, or the error it reports.
    fn call(&mut self, msg: Message) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: a send of an initialised buffer of its own length on our socket (the
        // kernel is the default destination of an unbound netlink socket).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut replies = vec![];
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: recv into a buffer we own, at most its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= HEADER_LEN {
                let len = u32_at(rest, 0) as usize;
                if len < HEADER_LEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let (kind, mseq) = (u16_at(rest, 4), u32_at(rest, 8));
                let body = &rest[HEADER_LEN..len];
                rest = &rest[align(len).min(rest.len())..];
                if mseq != seq {
                    continue; // an answer to an earlier request
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = if body.len() >= 4 {
                            i32::from_ne_bytes([body[0], body[1], body[2], body[3]])
                        } else {
                            0
                        };
                        return if code == 0 {
                            Ok(replies)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push(body.to_vec()),
                }
            }
        }
    }

    /// The index of the link called `name`.
    pub fn link_index(&mut self, name: &str) -> io::Result<i32> {
        let mut m = Message::new(RTM_GETLINK, 0).ifinfo(libc::AF_UNSPEC as u8, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, name);
        let replies = self.call(m)?;
        let first = replies
            .first()
            .filter(|r| r.len() >= 16)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link {name}")))?;
        Ok(i32::from_ne_bytes([first[4], first[5], first[6], first[7]]))
    }

    /// Makes the veth pair (failing if `host` exists), its host end on the bridge and up,
    /// its peer moved into the namespace in the same request.
    pub fn add_veth(&mut self, v: &VethPair<'_>) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(
            libc::AF_UNSPEC as u8,
            0,
            IFF_UP,
            IFF_UP,
        );
        // No transmit queue length, as the CNI plugins make their veths (noqueue either way).
        m.str_attr(IFLA_IFNAME, v.host)
            .attr(IFLA_TXQLEN, &0u32.to_ne_bytes())
            .attr(IFLA_MASTER, &v.master.to_ne_bytes())
            .begin(IFLA_LINKINFO)
            .str_attr(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER);
        push_ifinfo(&mut m.buf, libc::AF_UNSPEC as u8, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, v.peer)
            .attr(IFLA_TXQLEN, &0u32.to_ne_bytes())
            .attr(IFLA_NET_NS_FD, &v.netns.as_raw_fd().to_ne_bytes())
            .end()
            .end()
            .end();
        self.call(m).map(drop)
    }

    /// Turns hairpin on for the bridge port `index`: a container reaches itself through a
    /// published port.
    pub fn set_hairpin(&mut self, index: i32) -> io::Result<()> {
        let mut m = Message::new(RTM_SETLINK, 0).ifinfo(libc::AF_BRIDGE as u8, index, 0, 0);
        m.begin(IFLA_PROTINFO).attr(IFLA_BRPORT_MODE, &[1]).end();
        self.call(m).map(drop)
    }

    pub fn set_up(&mut self, index: i32) -> io::Result<()> {
        let m = Message::new(RTM_SETLINK, 0).ifinfo(libc::AF_UNSPEC as u8, index, IFF_UP, IFF_UP);
        self.call(m).map(drop)
    }

    pub fn set_down(&mut self, index: i32) -> io::Result<()> {
        let m = Message::new(RTM_SETLINK, 0).ifinfo(libc::AF_UNSPEC as u8, index, 0, IFF_UP);
        self.call(m).map(drop)
    }

    /// Deletes the link called `name`; with a veth, its peer goes too.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Message::new(RTM_DELLINK, 0).ifinfo(libc::AF_UNSPEC as u8, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, name);
        self.call(m).map(drop)
    }

    /// Adds `ip/len` to the link `index`, with the prefix's broadcast address.
    pub fn add_address(&mut self, index: i32, ip: Ipv4Addr, len: u8) -> io::Result<()> {
        let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(ip) | host_bits);
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, len, 0, RT_SCOPE_UNIVERSE]);
        m.buf
            .extend_from_slice(&u32::try_from(index).unwrap_or(0).to_ne_bytes());
        m.attr(IFA_LOCAL, &ip.octets())
            .attr(IFA_ADDRESS, &ip.octets())
            .attr(IFA_BROADCAST, &broadcast.octets());
        self.call(m).map(drop)
    }

    /// Adds the default route through `gateway` on the link `index`.
    pub fn add_default_route(&mut self, index: i32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        m.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            0, // destination length: the default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.call(m).map(drop)
    }
}

/// Whether the calling thread's namespace has a link called `name`.
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a NUL-terminated name; 0 means no such link.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_lengths() {
        let mut m = Message::new(RTM_NEWLINK, 0).ifinfo(0, 7, IFF_UP, IFF_UP);
        m.begin(IFLA_LINKINFO)
            .str_attr(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish(9);
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(u32_at(&b, 8), 9);
        assert_eq!(i32::from_ne_bytes([b[20], b[21], b[22], b[23]]), 7);
        // The nest: its header (4) + "veth\0" in an attribute (4 + 5, padded to 12).
        assert_eq!(u16_at(&b, 32), 16);
        assert_eq!(u16_at(&b, 34), IFLA_LINKINFO | NLA_F_NESTED);
        assert_eq!(u16_at(&b, 36), 9);
        assert_eq!(&b[40..45], b"veth\0");
        assert!(b.len().is_multiple_of(4));
    }

    #[test]
    fn a_veth_pair_crosses_into_a_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("ns");
        super::super::netns::create_netns(&pin).unwrap();
        let mut host = Socket::open().unwrap();
        let name = format!("bt{}", std::process::id());
        let bridge = format!("{name}b");
        let ok = std::process::Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .status()
            .unwrap();
        assert!(ok.success());
        let master = host.link_index(&bridge).unwrap();
        let ns = std::fs::File::open(&pin).unwrap();
        host.add_veth(&VethPair {
            host: &name,
            master,
            peer: "eth0",
            netns: &ns,
        })
        .unwrap();
        let index = host.link_index(&name).unwrap();
        host.set_hairpin(index).unwrap();
        let e = host
            .add_veth(&VethPair {
                host: &name,
                master,
                peer: "eth0",
                netns: &ns,
            })
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let mut inside = Socket::open_in(&pin).unwrap();
        let eth0 = inside.link_index("eth0").unwrap();
        inside
            .add_address(eth0, Ipv4Addr::new(10, 254, 9, 2), 24)
            .unwrap();
        inside.set_up(eth0).unwrap();
        inside
            .add_default_route(eth0, Ipv4Addr::new(10, 254, 9, 1))
            .unwrap();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", pin.display()))
            .args(["ip", "-4", "route"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&out.stdout);
        assert!(
            routes.contains("default via 10.254.9.1 dev eth0"),
            "{routes}"
        );
        let hairpin =
            std::fs::read_to_string(format!("/sys/class/net/{name}/brport/hairpin_mode")).unwrap();
        assert_eq!(hairpin.trim(), "1");
        host.delete_link(&name).unwrap();
        assert!(inside.link_index("eth0").is_err(), "the peer went with it");
        host.delete_link(&bridge).unwrap();
        super::super::netns::remove_netns(&pin).unwrap();
    }
}
