//! The kubelet's container log format, which berth's own logs (`berth run -d`, `--log`) use
//! too: one record per line, `<RFC 3339 nanos, UTC> <stdout|stderr> <F|P> <text>\n`, where
//! `P` marks a piece of a line cut at the record limit and `F` a line's end. Written by the
//! shim when a `file://` log URI asks for it ([`LOG_URI_QUERY`]), read back by `berth logs`.

use std::time::{SystemTime, UNIX_EPOCH};

/// The query a `file://PATH` log URI carries to ask for this format. containerd's shims
/// parse the URI and take its path alone, so such a URI still names the same file there.
pub const LOG_URI_QUERY: &str = "format=cri";

/// Longest text in one record; longer lines are split into `P` records.
pub const MAX_RECORD: usize = 16 * 1024;

/// The `file://` URI of a log at `path` in this format.
pub fn log_uri(path: &str) -> String {
    format!("file://{path}?{LOG_URI_QUERY}")
}

/// Appends one record to `out`.
pub fn record(out: &mut Vec<u8>, at: SystemTime, stream: &str, partial: bool, text: &[u8]) {
    out.extend_from_slice(super::time::rfc3339_nanos(at).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Cuts a byte stream into records: `push` appends to `out` the records its data completes
/// (keeping the unfinished line), `finish` the rest at the end of the stream.
#[derive(Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    pub fn push(&mut self, data: &[u8], stream: &str, out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.take(&rest[..nl], stream, now, out);
            // A line ends at "\n" or "\r\n", as the kubelet's readers take it.
            if self.pending.last() == Some(&b'\r') {
                self.pending.pop();
            }
            record(out, now, stream, false, &self.pending);
            self.pending.clear();
            rest = &rest[nl + 1..];
        }
        self.take(rest, stream, now, out);
    }

    /// Adds `piece` to the unfinished line, sending out `P` records while it is full.
    fn take(&mut self, mut piece: &[u8], stream: &str, now: SystemTime, out: &mut Vec<u8>) {
        while self.pending.len() + piece.len() > MAX_RECORD {
            let room = MAX_RECORD - self.pending.len();
            self.pending.extend_from_slice(&piece[..room]);
            record(out, now, stream, true, &self.pending);
            self.pending.clear();
            piece = &piece[room..];
        }
        self.pending.extend_from_slice(piece);
    }

    /// The end of the stream: an unfinished line is a whole one.
    pub fn finish(&mut self, stream: &str, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            record(out, SystemTime::now(), stream, false, &self.pending);
            self.pending.clear();
        }
    }
}

/// One record read back.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    /// Nanoseconds since the epoch.
    pub at: i128,
    /// The timestamp as written.
    pub stamp: &'a str,
    pub stderr: bool,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one line (without its newline); None when it is not a record (a log written
/// before berth's logs had this format).
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let stamp = std::str::from_utf8(&line[..sp]).ok()?;
    let at = parse_time(stamp)?;
    let rest = &line[sp + 1..];
    let (stderr, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (false, r)
    } else {
        (true, rest.strip_prefix(b"stderr ")?)
    };
    let (partial, text) = match rest {
        [b'F', b' ', text @ ..] => (false, text),
        [b'P', b' ', text @ ..] => (true, text),
        [b'F'] => (false, &[][..]),
        _ => return None,
    };
    Some(Record {
        at,
        stamp,
        stderr,
        partial,
        text,
    })
}

/// An RFC 3339 time with any fraction and offset, to nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i128> {
    let secs = super::time::parse_rfc3339(s)?;
    // parse_rfc3339 keeps whole seconds: take the fraction from the text.
    let frac = s
        .find('.')
        .map(|i| {
            s[i + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .chain(std::iter::repeat(b'0'))
                .take(9)
                .fold(0i128, |n, d| n * 10 + i128::from(d - b'0'))
        })
        .unwrap_or(0);
    Some(i128::from(secs) * 1_000_000_000 + frac)
}

/// Nanoseconds since the epoch of a system time.
pub fn nanos_of(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(out: &[u8]) -> Vec<(bool, bool, String)> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = parse(l).unwrap();
                (r.stderr, r.partial, String::from_utf8_lossy(r.text).into())
            })
            .collect()
    }

    #[test]
    fn lines_become_records_and_long_ones_are_cut() {
        let mut s = Splitter::default();
        let mut out = vec![];
        s.push(b"one\ntw", "stdout", &mut out);
        s.push(b"o\r\n\nthree", "stdout", &mut out);
        s.finish("stdout", &mut out);
        let f = |t: &str| (false, false, t.to_string());
        assert_eq!(records(&out), [f("one"), f("two"), f(""), f("three")]);

        let mut out = vec![];
        let long = vec![b'x'; MAX_RECORD * 2 + 5];
        s.push(&long[..10], "stderr", &mut out);
        s.push(&long[10..], "stderr", &mut out);
        s.push(b"\n", "stderr", &mut out);
        let got = records(&out);
        assert_eq!(got.len(), 3);
        assert!(got[0].0 && got[0].1 && got[1].1 && !got[2].1);
        assert_eq!(got[0].2.len(), MAX_RECORD);
        assert_eq!(got[2].2.len(), 5);
    }

    #[test]
    fn parse_takes_records_and_refuses_other_lines() {
        let r = parse(b"2026-12-06T21:00:00.123456789Z stderr F hi there").unwrap();
        assert_eq!(r.at, 1_796_590_800_123_456_789);
        assert!(r.stderr && !r.partial);
        assert_eq!(r.text, b"hi there");
        assert_eq!(
            parse_time("2026-12-06T22:00:00.5+01:00"),
            Some(1_796_590_800_500_000_000)
        );
        assert!(parse(b"hello world").is_none());
        assert!(parse(b"2026-12-06T21:00:00Z stdin F x").is_none());
        assert!(parse(b"2026-12-06T21:00:00Z stdout X x").is_none());
        assert_eq!(parse(b"2026-12-06T21:00:00Z stdout F").unwrap().text, b"");
        assert_eq!(log_uri("/l/c.log"), "file:///l/c.log?format=cri");
    }
}
