//! containerd-shim-berth-v2: `start` (launch a detached shim and print its address),
//! `delete` (clean up after a shim that is gone), and the shim itself (`serve`).

use berth_proto::containerd::task::v2::DeleteResponse;
use berth_shim::events::Publisher;
use berth_shim::native::Native;
use berth_shim::reaper::Reaper;
use berth_shim::rootfs::unmount_rootfs;
use berth_shim::runc::{Runc, Runtime, Stdio3};
use berth_shim::service::Service;
use prost::Message;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Args {
    namespace: String,
    id: String,
    address: String,
    publish_binary: String,
    bundle: Option<PathBuf>,
    action: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        namespace: String::new(),
        id: String::new(),
        address: String::new(),
        publish_binary: String::new(),
        bundle: None,
        action: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let flag = arg.trim_start_matches('-');
        let (key, inline) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("-{key} needs a value"))
        };
        if !arg.starts_with('-') {
            a.action = arg;
            continue;
        }
        match key.as_str() {
            "namespace" => a.namespace = value()?,
            "id" => a.id = value()?,
            "address" => a.address = value()?,
            "publish-binary" => a.publish_binary = value()?,
            "bundle" => a.bundle = Some(PathBuf::from(value()?)),
            "debug" | "v" => {}
            other => return Err(format!("unknown flag -{other}")),
        }
    }
    if a.id.is_empty() || a.namespace.is_empty() {
        return Err("-namespace and -id are required".into());
    }
    Ok(a)
}

/// `<state>` from `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
fn state_dir(bundle: &Path) -> PathBuf {
    bundle
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/run/berth"))
}

/// The shim's socket: in its bundle when the path fits a sockaddr, else under the state dir.
fn socket_path(bundle: &Path, ns: &str, id: &str) -> PathBuf {
    let p = bundle.join("shim.sock");
    if p.as_os_str().len() < 100 {
        return p;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{ns}/{id}").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    state_dir(bundle).join("s").join(format!("{h:016x}"))
}

/// The environment variable that picks the low-level runtime: `native` (containers made by
/// the shim itself, through libcontainer), `runc`, or the path of a runc-compatible binary.
const RUNTIME_ENV: &str = "BERTH_SHIM_RUNTIME";

/// runc's state for this namespace, under berthd's state directory (as runc's own shim
/// lays it out under the root it is given).
fn runc_for(bundle: &Path, namespace: &str, binary: &str, reaper: Arc<Reaper>) -> Runc {
    Runc {
        binary: binary.into(),
        root: state_dir(bundle).join("runc").join(namespace),
        reaper,
    }
}

/// libcontainer's state for this namespace, beside runc's.
fn native_for(bundle: &Path, namespace: &str, reaper: Arc<Reaper>) -> Native {
    Native {
        root: state_dir(bundle).join("native").join(namespace),
        reaper,
    }
}

/// The runc-compatible binary `BERTH_SHIM_RUNTIME` names (berthd sets it from its
/// configuration), or None for the native runtime.
fn runc_binary() -> Option<String> {
    std::env::var(RUNTIME_ENV)
        .ok()
        .filter(|b| !b.is_empty() && b != "native")
}

/// The runtime named by `BERTH_SHIM_RUNTIME`; but a container whose spec asks for what the
/// native runtime cannot give exactly as runc does runs under runc even when native is
/// named (see [`native_cannot_honour`]).
fn runtime_for(bundle: &Path, namespace: &str, reaper: Arc<Reaper>) -> Box<dyn Runtime> {
    match runc_binary() {
        None if native_cannot_honour(bundle).is_some() => {
            Box::new(runc_for(bundle, namespace, "runc", reaper))
        }
        None => Box::new(native_for(bundle, namespace, reaper)),
        Some(binary) => Box::new(runc_for(bundle, namespace, &binary, reaper)),
    }
}

/// Why the native runtime cannot run the bundle's container exactly as runc would, if it
/// cannot; decided per spec field, from what the isolation suite measured:
/// - a user namespace: libcontainer's exec joins every namespace of the container but the
///   user one, so an exec would run as the host's root;
/// - a seccomp profile with user notification: the filter's listener fd is runc's to hand
///   over.
///
/// A seccomp profile itself is honoured (for execs by [`berth_shim::confine::Confined`]).
fn native_cannot_honour(bundle: &Path) -> Option<&'static str> {
    let spec = std::fs::read(bundle.join("config.json")).ok()?;
    if contains(&spec, b"\\u") {
        // JSON escapes can spell a key or value the scan would not see: read it properly.
        return parsed_cannot_honour(&spec);
    }
    if names_value(&spec, b"\"type\"", |v| v.starts_with(b"\"user\"")) {
        return Some("a user namespace");
    }
    let notify = contains(&spec, b"\"SCMP_ACT_NOTIFY\"")
        || names_value(&spec, b"\"listenerPath\"", |v| !v.starts_with(b"\"\""));
    notify.then_some("seccomp user notification")
}

/// [`native_cannot_honour`] for a spec the scan cannot be trusted with; an unreadable one
/// goes to runc, which will say what is wrong with it.
fn parsed_cannot_honour(text: &[u8]) -> Option<&'static str> {
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(text) else {
        return Some("a spec the shim could not read");
    };
    let linux = &spec["linux"];
    if linux["namespaces"]
        .as_array()
        .is_some_and(|nss| nss.iter().any(|n| n["type"] == "user"))
    {
        return Some("a user namespace");
    }
    let seccomp = &linux["seccomp"];
    let notify = seccomp["listenerPath"]
        .as_str()
        .is_some_and(|p| !p.is_empty())
        || seccomp["syscalls"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["action"] == "SCMP_ACT_NOTIFY"));
    notify.then_some("seccomp user notification")
}

/// Whether the JSON text has the key `key` (quoted) followed by a value `value` accepts:
/// a scan, not a parse, so the serving shim never holds a spec's tree (the only
/// `"type": "user"` of an OCI spec is a user namespace; mounts' types are filesystems).
fn names_value(text: &[u8], key: &[u8], value: impl Fn(&[u8]) -> bool) -> bool {
    let mut rest = text;
    while let Some(at) = find(rest, key) {
        rest = &rest[at + key.len()..];
        let after = trim_start(rest);
        if let Some(v) = after.strip_prefix(b":") {
            if value(trim_start(v)) {
                return true;
            }
        }
    }
    false
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn start(a: &Args) -> Result<(), String> {
    let bundle = std::env::current_dir().map_err(|e| e.to_string())?;
    let sock = socket_path(&bundle, &a.namespace, &a.id);
    let _ = std::fs::remove_file(bundle.join("address"));
    // The serving shim says it is listening by writing a byte to fd 3.
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let (rd, wr) = (fds[0], fds[1]);
    // The serving shim is this process forked, not the binary run again: `start` has one
    // thread, and a fork skips an exec and the dynamic loader (a millisecond of every
    // container start).
    // SAFETY: fork of a single-threaded process; the child continues into `serve`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: the child's own descriptors: a new session, fd 3 the readiness pipe, and
        // stdio on /dev/null (the caller reads `start`'s stdout to its end).
        unsafe {
            libc::setsid();
            libc::close(rd);
            libc::dup2(wr, READY_FD);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        let code = match serve(a) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        std::process::exit(code);
    }
    // SAFETY: closing our copy of the write end, which we own.
    unsafe { libc::close(wr) };
    let mut pfd = libc::pollfd {
        fd: rd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own, then a one-byte read into a local.
    let ready = unsafe {
        let mut b = 0u8;
        libc::poll(&mut pfd, 1, 5000) == 1 && libc::read(rd, (&mut b as *mut u8).cast(), 1) == 1
    };
    // SAFETY: closing the read end we own.
    unsafe { libc::close(rd) };
    if !ready {
        return Err("the shim did not come up within 5s".into());
    }
    print!("unix://{}", sock.display());
    let _ = std::io::stdout().flush();
    Ok(())
}

const READY_FD: i32 = 3;

fn serve(a: &Args) -> Result<(), String> {
    let bundle = std::env::current_dir().map_err(|e| e.to_string())?;
    let sock = socket_path(&bundle, &a.namespace, &a.id);
    if let Some(parent) = sock.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    let ttrpc = std::env::var("TTRPC_ADDRESS").unwrap_or_else(|_| format!("{}.ttrpc", a.address));
    let reaper = Reaper::start();
    let service = Service::new(
        a.id.clone(),
        bundle.clone(),
        runtime_for(&bundle, &a.namespace, reaper.clone()),
        reaper,
        Publisher::new(ttrpc, a.namespace.clone()),
    );
    std::fs::write(bundle.join("address"), format!("unix://{}", sock.display()))
        .map_err(|e| e.to_string())?;
    // SAFETY: fd 3 is the readiness pipe from `start` (if any); a failed write is harmless.
    unsafe {
        libc::write(READY_FD, b"1".as_ptr().cast(), 1);
        libc::close(READY_FD);
    }
    berth_shim::server::serve(listener, service);
    Ok(())
}

fn delete(a: &Args) -> Result<(), String> {
    let bundle = match &a.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    // Whichever runtime made the container: libcontainer's state says it was the native one.
    let reaper = Reaper::start();
    let native = native_for(&bundle, &a.namespace, reaper.clone());
    let runtime: Box<dyn Runtime> = if native.has(&a.id) {
        Box::new(native)
    } else {
        let binary = runc_binary().unwrap_or_else(|| "runc".into());
        Box::new(runc_for(&bundle, &a.namespace, &binary, reaper))
    };
    let _ = runtime.run(&["delete", "--force", &a.id], Stdio3::default());
    unmount_rootfs(&bundle);
    let _ = std::fs::remove_file(socket_path(&bundle, &a.namespace, &a.id));
    let resp = DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(berth_shim::now()),
    };
    std::io::stdout()
        .write_all(&resp.encode_to_vec())
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    let result = parse().and_then(|a| match a.action.as_str() {
        "start" => start(&a),
        "serve" => serve(&a),
        "delete" => delete(&a),
        other => Err(format!(
            "unknown action {other:?}; expected start or delete"
        )),
    });
    if let Err(e) = result {
        eprintln!("containerd-shim-berth-v2: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_refuses_only_what_it_cannot_honour() {
        let d = tempfile::tempdir().unwrap();
        let verdict = |spec: serde_json::Value| {
            std::fs::write(d.path().join("config.json"), spec.to_string()).unwrap();
            native_cannot_honour(d.path())
        };
        let profile = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]});
        assert_eq!(
            verdict(serde_json::json!({"process": {"user": {"uid": 0}},
                "linux": {"namespaces": [{"type": "pid"}], "seccomp": profile}})),
            None
        );
        assert_eq!(
            verdict(serde_json::json!({"linux": {"namespaces": [{"type": "user"}]}})),
            Some("a user namespace")
        );
        assert_eq!(
            verdict(
                serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}}})
            ),
            Some("seccomp user notification")
        );
        assert_eq!(
            verdict(serde_json::json!({"linux": {"seccomp": {"listenerPath": "/run/l.sock"}}})),
            Some("seccomp user notification")
        );
        assert_eq!(
            verdict(serde_json::json!({"linux": {"seccomp": {"listenerPath": ""}}})),
            None
        );
        // Pretty-printed specs read the same; bind mounts are not user namespaces.
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(
            d2.path().join("config.json"),
            "{\n  \"mounts\": [{\"type\": \"bind\"}],\n  \"linux\": {\"namespaces\": [\n    {\"type\" :  \"user\"}]}}",
        )
        .unwrap();
        assert_eq!(native_cannot_honour(d2.path()), Some("a user namespace"));
        // Escapes that spell the key or the value are read, not scanned past.
        for spelled in [
            r#"{"linux": {"namespaces": [{"typ\u0065": "user"}]}}"#,
            r#"{"linux": {"namespaces": [{"type": "\u0075ser"}]}}"#,
            r#"{"linux": {"seccomp": {"syscalls": [{"action": "SCMP_ACT_NOTIF\u0059"}]}}}"#,
        ] {
            std::fs::write(d2.path().join("config.json"), spelled).unwrap();
            assert!(native_cannot_honour(d2.path()).is_some(), "{spelled}");
        }
        std::fs::write(
            d2.path().join("config.json"),
            r#"{"process": {"env": ["A=\u00e9"]}, "linux": {"namespaces": [{"type": "pid"}]}}"#,
        )
        .unwrap();
        assert_eq!(native_cannot_honour(d2.path()), None);
    }
}
