//! Pod sandboxes: the pause container that holds a pod's namespaces, its network (a pinned
//! network namespace wired by CNI), and the files its containers share (hostname, hosts,
//! resolv.conf, /dev/shm).

pub mod api;
mod exit;
mod list;
mod remove;
mod run;
mod status;
mod stop;
mod update;

use super::spec::{self, SandboxFiles};
use super::{init_ref, Cri, Sandbox, SandboxMeta};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::containers::{AnyValue, ContainerRecord};
use crate::core::metadata::Labels;
use crate::core::network::cni::{self, Attachment, PortMapping};
use crate::core::network::files::{self, Dns, Loopback};
use crate::core::network::netns;
use crate::core::runtime::CreateTask;
use berth_proto::cri::v1 as cri;
use std::path::{Path, PathBuf};

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

fn sandbox_name(m: &cri::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The pod's resolv.conf: its DNS config, or the host's file as it is.
fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Result<String> {
    let host = match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            String::new()
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    let dns = dns.map_or_else(Dns::default, |d| Dns {
        servers: &d.servers,
        searches: &d.searches,
        options: &d.options,
    });
    Ok(files::resolv_conf_for(&host, None, dns, Loopback::Keep))
}

fn mount_shm(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("NUL in path"))?;
    let (src, fs, data) = (c"shm", c"tmpfs", c"mode=1777,size=65536k");
    // SAFETY: mount with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr() as *const libc::c_void,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("mount the pod's shm at {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: umount2 on a NUL-terminated path; failure (not mounted) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Cri {
    fn host_network(config: &cri::PodSandboxConfig) -> bool {
        config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32)
    }

    fn host_ipc(config: &cri::PodSandboxConfig) -> bool {
        config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.ipc == cri::NamespaceMode::Node as i32)
    }

    /// The pod's files live in its state directory, which others may pass through (0711
    /// down from berthd's state): a user-namespaced container's root is another host uid,
    /// and the native runtime resolves bind-mount sources from inside the container's user
    /// namespace. A pod made before they moved there keeps them under berthd's root.
    pub(super) fn sandbox_files(&self, s: &Sandbox) -> SandboxFiles {
        let old = self.sandbox_dir(&s.id);
        let dir = if old.join("hostname").exists() {
            old
        } else {
            self.sandbox_state_dir(&s.id)
        };
        SandboxFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv: dir.join("resolv.conf"),
            shm: (!Self::host_ipc(&s.config)).then(|| self.sandbox_state_dir(&s.id).join("shm")),
        }
    }

    fn attachment(&self, s: &Sandbox) -> Attachment {
        let m = s.config.metadata.clone().unwrap_or_default();
        Attachment {
            id: s.id.clone(),
            netns: PathBuf::from(&s.meta.netns),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                m.namespace, m.name, s.id, m.uid
            ),
            ipam_data_dir: None,
            ifname: cni::IFNAME.into(),
            port_mappings: s
                .config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| {
                    let proto =
                        match cri::Protocol::try_from(p.protocol).unwrap_or(cri::Protocol::Tcp) {
                            cri::Protocol::Tcp => "tcp",
                            cri::Protocol::Udp => "udp",
                            cri::Protocol::Sctp => "sctp",
                        };
                    PortMapping {
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: proto.to_string(),
                        host_ip: p.host_ip.clone(),
                    }
                })
                .collect(),
        }
    }
}
