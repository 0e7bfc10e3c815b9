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

/// The most one message of a streamed list (KEP-5825) carries, well under gRPC's 4 MiB.
const STREAM_PART: usize = 1 << 20;

/// A list streamed as KEP-5825 asks: each item in exactly one message, every message a
/// list of at least one item and at most [`STREAM_PART`] bytes (a bigger item goes alone),
/// none at all for an empty list.
fn chunked<I, T>(items: Vec<I>, wrap: fn(Vec<I>) -> T) -> Stream<T>
where
    I: prost::Message + Send + 'static,
    T: Send + 'static,
{
    let mut parts = vec![];
    let (mut part, mut size) = (vec![], 0);
    for item in items {
        let len = item.encoded_len() + 8;
        if !part.is_empty() && size + len > STREAM_PART {
            parts.push(Ok(wrap(std::mem::take(&mut part))));
            size = 0;
        }
        size += len;
        part.push(item);
    }
    if !part.is_empty() {
        parts.push(Ok(wrap(part)));
    }
    Box::pin(futures::stream::iter(parts))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(items: Vec<cri::Image>) -> Vec<Vec<String>> {
        let s = chunked(items, |images| cri::StreamImagesResponse { images });
        futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(s))
            .into_iter()
            .flatten()
            .map(|r| r.images.into_iter().map(|i| i.id).collect())
            .collect()
    }

    #[test]
    fn streamed_lists_come_in_parts_of_at_least_one_item() {
        assert!(parts(vec![]).is_empty(), "an empty list sends no message");
        let small = |id: &str| cri::Image {
            id: id.into(),
            ..Default::default()
        };
        assert_eq!(parts(vec![small("a"), small("b")]), [["a", "b"]]);
        let big = |id: &str| cri::Image {
            id: id.into(),
            repo_tags: vec!["x".repeat(STREAM_PART * 3 / 5)],
            ..Default::default()
        };
        let got = parts(vec![big("a"), big("b"), small("c")]);
        assert_eq!(got, [vec!["a"], vec!["b", "c"]]);
    }

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
