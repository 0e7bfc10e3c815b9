//! Restart policies (`berth run --restart`): the policy a container record carries as a
//! label, and the back-off between restarts, as Docker's engine applies them.

use std::time::Duration;

/// Label on a container record naming its restart policy (`no`, `on-failure[:N]`,
/// `always`, `unless-stopped`); berthd restarts its task by it.
pub const POLICY_LABEL: &str = "berth.restart";
/// Label set when a user stopped the container on purpose (`berth stop`): `unless-stopped`
/// and `always` leave it stopped until it is started again (`always` only until berthd
/// starts again, as Docker's).
pub const STOPPED_LABEL: &str = "berth.restart.stopped";
/// Label on a container started with `run -d --rm`: berthd removes it (its task, record
/// and rootfs snapshot) when its task exits.
pub const AUTO_REMOVE_LABEL: &str = "berth.auto-remove";
/// Label counting the restarts of the container's current run (reset by `berth start`).
pub const COUNT_LABEL: &str = "berth.restart.count";

/// When berthd restarts a container whose task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Never (the default).
    #[default]
    No,
    /// After a non-zero exit, at most `max` times in a row (0: without limit).
    OnFailure { max: u32 },
    /// After any exit, and when berthd starts, unless the user stopped it.
    Always,
    /// As `Always`, but a user's stop outlives berthd's restart too.
    UnlessStopped,
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "restart policy {s:?}: use no, on-failure[:MAX_RETRIES], always or unless-stopped"
            )
        };
        Ok(match s.split_once(':') {
            None if s == "no" || s.is_empty() => Policy::No,
            None if s == "always" => Policy::Always,
            None if s == "unless-stopped" => Policy::UnlessStopped,
            None if s == "on-failure" => Policy::OnFailure { max: 0 },
            Some(("on-failure", n)) => Policy::OnFailure {
                max: n.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        })
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::No => f.write_str("no"),
            Policy::OnFailure { max: 0 } => f.write_str("on-failure"),
            Policy::OnFailure { max } => write!(f, "on-failure:{max}"),
            Policy::Always => f.write_str("always"),
            Policy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl Policy {
    /// Whether a task that exited with `status`, restarted `count` times already, is
    /// started again; `stopped`: the user stopped it.
    pub fn restarts(&self, status: u32, count: u32, stopped: bool) -> bool {
        match self {
            Policy::No => false,
            Policy::OnFailure { max } => status != 0 && (*max == 0 || count < *max),
            Policy::Always | Policy::UnlessStopped => !stopped,
        }
    }

    /// Whether berthd starts the container when it starts itself (the host rebooted or
    /// berthd restarted) and finds its task gone.
    pub fn at_daemon_start(&self, stopped: bool) -> bool {
        match self {
            Policy::Always => true,
            Policy::UnlessStopped => !stopped,
            Policy::No | Policy::OnFailure { .. } => false,
        }
    }
}

/// Docker's back-off: 100 ms before the first restart, doubling each time, at most a minute;
/// a run that lasted 10 s or more starts the doubling over.
pub fn backoff(previous: Duration, ran_for: Duration) -> Duration {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(60);
    if ran_for >= Duration::from_secs(10) || previous.is_zero() {
        return FIRST;
    }
    (previous * 2).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_docker_spells_them() {
        for s in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        assert_eq!("on-failure:2".parse(), Ok(Policy::OnFailure { max: 2 }));
        for bad in ["sometimes", "on-failure:x", "always:2", "on-failure:-1"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn on_failure_counts_and_ignores_success() {
        let p = Policy::OnFailure { max: 2 };
        assert!(p.restarts(1, 0, false) && p.restarts(1, 1, false));
        assert!(!p.restarts(1, 2, false) && !p.restarts(0, 0, false));
        assert!(Policy::OnFailure { max: 0 }.restarts(3, 1000, false));
        assert!(!Policy::No.restarts(1, 0, false));
    }

    #[test]
    fn a_user_stop_holds_as_docker_holds_it() {
        assert!(Policy::Always.restarts(0, 9, false) && !Policy::Always.restarts(0, 9, true));
        assert!(Policy::Always.at_daemon_start(true));
        assert!(!Policy::UnlessStopped.at_daemon_start(true));
        assert!(Policy::UnlessStopped.at_daemon_start(false));
        assert!(!Policy::OnFailure { max: 0 }.at_daemon_start(false));
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_long_run() {
        let mut d = Duration::ZERO;
        let short = Duration::from_secs(1);
        let mut seen = vec![];
        for _ in 0..12 {
            d = backoff(d, short);
            seen.push(d);
        }
        assert_eq!(seen[0], Duration::from_millis(100));
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(60));
        assert_eq!(
            backoff(d, Duration::from_secs(10)),
            Duration::from_millis(100)
        );
    }
}
