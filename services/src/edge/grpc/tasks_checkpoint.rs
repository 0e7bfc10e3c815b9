//! Tasks' checkpoint conversions: the request's CheckpointOptions read for the one field
//! berthd acts on (`image_path`), the container's spec encoded as containerd stores it (a
//! protobuf `Any`), descriptors both ways.

use super::convert::any_in;
use crate::core::checkpoint::CheckpointTask;
use crate::core::metadata::containers::AnyValue;
use crate::core::metadata::images::Descriptor;
use crate::edge::grpc::images::convert as images;
use berth_proto::containerd::runc::v1::CheckpointOptions;
use berth_proto::types::Descriptor as PbDescriptor;
use prost::Message;
use std::path::PathBuf;
use tonic::Status;

/// The core's request; options that say CheckpointOptions must decode as them.
pub fn request(
    container_id: String,
    options: Option<prost_types::Any>,
) -> Result<CheckpointTask, Status> {
    let image_path = match &options {
        Some(a) if a.type_url.ends_with("containerd.runc.v1.CheckpointOptions") => {
            CheckpointOptions::decode(a.value.as_slice())
                .map_err(|e| Status::invalid_argument(format!("bad checkpoint options: {e}")))?
                .image_path
        }
        _ => String::new(),
    };
    Ok(CheckpointTask {
        container_id,
        options: any_in(options),
        image_path: (!image_path.is_empty()).then(|| PathBuf::from(image_path)),
    })
}

/// The spec (an `Any` already) as the bytes of that `Any`, as containerd writes it.
pub fn encode_spec(spec: &AnyValue) -> Vec<u8> {
    prost_types::Any {
        type_url: spec.type_url.clone(),
        value: spec.value.clone(),
    }
    .encode_to_vec()
}

pub fn descriptor_in(d: PbDescriptor) -> Descriptor {
    images::descriptor_in(d)
}

pub fn descriptor_out(d: Descriptor) -> PbDescriptor {
    images::descriptor_out(&d)
}
