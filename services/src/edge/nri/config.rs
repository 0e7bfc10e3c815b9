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
    #[serde(with = "duration_text")]
    pub plugin_registration_timeout: Duration,
    /// How long a plugin has to answer any request; one that does not is dropped.
    #[serde(with = "duration_text")]
    pub plugin_request_timeout: Duration,
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
            plugin_registration_timeout: Duration::from_secs(5),
            plugin_request_timeout: Duration::from_secs(2),
            disable_connections: false,
        }
    }
}

/// "500ms", "2s", "1m30s" (Go's and humantime's notation), or a bare number of seconds; what
/// cannot be read fails the configuration with the value named, rather than falling back.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}): write it as \"500ms\", \"2s\" or \"1m\"")
    })
}

/// The timeouts as text in the file, as containerd writes them.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl NriConfig {
    pub fn registration_timeout(&self) -> Duration {
        self.plugin_registration_timeout
    }

    pub fn request_timeout(&self) -> Duration {
        self.plugin_request_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_containerd_writes_them() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x")
            .unwrap_err()
            .contains("\"x\" is not a duration"));
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn a_bad_timeout_fails_the_configuration() {
        let c: NriConfig = toml::from_str("plugin_request_timeout = \"750ms\"\n").unwrap();
        assert_eq!(c.request_timeout(), Duration::from_millis(750));
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<NriConfig>(&text).unwrap(), c);
        let e = toml::from_str::<NriConfig>("plugin_request_timeout = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
