//! Time on the wire: core timestamps are nanoseconds since the epoch (0 = unset); protobuf
//! carries `google.protobuf.Timestamp` (unset = Go's zero time, as containerd sends it);
//! JSON documents and labels carry RFC 3339.

use prost_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Go's zero time (0001-01-01T00:00:00Z): what containerd sends for an unset timestamp.
pub const GO_ZERO_SECONDS: i64 = -62_135_596_800;

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i64 {
    nanos(SystemTime::now())
}

/// Nanoseconds since the epoch (0 before it).
pub fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Core nanoseconds as a protobuf timestamp; 0 becomes Go's zero time.
pub fn to_proto(nanos: i64) -> Timestamp {
    if nanos == 0 {
        return Timestamp {
            seconds: GO_ZERO_SECONDS,
            nanos: 0,
        };
    }
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// A protobuf timestamp as core nanoseconds; unset and Go's zero time become 0.
pub fn from_proto(ts: Option<&Timestamp>) -> i64 {
    match ts {
        Some(t) if t.seconds != GO_ZERO_SECONDS => t
            .seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos)),
        _ => 0,
    }
}

/// A protobuf timestamp as a system time (None when unset, zero or before the epoch).
pub fn proto_system_time(ts: Option<&Timestamp>) -> Option<SystemTime> {
    let n = from_proto(ts);
    (n > 0).then(|| UNIX_EPOCH + Duration::from_nanos(n as u64))
}

/// RFC 3339 in UTC to the second, as image configs and `gc.expire` labels carry it.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 in UTC with nanoseconds, as the kubelet's container logs carry it.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Parses RFC 3339 with any offset (`Z`, `+02:00`) and optional fractions, to seconds since
/// the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let t_at = s.find(['T', 't', ' '])?;
    // humantime takes UTC only: split a numeric offset off the time of day first.
    let (base, offset) = match s[t_at..].rfind(['+', '-']).map(|i| t_at + i) {
        Some(i) => {
            let (h, m) = s[i + 1..].split_once(':')?;
            let secs = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
            (&s[..i], if s.as_bytes()[i] == b'-' { -secs } else { secs })
        }
        None => (s.trim_end_matches(['Z', 'z']), 0),
    };
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(secs - offset)
}

/// A Go duration (`300ms`, `1h30m`, `5m`, `-1.5h`) in nanoseconds, as containerd's labels
/// and Docker's flags carry them; None when it is not one (a bare number is not).
pub fn go_duration(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
        any = true;
    }
    any.then_some(if negative { -total } else { total } as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_and_zero_is_go_zero() {
        let t = 1_700_000_000_123_456_789;
        assert_eq!(from_proto(Some(&to_proto(t))), t);
        assert_eq!(to_proto(0).seconds, GO_ZERO_SECONDS);
        assert_eq!(from_proto(Some(&to_proto(0))), 0);
        assert_eq!(from_proto(None), 0);
        assert_eq!(proto_system_time(Some(&to_proto(0))), None);
    }

    #[test]
    fn rfc3339_both_ways() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-18T12:06:40+01:00"),
            Some(1_795_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-18T10:06:40.5-01:00"),
            Some(1_795_000_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-18T11:06:40.123456Z"),
            Some(1_795_000_000)
        );
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("5m"), Some(300_000_000_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("300ms"), Some(300_000_000));
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration(""), None);
    }
}
