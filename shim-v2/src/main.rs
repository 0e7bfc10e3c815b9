//! containerd-shim-berth-v2: `start` (launch a detached shim and tell the caller its
//! address, in the caller's protocol: [`bootstrap`]), `launch` (be that detached shim, run
//! by berthd itself: no `start` process in between), `standby` (a shim berthd starts before
//! it has a task for it, which becomes `launch` once given one), `delete` (clean up after a shim that is
//! gone), and the shim itself (`serve`), which removes its socket when it exits and gives up
//! when the daemon that started it goes before asking for a task.

mod bootstrap;
mod info;

use berth_proto::containerd::task::v2::DeleteResponse;
use berth_shim::events::Publisher;
use berth_shim::native::Native;
use berth_shim::reaper::Reaper;
use berth_shim::rootfs::unmount_rootfs;
use berth_shim::runc::{Runc, Runtime, Stdio3};
use berth_shim::server::{Handler, Reply};
use berth_shim::service::Service;
use berth_shim::zygote::Zygote;
use bootstrap::Given;
use prost::Message;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

struct Args {
    namespace: String,
    id: String,
    address: String,
    publish_binary: String,
    bundle: Option<PathBuf>,
    action: String,
    /// `-v`: print the version and exit, as containerd's shims do.
    version: bool,
    /// `-info`: describe the runtime (RuntimeInfo on stdout) for the options on stdin, as
    /// containerd 2.x's Introspection asks a shim.
    info: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        namespace: String::new(),
        id: String::new(),
        address: String::new(),
        publish_binary: String::new(),
        bundle: None,
        action: String::new(),
        version: false,
        info: false,
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
            // Room in the argument area for the task's words (see `standby`).
            "slot" => drop(value()?),
            "debug" => {}
            "v" | "version" => a.version = true,
            "info" => a.info = true,
            other => return Err(format!("unknown flag -{other}")),
        }
    }
    // A standby shim learns its namespace and id with its task.
    let unnamed = a.id.is_empty() || a.namespace.is_empty();
    if !a.version && !a.info && a.action != "standby" && unnamed {
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

/// The shim's socket: in its bundle when the path fits a sockaddr, else in the directory
/// the caller named (containerd 2.3's `socket_dir`) or `<state>/s`.
fn socket_path(bundle: &Path, ns: &str, id: &str, socket_dir: Option<&Path>) -> PathBuf {
    let p = bundle.join("shim.sock");
    if p.as_os_str().len() < 100 {
        return p;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{ns}/{id}").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let dir = socket_dir.map_or_else(|| state_dir(bundle).join("s"), Path::to_path_buf);
    dir.join(format!("{h:016x}"))
}

/// The process that ran `start` (berthd, or containerd), watched through a pidfd: a shim
/// nobody asked a task of gives up once its requester is gone.
struct Requester(OwnedFd);

impl Requester {
    /// None where the kernel has no pidfds; an error when the requester is already gone.
    fn watch() -> Result<Option<Requester>, String> {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        // SAFETY: pidfd_open(2) with a pid and no flags: a new descriptor (close-on-exec)
        // or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, ppid, 0) };
        if fd < 0 {
            return Ok(None);
        }
        // Moved above fd 3, which the serving shim's readiness pipe takes over.
        // SAFETY: fcntl duplicating the descriptor the kernel just gave us, then closing
        // that one.
        let moved = unsafe {
            let moved = libc::fcntl(fd as i32, libc::F_DUPFD_CLOEXEC, READY_FD + 1);
            libc::close(fd as i32);
            moved
        };
        if moved < 0 {
            return Ok(None);
        }
        // SAFETY: a descriptor we just made, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(moved) };
        // SAFETY: as above. A new parent means the first one exited before the pidfd.
        if unsafe { libc::getppid() } != ppid {
            return Err("the process that asked for this shim is gone".into());
        }
        Ok(Some(Requester(fd)))
    }

    /// Returns once the requester has exited (true), or when it cannot be watched (false).
    fn wait_gone(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: poll on one descriptor we own.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n == 1 {
                return pfd.revents & libc::POLLIN != 0;
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }
}

/// The Task service, noting whether a Create was ever asked of it.
struct Watched {
    service: Arc<Service>,
    create_asked: AtomicBool,
}

impl Watched {
    fn new(service: Arc<Service>) -> Watched {
        Watched {
            service,
            create_asked: AtomicBool::new(false),
        }
    }

    fn asked_to_create(&self) -> bool {
        self.create_asked.load(Ordering::SeqCst)
    }
}

impl Handler for Watched {
    fn handle(&self, method: &str, payload: &[u8]) -> Reply {
        if method == "Create" {
            self.create_asked.store(true, Ordering::SeqCst);
        }
        self.service.handle(method, payload)
    }
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

/// libcontainer's state for this namespace, beside runc's; its steps run in the zygote's
/// workers when there is one.
fn native_for(
    bundle: &Path,
    namespace: &str,
    reaper: Arc<Reaper>,
    zygote: Option<Zygote>,
) -> Native {
    Native {
        root: state_dir(bundle).join("native").join(namespace),
        reaper,
        zygote,
    }
}

/// The runc-compatible binary `BERTH_SHIM_RUNTIME` names (berthd sets it from its
/// configuration), or None for the native runtime.
fn runc_binary() -> Option<String> {
    std::env::var(RUNTIME_ENV)
        .ok()
        .filter(|b| !b.is_empty() && b != "native")
}

/// The runc-compatible binary that runs the bundle's container, or None for the native
/// runtime: the one `BERTH_SHIM_RUNTIME` names; but a container whose spec asks for what the
/// native runtime cannot give exactly as runc does runs under runc even when native is
/// named (see [`native_cannot_honour`]).
fn runc_for_bundle(bundle: &Path) -> Option<String> {
    match runc_binary() {
        None if native_cannot_honour(bundle).is_some() => Some("runc".into()),
        chosen => chosen,
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

/// What `start` and `launch` begin with, once they read what the caller gave: the bundle
/// (the working directory), the socket to serve on (no address recorded yet), and the
/// caller watched.
fn begin(a: &Args, given: &Given) -> Result<(PathBuf, PathBuf, Option<Requester>), String> {
    let bundle = std::env::current_dir().map_err(|e| e.to_string())?;
    let sock = socket_path(&bundle, &a.namespace, &a.id, given.socket_dir().as_deref());
    let _ = std::fs::remove_file(bundle.join("address"));
    Ok((bundle, sock, Requester::watch()?))
}

fn start(a: &Args) -> Result<(), String> {
    let given = Given::read(&a.id, &a.namespace)?;
    let (bundle, sock, requester) = begin(a, &given)?;
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
        // Joined here too (the parent's join reports failures), before the native runtime's
        // zygote is forked: the zygote and its workers stay where the shim was put.
        if let Some(cgroup) = given.shim_cgroup() {
            let _ = bootstrap::join_cgroup(std::process::id() as i32, cgroup);
        }
        let ttrpc = given.ttrpc_address();
        let code = match serve_at(a, &sock, ttrpc, requester, ZygoteFrom::Fork) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        std::process::exit(code);
    }
    // SAFETY: closing our copy of the write end, which we own.
    unsafe { libc::close(wr) };
    let started = finish_start(pid, rd, &given, &sock);
    // SAFETY: closing the read end we own.
    unsafe { libc::close(rd) };
    if started.is_err() {
        // Nothing of a start that failed stays: the serving shim and its socket go.
        // SAFETY: kill and wait for our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(bundle.join("address"));
    }
    started
}

/// `launch`: the serving shim run directly by its caller (berthd, for its own shim), without
/// `start`'s process in between: one fork, one exit and one wake-up of the caller fewer on
/// every task's start. It reads what `start` reads on stdin, joins the cgroup it names,
/// leaves its address in the bundle's `address` file, and says it listens by writing one
/// byte on its stdout (the caller's pipe), which it then closes. Errors before that are told
/// on stderr, which it closes too (nothing of the caller's stays open in the zygote).
fn launch(a: &Args) -> Result<(), String> {
    let given = Given::read(&a.id, &a.namespace)?;
    serve_launched(a, given, ZygoteFrom::Fork)
}

fn serve_launched(a: &Args, given: Given, zygote: ZygoteFrom) -> Result<(), String> {
    let (_, sock, requester) = begin(a, &given)?;
    if let Some(cgroup) = given.shim_cgroup() {
        bootstrap::join_cgroup(std::process::id() as i32, cgroup)?;
        // The workers are the zygote's forks: they start where it is.
        if let ZygoteFrom::Forked(Some(z)) = &zygote {
            bootstrap::join_cgroup(z.pid(), cgroup)?;
        }
    }
    // SAFETY: this process's own descriptors: a session of its own, its stdout (the caller's
    // pipe) moved to fd 3 where `serve_at` writes its ready byte, stdio on /dev/null.
    unsafe {
        libc::setsid();
        if libc::dup2(1, READY_FD) != READY_FD {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    let ttrpc = given.ttrpc_address();
    serve_at(a, &sock, ttrpc, requester, zygote)
}

/// What a standby shim is told its task with begins with (see [`standby`]).
const STANDBY_TASK: &[u8] = b"berth-standby-1";

/// The task a standby shim is given: its namespace, id, bundle and low-level runtime (None:
/// the one berthd runs with), and what `launch` reads on stdin.
struct Assigned<'a> {
    namespace: &'a str,
    id: &'a str,
    bundle: &'a Path,
    runtime: Option<&'a str>,
    input: &'a [u8],
}

impl<'a> Assigned<'a> {
    /// Five NUL-ended words (the [`STANDBY_TASK`] mark first), then the input.
    fn decode(message: &'a [u8]) -> Option<Assigned<'a>> {
        use std::os::unix::ffi::OsStrExt;
        let mut words = message.splitn(6, |b| *b == 0);
        let mut word = || std::str::from_utf8(words.next()?).ok();
        if word()?.as_bytes() != STANDBY_TASK {
            return None;
        }
        let (namespace, id, bundle, runtime) = (word()?, word()?, word()?, word()?);
        let input = words.next()?;
        let bundle = Path::new(std::ffi::OsStr::from_bytes(bundle.as_bytes()));
        let plain = |w: &str| !w.is_empty() && !w.contains('/');
        (plain(namespace) && plain(id) && bundle.is_absolute()).then_some(Assigned {
            namespace,
            id,
            bundle,
            runtime: Some(runtime).filter(|r| !r.is_empty()),
            input,
        })
    }
}

/// `standby`: a serving shim started before there is a task for it. berthd keeps one ready
/// (loaded, relocated, its zygote forked, all of which a task's start would otherwise wait
/// for) and gives it the next task of its own shim by writing an [`Assigned`] on its stdin
/// and closing it; from there it is `launch` for that task, its command line rewritten to
/// the one `launch` would have had (tools and tests find a task's shim by its `-id`). End
/// of input with nothing written (berthd gone, or done with it) ends it.
fn standby(a: &Args) -> Result<(), String> {
    // SAFETY: a session of its own (as `launch` makes), then the caller's pipes moved off
    // stdio while the zygote is forked, so that it holds none of them (its descriptors but
    // its socket and stdio are closed when it starts), and back.
    let zygote = unsafe {
        libc::setsid();
        let saved: Vec<i32> = (0..3)
            .map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10))
            .collect();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        let zygote = match runc_binary() {
            None => Zygote::start(berth_shim::native::helper_main),
            Some(_) => None,
        };
        for (fd, s) in saved.into_iter().enumerate() {
            libc::dup2(s, fd as i32);
            libc::close(s);
        }
        libc::close(null);
        zygote
    };
    let message = bootstrap::read_stdin()?;
    if message.is_empty() {
        return Ok(());
    }
    let task = Assigned::decode(&message).ok_or("standby: stdin holds no task from berthd")?;
    // Taken off the idle class berthd keeps a standby shim in (berthd moved this process
    // back already; the zygote is this process's to move).
    let normal = libc::sched_param { sched_priority: 0 };
    if let Some(z) = &zygote {
        // SAFETY: sched_setscheduler with the pid of this process's child and a local param.
        unsafe { libc::sched_setscheduler(z.pid(), libc::SCHED_OTHER, &normal) };
    }
    std::env::set_current_dir(task.bundle)
        .map_err(|e| format!("bundle {}: {e}", task.bundle.display()))?;
    if let Some(r) = task.runtime {
        // One thread (the zygote is another process): nothing reads the environment now.
        std::env::set_var(RUNTIME_ENV, r);
    }
    let words: Vec<&str> = vec![
        "-namespace",
        task.namespace,
        "-address",
        &a.address,
        "-publish-binary",
        &a.publish_binary,
        "-id",
        task.id,
        "launch",
    ];
    let mut args = vec![];
    for w in words {
        args.extend_from_slice(w.as_bytes());
        args.push(0);
    }
    berth_shim::zygote::set_arguments(&args);
    let a = Args {
        namespace: task.namespace.to_string(),
        id: task.id.to_string(),
        address: a.address.clone(),
        publish_binary: a.publish_binary.clone(),
        bundle: None,
        action: "launch".into(),
        version: false,
        info: false,
    };
    let given = Given::decode(task.input, &a.id, &a.namespace);
    serve_launched(&a, given, ZygoteFrom::Forked(zygote))
}

/// The parent's half of `start` once the serving shim is forked: it joins the cgroup the
/// caller asked for, says it listens, and the caller is told where.
fn finish_start(pid: i32, ready_fd: i32, given: &Given, sock: &Path) -> Result<(), String> {
    if let Some(cgroup) = given.shim_cgroup() {
        bootstrap::join_cgroup(pid, cgroup)?;
    }
    let mut pfd = libc::pollfd {
        fd: ready_fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own, then a one-byte read into a local.
    let ready = unsafe {
        let mut b = 0u8;
        libc::poll(&mut pfd, 1, 5000) == 1
            && libc::read(ready_fd, (&mut b as *mut u8).cast(), 1) == 1
    };
    if !ready {
        return Err("the shim did not come up within 5s".into());
    }
    let mut out = std::io::stdout();
    out.write_all(&given.answer(sock))
        .and_then(|()| out.flush())
        .map_err(|e| format!("tell the caller the address: {e}"))
}

const READY_FD: i32 = 3;

/// The serving shim's socket, removed when the process exits (`exit` runs it: a Shutdown,
/// or a start given up). Only the process that registered it removes it: children forked
/// for containers share the handler but not the socket.
static SERVED_SOCKET: OnceLock<Served> = OnceLock::new();

/// The socket a shim bound: its path, and the file it made there (device and inode).
struct Served {
    pid: u32,
    path: PathBuf,
    file: (u64, u64),
}

/// The device and inode of what stands at `path` (not following a symlink).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Served {
    /// Removes the socket if this process made it and it is still the file at its name.
    /// The name may be another shim's by now: a task of the same id, made once this one was
    /// told to go (its bundle moved aside, or the same hashed socket path), binds it before
    /// this process ends.
    fn remove(&self) {
        if self.pid == std::process::id() && file_id(&self.path) == Some(self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

extern "C" fn remove_served_socket() {
    if let Some(s) = SERVED_SOCKET.get() {
        s.remove();
    }
}

fn serve(a: &Args) -> Result<(), String> {
    let bundle = std::env::current_dir().map_err(|e| e.to_string())?;
    let sock = socket_path(&bundle, &a.namespace, &a.id, None);
    serve_at(a, &sock, None, None, ZygoteFrom::Fork)
}

/// Where the serving shim's native-runtime zygote comes from.
enum ZygoteFrom {
    /// Forked by `serve_at` if the bundle's container runs on the native runtime.
    Fork,
    /// Forked already, by a standby shim (none where the runtime it had was runc).
    Forked(Option<Zygote>),
}

fn serve_at(
    a: &Args,
    sock: &Path,
    ttrpc: Option<String>,
    requester: Option<Requester>,
    zygote: ZygoteFrom,
) -> Result<(), String> {
    let bundle = std::env::current_dir().map_err(|e| e.to_string())?;
    let runc = runc_for_bundle(&bundle);
    // Forked first, while this process has one thread: the reaper and the request threads
    // come after (Zygote::start makes sure, and gives none otherwise). A zygote forked for a
    // container that runs on runc ends when it is dropped (its socket reads end-of-file).
    let zygote = match (runc.is_none(), zygote) {
        (false, _) => None,
        (true, ZygoteFrom::Forked(Some(z))) => Some(z),
        (true, _) => Zygote::start(berth_shim::native::helper_main),
    };
    if let Some(parent) = sock.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_file(sock);
    let listener =
        UnixListener::bind(sock).map_err(|e| format!("listen on {}: {e}", sock.display()))?;
    let served = file_id(sock).map(|file| Served {
        pid: std::process::id(),
        path: sock.to_path_buf(),
        file,
    });
    if served.is_some_and(|s| SERVED_SOCKET.set(s).is_ok()) {
        // SAFETY: registers a handler with no arguments that only removes a file.
        unsafe { libc::atexit(remove_served_socket) };
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600));
    let ttrpc = std::env::var("TTRPC_ADDRESS")
        .ok()
        .or(ttrpc)
        .unwrap_or_else(|| format!("{}.ttrpc", a.address));
    let reaper = Reaper::start();
    let runtime: Box<dyn Runtime> = match runc {
        None => Box::new(native_for(&bundle, &a.namespace, reaper.clone(), zygote)),
        Some(binary) => Box::new(runc_for(&bundle, &a.namespace, &binary, reaper.clone())),
    };
    let service = Service::new(
        a.id.clone(),
        bundle.clone(),
        runtime,
        reaper,
        Publisher::new(ttrpc, a.namespace.clone()),
    );
    std::fs::write(bundle.join("address"), format!("unix://{}", sock.display()))
        .map_err(|e| e.to_string())?;
    // SAFETY: fd 3 is the readiness pipe from `start` (if any); one byte from a local.
    let told = unsafe { libc::write(READY_FD, b"1".as_ptr().cast(), 1) };
    // SAFETY: closing fd 3, which is ours.
    unsafe { libc::close(READY_FD) };
    if requester.is_some() && told != 1 {
        // `start` is gone before it could answer: nobody will ever drive this shim.
        return Err("start gave up before the shim was ready".into());
    }
    let handler = Arc::new(Watched::new(service));
    if let Some(r) = requester {
        let h = handler.clone();
        let _ = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                if r.wait_gone() && !h.asked_to_create() {
                    // The daemon that asked for this shim went before asking for a task.
                    std::process::exit(0);
                }
            });
    }
    berth_shim::server::serve(listener, handler);
    Ok(())
}

fn delete(a: &Args) -> Result<(), String> {
    let bundle = match &a.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    // Whichever runtime made the container: libcontainer's state says it was the native one.
    let reaper = Reaper::start();
    let native = native_for(&bundle, &a.namespace, reaper.clone(), None);
    let runtime: Box<dyn Runtime> = if native.has(&a.id) {
        Box::new(native)
    } else {
        let binary = runc_binary().unwrap_or_else(|| "runc".into());
        Box::new(runc_for(&bundle, &a.namespace, &binary, reaper))
    };
    let _ = runtime.run(&["delete", "--force", &a.id], Stdio3::default());
    unmount_rootfs(&bundle);
    let _ = std::fs::remove_file(socket_path(&bundle, &a.namespace, &a.id, None));
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(berth_shim::native::HELPER) {
        std::process::exit(berth_shim::native::helper_main(&args[1..]));
    }
    let result = parse().and_then(|a| match a.action.as_str() {
        _ if a.version => {
            println!(
                "containerd-shim-berth-v2:\n  Version:  berth {}",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        _ if a.info => info::run(&runc_binary().unwrap_or_else(|| "runc".into())),
        "start" => start(&a),
        "launch" => launch(&a),
        "standby" => standby(&a),
        "serve" => serve(&a),
        "delete" => delete(&a),
        other => Err(format!(
            "unknown action {other:?}; expected start, launch, standby or delete"
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

    #[test]
    fn a_shim_removes_only_the_socket_it_made() {
        use std::os::unix::net::UnixListener;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("shim.sock");
        let _old = UnixListener::bind(&path).unwrap();
        let served = Served {
            pid: std::process::id(),
            path: path.clone(),
            file: file_id(&path).unwrap(),
        };
        // A task of the same id binds the name again before the old shim exits.
        std::fs::remove_file(&path).unwrap();
        let _new = UnixListener::bind(&path).unwrap();
        served.remove();
        assert!(path.exists(), "the new shim's socket was removed");
        // Its own socket, still at the name, goes.
        let mine = Served {
            file: file_id(&path).unwrap(),
            ..served
        };
        mine.remove();
        assert!(!path.exists());
        // Another process's registration (a forked child) removes nothing.
        let _again = UnixListener::bind(&path).unwrap();
        let child = Served {
            pid: std::process::id() + 1,
            path: path.clone(),
            file: file_id(&path).unwrap(),
        };
        child.remove();
        assert!(path.exists());
    }
}
