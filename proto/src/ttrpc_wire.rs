//! The ttrpc wire format spoken between berthd and its shims: a 10-byte frame header
//! (payload length, stream id, type, flags) followed by a protobuf Request or Response.
//! Blocking helpers here; async peers frame with [`Header`] themselves.

use crate::ttrpc::{Request, Response};
use prost::Message;
use std::io::{Read, Write};

pub const HEADER_LEN: usize = 10;
/// Largest payload a peer may send, as ttrpc enforces.
pub const MAX_PAYLOAD: u32 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Request = 1,
    Response = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub stream_id: u32,
    pub kind: FrameType,
    pub flags: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ttrpc frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
    #[error("unknown ttrpc frame type {0}")]
    UnknownType(u8),
    #[error("ttrpc payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("ttrpc i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind as u8;
        b[9] = self.flags;
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, Error> {
        let length = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if length > MAX_PAYLOAD {
            return Err(Error::TooLarge(length));
        }
        let kind = match b[8] {
            1 => FrameType::Request,
            2 => FrameType::Response,
            other => return Err(Error::UnknownType(other)),
        };
        Ok(Header {
            length,
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind,
            flags: b[9],
        })
    }
}

/// Writes one frame: header then payload.
pub fn write_frame(
    w: &mut impl Write,
    stream_id: u32,
    kind: FrameType,
    payload: &[u8],
) -> Result<(), Error> {
    let length = u32::try_from(payload.len()).map_err(|_| Error::TooLarge(u32::MAX))?;
    if length > MAX_PAYLOAD {
        return Err(Error::TooLarge(length));
    }
    let h = Header {
        length,
        stream_id,
        kind,
        flags: 0,
    };
    w.write_all(&h.encode())?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads one frame; the length is checked before anything is allocated.
pub fn read_frame(r: &mut impl Read) -> Result<(Header, Vec<u8>), Error> {
    let mut hb = [0u8; HEADER_LEN];
    r.read_exact(&mut hb)?;
    let h = Header::decode(&hb)?;
    let mut payload = vec![0u8; h.length as usize];
    r.read_exact(&mut payload)?;
    Ok((h, payload))
}

pub fn decode_request(payload: &[u8]) -> Result<Request, Error> {
    Ok(Request::decode(payload)?)
}

pub fn decode_response(payload: &[u8]) -> Result<Response, Error> {
    Ok(Response::decode(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let req = Request {
            service: "containerd.task.v2.Task".into(),
            method: "State".into(),
            payload: vec![1, 2, 3],
            timeout_nano: 0,
            metadata: vec![],
        };
        let mut buf = vec![];
        write_frame(&mut buf, 1, FrameType::Request, &req.encode_to_vec()).unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 10).to_be_bytes());
        let (h, payload) = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!((h.stream_id, h.kind), (1, FrameType::Request));
        assert_eq!(decode_request(&payload).unwrap(), req);
    }

    #[test]
    fn hostile_frames_are_refused_before_allocation() {
        let mut huge = [0u8; HEADER_LEN];
        huge[0..4].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        huge[8] = 1;
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(Error::TooLarge(_))
        ));
        let mut odd = [0u8; HEADER_LEN];
        odd[8] = 9;
        assert!(matches!(
            read_frame(&mut odd.as_slice()),
            Err(Error::UnknownType(9))
        ));
        let short = [0u8, 0, 0, 5, 0, 0, 0, 1, 1, 0, 1, 2];
        assert!(matches!(
            read_frame(&mut short.as_slice()),
            Err(Error::Io(_))
        ));
    }
}
