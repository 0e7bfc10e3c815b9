//! The native runtime: the shim creates, starts, signals and deletes its container itself,
//! through youki's `libcontainer`, instead of running the runc binary for each step. It
//! speaks the same subset of runc's command line the task service uses (see [`Runtime`]),
//! so the service and its tests do not know which runtime is behind them.
//!
//! Each step runs in a helper process ([`helper_main`], given [`HELPER`]'s arguments and
//! runc's command line), a single-threaded process whose locks are its own: a worker of the
//! shim's [`Zygote`] (forked while the shim had one thread), or, without one, the shim's own
//! binary executed afresh. (A fork of the serving shim, which has several threads, copied
//! any lock one of them held; libcontainer's clones, ending through `std::process::exit`,
//! then waited forever on std's thread-bookkeeping lock.) The container's processes outlive
//! the helper and are reparented to the shim, the subreaper, like runc's. The serving shim
//! itself never runs libcontainer's code, so none of it (nor serde_json, tracing, pathrs…)
//! is mapped into its resident set.

use crate::confine::{self, Plan};
use crate::reaper::Reaper;
use crate::runc::{Failed, Runtime, Stdio3};
use crate::zygote::{self, Zygote, ANSWER_FD};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::LinuxResources;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

/// The state directory of libcontainer's containers, one directory per container id.
pub struct Native {
    pub root: PathBuf,
    pub reaper: Arc<Reaper>,
    /// Forks the helpers; without it, each is the shim's binary executed afresh.
    pub zygote: Option<Zygote>,
}

/// A runc command line, taken apart: its verb, flags with values, boolean flags, and the
/// remaining words (the container id, then a signal for `kill`).
struct Command<'a> {
    verb: &'a str,
    flags: Vec<(&'a str, &'a str)>,
    switches: Vec<&'a str>,
    words: Vec<&'a str>,
}

const VALUED: &[&str] = &[
    "--bundle",
    "--pid-file",
    "--console-socket",
    "--process",
    "--resources",
    "--format",
];

impl<'a> Command<'a> {
    fn parse(args: &[&'a str]) -> Result<Self, Failed> {
        let (verb, rest) = args
            .split_first()
            .ok_or_else(|| Failed::new("no runtime command"))?;
        let mut c = Command {
            verb,
            flags: vec![],
            switches: vec![],
            words: vec![],
        };
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            if VALUED.contains(a) {
                let v = it
                    .next()
                    .ok_or_else(|| Failed::new(format!("{verb}: {a} needs a value")))?;
                c.flags.push((a, v));
            } else if a.starts_with("--") {
                c.switches.push(a);
            } else {
                c.words.push(a);
            }
        }
        Ok(c)
    }

    fn flag(&self, name: &str) -> Option<&'a str> {
        self.flags.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    fn id(&self) -> Result<&'a str, Failed> {
        self.words
            .first()
            .copied()
            .ok_or_else(|| Failed::new(format!("{}: no container id", self.verb)))
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Failed {
    Failed::new(format!("{what}: {e}"))
}

impl Native {
    fn load(&self, id: &str) -> Result<Container, Failed> {
        let dir = self.root.join(id);
        if !dir.exists() {
            return Err(Failed::new(format!("container {id} does not exist")));
        }
        Container::load(dir).map_err(|e| failed(&format!("load container {id}"), e))
    }

    /// Runs runc's command line `args` in a helper process, and waits for it; what it
    /// returns (its output, or its error) comes back through a pipe on the helper's
    /// [`ANSWER_FD`]. `log`, when given, receives libcontainer's own messages (and the
    /// container processes the helper makes inherit the pipe until they exec: the pipe is
    /// then read once the helper is gone, never to its end).
    ///
    /// The helper is a worker of the zygote, or the shim's own binary executed afresh
    /// ([`helper_main`]); never a fork of the serving shim: a fork copies whatever lock
    /// another of the shim's threads held at that instant, and libcontainer's intermediate
    /// process ends through `std::process::exit`, whose cleanup takes the lock std holds
    /// while a thread starts or ends. A fork that landed while a request thread started or
    /// ended left that process waiting forever, the exec's Start unanswered.
    fn in_helper(
        &self,
        args: &[&str],
        stdio: Stdio3,
        log: Option<&Path>,
    ) -> Result<Vec<u8>, Failed> {
        if let Some(log) = log {
            let _ = std::fs::remove_file(log);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-int array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(failed("pipe", std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors were just created and are owned here alone.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let given: String = [&stdio.stdin, &stdio.stdout, &stdio.stderr]
            .iter()
            .map(|fd| if fd.is_some() { '1' } else { '0' })
            .collect();
        let mut helper_args = vec![
            self.root.as_os_str().as_bytes(),
            log.map_or(&b""[..], |l| l.as_os_str().as_bytes()),
            given.as_bytes(),
        ];
        helper_args.extend(args.iter().map(|a| a.as_bytes()));
        let forked = self.zygote.as_ref().and_then(|z| {
            let given = zygote::Given {
                answer: w.as_fd(),
                stdio: [&stdio.stdin, &stdio.stdout, &stdio.stderr]
                    .map(|f| f.as_ref().map(AsFd::as_fd)),
            };
            z.spawn(&helper_args, given).ok()
        });
        let pid = match forked {
            Some(pid) => {
                drop(stdio);
                pid
            }
            None => exec_helper(&helper_args, stdio, w.as_raw_fd())?,
        };
        drop(w);
        let mut out = vec![];
        let exit = if log.is_some() {
            let exit = self.reaper.wait(pid);
            // SAFETY: fcntl on a descriptor owned here.
            unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            let _ = std::fs::File::from(r).read_to_end(&mut out);
            exit
        } else {
            // Nothing else holds the write end: read to its end (output of any size), then
            // collect the helper.
            let _ = std::fs::File::from(r).read_to_end(&mut out);
            self.reaper.wait(pid)
        };
        if exit.status == 0 {
            return Ok(out);
        }
        Err(helper_failure(&out, exit.status, log))
    }

    /// Does what the helper was asked (runc's command line in `c`) in this process.
    fn serve_helper(&self, c: &Command, stdio: Stdio3) -> Result<Vec<u8>, String> {
        let done = |r: Result<(), Failed>| r.map(|()| vec![]).map_err(|f| f.0.to_string());
        let _step = self.step_lock(c);
        match c.verb {
            "create" => self.create(c, stdio),
            "exec" => self.exec(c, stdio),
            "start" => done(self.start(c)),
            "kill" => done(self.kill(c)),
            "delete" => done(self.delete(c)),
            "ps" => self.ps(c).map_err(|f| f.0.to_string()),
            "update" => done(self.update(c)),
            "pause" => done(self.pause(c, true)),
            "resume" => done(self.pause(c, false)),
            other => Err(format!("the native runtime has no {other:?}")),
        }
    }

    /// Holds the container's state directory locked (`flock`) for the step `c`, until the
    /// helper ends: exclusively for the steps that rewrite libcontainer's `state.json`,
    /// shared for those that only read it. libcontainer rewrites that file in place, so a
    /// step loading it while another step's helper wrote it read a cut file and failed: the
    /// shim's `kill --all` after a stopped init, landing while the Kill that stopped it was
    /// still saving the state, failed at once, and the container's other processes (holding
    /// its output pipe) lived on until the drain grace ran out, 2 s on every such stop.
    /// `create` takes none: nothing else exists for the container before it, and its init,
    /// which inherits the helper's descriptors and waits for `start`, would hold the lock.
    /// The descriptor closes on exec, so an exec's process does not keep the lock either.
    fn step_lock(&self, c: &Command) -> Option<std::fs::File> {
        let op = match c.verb {
            "start" | "kill" | "delete" | "pause" | "resume" => libc::LOCK_EX,
            "exec" | "ps" | "update" => libc::LOCK_SH,
            _ => return None,
        };
        let dir = std::fs::File::open(self.root.join(c.id().ok()?)).ok()?;
        // SAFETY: flock on a descriptor owned here; retried when a signal interrupts it.
        while unsafe { libc::flock(dir.as_raw_fd(), op) } != 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return None;
            }
        }
        Some(dir)
    }

    /// `create`, in the helper: the spec is read there, so the serving shim never holds
    /// its parsed tree.
    fn create(&self, c: &Command, stdio: Stdio3) -> Result<Vec<u8>, String> {
        let id = c.id().map_err(|f| f.0.to_string())?.to_string();
        let bundle = PathBuf::from(c.flag("--bundle").unwrap_or("."));
        let pid_file = c.flag("--pid-file").map(PathBuf::from);
        let console = c.flag("--console-socket").map(PathBuf::from);
        let root = self.root.clone();
        let cache = self.filter_cache();
        let (systemd, plan) = prepare_spec(&bundle).map_err(|f| f.0.to_string())?;
        let joined = match (systemd, &plan.cgroups_path) {
            (false, Some(path)) => {
                confine::join_unmanaged_cgroups(path)?;
                Some(path.clone())
            }
            _ => None,
        };
        // Everything after the join, so that a failure can leave the cgroups again.
        let built = (move || -> Result<Vec<u8>, String> {
            let confined = confine::for_init(&bundle, &cache)?;
            let mut b = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(root)
                .map_err(|e| e.to_string())?
                .with_pid_file(pid_file)
                .map_err(|e| e.to_string())?
                .with_console_socket(console);
            if let Some(c) = confined {
                b = b.with_executor(c);
            }
            b = with_stdio(b, stdio);
            let ct = b
                .validate_id()
                .map_err(|e| e.to_string())?
                .as_init(bundle)
                .with_systemd(systemd)
                .with_detach(true)
                .build()
                .map_err(|e| format!("create container {id}: {e}"))?;
            let init = ct
                .pid()
                .ok_or_else(|| format!("create container {id}: no init process"))?;
            confine::after_create(&plan, init.as_raw())
                .map_err(|e| format!("create container {id}: {e}"))?;
            Ok(vec![])
        })();
        if let (Err(_), Some(path)) = (&built, &joined) {
            confine::leave_unmanaged_cgroups(path);
        }
        built
    }

    /// `exec`, in the helper.
    fn exec(&self, c: &Command, stdio: Stdio3) -> Result<Vec<u8>, String> {
        let id = c.id().map_err(|f| f.0.to_string())?.to_string();
        let process = c
            .flag("--process")
            .map(PathBuf::from)
            .ok_or("exec: no --process")?;
        let pid_file = c.flag("--pid-file").map(PathBuf::from);
        let console = c.flag("--console-socket").map(PathBuf::from);
        let cache = self.filter_cache();
        let root = self.root.clone();
        let ct =
            Container::load(root.join(&id)).map_err(|e| format!("load container {id}: {e}"))?;
        let bundle = ct.bundle().to_path_buf();
        let cgroup = ct.spec().ok().map(|c| c.cgroup_path);
        let path = cgroup.as_deref().and_then(Path::to_str);
        if let (false, Some(path)) = (ct.systemd(), path.and_then(confine::cgroupfs_path)) {
            confine::join_unmanaged_cgroups(path)?;
        }
        let confined = confine::for_exec(&bundle, &process, &cache)?;
        let mut b = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(root)
            .map_err(|e| e.to_string())?
            .with_console_socket(console);
        if let Some(c) = confined {
            b = b.with_executor(c);
        }
        let pid = with_stdio(b, stdio)
            .as_tenant()
            .with_process(Some(process))
            .with_detach(true)
            .build()
            .map_err(|e| format!("exec in container {id}: {e}"))?;
        if let Some(f) = pid_file {
            std::fs::write(&f, pid.as_raw().to_string())
                .map_err(|e| format!("write {}: {e}", f.display()))?;
        }
        Ok(vec![])
    }

    fn start(&self, c: &Command) -> Result<(), Failed> {
        let id = c.id()?;
        let mut ct = self.load(id)?;
        ct.start()
            .map_err(|e| failed(&format!("start container {id}"), e))?;
        if let Some(pid) = ct.pid() {
            wait_for_exec(pid.as_raw());
        }
        Ok(())
    }

    fn kill(&self, c: &Command) -> Result<(), Failed> {
        let id = c.id()?;
        let sig: i32 = c
            .words
            .get(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failed::new("kill: no signal number"))?;
        let sig = Signal::try_from(sig).map_err(|e| failed("kill", e))?;
        let mut ct = self.load(id)?;
        ct.kill(sig, c.switches.contains(&"--all"))
            .map_err(|e| failed(&format!("kill container {id}"), e))
    }

    fn delete(&self, c: &Command) -> Result<(), Failed> {
        let id = c.id()?;
        let mut ct = self.load(id)?;
        let cgroup = ct.spec().ok().map(|s| s.cgroup_path);
        ct.delete(c.switches.contains(&"--force"))
            .map_err(|e| failed(&format!("delete container {id}"), e))?;
        if let (false, Some(path)) = (ct.systemd(), cgroup) {
            confine::remove_unmanaged_cgroups(&path.to_string_lossy());
        }
        Ok(())
    }

    fn cgroup(&self, id: &str) -> Result<libcgroups::common::AnyCgroupManager, Failed> {
        let ct = self.load(id)?;
        let spec = ct.spec().map_err(|e| failed("container config", e))?;
        libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: spec.cgroup_path,
            systemd_cgroup: ct.systemd(),
            container_name: id.to_string(),
        })
        .map_err(|e| failed(&format!("cgroup of container {id}"), e))
    }

    fn ps(&self, c: &Command) -> Result<Vec<u8>, Failed> {
        use libcgroups::common::CgroupManager;
        let id = c.id()?;
        let pids: Vec<i32> = self
            .cgroup(id)?
            .get_all_pids()
            .map_err(|e| failed(&format!("processes of container {id}"), e))?
            .into_iter()
            .map(|p| p.as_raw())
            .collect();
        serde_json::to_vec(&pids).map_err(|e| failed("ps", e))
    }

    fn update(&self, c: &Command) -> Result<(), Failed> {
        use libcgroups::common::{CgroupManager, ControllerOpt};
        let id = c.id()?;
        let file = c
            .flag("--resources")
            .ok_or_else(|| Failed::new("update: no --resources"))?;
        let text = std::fs::read(file).map_err(|e| failed(&format!("read {file}"), e))?;
        let resources: LinuxResources =
            serde_json::from_slice(&text).map_err(|e| failed("resources are not valid", e))?;
        self.cgroup(id)?
            .apply(&ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| failed(&format!("update container {id}"), e))
    }

    fn pause(&self, c: &Command, pause: bool) -> Result<(), Failed> {
        let id = c.id()?;
        let mut ct = self.load(id)?;
        let r = if pause { ct.pause() } else { ct.resume() };
        r.map_err(|e| failed(&format!("{} container {id}", c.verb), e))
    }

    /// Where compiled seccomp filters are kept for every namespace's containers (a name no
    /// namespace can have: they never start with a dot).
    fn filter_cache(&self) -> PathBuf {
        self.root
            .parent()
            .unwrap_or(&self.root)
            .join(".seccomp-filters")
    }

    /// Whether libcontainer has state for the container `id` (for a caller cleaning up).
    pub fn has(&self, id: &str) -> bool {
        self.root.join(id).join("state.json").exists()
    }
}

/// The helper as the shim's own binary executed afresh, given `args` (what follows
/// [`HELPER`]), `stdio` as its own and `w_fd` as its [`ANSWER_FD`]; returns its pid.
fn exec_helper(args: &[&[u8]], stdio: Stdio3, w_fd: i32) -> Result<i32, Failed> {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(me) = std::env::args_os().next() {
        cmd.arg0(me);
    }
    cmd.arg(HELPER)
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)));
    let null = |fd: Option<OwnedFd>| fd.map(Stdio::from).unwrap_or_else(Stdio::null);
    cmd.stdin(null(stdio.stdin))
        .stdout(null(stdio.stdout))
        .stderr(null(stdio.stderr));
    // SAFETY: runs in the forked child before it execs, and makes only async-signal-safe
    // calls (dup2, fcntl) on a descriptor that stays open in the parent until `spawn`
    // returns.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if w_fd == ANSWER_FD {
                libc::fcntl(w_fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(w_fd, ANSWER_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = cmd
        .spawn()
        .map_err(|e| failed("start the native runtime's helper", e))?;
    Ok(child.id() as i32)
}

/// What a failed helper child said: its own message (or its exit status), with
/// libcontainer's account of what went wrong (its errors often end in a bare "internal")
/// from the log the child wrote.
fn helper_failure(out: &[u8], status: i32, log: Option<&Path>) -> Failed {
    let mut msg = String::from_utf8_lossy(out).into_owned();
    if msg.is_empty() {
        msg = format!("the runtime's helper process failed (exit {status})");
    }
    let detail: Vec<String> = log
        .and_then(|l| std::fs::read_to_string(l).ok())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(|l| {
            l.split_once("ERROR")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        })
        .collect();
    if !detail.is_empty() {
        msg = format!("{msg} ({})", detail.join("; "));
    }
    Failed::new(msg)
}

/// The name libcontainer gives its init process until it execs the container's program.
const INIT_NAME: &str = "youki:[2:INIT]";

/// Waits (up to a second) until the container's init has exec'd its program or gone:
/// libcontainer's start only signals the init, and a caller told "started" expects the
/// container's own program to be running (as the process list then shows).
fn wait_for_exec(pid: i32) {
    let comm = PathBuf::from(format!("/proc/{pid}/comm"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(&comm) {
            Ok(name) if name.trim_end() == INIT_NAME => {
                std::thread::sleep(std::time::Duration::from_micros(100))
            }
            _ => return,
        }
    }
}

/// libcontainer's warnings and errors, from the forked child and the container processes it
/// makes, go to `log`.
fn log_to(log: &Path) {
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

fn with_stdio(mut b: ContainerBuilder, stdio: Stdio3) -> ContainerBuilder {
    if let Some(fd) = stdio.stdin {
        b = b.with_stdin(fd);
    }
    if let Some(fd) = stdio.stdout {
        b = b.with_stdout(fd);
    }
    if let Some(fd) = stdio.stderr {
        b = b.with_stderr(fd);
    }
    b
}

/// Reads the bundle's spec once for what libcontainer needs told or mended; returns whether
/// its cgroup path is systemd's (`slice:prefix:name`, as runc's `--systemd-cgroup` reads it),
/// and what [`confine`] must add.
///
/// runc takes `linux.rootfsPropagation` as `rshared`, `rslave`, `rprivate` or `runbindable`
/// (containerd's CRI writes `rshared` and `rslave` for pods with propagated mounts);
/// libcontainer knows only the plain names and always applies them recursively, which is
/// what the `r` asks for. The spec is rewritten with the plain name.
///
/// `process.noNewPrivileges: false` is dropped (runc reads it as absent): libcontainer takes
/// any value as "set" and would install the seccomp filter after dropping CAP_SYS_ADMIN.
///
/// The seccomp profile leaves the spec for the shim to install ([`confine::take_seccomp`]).
fn prepare_spec(bundle: &Path) -> Result<(bool, Plan), Failed> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| failed("read config.json", e))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| failed("parse config.json", e))?;
    // The runtime was chosen by a scan of this file (main.rs); the parsed spec has the
    // last word: a user namespace never runs here (an exec could not join it).
    let user_ns = spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|nss| nss.iter().any(|n| n["type"] == "user"));
    if user_ns {
        return Err(Failed::new(
            "the native runtime cannot run a user-namespaced container (its execs could not \
             join the namespace); use runc",
        ));
    }
    let systemd = spec["linux"]["cgroupsPath"]
        .as_str()
        .is_some_and(|p| !p.starts_with('/') && p.split(':').count() == 3);
    let mut mended = false;
    if let Some(p @ ("rshared" | "rslave" | "rprivate" | "runbindable")) =
        spec["linux"]["rootfsPropagation"].as_str()
    {
        spec["linux"]["rootfsPropagation"] = serde_json::Value::String(p[1..].to_string());
        mended = true;
    }
    if confine::take_seccomp(&mut spec, bundle).map_err(|e| failed("seccomp", e))? {
        mended = true;
    }
    if spec["process"]["noNewPrivileges"] == false {
        if let Some(p) = spec["process"].as_object_mut() {
            p.remove("noNewPrivileges");
            mended = true;
        }
    }
    if mended {
        let tmp = bundle.join(".config.json.tmp");
        std::fs::write(&tmp, spec.to_string()).map_err(|e| failed("write config.json", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| failed("write config.json", e))?;
    }
    Ok((systemd, Plan::of(&spec)))
}

impl Runtime for Native {
    fn run(&self, args: &[&str], _stdio: Stdio3) -> Result<Vec<u8>, Failed> {
        self.in_helper(args, Stdio3::default(), None)
    }

    fn launch(&self, args: &[&str], stdio: Stdio3, log: &Path) -> Result<(), Failed> {
        let c = Command::parse(args)?;
        // The process a failure is said of: the bundle's for create, the exec's own.
        let process_of = |c: &Command| match c.verb {
            "create" => crate::error::bundle_process(Path::new(c.flag("--bundle").unwrap_or("."))),
            _ => c
                .flag("--process")
                .map(|p| crate::error::read_json(Path::new(p)))
                .unwrap_or_default(),
        };
        if !matches!(c.verb, "create" | "exec") {
            return Err(Failed::new(format!(
                "the native runtime cannot launch {:?}",
                c.verb
            )));
        }
        self.in_helper(args, stdio, Some(log))
            .map(drop)
            .map_err(|f| Failed(crate::error::fold(&f.0.to_string(), &process_of(&c))))
    }
}

/// The first argument that makes the shim's binary the native runtime's helper, followed by
/// the state root, the log path (empty for none), which of stdin, stdout and stderr were
/// given (`1` or `0` each), and runc's command line.
pub const HELPER: &str = "native-runtime-helper";

/// The helper's whole life (`args` follow [`HELPER`]): does the one thing asked and ends
/// with its exit code (0 done, 1 failed, 2 panicked).
pub fn helper_main(args: &[String]) -> i32 {
    // SAFETY: the shim gave the helper this descriptor for its answer, and nothing else
    // here owns it.
    let answer = unsafe { OwnedFd::from_raw_fd(ANSWER_FD) };
    // The container processes the helper makes must not keep it once they exec.
    // SAFETY: fcntl on the descriptor owned just above.
    unsafe { libc::fcntl(ANSWER_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut f = std::fs::File::from(answer);
    let said = std::panic::catch_unwind(|| helper_work(args));
    let (text, code) = match said {
        Ok(Ok(out)) => (out, 0),
        Ok(Err(msg)) => (msg.into_bytes(), 1),
        Err(_) => (vec![], 2),
    };
    let _ = std::io::Write::write_all(&mut f, &text);
    code
}

fn helper_work(args: &[String]) -> Result<Vec<u8>, String> {
    let [root, log, given, rest @ ..] = args else {
        return Err("the native runtime's helper: too few arguments".into());
    };
    if !log.is_empty() {
        log_to(Path::new(log));
    }
    // A copy above the stdio numbers: libcontainer closes what it is given once it has
    // made it the process's stdio, which would close the helper's own 0, 1 or 2.
    let taken = |n: usize, fd: i32| {
        if given.as_bytes().get(n) != Some(&b'1') {
            return Ok(None);
        }
        // SAFETY: fcntl duplicates a descriptor the shim made the helper's stdio.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if copy < 0 {
            return Err(format!("stdio: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the copy was just made and is owned here alone.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(copy) }))
    };
    let stdio = Stdio3 {
        stdin: taken(0, 0)?,
        stdout: taken(1, 1)?,
        stderr: taken(2, 2)?,
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let c = Command::parse(&rest).map_err(|f| f.0.to_string())?;
    let native = Native {
        root: PathBuf::from(root),
        reaper: Arc::new(Reaper::default()),
        zygote: None,
    };
    native.serve_helper(&c, stdio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_command_lines_parse() {
        let c = Command::parse(&[
            "exec",
            "--detach",
            "--pid-file",
            "/b/p",
            "--process",
            "/b/e.json",
            "c1",
        ])
        .unwrap();
        assert_eq!(c.verb, "exec");
        assert_eq!(c.flag("--process"), Some("/b/e.json"));
        assert_eq!(c.flag("--pid-file"), Some("/b/p"));
        assert_eq!(c.switches, ["--detach"]);
        assert_eq!(c.id().unwrap(), "c1");
        let k = Command::parse(&["kill", "--all", "c1", "9"]).unwrap();
        assert_eq!(k.words, ["c1", "9"]);
        assert!(k.switches.contains(&"--all"));
        assert!(Command::parse(&["create", "--bundle"]).is_err());
        assert!(Command::parse(&[]).is_err());
    }

    #[test]
    fn steps_that_rewrite_the_state_exclude_each_other_and_readers_share() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("c1")).unwrap();
        let native = Native {
            root: d.path().to_path_buf(),
            reaper: Arc::new(Reaper::default()),
            zygote: None,
        };
        // Whether a lock of kind `op` on c1's directory could be taken now, from another
        // open file description (as another helper process has).
        let free = |op: i32| {
            let f = std::fs::File::open(d.path().join("c1")).unwrap();
            // SAFETY: flock on a descriptor owned by `f`.
            unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) == 0 }
        };
        let step = |args: &[&str]| native.step_lock(&Command::parse(args).unwrap());
        let kill = step(&["kill", "c1", "15"]).expect("kill locks");
        assert!(!free(libc::LOCK_EX) && !free(libc::LOCK_SH));
        drop(kill);
        let exec = step(&["exec", "--process", "/p.json", "c1"]).expect("exec locks");
        assert!(free(libc::LOCK_SH), "readers share");
        assert!(!free(libc::LOCK_EX), "a writer waits for a reader");
        drop(exec);
        assert!(free(libc::LOCK_EX));
        assert!(step(&["create", "--bundle", "/b", "c1"]).is_none());
        assert!(
            step(&["kill", "gone", "9"]).is_none(),
            "no directory, no lock"
        );
    }

    #[test]
    fn recursive_rootfs_propagation_is_named_plainly() {
        let d = tempfile::tempdir().unwrap();
        let spec = |p: &str| format!(r#"{{"linux": {{"rootfsPropagation": "{p}"}}, "x": 1}}"#);
        let read = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap()
        };
        for (given, wanted) in [
            ("rshared", "shared"),
            ("rslave", "slave"),
            ("rprivate", "private"),
            ("runbindable", "unbindable"),
            ("shared", "shared"),
            ("slave", "slave"),
        ] {
            std::fs::write(d.path().join("config.json"), spec(given)).unwrap();
            prepare_spec(d.path()).unwrap();
            let v = read();
            assert_eq!(v["linux"]["rootfsPropagation"], wanted, "{given}");
            assert_eq!(v["x"], 1);
        }
        // A spec without the field is left byte for byte.
        std::fs::write(d.path().join("config.json"), r#"{"linux": {}}"#).unwrap();
        prepare_spec(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("config.json")).unwrap(),
            r#"{"linux": {}}"#
        );
    }

    #[test]
    fn a_user_namespace_is_refused_however_it_reached_the_native_runtime() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"linux": {"namespaces": [{"type": "pid"}, {"typ\u0065": "\u0075ser"}]}}"#,
        )
        .unwrap();
        let e = prepare_spec(d.path()).unwrap_err();
        assert!(e.to_string().contains("user-namespaced"), "{e}");
    }

    #[test]
    fn a_false_no_new_privileges_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("config.json");
        std::fs::write(
            &config,
            r#"{"process": {"noNewPrivileges": false, "cwd": "/"}}"#,
        )
        .unwrap();
        prepare_spec(d.path()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        assert_eq!(v["process"], serde_json::json!({"cwd": "/"}));
        // Nothing else is added: a spec without seccomp still has none (libcontainer
        // refuses a seccomp object without its defaultAction).
        assert_eq!(
            v,
            serde_json::json!({"process": {"cwd": "/"}}),
            "the rewritten spec gained fields"
        );
        std::fs::write(&config, r#"{"process": {"noNewPrivileges": true}}"#).unwrap();
        prepare_spec(d.path()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        assert_eq!(v["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn systemd_cgroup_paths_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let write = |p: &str| {
            std::fs::write(
                d.path().join("config.json"),
                format!(r#"{{"linux": {{"cgroupsPath": "{p}"}}}}"#),
            )
            .unwrap()
        };
        write("system.slice:berth:c1");
        assert!(prepare_spec(d.path()).unwrap().0);
        write("/berth/default/c1");
        assert!(!prepare_spec(d.path()).unwrap().0);
    }
}
