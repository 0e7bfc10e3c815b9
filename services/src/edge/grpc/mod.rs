//! The gRPC edge: tonic services that extract, convert, call the core and convert back.
//! Errors become status codes here and only here ([`status`]).

pub mod authority;
pub mod build;
pub mod check;
pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod mounts;
pub mod namespaces;
pub mod networks;
pub mod sandbox;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod unpack;
pub mod version;
pub mod volumes;

use crate::core::context::Ctx;
use crate::core::context::Namespace;
use crate::core::error::{Error, Kind};
use std::collections::{BTreeMap, HashMap};
use tonic::{Request, Status};

pub const NAMESPACE_HEADER: &str = "containerd-namespace";
pub const LEASE_HEADER: &str = "containerd-lease";

/// Longest message a status carries: errors quote client input, and grpc clients refuse
/// oversized `grpc-message` headers (grpcio rejects ~8 KiB), so a hostile request must not
/// get its own bytes echoed back whole.
const MAX_STATUS_MESSAGE: usize = 1024;

/// `msg` cut to at most `max` bytes on a character boundary, marked where cut.
fn bounded(mut msg: String, max: usize) -> String {
    if msg.len() > max {
        let mut end = max;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("… (truncated)");
    }
    msg
}

/// Maps a core error to the status code containerd's clients act upon; logs it once.
pub fn status(err: Error) -> Status {
    let msg = bounded(err.to_string(), MAX_STATUS_MESSAGE);
    let code = match err.kind() {
        Kind::NotFound => tonic::Code::NotFound,
        Kind::AlreadyExists => tonic::Code::AlreadyExists,
        Kind::InvalidArgument => tonic::Code::InvalidArgument,
        Kind::FailedPrecondition => tonic::Code::FailedPrecondition,
        Kind::Unavailable => tonic::Code::Unavailable,
        Kind::OutOfRange => tonic::Code::OutOfRange,
        Kind::Unauthenticated => tonic::Code::Unauthenticated,
        Kind::ResourceExhausted => tonic::Code::ResourceExhausted,
        Kind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Kind::Internal => tonic::Code::Internal,
    };
    match code {
        tonic::Code::Internal => tracing::error!(error = %msg, "request failed"),
        _ => tracing::debug!(error = %msg, code = ?code, "request refused"),
    }
    Status::new(code, msg)
}

/// tonic refuses a request larger than the limit with OUT_OF_RANGE; gRPC's own servers (and
/// so containerd) say RESOURCE_EXHAUSTED, which is what clients act on. Applied to every
/// response whose status travels in its headers (a unary call refused before it ran).
pub fn too_large_is_resource_exhausted(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let h = resp.headers_mut();
    let out_of_range = h.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("length%20too%20large") || m.contains("length too large"));
    if out_of_range && too_large {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

/// The request's namespace from the `containerd-namespace` header.
pub fn namespace<T>(req: &Request<T>) -> Result<Namespace, Status> {
    let raw = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .ok_or_else(|| {
            Status::failed_precondition(
                "namespace is required: set the containerd-namespace header (berth --namespace, ctr -n)",
            )
        })?
        .to_str()
        .map_err(|_| Status::failed_precondition("namespace header is not valid text"))?;
    Namespace::parse(raw)
        .map_err(|e| Status::failed_precondition(bounded(e.to_string(), MAX_STATUS_MESSAGE)))
}

/// Namespace plus the optional `containerd-lease` header.
pub fn ctx<T>(req: &Request<T>) -> Result<Ctx, Status> {
    let ns = namespace(req)?;
    let lease = match req.metadata().get(LEASE_HEADER) {
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| Status::invalid_argument("lease header is not valid text"))?;
            (!v.is_empty()).then(|| v.to_string())
        }
        None => None,
    };
    Ok(Ctx { ns, lease })
}

/// A core timestamp (nanoseconds, 0 = unset) as the protobuf field containerd sends.
pub fn timestamp(nanos: i64) -> Option<prost_types::Timestamp> {
    Some(berth_proto::vocab::time::to_proto(nanos))
}

pub use berth_proto::vocab::time::from_proto as from_timestamp;

pub fn labels_in(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

pub fn labels_out(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

pub fn filter(filters: &[String]) -> Result<crate::core::filters::Filter, Status> {
    crate::core::filters::Filter::parse_all(filters).map_err(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_bounded() {
        let long = "ü".repeat(5000);
        let st = status(Error::invalid(format!("name {long:?} is invalid")));
        assert!(st.message().len() <= MAX_STATUS_MESSAGE + 20);
        assert!(st.message().ends_with("(truncated)"));
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status(Error::invalid("short")).message(),
            "short: invalid argument"
        );
    }

    #[test]
    fn namespace_header_errors_are_failed_precondition() {
        let req = Request::new(());
        assert_eq!(
            namespace(&req).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, "../x".parse().unwrap());
        assert_eq!(
            namespace(&req).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
    }
}
