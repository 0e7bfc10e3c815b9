//! A process's stdio: the client's FIFOs handed to runc, or a console socket runc sends the
//! pty master to, which is then wired to the FIFOs; ResizePty and CloseIO act on them.

use super::{Service, R};
use crate::console::{self, ConsoleSocket};
use crate::error::Error;
use crate::runc::Stdio3;
use crate::stdio::open_io;
use berth_proto::containerd::task::v2 as api;
use std::os::fd::OwnedFd;
use std::sync::Arc;

impl Service {
    /// runc's stdio: the client's FIFOs, or none and a console socket for a terminal.
    pub(super) fn stdio_for(
        &self,
        name: &str,
        terminal: bool,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> R<(Stdio3, Option<ConsoleSocket>)> {
        if terminal {
            let sock = ConsoleSocket::bind(&self.bundle, name)
                .map_err(|e| Error::internal(format!("console socket: {e}")))?;
            return Ok((Stdio3::default(), Some(sock)));
        }
        let stdio = Stdio3 {
            stdin: open_io(stdin, false)?,
            stdout: open_io(stdout, true)?,
            stderr: open_io(stderr, true)?,
        };
        Ok((stdio, None))
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
