//! Reading a container's log back for `berth logs`: its records (the kubelet's format, see
//! [`crilog`]) joined into lines, picked by time (`--since`, `--until`), and printed to the
//! stream each came from, with Docker's timestamps when asked. A line without a record's
//! prefix (a log written before berth's logs had one) is printed as it is, to stdout.

use anyhow::bail;
use berth_proto::vocab::crilog;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which lines `berth logs` shows, and how.
#[derive(Clone, Copy, Default)]
pub struct View {
    /// Nanoseconds since the epoch: lines from this time on (a line without a time is older).
    pub since: Option<i128>,
    /// Nanoseconds since the epoch: lines up to this time.
    pub until: Option<i128>,
    /// Each line prefixed with its time, as `docker logs --timestamps` does.
    pub timestamps: bool,
}

/// A line of the log: its stream, its time (None without a record's prefix), its text.
pub struct Line {
    stderr: bool,
    at: Option<i128>,
    text: Vec<u8>,
}

impl View {
    fn shows(&self, l: &Line) -> bool {
        let after = match (self.since, l.at) {
            (None, _) => true,
            (Some(s), Some(t)) => t >= s,
            (Some(_), None) => false,
        };
        let before = match (self.until, l.at) {
            (Some(u), Some(t)) => t <= u,
            _ => true,
        };
        after && before
    }

    /// Writes `l` to `out` or `err`, by its stream.
    pub fn print(
        &self,
        l: &Line,
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> std::io::Result<()> {
        let w: &mut dyn Write = if l.stderr { err } else { out };
        let mut buf = Vec::with_capacity(l.text.len() + 32);
        if let (true, Some(at)) = (self.timestamps, l.at) {
            if let Ok(n) = u64::try_from(at) {
                let t = UNIX_EPOCH + Duration::from_nanos(n);
                buf.extend_from_slice(berth_proto::vocab::time::rfc3339_nanos(t).as_bytes());
                buf.push(b' ');
            }
        }
        buf.extend_from_slice(&l.text);
        buf.push(b'\n');
        w.write_all(&buf)
    }
}

/// Joins a log's lines into [`Line`]s: a line cut into `P` records is one line again,
/// stamped with its first record's time. Lines are fed as they arrive (`push`), so
/// following a log reads it the same way.
#[derive(Default)]
pub struct Joiner {
    /// Bytes after the last newline: a record still being written.
    tail: Vec<u8>,
    /// A line of stdout, and one of stderr, whose `F` record has not come yet.
    open: [Option<Line>; 2],
}

impl Joiner {
    /// Takes more of the log; hands each line it completes to `each`.
    pub fn push(&mut self, data: &[u8], each: &mut dyn FnMut(Line)) {
        self.tail.extend_from_slice(data);
        let Some(last) = self.tail.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = self.tail.split_off(last + 1);
        let done = std::mem::replace(&mut self.tail, rest);
        for raw in done[..last].split(|&b| b == b'\n') {
            if let Some(l) = self.record(raw) {
                each(l);
            }
        }
    }

    /// The end of the log: what is left is whole.
    pub fn finish(&mut self, each: &mut dyn FnMut(Line)) {
        let rest = std::mem::take(&mut self.tail);
        if !rest.is_empty() {
            if let Some(l) = self.record(&rest) {
                each(l);
            }
        }
        for l in self.open.iter_mut().filter_map(Option::take) {
            each(l);
        }
    }

    fn record(&mut self, raw: &[u8]) -> Option<Line> {
        let Some(r) = crilog::parse(raw) else {
            return Some(Line {
                stderr: false,
                at: None,
                text: raw.to_vec(),
            });
        };
        let slot = &mut self.open[usize::from(r.stderr)];
        let line = slot.get_or_insert_with(|| Line {
            stderr: r.stderr,
            at: Some(r.at),
            text: vec![],
        });
        line.text.extend_from_slice(r.text);
        if r.partial {
            None
        } else {
            slot.take()
        }
    }
}

/// Prints the lines of `log` that `view` shows, the last `tail` of them when given.
pub fn print_log(log: &[u8], view: View, tail: Option<usize>) -> std::io::Result<()> {
    let mut lines = vec![];
    let mut keep = |l: Line| {
        if view.shows(&l) {
            lines.push(l)
        }
    };
    let mut j = Joiner::default();
    j.push(log, &mut keep);
    j.finish(&mut keep);
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in &lines[skip..] {
        view.print(l, &mut out, &mut err)?;
    }
    out.flush()
}

/// Follows a log as it grows: lines `view` shows printed as they complete.
pub struct Follower {
    view: View,
    joiner: Joiner,
}

impl Follower {
    pub fn new(view: View) -> Self {
        Follower {
            view,
            joiner: Joiner::default(),
        }
    }

    pub fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.emit(|j, each| j.push(data, each))
    }

    pub fn finish(&mut self) -> std::io::Result<()> {
        self.emit(|j, each| j.finish(each))
    }

    fn emit(
        &mut self,
        feed: impl FnOnce(&mut Joiner, &mut dyn FnMut(Line)),
    ) -> std::io::Result<()> {
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        let view = self.view;
        let mut res = Ok(());
        let mut each = |l: Line| {
            if res.is_ok() && view.shows(&l) {
                res = view.print(&l, &mut out, &mut err);
            }
        };
        feed(&mut self.joiner, &mut each);
        res?;
        out.flush()?;
        err.flush()
    }
}

/// A `--since`/`--until` value as Docker takes it: RFC 3339 (`2026-12-06T21:00:00Z`, any
/// fraction and offset), Unix seconds with an optional fraction (`1796590800.5`), or a
/// duration before `now` in Go's syntax (`10m`, `1h30m`, `1.5h`); nanoseconds since the
/// epoch.
pub fn parse_time_flag(flag: &str, s: &str, now: SystemTime) -> anyhow::Result<i128> {
    let s = s.trim();
    if let Some(d) = berth_proto::vocab::time::go_duration(s) {
        return Ok(crilog::nanos_of(now) - d);
    }
    if let Some(t) = unix_seconds(s) {
        return Ok(t);
    }
    if s.contains('T') || s.contains('t') {
        if let Some(t) = crilog::parse_time(s) {
            return Ok(t);
        }
    } else if let Some(t) = crilog::parse_time(&format!("{s}T00:00:00Z")) {
        // A date alone is its midnight, UTC.
        return Ok(t);
    }
    bail!(
        "{flag} {s:?}: not a time; give RFC 3339 (2026-12-06T21:00:00Z), Unix seconds \
         (1796590800.5) or a duration before now (10m, 1h30m)"
    )
}

/// `SECONDS[.FRACTION]` to nanoseconds.
fn unix_seconds(s: &str) -> Option<i128> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let secs: i128 = whole.parse().ok()?;
    let nanos: i128 = format!("{frac:0<9}").parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(log: &[u8], view: View) -> Vec<String> {
        let mut got = vec![];
        let mut j = Joiner::default();
        let mut each = |l: Line| {
            if view.shows(&l) {
                let (mut o, mut e) = (vec![], vec![]);
                view.print(&l, &mut o, &mut e).unwrap();
                let (name, text) = if l.stderr { ("err", e) } else { ("out", o) };
                got.push(format!(
                    "{name}:{}",
                    String::from_utf8_lossy(&text).trim_end()
                ));
            }
        };
        // Fed in small pieces, as a follower sees it.
        for piece in log.chunks(7) {
            j.push(piece, &mut each);
        }
        j.finish(&mut each);
        got
    }

    const LOG: &[u8] = b"an old raw line\n\
        2026-12-06T21:00:00.100000000Z stdout F one\n\
        2026-12-06T21:00:01.000000000Z stderr P tw\n\
        2026-12-06T21:00:01.500000000Z stdout F three\n\
        2026-12-06T21:00:02.000000000Z stderr F o\n";

    #[test]
    fn records_are_joined_split_by_stream_and_picked_by_time() {
        assert_eq!(
            lines(LOG, View::default()),
            ["out:an old raw line", "out:one", "out:three", "err:two"]
        );
        let since = parse_time_flag("--since", "2026-12-06T21:00:00.5Z", UNIX_EPOCH).unwrap();
        let view = View {
            since: Some(since),
            timestamps: true,
            ..View::default()
        };
        assert_eq!(
            lines(LOG, view),
            [
                "out:2026-12-06T21:00:01.500000000Z three",
                "err:2026-12-06T21:00:01.000000000Z two"
            ]
        );
        let until = View {
            until: Some(crilog::parse_time("2026-12-06T21:00:01Z").unwrap()),
            ..View::default()
        };
        // A joined line has its first piece's time.
        assert_eq!(
            lines(LOG, until),
            ["out:an old raw line", "out:one", "err:two"]
        );
    }

    #[test]
    fn time_flags_take_rfc3339_unix_seconds_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_590_800);
        let at = |s: &str| parse_time_flag("--since", s, now).unwrap();
        let sec = 1_000_000_000i128;
        assert_eq!(at("2026-12-06T21:00:00Z"), 1_796_590_800 * sec);
        assert_eq!(at("2026-12-06T22:00:00+01:00"), 1_796_590_800 * sec);
        assert_eq!(at("1796590800.25"), 1_796_590_800 * sec + sec / 4);
        assert_eq!(at("10m"), (1_796_590_800 - 600) * sec);
        assert_eq!(at("1h30m"), (1_796_590_800 - 5400) * sec);
        assert_eq!(at("1.5h"), (1_796_590_800 - 5400) * sec);
        assert_eq!(at("2026-12-06"), 1_796_515_200 * sec);
        for bad in ["", "yesterday", "10x", "12:00", "1h30"] {
            let e = parse_time_flag("--since", bad, now)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--since") && e.contains("RFC 3339"),
                "{bad}: {e}"
            );
        }
    }
}
