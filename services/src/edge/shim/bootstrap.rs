//! containerd's shim start protocol as berthd speaks it to any shim: what the shim is given
//! on stdin at `start`, and how its answer on stdout is read.
//!
//! Three generations answer `start`:
//! - containerd 1.x shims print a bare address (`unix:///run/containerd/s/…`);
//! - 2.0 to 2.2 shims print JSON: `{"version":3,"address":"unix://…","protocol":"ttrpc"}`;
//! - 2.3 shims (`containerd.runtime.bootstrap.v1`) print a protobuf `BootstrapResult`.
//!
//! On stdin, shims before 2.3 read the runtime options as a protobuf `Any` (or nothing);
//! 2.3 shims read a protobuf `BootstrapParams` that carries the options as an extension
//! (an `Any` given to a 2.3 shim would be read as params with a wrong instance id).

use crate::core::metadata::containers::AnyValue;
use crate::core::runtime::driver::{StartProtocol, StartRequest, Started};
use prost::Message;

pub use berth_proto::containerd::runtime::bootstrap::v1::{
    BootstrapParams, BootstrapResult, Extension,
};

/// 2.0–2.2's JSON answer.
#[derive(serde::Deserialize)]
struct JsonAnswer {
    #[serde(default)]
    version: i32,
    #[serde(default)]
    address: String,
    #[serde(default)]
    protocol: String,
}

fn any_out(a: &AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

/// The bytes a shim is given on stdin at `start`.
pub fn start_input(req: &StartRequest<'_>) -> Vec<u8> {
    match req.protocol {
        StartProtocol::Options => req
            .options
            .map(|o| any_out(o).encode_to_vec())
            .unwrap_or_default(),
        StartProtocol::Bootstrap => BootstrapParams {
            instance_id: req.id.to_string(),
            namespace: req.namespace.to_string(),
            log_level: 0,
            containerd_version: concat!("berth ", env!("CARGO_PKG_VERSION")).into(),
            containerd_ttrpc_address: req.ttrpc_address.display().to_string(),
            containerd_grpc_address: req.grpc_address.display().to_string(),
            containerd_binary: req.daemon.display().to_string(),
            extensions: req
                .options
                .map(|o| Extension {
                    value: Some(any_out(o)),
                })
                .into_iter()
                .collect(),
            socket_dir: Some(req.socket_dir.display().to_string()),
        }
        .encode_to_vec(),
    }
}

/// Reads a shim's answer to `start`, whichever generation wrote it (tried in the order
/// containerd 2.3 tries them: protobuf, then JSON, then the text as a bare address).
/// None: nothing that names an address.
pub fn decode_started(stdout: &[u8]) -> Option<Started> {
    if let Ok(r) = BootstrapResult::decode(stdout) {
        if !r.address.is_empty() && r.address.is_ascii() {
            return Some(Started {
                version: r.version,
                address: r.address,
                protocol: r.protocol,
            });
        }
    }
    let text = std::str::from_utf8(stdout).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<JsonAnswer>(text) {
        Ok(j) if j.version >= 2 => Some(Started {
            version: j.version,
            address: j.address,
            protocol: j.protocol,
        }),
        // As containerd reads it: anything else is a 1.x shim's bare address.
        _ => Some(Started {
            version: 2,
            address: text.to_string(),
            protocol: "ttrpc".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn request<'a>(protocol: StartProtocol, options: Option<&'a AnyValue>) -> StartRequest<'a> {
        StartRequest {
            protocol,
            id: "c1",
            namespace: "default",
            grpc_address: Path::new("/run/berth/berth.sock"),
            ttrpc_address: Path::new("/run/berth/berth.sock.ttrpc"),
            daemon: Path::new("/usr/bin/berthd"),
            socket_dir: Path::new("/run/berth/s"),
            options,
        }
    }

    #[test]
    fn stdin_is_the_options_any_or_the_bootstrap_params_carrying_them() {
        let opts = AnyValue {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x1a, 3, b'/', b'c', b'g'],
        };
        assert!(start_input(&request(StartProtocol::Options, None)).is_empty());
        let legacy = start_input(&request(StartProtocol::Options, Some(&opts)));
        let any = prost_types::Any::decode(legacy.as_slice()).unwrap();
        assert_eq!(
            (any.type_url.as_str(), any.value),
            (opts.type_url.as_str(), opts.value.clone())
        );

        let boot = start_input(&request(StartProtocol::Bootstrap, Some(&opts)));
        let p = BootstrapParams::decode(boot.as_slice()).unwrap();
        assert_eq!(
            (p.instance_id.as_str(), p.namespace.as_str()),
            ("c1", "default")
        );
        assert_eq!(p.containerd_ttrpc_address, "/run/berth/berth.sock.ttrpc");
        assert_eq!(p.containerd_grpc_address, "/run/berth/berth.sock");
        assert_eq!(p.socket_dir.as_deref(), Some("/run/berth/s"));
        assert_eq!(p.extensions.len(), 1);
        assert_eq!(p.extensions[0].value.as_ref().unwrap().value, opts.value);
    }

    #[test]
    fn every_generations_answer_reads() {
        let sock = "unix:///run/berth/s/0123abcd";
        // 1.x: a bare address, with or without a newline.
        for bare in [sock.to_string(), format!("{sock}\n")] {
            let s = decode_started(bare.as_bytes()).unwrap();
            assert_eq!(
                (s.version, s.address.as_str(), s.protocol.as_str()),
                (2, sock, "ttrpc")
            );
        }
        // 2.0–2.2: JSON.
        let json = format!(r#"{{"version":3,"address":"{sock}","protocol":"ttrpc"}}"#);
        let s = decode_started(json.as_bytes()).unwrap();
        assert_eq!((s.version, s.address.as_str()), (3, sock));
        let grpc = format!(r#"{{"version":3,"address":"{sock}","protocol":"grpc"}}"#);
        assert_eq!(decode_started(grpc.as_bytes()).unwrap().protocol, "grpc");
        // 2.3: protobuf, the way containerd 2.3.4's runc shim writes it.
        let pb = BootstrapResult {
            version: 3,
            address: sock.into(),
            protocol: "ttrpc".into(),
        }
        .encode_to_vec();
        assert_eq!(pb[3] as usize, sock.len(), "field 2's length byte");
        let s = decode_started(&pb).unwrap();
        assert_eq!(
            (s.version, s.address.as_str(), s.protocol.as_str()),
            (3, sock, "ttrpc")
        );
        // Nothing at all.
        assert!(decode_started(b"").is_none());
        assert!(decode_started(b" \n").is_none());
        // Garbage: bytes that are neither protobuf with an address nor text name nothing;
        // text that is not JSON is a bare address, for `usable` to judge.
        assert!(decode_started(b"\xff\xfe\x00\x01garbage").is_none());
        assert!(
            decode_started(&[0x12, 0x02, 0xff, 0xfe]).is_none(),
            "non-ASCII address"
        );
        let s = decode_started(b"{not json").unwrap();
        assert_eq!((s.version, s.address.as_str()), (2, "{not json"));
    }
}
