//! NRI's connection multiplexer: one unix connection carries several byte channels, each
//! frame prefixed by 4 bytes of channel id and 4 of length (big-endian). A plugin's
//! connection carries two ttrpc channels: [`PLUGIN_CHANNEL`] (berthd calls the plugin) and
//! [`RUNTIME_CHANNEL`] (the plugin calls berthd). Each comes out as an in-memory duplex
//! stream that berth's ttrpc client and server read and write as they would a socket.

use crate::edge::shim::ttrpc::read_frame;
use berth_proto::ttrpc_wire::{HEADER_LEN, MAX_PAYLOAD};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// The channel the plugin serves its Plugin service on.
pub const PLUGIN_CHANNEL: u32 = 1;
/// The channel berthd serves its Runtime service on.
pub const RUNTIME_CHANNEL: u32 = 2;
const MUX_HEADER: usize = 8;
/// The largest mux frame a peer may send: one whole ttrpc frame.
const MAX_MUX_FRAME: u32 = MAX_PAYLOAD + HEADER_LEN as u32;
/// Go's ttrpc reads its channel through a 4 KiB buffer and refuses a mux frame larger than
/// the room it has: a ttrpc frame goes out whole when it fits, else header then payload.
const PEER_READ_BUFFER: usize = 4096;
const DUPLEX_BUFFER: usize = 256 << 10;

/// The two channels of one plugin connection; dropping `guard` closes the connection.
pub struct Channels {
    pub plugin: DuplexStream,
    pub runtime: DuplexStream,
    pub guard: PumpGuard,
}

/// Aborts a connection's pumps when dropped.
pub struct PumpGuard(Vec<JoinHandle<()>>);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            p.abort();
        }
    }
}

/// Splits a plugin's connection into its two channels.
pub fn multiplex(conn: UnixStream) -> Channels {
    let (mut trunk_r, trunk_w) = conn.into_split();
    let trunk_w = Arc::new(Mutex::new(trunk_w));
    let (plugin, plugin_inner) = tokio::io::duplex(DUPLEX_BUFFER);
    let (runtime, runtime_inner) = tokio::io::duplex(DUPLEX_BUFFER);
    let (plugin_r, mut plugin_w) = tokio::io::split(plugin_inner);
    let (runtime_r, mut runtime_w) = tokio::io::split(runtime_inner);
    let demux = tokio::spawn(async move {
        // Frames for a channel nobody reads are dropped, as NRI's own mux does.
        while let Ok((id, payload)) = read_mux_frame(&mut trunk_r).await {
            let sink = match id {
                PLUGIN_CHANNEL => &mut plugin_w,
                RUNTIME_CHANNEL => &mut runtime_w,
                _ => continue,
            };
            if sink.write_all(&payload).await.is_err() {
                break;
            }
        }
        let _ = plugin_w.shutdown().await;
        let _ = runtime_w.shutdown().await;
    });
    let to_plugin = tokio::spawn(pump_out(PLUGIN_CHANNEL, plugin_r, trunk_w.clone()));
    let to_runtime = tokio::spawn(pump_out(RUNTIME_CHANNEL, runtime_r, trunk_w));
    Channels {
        plugin,
        runtime,
        guard: PumpGuard(vec![demux, to_plugin, to_runtime]),
    }
}

async fn read_mux_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<(u32, Vec<u8>)> {
    let mut h = [0u8; MUX_HEADER];
    r.read_exact(&mut h).await?;
    let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_MUX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("NRI mux frame of {len} bytes is over the limit"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok((id, payload))
}

async fn write_mux_frame(
    w: &mut (impl AsyncWrite + Unpin),
    id: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(MUX_HEADER + data.len());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
    frame.extend_from_slice(data);
    w.write_all(&frame).await
}

/// Carries what berth's ttrpc side writes on `id` to the trunk, one ttrpc frame at a time.
async fn pump_out(id: u32, mut from: ReadHalf<DuplexStream>, trunk: Arc<Mutex<OwnedWriteHalf>>) {
    while let Ok((h, payload)) = read_frame(&mut from).await {
        let header = h.encode();
        let mut w = trunk.lock().await;
        let sent = if HEADER_LEN + payload.len() <= PEER_READ_BUFFER {
            let mut whole = header.to_vec();
            whole.extend_from_slice(&payload);
            write_mux_frame(&mut *w, id, &whole).await
        } else {
            match write_mux_frame(&mut *w, id, &header).await {
                Ok(()) => write_mux_frame(&mut *w, id, &payload).await,
                Err(e) => Err(e),
            }
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = trunk.lock().await.shutdown().await;
}

/// The writing half of a channel, shared by the tasks answering requests on it.
pub type SharedWriter = Arc<Mutex<WriteHalf<DuplexStream>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::ttrpc_wire::{FrameType, Header};

    #[tokio::test]
    async fn ttrpc_frames_cross_in_both_directions_on_their_channel() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let ch = multiplex(ours);
        let (_pr, mut pw) = tokio::io::split(ch.plugin);
        let (mut rr, _rw) = tokio::io::split(ch.runtime);
        // Out: a large frame goes header first, then its payload, on channel 1.
        let big = vec![7u8; 10_000];
        crate::edge::shim::ttrpc::write_frame(&mut pw, 1, FrameType::Request, &big)
            .await
            .unwrap();
        let (id, head) = read_mux_frame(&mut theirs).await.unwrap();
        assert_eq!((id, head.len()), (PLUGIN_CHANNEL, HEADER_LEN));
        let (id, body) = read_mux_frame(&mut theirs).await.unwrap();
        assert_eq!((id, body), (PLUGIN_CHANNEL, big));
        // In: a frame split over two mux frames on channel 2 arrives whole.
        let h = Header {
            length: 3,
            stream_id: 1,
            kind: FrameType::Request,
            flags: 0,
        }
        .encode();
        write_mux_frame(&mut theirs, RUNTIME_CHANNEL, &h[..4])
            .await
            .unwrap();
        let mut rest = h[4..].to_vec();
        rest.extend_from_slice(&[1, 2, 3]);
        write_mux_frame(&mut theirs, RUNTIME_CHANNEL, &rest)
            .await
            .unwrap();
        let (got, payload) = read_frame(&mut rr).await.unwrap();
        assert_eq!((got.stream_id, payload), (1, vec![1, 2, 3]));
    }
}
