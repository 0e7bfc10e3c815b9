//! The resize channel of a remote-command session: a stream of small JSON objects
//! (`{"Width":W,"Height":H}`, one per terminal size change) decoded as the bytes arrive. Each
//! byte is looked at once, and at most one message's worth (`MAX_MESSAGE`) is held between
//! chunks: a client that sends anything else loses its resize channel, not berthd's memory.

use super::spdy;
use crate::core::runtime::{ProcessRef, Resize};
use crate::edge::cri::Cri;
use serde::Deserialize;

/// Largest resize message held while incomplete; a real one is some 30 bytes.
const MAX_MESSAGE: usize = 4 << 10;

/// What ends a resize channel.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("a resize message ran past {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("resize messages are JSON objects; found byte {0:#04x} between them")]
    NotAnObject(u8),
    #[error("malformed resize message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Kubernetes' `remotecommand.TerminalSize`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the channel's bytes into messages by tracking brackets and strings, so that only a
/// complete message (at most `MAX_MESSAGE` bytes) is ever given to the JSON parser.
#[derive(Default)]
pub struct ResizeDecoder {
    /// The message under way, from its `{`.
    held: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The newest complete size not yet taken.
    latest: Option<TerminalSize>,
}

impl ResizeDecoder {
    /// Takes in the next bytes of the channel; an error means the channel is unusable from
    /// here on. Sizes completed before an error are still kept for `take_latest`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ResizeError> {
        for &b in chunk {
            if self.depth == 0 {
                match b {
                    b'{' => {}
                    b if b.is_ascii_whitespace() => continue,
                    b => return Err(ResizeError::NotAnObject(b)),
                }
            }
            if self.held.len() == MAX_MESSAGE {
                return Err(ResizeError::TooLong);
            }
            self.held.push(b);
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        let size = serde_json::from_slice(&self.held);
                        self.held.clear();
                        self.latest = Some(size?);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The newest size completed since the last call: sizes sent in a burst overtake each
    /// other, and only the last one needs to reach the terminal.
    pub fn take_latest(&mut self) -> Option<TerminalSize> {
        self.latest.take()
    }
}

/// Applies the channel's sizes to the process's terminal until the channel ends or goes bad.
pub(super) async fn resizes(cri: Cri, p: ProcessRef, mut s: spdy::Stream) {
    let mut decoder = ResizeDecoder::default();
    while let Some(chunk) = s.data.recv().await {
        let fed = decoder.feed(&chunk);
        if let Some(size) = decoder.take_latest() {
            let resize = Resize {
                process: p.clone(),
                width: size.width.into(),
                height: size.height.into(),
            };
            let _ = cri.tasks.resize(cri.ns.clone(), resize).await;
        }
        if let Err(e) = fed {
            tracing::debug!(error = %e, "resize channel closed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u16, height: u16) -> Option<TerminalSize> {
        Some(TerminalSize { width, height })
    }

    #[test]
    fn sizes_split_across_chunks_and_bursts_keep_the_newest() {
        let mut d = ResizeDecoder::default();
        d.feed(b"{\"Width\":80,").unwrap();
        assert_eq!(d.take_latest(), None);
        d.feed(b"\"Height\":24}\n").unwrap();
        assert_eq!(d.take_latest(), size(80, 24));
        assert_eq!(d.take_latest(), None, "taken once");
        d.feed(b"{\"Width\":1,\"Height\":2}\n{\"Height\":5,\"Width\":9}\n{\"Wi")
            .unwrap();
        assert_eq!(d.take_latest(), size(9, 5));
        d.feed(b"dth\":7,\"Height\":3}").unwrap();
        assert_eq!(d.take_latest(), size(7, 3));
    }

    #[test]
    fn brackets_inside_strings_do_not_end_a_message() {
        let mut d = ResizeDecoder::default();
        d.feed(br#"{"x":"}{\"]","Width":3,"Height":4}"#).unwrap();
        assert_eq!(d.take_latest(), size(3, 4));
    }

    #[test]
    fn an_endless_message_is_refused_at_the_bound_holding_no_more() {
        let mut d = ResizeDecoder::default();
        d.feed(b"{\"Width\":100,\"Height\":40}{\"Width\":").unwrap();
        let inside = vec![b' '; 1 << 20];
        assert!(matches!(d.feed(&inside), Err(ResizeError::TooLong)));
        assert!(
            d.held.capacity() <= 2 * MAX_MESSAGE,
            "{}",
            d.held.capacity()
        );
        assert_eq!(
            d.take_latest(),
            size(100, 40),
            "sizes before the error stand"
        );
    }

    #[test]
    fn garbage_between_messages_and_bad_messages_end_the_channel() {
        let mut d = ResizeDecoder::default();
        assert!(matches!(
            d.feed(b"{\"Width\":10,\"Height\":20} x"),
            Err(ResizeError::NotAnObject(b'x'))
        ));
        assert_eq!(d.take_latest(), size(10, 20));
        let mut d = ResizeDecoder::default();
        assert!(matches!(
            d.feed(b"[1,2]"),
            Err(ResizeError::NotAnObject(b'['))
        ));
        let mut d = ResizeDecoder::default();
        assert!(matches!(
            d.feed(b"{\"Width\":70000}"),
            Err(ResizeError::Malformed(_))
        ));
        let mut d = ResizeDecoder::default();
        assert!(matches!(d.feed(b"{]"), Err(ResizeError::Malformed(_))));
    }
}
