//! `-info`: the shim describes itself, as containerd 2.x's shims do for Introspection's
//! PluginInfo. It reads the task options it would be given from stdin (an encoded `Any`,
//! possibly empty) and prints a `containerd.types.RuntimeInfo`: its name and version, the
//! options it understood, and the OCI features of the runtime underneath.

use berth_proto::containerd::runc::v1::Options as RuncOptions;
use berth_proto::containerd::types::{RuntimeInfo, RuntimeVersion};
use prost::{Message, Name};
use std::io::Write;
use std::process::{Command, Stdio};

/// The runtime name containerd's clients give this shim.
pub const NAME: &str = "io.containerd.berth.v2";

/// The typeurl containerd registers the OCI runtime-spec features document under (a JSON
/// value, not a protobuf one).
const FEATURES_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Reads the options from stdin and writes the RuntimeInfo to stdout. `runc` is the binary
/// the shim runs containers with, or falls back to when its native runtime cannot honour a
/// spec; its `runc features` are this shim's features.
pub fn run(runc: &str) -> Result<(), String> {
    let raw = crate::bootstrap::read_stdin()?;
    let info = describe(&raw, runc)?;
    std::io::stdout()
        .write_all(&info.encode_to_vec())
        .map_err(|e| format!("write the info: {e}"))
}

/// The RuntimeInfo for options `raw` (an encoded `Any`; empty for none).
pub fn describe(raw: &[u8], runc: &str) -> Result<RuntimeInfo, String> {
    Ok(RuntimeInfo {
        name: NAME.into(),
        version: Some(RuntimeVersion {
            version: format!("berth {}", env!("CARGO_PKG_VERSION")),
            revision: String::new(),
        }),
        options: understood_options(raw)?,
        // As containerd's runc shim: a runtime without `features` leaves them out.
        features: features(runc),
        annotations: Default::default(),
    })
}

/// The options, when they are runc's (the only kind the shim reads); others are refused,
/// as containerd's runc shim refuses them.
fn understood_options(raw: &[u8]) -> Result<Option<prost_types::Any>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    let any = prost_types::Any::decode(raw).map_err(|e| format!("options are not an Any: {e}"))?;
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(None);
    }
    if !crate::bootstrap::names_runc_options(&any.type_url) {
        return Err(format!(
            "options of type {:?}: this shim reads {}",
            any.type_url,
            RuncOptions::full_name()
        ));
    }
    RuncOptions::decode(any.value.as_slice())
        .map_err(|e| format!("bad {}: {e}", RuncOptions::full_name()))?;
    Ok(Some(any))
}

/// `runc features`, checked to be JSON, under the features typeurl.
fn features(runc: &str) -> Option<prost_types::Any> {
    let out = Command::new(runc)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .filter(serde_json::Value::is_object)?;
    Some(prost_types::Any {
        type_url: FEATURES_URL.into(),
        value: out.stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runc_options(binary: &str) -> Vec<u8> {
        let o = RuncOptions {
            binary_name: binary.into(),
            ..Default::default()
        };
        prost_types::Any {
            type_url: RuncOptions::full_name(),
            value: o.encode_to_vec(),
        }
        .encode_to_vec()
    }

    #[test]
    fn names_itself_and_echoes_runc_options() {
        let raw = runc_options("runc");
        let info = describe(&raw, "/nonexistent/runc").unwrap();
        assert_eq!(info.name, NAME);
        assert!(info.version.unwrap().version.starts_with("berth "));
        let opts = info.options.unwrap();
        assert_eq!(opts.type_url, "containerd.runc.v1.Options");
        assert_eq!(
            RuncOptions::decode(opts.value.as_slice())
                .unwrap()
                .binary_name,
            "runc"
        );
        // No runtime to ask: no features, not a failure.
        assert!(info.features.is_none());
        assert!(describe(&[], "/nonexistent/runc")
            .unwrap()
            .options
            .is_none());
    }

    #[test]
    fn options_of_another_kind_are_refused() {
        let raw = prost_types::Any {
            type_url: "containerd.types.Other".into(),
            value: vec![],
        }
        .encode_to_vec();
        let e = describe(&raw, "/nonexistent/runc").unwrap_err();
        assert!(e.contains("containerd.runc.v1.Options"), "{e}");
        assert!(describe(b"\xff\xff", "/nonexistent/runc").is_err());
    }

    #[test]
    fn features_are_the_runtimes_json_under_containerds_typeurl() {
        let Some(runc) = ["/usr/sbin/runc", "/usr/bin/runc"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            eprintln!("no runc installed: the features pass-through is not exercised");
            return;
        };
        let f = features(runc).expect("runc features");
        assert_eq!(f.type_url, FEATURES_URL);
        let doc: serde_json::Value = serde_json::from_slice(&f.value).unwrap();
        assert!(doc["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "rro"));
    }
}
