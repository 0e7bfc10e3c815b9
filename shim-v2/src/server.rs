//! The ttrpc server: a thread per connection reads requests; each request runs on a thread
//! of its own (Wait blocks until an exit), and responses are written back under a lock. A
//! request thread that is done waits for the next request rather than exiting (a few at
//! most do): a container's life is half a dozen requests, and each thread made and ended
//! costs a clone, a stack mapped and unmapped, and a wake-up on a CPU the thread never ran on.

use crate::error::Error;
use crate::wire::{self, FrameType};
use berth_proto::google::rpc::Status;
use berth_proto::ttrpc::{Request, Response};
use prost::Message;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

pub type Reply = Result<Vec<u8>, Error>;

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, method: &str, payload: &[u8]) -> Reply;
}

pub fn serve(listener: UnixListener, handler: Arc<dyn Handler>) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if peer_uid(&conn) != Some(me) {
            continue; // only our own user may drive the shim
        }
        let h = handler.clone();
        let _ = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || connection(conn, h));
    }
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn connection(conn: UnixStream, handler: Arc<dyn Handler>) {
    let Ok(writer) = conn.try_clone() else { return };
    let writer = Arc::new(Mutex::new(writer));
    let mut reader = conn;
    while let Ok((h, payload)) = wire::read_frame(&mut reader) {
        if h.kind != FrameType::Request {
            continue;
        }
        let (handler, writer) = (handler.clone(), writer.clone());
        run_request(Box::new(move || {
            let reply = match Request::decode(payload.as_slice()) {
                Ok(req) if req.service == "containerd.task.v2.Task" => {
                    handler.handle(&req.method, &req.payload)
                }
                Ok(req) => Err(Error::unimplemented(format!(
                    "service {} is not served here",
                    req.service
                ))),
                Err(e) => Err(Error::invalid(format!("bad request: {e}"))),
            };
            let resp = match reply {
                Ok(payload) => Response {
                    status: Some(Status {
                        code: 0,
                        message: String::new(),
                        details: vec![],
                    }),
                    payload,
                },
                Err(e) => Response {
                    status: Some(Status {
                        code: e.code(),
                        message: e.to_string(),
                        details: vec![],
                    }),
                    payload: vec![],
                },
            };
            if let Ok(mut w) = writer.lock() {
                let _ = wire::write_frame(
                    &mut *w,
                    h.stream_id,
                    FrameType::Response,
                    &resp.encode_to_vec(),
                );
            }
        }));
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// How many request threads may wait for work at once; more are made when more requests
/// run together (Wait, Start and State overlap), and end once done.
const MAX_IDLE: usize = 4;

/// The request threads waiting for work, each by the sender of its own queue.
static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

/// Runs `job` on an idle request thread, or on a new one when none waits.
fn run_request(mut job: Job) {
    loop {
        let next = IDLE.lock().ok().and_then(|mut idle| idle.pop());
        let Some(idle) = next else { break };
        match idle.send(job) {
            Ok(()) => return,
            // That thread is gone (it could not be told apart before): try the next.
            Err(e) => job = e.0,
        }
    }
    let _ = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || request_thread(job));
}

/// A request thread's life: its first job, then whatever it is given while it is idle,
/// until there are enough idle threads without it.
fn request_thread(first: Job) {
    let (tx, rx) = channel::<Job>();
    first();
    loop {
        match IDLE.lock() {
            Ok(mut idle) if idle.len() < MAX_IDLE => idle.push(tx.clone()),
            _ => return,
        }
        match rx.recv() {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}
