//! berthd's `[nri]` settings, named as containerd's NRI plugin names them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    /// Host NRI: listen on `socket_path` and relay the CRI's pod and container lifecycle to
    /// the plugins that connect (containerd: `disable = false`).
    pub enable: bool,
    /// The socket plugins dial.
    pub socket_path: PathBuf,
    /// Plugins berthd starts itself, named `NN-name` (NN: their index), each handed one end of
    /// a socket pair; empty: none.
    pub plugin_path: PathBuf,
    /// Per-plugin configuration files (`NN-name.conf` or `name.conf`), handed over in
    /// Configure.
    pub plugin_config_path: PathBuf,
    /// How long a plugin has from connecting to registering, e.g. "5s".
    pub plugin_registration_timeout: String,
    /// How long a plugin has to answer any request; one that does not is dropped.
    pub plugin_request_timeout: String,
    /// Refuse plugins that dial the socket (pre-started ones still run).
    pub disable_connections: bool,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            enable: false,
            socket_path: PathBuf::from("/var/run/nri/nri.sock"),
            plugin_path: PathBuf::new(),
            plugin_config_path: PathBuf::from("/etc/nri/conf.d"),
            plugin_registration_timeout: "5s".into(),
            plugin_request_timeout: "2s".into(),
            disable_connections: false,
        }
    }
}

/// "500ms", "2s", "1m", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl NriConfig {
    pub fn registration_timeout(&self) -> Duration {
        parse_duration(&self.plugin_registration_timeout).unwrap_or(Duration::from_secs(5))
    }

    pub fn request_timeout(&self) -> Duration {
        parse_duration(&self.plugin_request_timeout).unwrap_or(Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_containerd_writes_them() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2h"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
