//! The ttrpc face of the Task service: each method's request decoded, the verb called, its
//! answer encoded. No logic of its own beyond Connect's and Shutdown's few lines.

use super::{Service, R};
use crate::error::Error;
use crate::server::{Handler, Reply};
use berth_proto::containerd::task::v2 as api;
use prost::Message;

fn decode<M: Message + Default>(payload: &[u8]) -> R<M> {
    M::decode(payload).map_err(|e| Error::invalid(format!("bad request: {e}")))
}

fn ok<M: Message>(m: M) -> Reply {
    Ok(m.encode_to_vec())
}

impl Handler for Service {
    fn handle(&self, method: &str, p: &[u8]) -> Reply {
        match method {
            "Create" => ok(self.create(decode(p)?)?),
            "Start" => ok(self.start(decode(p)?)?),
            "State" => ok(self.state_of(decode(p)?)?),
            "Wait" => ok(self.wait(decode(p)?)?),
            "Kill" => ok(self.kill(decode(p)?)?),
            "Delete" => ok(self.delete(decode(p)?)?),
            "Exec" => ok(self.exec(decode(p)?)?),
            "Pids" => ok(self.pids()?),
            "Pause" => ok(self.pause(true)?),
            "Resume" => ok(self.pause(false)?),
            "Update" => ok(self.update_resources(decode(p)?)?),
            "ResizePty" => ok(self.resize_pty(decode(p)?)?),
            "CloseIO" => {
                self.close_io(decode(p)?);
                ok(())
            }
            "Connect" => ok(self.connect()),
            "Shutdown" => {
                self.shutdown(decode(p)?);
                ok(())
            }
            "Stats" => ok(self.stats()?),
            "Checkpoint" => ok(self.checkpoint(decode(p)?)?),
            other => Err(Error::unimplemented(format!(
                "method {other} is not implemented"
            ))),
        }
    }
}

impl Service {
    fn connect(&self) -> api::ConnectResponse {
        api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.proc("").map(|p| p.pid as u32).unwrap_or(0),
            version: concat!("berth ", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// Exits (once the answer is out) when asked to now or when nothing runs any more.
    fn shutdown(&self, r: api::ShutdownRequest) {
        if r.now || !self.live() {
            // Answer first, then go.
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::process::exit(0);
            });
        }
    }
}
