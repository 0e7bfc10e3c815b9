//! The CRI's gRPC face: `runtime.v1.RuntimeService` and `runtime.v1.ImageService` over the
//! adapter core.

mod image;
mod runtime;

use super::Cri;
use crate::core::error::{Error, Kind};
use crate::edge::grpc::status;
use berth_proto::cri::v1 as cri;
use cri::image_service_server::ImageService;
use cri::runtime_service_server::RuntimeService;
use std::pin::Pin;
use std::time::Duration;
use tonic::{Request, Response, Status};

type R<T> = Result<Response<T>, Status>;
type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// The CRI API version this adapter speaks.
pub const API_VERSION: &str = "v1";

#[derive(Clone)]
pub struct CriService {
    pub cri: Cri,
}

fn one<T: Send + 'static>(v: T) -> Stream<T> {
    Box::pin(futures::stream::iter([Ok(v)]))
}

/// The caller's deadline from its `grpc-timeout` header.
pub fn deadline<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by berth yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut r = Request::new(());
        assert_eq!(deadline(&r), None);
        r.metadata_mut()
            .insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(deadline(&r), Some(Duration::from_millis(1500)));
        r.metadata_mut()
            .insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(deadline(&r), Some(Duration::from_secs(2)));
        r.metadata_mut()
            .insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(deadline(&r), None);
    }
}
