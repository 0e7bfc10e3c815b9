//! A process's stdio: pipes relayed to the client's FIFOs (see [`crate::stdio`]), or a
//! console socket runc sends the pty master to, which is then wired to the FIFOs; ResizePty
//! and CloseIO act on them.

use super::{Service, R};
use crate::console::{self, ConsoleSocket};
use crate::error::Error;
use crate::runc::Stdio3;
use crate::stdio::{hold_stdin, open_io, relay, Relay};
use berth_proto::containerd::task::v2 as api;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// What a process is launched with: the runtime's stdio, or a console socket for a
/// terminal; the relay's drain and the held stdin write end, without one.
pub(super) struct ProcIo {
    pub stdio: Stdio3,
    pub socket: Option<ConsoleSocket>,
    pub relay: Option<Arc<Relay>>,
    stdin_hold: Option<OwnedFd>,
}

impl ProcIo {
    /// The stdin write end to hold until CloseIO, once the process runs: the relay's, or
    /// with a terminal one opened now that the console's reader is.
    pub fn stdin_hold(&mut self, stdin: &str) -> Option<Arc<OwnedFd>> {
        match self.socket {
            Some(_) => hold_stdin(stdin),
            None => self.stdin_hold.take(),
        }
        .map(Arc::new)
    }
}

impl Service {
    /// The runtime's stdio: pipes relayed to the client's FIFOs, or none and a console
    /// socket for a terminal.
    pub(super) fn stdio_for(
        &self,
        name: &str,
        terminal: bool,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> R<ProcIo> {
        if terminal {
            let sock = ConsoleSocket::bind(&self.bundle, name)
                .map_err(|e| Error::internal(format!("console socket: {e}")))?;
            return Ok(ProcIo {
                stdio: Stdio3::default(),
                socket: Some(sock),
                relay: None,
                stdin_hold: None,
            });
        }
        let piped = relay(stdin, stdout, stderr)?;
        Ok(ProcIo {
            stdio: piped.stdio,
            socket: None,
            relay: Some(piped.relay),
            stdin_hold: piped.stdin_hold,
        })
    }

    /// With a console socket, takes the pty master runc sent and wires it to the client's
    /// FIFOs; without one, there is no terminal.
    pub(super) fn attach_console(
        &self,
        socket: Option<&ConsoleSocket>,
        stdin: &str,
        stdout: &str,
    ) -> R<Option<Arc<OwnedFd>>> {
        let Some(sock) = socket else {
            return Ok(None);
        };
        let master = sock
            .receive()
            .map_err(|e| Error::internal(format!("terminal: {e}")))?;
        console::copy(&master, open_io(stdin, false)?, open_io(stdout, true)?)
            .map_err(|e| Error::internal(format!("terminal: {e}")))?;
        Ok(Some(Arc::new(master)))
    }

    pub(super) fn resize_pty(&self, r: api::ResizePtyRequest) -> R<()> {
        let p = self.proc(&r.exec_id)?;
        match &p.console {
            Some(m) => console::resize(m, r.width, r.height)
                .map_err(|e| Error::internal(format!("resize: {e}"))),
            None => Ok(()),
        }
    }

    /// Closing stdin lets go of the write end held for the process: it reads the end of
    /// its input.
    pub(super) fn close_io(&self, r: api::CloseIoRequest) {
        if r.stdin {
            self.update(&r.exec_id, |p| p.stdin_hold = None);
        }
    }
}
