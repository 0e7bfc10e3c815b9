//! Launching a shim with containerd's shim start protocol (either generation: see
//! [`StartProtocol`]), and cleaning up after one that is gone (`<shim> delete`). A shim whose
//! start fails halfway is killed and its socket removed: nothing of it stays.

use super::driver::{ShimWire, StartProtocol, StartRequest, Started};
use super::types::Exited;
use crate::core::error::{Error, Kind, Result};
use crate::core::metadata::containers::AnyValue;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a shim's `start`, `delete` or `-v` may take.
const SHIM_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a shim's `start`, `delete` or `-v` answer that is read (an address, a few
/// hundred bytes of protobuf, a version): more is not an answer.
const MAX_ANSWER: usize = 1 << 20;
/// The most of a shim command's stderr kept for its error; the rest is read and dropped.
const MAX_STDERR: usize = 64 << 10;

/// Runs `cmd` with `input` on its stdin and waits for it: its status, its stdout and the
/// first [`MAX_STDERR`] bytes of its stderr. Stdout past `max_stdout` bytes is refused
/// (ResourceExhausted) and the process killed, as it is when the future is dropped (a
/// caller's timeout). `what` names the command in errors.
pub(crate) async fn run_fed(
    mut cmd: tokio::process::Command,
    what: &str,
    input: Vec<u8>,
    max_stdout: usize,
) -> Result<std::process::Output> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    let io = |e| Error::io(format!("run {what}"), e);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io)?;
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that reads nothing closes its end: that is its right.
            let _ = stdin.write_all(&input).await;
        }
        Ok(())
    };
    // Stderr past its limit is drained, so the writer never blocks on a full pipe.
    async fn head(r: Option<impl AsyncRead + Unpin>, max: usize) -> std::io::Result<Vec<u8>> {
        let mut kept = Vec::new();
        if let Some(mut r) = r {
            (&mut r).take(max as u64).read_to_end(&mut kept).await?;
            tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
        }
        Ok(kept)
    }
    let stdout = async {
        let mut kept = Vec::new();
        if let Some(r) = child.stdout.take() {
            r.take(max_stdout as u64 + 1)
                .read_to_end(&mut kept)
                .await
                .map_err(io)?;
        }
        if kept.len() > max_stdout {
            return Err(Error::new(
                Kind::ResourceExhausted,
                format!("{what} printed more than {max_stdout} bytes"),
            ));
        }
        Ok(kept)
    };
    let stderr = async { head(child.stderr.take(), MAX_STDERR).await.map_err(io) };
    let ((), stdout, stderr) = tokio::try_join!(feed, stdout, stderr)?;
    let status = child.wait().await.map_err(io)?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// `io.containerd.runc.v2` -> `containerd-shim-runc-v2`.
pub fn binary_name(runtime: &str) -> Result<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2
        || parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    {
        return Err(Error::invalid(format!(
            "runtime {runtime:?} is not a shim v2 runtime name like io.containerd.runc.v2"
        )));
    }
    let n = parts.len();
    Ok(format!("containerd-shim-{}-{}", parts[n - 2], parts[n - 1]))
}

/// Finds the shim binary: next to berthd first, then on PATH.
pub fn find_binary(runtime: &str) -> Result<PathBuf> {
    let name = binary_name(runtime)?;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    locate(&name, beside).ok_or_else(|| {
        Error::precondition(format!(
            "runtime {runtime}: shim binary {name} not found next to berthd or on PATH; install it (containerd-shim-runc-v2 comes with Debian's containerd package)"
        ))
    })
}

/// `name` itself when it is a path, else the first file so named in `first` (when given),
/// then on PATH.
pub fn locate(name: &str, first: Option<PathBuf>) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    first
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The binary of berth's own shim (`io.containerd.berth.v2`).
const OWN_SHIM: &str = "containerd-shim-berth-v2";

/// Whether `binary` is berth's own shim: berthd runs it with `launch` and knows it serves the
/// Task API v2 (and only it).
pub fn is_own_shim(binary: &Path) -> bool {
    binary.file_name() == Some(std::ffi::OsStr::new(OWN_SHIM))
}

/// The environment variable berth's shim reads its low-level runtime from (`native`,
/// `runc`, or a runc-compatible binary).
pub const RUNTIME_ENV: &str = "BERTH_SHIM_RUNTIME";

pub struct Launch<'a> {
    pub binary: &'a Path,
    pub namespace: &'a str,
    pub id: &'a str,
    pub bundle: &'a Path,
    /// berthd's gRPC socket.
    pub address: &'a Path,
    pub ttrpc_address: PathBuf,
    /// The low-level runtime the caller's runc options name (`binary_name`), for berth's
    /// shim; None: the one berthd runs with.
    pub runtime: Option<&'a str>,
    /// The shims' wire: what `start` is given and answers, what `delete` prints.
    pub shims: &'a dyn ShimWire,
}

impl Launch<'_> {
    fn command(&self, action: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.binary);
        let exe = daemon_exe();
        cmd.arg("-namespace")
            .arg(self.namespace)
            .arg("-address")
            .arg(self.address)
            .arg("-publish-binary")
            .arg(exe)
            .arg("-id")
            .arg(self.id);
        if action == "delete" {
            cmd.arg("-bundle").arg(self.bundle);
        }
        cmd.arg(action)
            .current_dir(self.bundle)
            // What containerd sets for its shims (2.x's shims read them when their stdin
            // holds no bootstrap params).
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("GRPC_ADDRESS", self.address)
            .env("NAMESPACE", self.namespace)
            .envs(self.runtime.map(|r| (RUNTIME_ENV, r)));
        if action != "launch" {
            // `launch` makes a session of its own, which a group leader cannot.
            cmd.process_group(0);
        }
        cmd
    }

    /// Runs `<shim> start`, giving it the runtime options (runc's `ShimCgroup` among them)
    /// on stdin in the form its generation reads; returns the socket the shim listens on.
    /// An answer berth cannot use leaves no shim behind: whatever listens on the address it
    /// named is killed and the socket removed.
    pub async fn start_with(&self, options: Option<&AnyValue>) -> Result<PathBuf> {
        let protocol = start_protocol(self.binary).await;
        let exe = daemon_exe();
        let socket_dir = self.socket_dir();
        let input = self.shims.start_input(&StartRequest {
            protocol,
            id: self.id,
            namespace: self.namespace,
            grpc_address: self.address,
            ttrpc_address: &self.ttrpc_address,
            daemon: &exe,
            socket_dir: &socket_dir,
            options,
        });
        if is_own_shim(self.binary) {
            return self.launch(input).await;
        }
        let out = self.run("start", input).await?;
        let socket = self.usable(self.shims.decode_started(&out));
        let socket = match socket {
            Ok(s) => s,
            Err((e, named)) => {
                if let Some(named) = named {
                    remove_shim_at(named).await;
                }
                return Err(e);
            }
        };
        if let Err(e) = self.record_address(&socket) {
            remove_shim_at(socket).await;
            return Err(e);
        }
        Ok(socket)
    }

    /// Runs berth's own shim as the serving shim itself (`<shim> launch`, reading `start`'s
    /// stdin): no `start` process between berthd and it; or gives the task to the standby
    /// shim berthd keeps ready ([`super::standby`]), which then does the same. It says it
    /// listens with a byte on its stdout, its address already in the bundle. A shim that
    /// does not come up is killed and its socket removed (a standby shim that fails is
    /// followed by a launch of a fresh one); one that does is reaped by tokio once it exits.
    async fn launch(&self, input: Vec<u8>) -> Result<PathBuf> {
        let key = super::standby::Key {
            binary: self.binary.to_path_buf(),
            address: self.address.to_path_buf(),
            ttrpc_address: self.ttrpc_address.clone(),
            daemon: daemon_exe(),
        };
        let standby = super::standby::fits(self.namespace, self.id)
            .then(|| super::standby::take(&key))
            .flatten();
        let launched = match standby {
            Some(child) => {
                let task = super::standby::task(
                    self.namespace,
                    self.id,
                    self.bundle,
                    self.runtime,
                    &input,
                );
                match self.serving(child, task).await {
                    Ok(socket) => Ok(socket),
                    Err(e) => {
                        tracing::warn!(id = self.id, error = %e, "the standby shim failed its task; launching one for it");
                        self.launch_fresh(input).await
                    }
                }
            }
            None => self.launch_fresh(input).await,
        };
        // The next task's shim starts now, in the idle class: it waits for no one.
        let dir = self.socket_dir().parent().map(Path::to_path_buf);
        if let (Ok(_), Some(dir)) = (&launched, dir) {
            tokio::spawn(async move { super::standby::replenish(key, dir) });
        }
        launched
    }

    async fn launch_fresh(&self, input: Vec<u8>) -> Result<PathBuf> {
        let io = |e| Error::io(format!("launch {}", self.binary.display()), e);
        let child = self
            .command("launch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        self.serving(child, input).await
    }

    /// Gives a launched (or standby) shim `input` on its stdin and waits for its ready byte.
    async fn serving(&self, mut child: tokio::process::Child, input: Vec<u8>) -> Result<PathBuf> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = |e| Error::io(format!("launch {}", self.binary.display()), e);
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let ready = async {
            if let Some(mut w) = stdin {
                // A shim that reads nothing closes its end; its failure is told below.
                let _ = w.write_all(&input).await;
            }
            let mut byte = [0u8; 1];
            match stdout {
                Some(mut r) => r.read(&mut byte).await.is_ok_and(|n| n == 1),
                None => false,
            }
        };
        let ready = tokio::time::timeout(SHIM_COMMAND_TIMEOUT, ready).await;
        let socket = bundle_socket(self.bundle);
        if let (Ok(true), Some(socket)) = (ready, &socket) {
            return Ok(socket.clone());
        }
        let _ = child.start_kill();
        let status = child.wait().await.map_err(io)?;
        let mut said = Vec::new();
        if let Some(r) = child.stderr.take() {
            let mut head = r.take(MAX_STDERR as u64);
            let read = head.read_to_end(&mut said);
            let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
        }
        if let Some(s) = socket {
            remove_shim_at(s).await;
        }
        Err(Error::precondition(format!(
            "shim {} launch failed ({status}): {}",
            self.binary.display(),
            String::from_utf8_lossy(&said).trim()
        )))
    }

    /// Where a shim that asks its caller puts its socket: `<state>/s`, beside the bundles.
    fn socket_dir(&self) -> PathBuf {
        let state = self.bundle.ancestors().nth(3).unwrap_or(self.bundle);
        state.join("s")
    }

    /// Runs `<shim> ACTION` with `input` on its stdin; its stdout once it exited 0. The
    /// process is killed if it outlives the timeout.
    async fn run(&self, action: &str, input: Vec<u8>) -> Result<Vec<u8>> {
        let what = format!("{} {action}", self.binary.display());
        let ran = run_fed(self.command(action), &what, input, MAX_ANSWER);
        let out = tokio::time::timeout(SHIM_COMMAND_TIMEOUT, ran)
            .await
            .map_err(|_| {
                Error::new(
                    Kind::Unavailable,
                    format!("shim {action} did not finish within {SHIM_COMMAND_TIMEOUT:?}"),
                )
            })??;
        if !out.status.success() {
            return Err(Error::precondition(format!(
                "shim {} {action} failed ({}): {}",
                self.binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    }

    /// The socket of a shim's answer, if berth can talk to what it names; else the error
    /// and the socket it named (to be cleared), if any.
    fn usable(
        &self,
        started: Option<Started>,
    ) -> std::result::Result<PathBuf, (Error, Option<PathBuf>)> {
        let binary = self.binary.display();
        let Some(s) = started else {
            return Err((
                Error::precondition(format!("shim {binary} answered start with no address")),
                None,
            ));
        };
        let path = s.address.strip_prefix("unix://").unwrap_or(&s.address);
        let named = (path.starts_with('/')).then(|| PathBuf::from(path));
        let refuse = |why: String| Err((Error::precondition(why), named.clone()));
        if !s.protocol.eq_ignore_ascii_case("ttrpc") {
            return refuse(format!(
                "shim {binary} answered start with protocol {:?} at {}; berth talks to shims over ttrpc only",
                s.protocol, s.address
            ));
        }
        if !(2..=3).contains(&s.version) {
            return refuse(format!(
                "shim {binary} serves the Task API version {}; berth speaks versions 2 and 3",
                s.version
            ));
        }
        match named.clone() {
            Some(p) => Ok(p),
            None => refuse(format!(
                "shim {binary} answered with address {:?}; berth only talks to shims on filesystem sockets",
                s.address
            )),
        }
    }

    /// Writes the shim's address into its bundle (containerd 2.3's shims leave that to their
    /// caller): a restarted berthd reconnects from it, and the shim removes that socket
    /// when it exits.
    fn record_address(&self, socket: &Path) -> Result<()> {
        let address = format!("unix://{}", socket.display());
        let file = self.bundle.join("address");
        if std::fs::read_to_string(&file).is_ok_and(|a| a.trim() == address) {
            return Ok(());
        }
        std::fs::write(&file, address)
            .map_err(|e| Error::io(format!("write {}", file.display()), e))
    }

    /// Runs `<shim> delete` for a shim that is gone, or to be gone: a shim still listening
    /// on its bundle's address is killed first, and its socket goes after. Returns how its
    /// task ended.
    pub async fn delete(&self) -> Result<Exited> {
        let socket = bundle_socket(self.bundle);
        if let Some(s) = &socket {
            let s = s.clone();
            let _ = crate::core::error::blocking(move || Ok(kill_listeners(&s))).await;
        }
        let out = self.run("delete", vec![]).await;
        if let Some(s) = socket {
            let _ = std::fs::remove_file(s);
        }
        Ok(self.shims.decode_deleted(&out?))
    }
}

fn daemon_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berthd"))
}

/// The socket named in a bundle's `address` file, if it names a filesystem socket.
fn bundle_socket(bundle: &Path) -> Option<PathBuf> {
    Some(super::bundle::shim_socket(bundle)).filter(|p| p.is_absolute())
}

/// Kills whatever listens on `socket` and removes the socket file.
async fn remove_shim_at(socket: PathBuf) {
    let _ = crate::core::error::blocking(move || {
        kill_listeners(&socket);
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
    .await;
}

/// SIGKILLs every process holding a listening unix socket bound at `socket` (a shim's
/// serving process: the one that answered `start` may have handed the listener on, so the
/// peer's credentials would name the wrong one); returns how many.
fn kill_listeners(socket: &Path) -> usize {
    let inodes = listening_inodes(
        &std::fs::read_to_string("/proc/net/unix").unwrap_or_default(),
        socket,
    );
    if inodes.is_empty() {
        return 0;
    }
    let me = std::process::id();
    let mut killed = 0;
    for pid in holders(&inodes).into_iter().filter(|p| *p != me) {
        // SAFETY: kill(2) with a pid read from /proc; no memory is touched.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

/// The inodes of the listening sockets bound at `socket`, from `/proc/net/unix`'s text
/// (`Num RefCount Protocol Flags Type St Inode Path`; a listener has `__SO_ACCEPTCON`).
fn listening_inodes(table: &str, socket: &Path) -> Vec<u64> {
    const ACCEPTING: u32 = 0x0001_0000;
    let want = socket.as_os_str().to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = u32::from_str_radix(f.get(3)?, 16).ok()? & ACCEPTING != 0;
            (listening && *f.get(7)? == want).then(|| f.get(6)?.parse().ok())?
        })
        .collect()
}

/// The processes with a descriptor on one of the socket `inodes`.
fn holders(inodes: &[u64]) -> Vec<u32> {
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| targets.iter().any(|t| l.as_os_str() == t.as_str()))
                })
            })
        })
        .collect()
}

/// A file's identity and version: a binary replaced in place is probed again.
type Stamp = (u64, u64, std::time::SystemTime);

fn stamp(binary: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(binary).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// Which stdin a shim binary reads at `start`, asked once per binary (`<shim> -v`, which
/// every shim built on containerd's shim library answers with the library's version: the
/// bootstrap params came with 2.3). A shim that does not say reads the options.
async fn start_protocol(binary: &Path) -> StartProtocol {
    static KNOWN: OnceLock<Mutex<HashMap<PathBuf, (Stamp, StartProtocol)>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Mutex::default);
    let stamp = stamp(binary);
    let cached = known
        .lock()
        .ok()
        .and_then(|k| k.get(binary).copied())
        .filter(|(s, _)| Some(*s) == stamp);
    if let Some((_, p)) = cached {
        return p;
    }
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("-v");
    let what = format!("{} -v", binary.display());
    let asked = run_fed(cmd, &what, vec![], MAX_ANSWER);
    let protocol = match tokio::time::timeout(SHIM_COMMAND_TIMEOUT, asked).await {
        Ok(Ok(out)) if out.status.success() => protocol_of_version(&out.stdout),
        _ => StartProtocol::Options,
    };
    if let (Some(s), Ok(mut k)) = (stamp, known.lock()) {
        k.insert(binary.to_path_buf(), (s, protocol));
    }
    protocol
}

/// Reads `<shim> -v`'s `Version:` line (`1.6.20~ds1`, `v2.3.4`, `2.3.4+unknown`).
fn protocol_of_version(text: &[u8]) -> StartProtocol {
    let text = String::from_utf8_lossy(text);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().trim_start_matches('v'));
    let mut numbers = version
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= (2, 3) => StartProtocol::Bootstrap,
        _ => StartProtocol::Options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_binaries() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").unwrap(),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            binary_name("io.containerd.berth.v2").unwrap(),
            "containerd-shim-berth-v2"
        );
        for bad in ["", "runc", "io.containerd../x", "a.b/c.d", "io..v2"] {
            assert!(binary_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shim_versions_name_their_stdin() {
        for (v, p) in [
            ("containerd-shim-runc-v2:\n  Version:  1.6.20~ds1\n  Revision: 1.6.20~ds1-1+deb12u3\n", StartProtocol::Options),
            ("containerd-shim-runc-v2:\n  Version:  v2.2.1\n", StartProtocol::Options),
            ("containerd-shim-runc-v2:\n  Version:  v2.3.4\n  Revision: 1a2b\n", StartProtocol::Bootstrap),
            ("x:\n  Version:  2.3.4+unknown\n", StartProtocol::Bootstrap),
            ("x:\n  Version:  3.0.0\n", StartProtocol::Bootstrap),
            ("containerd-shim-berth-v2:\n  Version:  berth 0.1.0\n", StartProtocol::Options),
            ("", StartProtocol::Options),
        ] {
            assert_eq!(protocol_of_version(v.as_bytes()), p, "{v}");
        }
    }

    #[test]
    fn listeners_are_found_by_path_in_proc_net_unix() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/berth/s/abc\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 1002 /run/berth/s/abc\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1003 /run/berth/s/other\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 1004\n";
        assert_eq!(
            listening_inodes(table, Path::new("/run/berth/s/abc")),
            [1001]
        );
        assert!(listening_inodes(table, Path::new("/run/berth/s/none")).is_empty());
    }

    #[test]
    fn only_ttrpc_answers_on_filesystem_sockets_are_used() {
        let shims = crate::edge::shim::TtrpcShims;
        let bundle = Path::new("/run/berth/io.containerd.runtime.v2.task/default/c1");
        let launch = test_launch(
            Path::new("/usr/bin/containerd-shim-runc-v2"),
            bundle,
            &shims,
        );
        assert_eq!(launch.socket_dir(), Path::new("/run/berth/s"));
        let answer = |version, address: &str, protocol: &str| {
            launch.usable(Some(Started {
                version,
                address: address.into(),
                protocol: protocol.into(),
            }))
        };
        let sock = PathBuf::from("/run/berth/s/abc");
        assert_eq!(answer(2, "unix:///run/berth/s/abc", "ttrpc").unwrap(), sock);
        assert_eq!(answer(3, "/run/berth/s/abc", "TTRPC").unwrap(), sock);
        let (e, named) = answer(3, "unix:///run/berth/s/abc", "grpc").unwrap_err();
        assert!(e.to_string().contains("ttrpc only"), "{e}");
        assert_eq!(named, Some(sock.clone()), "what it named is cleared");
        let (e, named) = answer(4, "unix:///run/berth/s/abc", "ttrpc").unwrap_err();
        assert!(e.to_string().contains("versions 2 and 3"), "{e}");
        assert_eq!(named, Some(sock));
        let (e, named) = answer(2, "unix://@abstract", "ttrpc").unwrap_err();
        assert!(e.to_string().contains("filesystem sockets"), "{e}");
        assert_eq!(named, None);
        let (e, _) = launch.usable(None).unwrap_err();
        assert!(e.to_string().contains("no address"), "{e}");
    }
    /// Container c1 of namespace default, launched with `binary` under berthd's usual paths.
    fn test_launch<'a>(binary: &'a Path, bundle: &'a Path, shims: &'a dyn ShimWire) -> Launch<'a> {
        Launch {
            binary,
            namespace: "default",
            id: "c1",
            bundle,
            address: Path::new("/run/berth/berth.sock"),
            ttrpc_address: PathBuf::from("/run/berth/berth.sock.ttrpc"),
            runtime: None,
            shims,
        }
    }

    /// A shim script that answers `-v` with `version` and `start` with an address, keeping
    /// what it was given on stdin.
    fn scripted_shim(dir: &Path, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("shim-{version}"));
        let script = format!(
            "#!/bin/sh\nfor last; do :; done\ncase \"$last\" in\n\
             -v) printf 'shim:\\n  Version:  {version}\\n' ;;\n\
             start) cat > \"{stdin}\"; printf 'unix:///run/x/{version}.sock' ;;\n\
             esac\n",
            stdin = dir.join(format!("stdin-{version}")).display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn start_gives_the_options_in_the_shims_own_words() {
        use crate::edge::shim::bootstrap::BootstrapParams;
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default/c1");
        std::fs::create_dir_all(&bundle).unwrap();
        let options = AnyValue {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x1a, 4, b'/', b's', b'h', b'm'],
        };
        let shims = crate::edge::shim::TtrpcShims;
        for version in ["1.6.20~ds1", "v2.3.4"] {
            let binary = scripted_shim(dir.path(), version);
            let launch = test_launch(&binary, &bundle, &shims);
            let socket = launch.start_with(Some(&options)).await.unwrap();
            assert_eq!(socket, PathBuf::from(format!("/run/x/{version}.sock")));
            let address = std::fs::read_to_string(bundle.join("address")).unwrap();
            assert_eq!(address, format!("unix:///run/x/{version}.sock"), "recorded");
            let given = std::fs::read(dir.path().join(format!("stdin-{version}"))).unwrap();
            let carried = if version.starts_with('v') {
                let p = BootstrapParams::decode(given.as_slice()).unwrap();
                assert_eq!(
                    (p.instance_id.as_str(), p.namespace.as_str()),
                    ("c1", "default")
                );
                let dir_s = dir.path().join("state/s").display().to_string();
                assert_eq!(p.socket_dir, Some(dir_s));
                p.extensions[0].value.clone().unwrap()
            } else {
                prost_types::Any::decode(given.as_slice()).unwrap()
            };
            assert_eq!(
                (carried.type_url, carried.value),
                (options.type_url.clone(), options.value.clone())
            );
        }
    }

    #[tokio::test]
    async fn a_shim_answer_past_the_limit_is_refused_not_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default/c1");
        std::fs::create_dir_all(&bundle).unwrap();
        let binary = dir.path().join("chatty-shim");
        // `start` prints without end; `delete` fails after a flood on stderr.
        std::fs::write(
            &binary,
            "#!/bin/sh
for last; do :; done
case \"$last\" in
             start) yes unix:///run/x/garbage.sock ;;
             delete) head -c 3000000 /dev/zero | tr '\\0' e >&2; exit 1 ;;
             esac
",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let shims = crate::edge::shim::TtrpcShims;
        let launch = test_launch(&binary, &bundle, &shims);
        let e = launch.start_with(None).await.unwrap_err();
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
        assert!(!bundle.join("address").exists(), "nothing recorded");
        let e = launch.run("delete", vec![]).await.unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
        assert!(e.to_string().contains("eeee"), "its stderr is kept");
        assert!(e.to_string().len() < MAX_STDERR + 1024, "but only its head");
    }
}
