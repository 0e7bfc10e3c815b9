//! The native runtime's zygote: a process forked from the serving shim while the shim still
//! has one thread (before its reaper or any request thread exists), which from then on forks
//! a worker for each step of the native runtime. It never gains a thread, so no lock can be
//! held by another thread when it forks: its workers may run libcontainer, whose clones end
//! through `std::process::exit`. A worker is a fork of a small, already loaded and relocated
//! process, not the shim's binary executed afresh: no exec, no dynamic loader (which probes
//! the CPU through CPUID, each probe a trap to the hypervisor in a VM), no relocations, no
//! runtime start-up.
//!
//! A request is one datagram on a socketpair: a byte saying which of stdin, stdout and stderr
//! come with it, then the worker's arguments, each ended by a NUL; with it, descriptors (the
//! pipe for the worker's pid, the worker's answer descriptor, then the stdio given). The
//! zygote clones the worker as its parent's child (`CLONE_PARENT`: the worker is the shim's
//! child from birth, its exit the shim's `SIGCHLD`, collected by the shim's reaper as any
//! child's) and writes the worker's pid; the zygote has no child of its own to wait for.
//! (An intermediate process forked by the zygote, forking the worker and exiting to orphan
//! it to the shim, cost a process and a scheduling hop on every step of the runtime.)
//!
//! The zygote ends when the shim does: its end of the socketpair reads end-of-file, and the
//! shim's death kills it besides (`PR_SET_PDEATHSIG`).

use std::io::{Error, ErrorKind};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What a worker runs: its arguments in, its exit code out.
pub type Work = fn(&[String]) -> i32;

/// The shim's end of the zygote.
pub struct Zygote {
    sock: OwnedFd,
    pid: libc::pid_t,
}

/// The descriptors a worker is given: its answer descriptor and, where given, its stdio.
pub struct Given<'a> {
    pub answer: BorrowedFd<'a>,
    pub stdio: [Option<BorrowedFd<'a>>; 3],
}

/// The descriptor number a worker finds its answer descriptor on.
pub const ANSWER_FD: RawFd = 3;

/// The pid pipe, the answer descriptor and three stdio descriptors.
const MAX_FDS: usize = 5;

/// The largest request: a handful of paths and flags.
const MAX_REQUEST: usize = 64 << 10;

impl Zygote {
    /// Forks the zygote, which runs `work` in a worker for each request. None when this
    /// process has more than one thread (a fork would copy locks other threads hold) or the
    /// zygote cannot be made: the caller then runs its steps some other way.
    pub fn start(work: Work) -> Option<Zygote> {
        if !single_threaded() {
            return None;
        }
        let mut sv = [0; 2];
        // SAFETY: socketpair fills the two-int array.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: both descriptors were just made and are owned here alone.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: this process has one thread (checked above), so the child's copy of every
        // lock is consistent; the child never returns from `zygote`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return None;
        }
        if pid == 0 {
            zygote(theirs.as_raw_fd(), parent, work);
        }
        drop(theirs);
        Some(Zygote { sock: ours, pid })
    }

    /// The zygote's pid (a standby shim moves it along with itself when it takes a task).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Has the zygote fork a worker running `work` with `args` and the descriptors `given`;
    /// returns the worker's pid. The worker is this process's child, waited for like any
    /// other (through the reaper).
    pub fn spawn(&self, args: &[&[u8]], given: Given) -> std::io::Result<i32> {
        let mut request = vec![0u8];
        for (n, fd) in given.stdio.iter().enumerate() {
            if fd.is_some() {
                request[0] |= 1 << n;
            }
        }
        for a in args {
            if a.contains(&0) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "an argument holds a NUL",
                ));
            }
            request.extend_from_slice(a);
            request.push(0);
        }
        if request.len() > MAX_REQUEST {
            return Err(Error::new(ErrorKind::InvalidInput, "request too long"));
        }
        let (pid_r, pid_w) = pipe()?;
        let mut fds = vec![pid_w.as_raw_fd(), given.answer.as_raw_fd()];
        fds.extend(given.stdio.iter().flatten().map(|fd| fd.as_raw_fd()));
        send(self.sock.as_raw_fd(), &request, &fds)?;
        drop(pid_w);
        // The zygote writes the pid; end-of-file means it could not clone the worker.
        let mut pid = [0u8; 4];
        let mut got = 0;
        while got < pid.len() {
            // SAFETY: reads into the rest of a local buffer, from a descriptor owned here.
            let n = unsafe {
                libc::read(
                    pid_r.as_raw_fd(),
                    pid[got..].as_mut_ptr().cast(),
                    pid.len() - got,
                )
            };
            match n {
                0 => {
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "the zygote forked no worker",
                    ))
                }
                n if n < 0 => {
                    let e = Error::last_os_error();
                    if e.kind() != ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => got += n as usize,
            }
        }
        Ok(i32::from_ne_bytes(pid))
    }
}

/// Whether this process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for a control message carrying [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

fn control_len(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE computes a size from its argument.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn send(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; an all-zero one is valid and is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control_len(fds.len()) as _;
    // SAFETY: the control buffer holds CMSG_SPACE(fds) bytes (MAX_FDS at most fit in 64),
    // so the first header and its data lie inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
    }
    loop {
        // SAFETY: msg points at the local iovec and control buffer, alive for the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One request: its length (0 at end-of-file) and the descriptors that came with it.
fn receive(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; an all-zero one is valid and is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control_len(MAX_FDS) as _;
    // SAFETY: msg points at the caller's buffer and the local control buffer.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Error::last_os_error());
    }
    let mut fds = vec![];
    // SAFETY: the kernel filled the control buffer; the CMSG macros walk what it wrote,
    // and every descriptor of an SCM_RIGHTS message is now this process's own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(Error::new(ErrorKind::InvalidData, "request truncated"));
    }
    Ok((n as usize, fds))
}

/// What the zygote's command line (and its workers', which share its memory map) says after
/// its first word: not the serving shim's arguments, by which tools and tests pick out the
/// shim of a container (its `-id`, its daemon's socket).
const TITLE: &[u8] = b"native-runtime-zygote\0";

/// Writes [`TITLE`] over this process's arguments after the first.
fn retitle() {
    set_arguments(TITLE);
}

/// Writes `rest` (arguments, each ended by a NUL) over this process's arguments after the
/// first, in the argument area `/proc/<pid>/cmdline` reads (as `setproctitle` does), the
/// room left filled with NULs; false, and nothing written, where it does not fit.
pub fn set_arguments(rest: &[u8]) -> bool {
    let Some((start, end)) = arg_bounds() else {
        return false;
    };
    // SAFETY: [start, end) is this process's argument area, on its own stack, mapped
    // writable. Nothing reads it afterwards but the kernel: std keeps pointers into it only
    // for `std::env::args`, which nothing calls once the arguments were parsed.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        let Some(first) = area.iter().position(|b| *b == 0) else {
            return false;
        };
        let room = &mut area[first + 1..];
        if room.len() < rest.len() {
            return false;
        }
        room.fill(0);
        room[..rest.len()].copy_from_slice(rest);
    }
    true
}

/// This process's `arg_start` and `arg_end`, the 48th and 49th fields of `/proc/self/stat`.
fn arg_bounds() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(45);
    let start = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// The zygote's life: requests in, a worker forked for each, until the shim is gone.
fn zygote(sock: RawFd, parent: libc::pid_t, work: Work) -> ! {
    // SAFETY: prctl with integer arguments, then getppid: if the shim died before the
    // death signal was armed, the zygote ends now.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
    retitle();
    // Nothing of the shim's but the socket and stdio: not its readiness pipe, not the
    // pidfd of its requester.
    // SAFETY: close_range on descriptor numbers; nothing in this process uses the others.
    unsafe {
        if sock > 3 {
            libc::syscall(libc::SYS_close_range, 3, sock - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, sock + 1, u32::MAX, 0);
    }
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        match receive(sock, &mut buf) {
            Ok((0, _)) => break,
            Ok((n, fds)) => fork_worker(sock, &buf[..n], &fds, work),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A request it could not read: its descriptors are closed, so the shim reads
            // end-of-file for its pid.
            Err(e) if e.kind() == ErrorKind::InvalidData => {}
            Err(_) => break,
        }
    }
    // SAFETY: ends the zygote without running the shim's exit handlers.
    unsafe { libc::_exit(0) }
}

/// Clones the worker as a child of the zygote's parent, the shim, and writes its pid on the
/// request's pid pipe.
fn fork_worker(sock: RawFd, request: &[u8], fds: &[OwnedFd], work: Work) {
    if request.is_empty() || fds.len() < 2 {
        return;
    }
    // SAFETY: a fork-like clone (no new stack, no shared memory) of this single-threaded
    // process; the child ends in _exit below. Raw clone skips glibc's fork handlers, which
    // a process with one thread and no lock held has nothing to reset in; libcontainer's
    // own processes are made the same way.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as libc::pid_t;
    if pid == 0 {
        let code = worker(sock, request, fds, work);
        // SAFETY: ends the worker without running the shim's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid > 0 {
        let bytes = pid.to_ne_bytes();
        // SAFETY: writes a local buffer to the request's pid pipe.
        unsafe { libc::write(fds[0].as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// In the worker: the request's descriptors become its stdio (or /dev/null) and
/// [`ANSWER_FD`], the signal mask is emptied (as for an exec'd process), and `work` runs.
fn worker(sock: RawFd, request: &[u8], fds: &[OwnedFd], work: Work) -> i32 {
    // SAFETY: the worker's copy of the zygote's socket, which it does not use.
    unsafe { libc::close(sock) };
    let (mask, args) = (request[0], &request[1..]);
    let args: Vec<String> = args
        .split(|b| *b == 0)
        .take(args.iter().filter(|b| **b == 0).count())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut given = fds[2..].iter();
    let mut sources = [-1; 4];
    for (n, source) in sources.iter_mut().take(3).enumerate() {
        *source = if mask & (1 << n) != 0 {
            match given.next() {
                Some(fd) => fd.as_raw_fd(),
                None => return 1,
            }
        } else {
            // SAFETY: opens /dev/null; a failure shows as -1, refused below.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) }
        };
    }
    sources[3] = fds[1].as_raw_fd();
    // Every source moves above the targets first, so that no dup2 onto 0..=3 closes a
    // source another target still needs.
    let mut high = [-1; 4];
    for (h, s) in high.iter_mut().zip(sources) {
        // SAFETY: fcntl duplicating a descriptor of this process (or failing on -1).
        *h = unsafe { libc::fcntl(s, libc::F_DUPFD_CLOEXEC, 10) };
        if *h < 0 {
            return 1;
        }
    }
    for (target, h) in high.iter().enumerate() {
        // SAFETY: dup2 and close on descriptors of this process.
        unsafe {
            if libc::dup2(*h, target as RawFd) < 0 {
                return 1;
            }
            libc::close(*h);
        }
    }
    for (n, s) in sources.iter().take(3).enumerate() {
        if mask & (1 << n) == 0 {
            // SAFETY: the /dev/null opened above, now copied onto its target.
            unsafe { libc::close(*s) };
        }
    }
    // SAFETY: an emptied signal set, then made the mask; both on locals.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    work(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_zygote_is_forked_from_a_process_with_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(Zygote::start(|_| 0).is_none());
        drop(tx);
        let _ = t.join();
    }
}
