//! What `start` is given and answers, for either generation of caller: containerd 1.x,
//! 2.0–2.2 and berthd write the runtime options (a protobuf `Any`, or nothing) on stdin and
//! read a bare address; containerd 2.3 writes `containerd.runtime.bootstrap.v1`'s
//! `BootstrapParams` and reads a `BootstrapResult`. Every caller also parses a bare
//! address, but a 2.3 caller is answered in its own words.
//!
//! Also the shim's own cgroup (runc options' `ShimCgroup`), which `start` puts the serving
//! shim into, as containerd's runc shim does.

use berth_proto::containerd::runc::v1::Options as RuncOptions;
use prost::Message;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use berth_proto::containerd::runtime::bootstrap::v1::{BootstrapParams, BootstrapResult};

/// The most `start` or `-info` reads from stdin (containerd's shims take 10 MiB; options are
/// small).
const MAX_INPUT: usize = 1 << 20;

/// Reads stdin to its end: the caller's options or params, refused past [`MAX_INPUT`] bytes
/// (cut short, they would decode as something else or nothing).
pub fn read_stdin() -> Result<Vec<u8>, String> {
    read_bounded(std::io::stdin().lock())
}

fn read_bounded(r: impl Read) -> Result<Vec<u8>, String> {
    let mut input = vec![];
    r.take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("read stdin: {e}"))?;
    if input.len() > MAX_INPUT {
        return Err(format!(
            "stdin holds more than {MAX_INPUT} bytes: not options"
        ));
    }
    Ok(input)
}

/// Whether a type URL names runc's options (bare, or under a typeurl prefix such as
/// `type.googleapis.com/`).
pub fn names_runc_options(url: &str) -> bool {
    url.rsplit('/').next() == Some(RUNC_OPTIONS)
}

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// What the caller gave on stdin.
#[derive(Debug, Default, PartialEq)]
pub struct Given {
    /// Set when the caller speaks containerd 2.3's bootstrap protocol.
    pub params: Option<BootstrapParams>,
    /// runc's options, if the caller gave them.
    pub options: Option<RuncOptions>,
}

impl Given {
    /// Reads stdin to its end.
    pub fn read(id: &str, namespace: &str) -> Result<Given, String> {
        Ok(Given::decode(&read_stdin()?, id, namespace))
    }

    /// Bootstrap params are told from an `Any` by naming this very shim (an `Any` of
    /// options would decode as params too: its type URL read as the instance id).
    pub fn decode(input: &[u8], id: &str, namespace: &str) -> Given {
        if input.is_empty() {
            return Given::default();
        }
        if let Ok(p) = BootstrapParams::decode(input) {
            if p.instance_id == id && p.namespace == namespace {
                let options = p
                    .extensions
                    .iter()
                    .filter_map(|e| e.value.as_ref())
                    .find_map(runc_options);
                return Given {
                    params: Some(p),
                    options,
                };
            }
        }
        Given {
            params: None,
            options: prost_types::Any::decode(input)
                .ok()
                .as_ref()
                .and_then(runc_options),
        }
    }

    /// The cgroup the caller wants the shim in.
    pub fn shim_cgroup(&self) -> Option<&str> {
        self.options
            .as_ref()
            .map(|o| o.shim_cgroup.as_str())
            .filter(|c| !c.is_empty())
    }

    /// Where the caller wants the shim's socket, if it said.
    pub fn socket_dir(&self) -> Option<PathBuf> {
        self.params
            .as_ref()
            .and_then(|p| p.socket_dir.as_deref())
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    }

    /// The caller's events socket, if it named one.
    pub fn ttrpc_address(&self) -> Option<String> {
        self.params
            .as_ref()
            .map(|p| p.containerd_ttrpc_address.clone())
            .filter(|a| !a.is_empty())
    }

    /// The answer on stdout: a `BootstrapResult` (Task API v2 over ttrpc) to a caller that
    /// gave bootstrap params, else the bare address.
    pub fn answer(&self, socket: &Path) -> Vec<u8> {
        let address = format!("unix://{}", socket.display());
        match self.params {
            Some(_) => BootstrapResult {
                version: 2,
                address,
                protocol: "ttrpc".into(),
            }
            .encode_to_vec(),
            None => address.into_bytes(),
        }
    }
}

fn runc_options(any: &prost_types::Any) -> Option<RuncOptions> {
    if !names_runc_options(&any.type_url) {
        return None;
    }
    RuncOptions::decode(any.value.as_slice()).ok()
}

/// Moves process `pid` into the cgroup at `path` (relative to the cgroup root): the one
/// directory on cgroup v2, or each v1 hierarchy that has it.
pub fn join_cgroup(pid: i32, path: &str) -> Result<(), String> {
    join_cgroup_under(Path::new("/sys/fs/cgroup"), pid, path)
}

fn join_cgroup_under(root: &Path, pid: i32, path: &str) -> Result<(), String> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("shim cgroup {path:?} is not a plain cgroup path"));
    }
    let dirs: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.join(rel)]
    } else {
        let mut hierarchies: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| format!("read {}: {e}", root.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().join(rel))
            .collect();
        hierarchies.sort();
        hierarchies
    };
    let existing: Vec<&PathBuf> = dirs.iter().filter(|d| d.is_dir()).collect();
    if existing.is_empty() {
        return Err(format!(
            "shim cgroup {path}: no such cgroup under {}",
            root.display()
        ));
    }
    for d in existing {
        let procs = d.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .map_err(|e| format!("join shim cgroup {}: {e}", procs.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_past_the_limit_is_refused_not_cut() {
        let exact = vec![7u8; MAX_INPUT];
        assert_eq!(read_bounded(exact.as_slice()).unwrap().len(), MAX_INPUT);
        let e = read_bounded(std::io::repeat(7)).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        assert!(names_runc_options("containerd.runc.v1.Options"));
        assert!(names_runc_options(
            "type.googleapis.com/containerd.runc.v1.Options"
        ));
        assert!(!names_runc_options("xcontainerd.runc.v1.Options"));
        assert!(!names_runc_options("containerd.types.Other"));
    }

    fn options_any(cgroup: &str) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/{RUNC_OPTIONS}"),
            value: RuncOptions {
                shim_cgroup: cgroup.into(),
                root: "/run/berth/runc".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn both_callers_stdin_reads() {
        assert_eq!(Given::decode(b"", "c1", "default"), Given::default());
        // containerd 1.x, 2.0–2.2, berthd: the options' Any.
        let legacy = Given::decode(&options_any("/shims").encode_to_vec(), "c1", "default");
        assert!(legacy.params.is_none());
        assert_eq!(legacy.shim_cgroup(), Some("/shims"));
        assert_eq!(legacy.answer(Path::new("/run/s/x")), b"unix:///run/s/x");
        // containerd 2.3: bootstrap params carrying them.
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            extensions: vec![berth_proto::containerd::runtime::bootstrap::v1::Extension {
                value: Some(options_any("/pods/shim")),
            }],
            socket_dir: Some("/run/containerd/s".into()),
            ..Default::default()
        };
        let boot = Given::decode(&params.encode_to_vec(), "c1", "default");
        assert_eq!(boot.shim_cgroup(), Some("/pods/shim"));
        assert_eq!(boot.socket_dir(), Some(PathBuf::from("/run/containerd/s")));
        assert_eq!(
            boot.ttrpc_address().as_deref(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        let answer =
            BootstrapResult::decode(boot.answer(Path::new("/run/s/x")).as_slice()).unwrap();
        assert_eq!(
            (
                answer.version,
                answer.address.as_str(),
                answer.protocol.as_str()
            ),
            (2, "unix:///run/s/x", "ttrpc")
        );
        // Params for another shim are not these; garbage gives nothing.
        let other = Given::decode(&params.encode_to_vec(), "c2", "default");
        assert!(other.params.is_none() && other.options.is_none());
        assert_eq!(
            Given::decode(b"\xff\xff\xff", "c1", "default"),
            Given::default()
        );
    }

    #[test]
    fn cgroups_are_joined_in_every_hierarchy_that_has_them() {
        let v1 = tempfile::tempdir().unwrap();
        for h in ["cpu", "memory"] {
            std::fs::create_dir_all(v1.path().join(h).join("shims/a")).unwrap();
        }
        std::fs::create_dir_all(v1.path().join("pids")).unwrap();
        join_cgroup_under(v1.path(), 42, "/shims/a").unwrap();
        for h in ["cpu", "memory"] {
            let procs = v1.path().join(h).join("shims/a/cgroup.procs");
            assert_eq!(std::fs::read_to_string(procs).unwrap(), "42");
        }
        assert!(!v1.path().join("pids/shims").exists());

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let err = join_cgroup_under(v2.path(), 42, "/missing").unwrap_err();
        assert!(err.contains("no such cgroup"), "{err}");
        std::fs::create_dir(v2.path().join("shim")).unwrap();
        join_cgroup_under(v2.path(), 7, "shim").unwrap();
        let procs = v2.path().join("shim/cgroup.procs");
        assert_eq!(std::fs::read_to_string(procs).unwrap(), "7");
        assert!(join_cgroup_under(v2.path(), 7, "/a/../../etc").is_err());
    }
}
