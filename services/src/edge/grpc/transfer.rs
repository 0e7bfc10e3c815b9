//! containerd.services.transfer.v1.Transfer: registry pull (OCIRegistry -> ImageStore), push
//! (ImageStore -> OCIRegistry), archive import (ImageImportStream -> ImageStore) and export
//! (ImageStore -> ImageExportStream), tag (ImageStore -> ImageStore) and echo
//! (ImageImportStream -> ImageExportStream), with progress, credentials and archive bytes on
//! Streaming streams.

use super::streaming::{decode, is, receive_bytes, send_bytes, OpenStreams, Stream};
use super::{ctx, labels_in, status};
use crate::core::archive::{Archives, ExportRequest, ImportRequest, Naming, Reference};
use crate::core::error::{blocking, Error, Kind};
use crate::core::oci::Platform;
use crate::core::pull::{Progress, PullRequest, Puller};
use crate::core::push::{PushRequest, Pusher};
use crate::core::registry::{Access, AuthChallenge, Credentials, CredentialsFn};
use berth_proto::transfer::{transfer_server::Transfer, TransferRequest};
use berth_proto::types::transfer::{
    AuthRequest, AuthResponse, AuthType, ImageExportStream, ImageImportStream, ImageStore,
    OciRegistry, Progress as ProgressMsg,
};
use futures::FutureExt;
use prost_types::Any;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

pub struct TransferService {
    pub puller: Puller,
    pub pusher: Pusher,
    pub archives: Archives,
    pub streams: OpenStreams,
}

/// The names an ImageStore destination gives (containerd's ImageStore rules).
fn naming(store: &ImageStore) -> Naming {
    Naming {
        index_name: store.name.clone(),
        labels: labels_in(store.labels.clone()),
        references: store
            .extra_references
            .iter()
            .map(|r| Reference {
                name: r.name.clone(),
                is_prefix: r.is_prefix,
                allow_overwrite: r.allow_overwrite,
                add_digest: r.add_digest,
                skip_named_digest: r.skip_named_digest,
            })
            .collect(),
    }
}

/// The images an ImageStore source names, for an export: its name and whole references.
fn images_named(store: &ImageStore) -> Result<Vec<String>, Status> {
    let mut names: Vec<String> = Some(store.name.clone())
        .filter(|n| !n.is_empty())
        .into_iter()
        .collect();
    for r in &store.extra_references {
        if r.is_prefix {
            return Err(Status::unimplemented(format!(
                "exporting by name prefix ({}) is not implemented; name each image",
                r.name
            )));
        }
        names.push(r.name.clone());
    }
    Ok(names)
}

fn platform_of(p: &berth_proto::types::Platform) -> Platform {
    Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    }
}

/// Credentials asked of the client on its auth stream, once per registry.
fn credentials_from(stream: Stream) -> CredentialsFn {
    let stream = Arc::new(tokio::sync::Mutex::new(stream));
    Arc::new(move |challenge: AuthChallenge| {
        let stream = stream.clone();
        async move {
            let mut s = stream.lock().await;
            s.send(&AuthRequest {
                host: challenge.host.clone(),
                reference: challenge.reference.clone(),
                wwwauthenticate: vec![],
            })
            .await
            .map_err(|e| {
                crate::core::error::Error::new(Kind::Unauthenticated, e.message().to_string())
            })?;
            let Some(answer) = s.recv().await else {
                return Ok(None);
            };
            let r: AuthResponse = decode(&answer)
                .map_err(|e| crate::core::error::Error::invalid(e.message().to_string()))?;
            match AuthType::try_from(r.auth_type).unwrap_or(AuthType::None) {
                AuthType::None => Ok(None),
                AuthType::Credentials | AuthType::Refresh => Ok(Some(Credentials {
                    username: r.username,
                    secret: r.secret,
                })),
                AuthType::Header => Err(crate::core::error::Error::invalid(
                    "authorization headers are not supported; answer with credentials",
                )),
            }
        }
        .boxed()
    })
}

/// Forwards progress to the client's stream until the sender side is dropped.
fn progress_pump(stream: Stream) -> (mpsc::UnboundedSender<Progress>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let task = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let msg = ProgressMsg {
                event: p.event,
                name: p.name,
                parents: p.parents,
                progress: p.progress,
                total: p.total,
            };
            if stream.send(&msg).await.is_err() {
                break;
            }
        }
    });
    (tx, task)
}

fn access(streams: &OpenStreams, ns: &str, reg: &OciRegistry) -> Result<Access, Status> {
    let resolver = reg.resolver.clone().unwrap_or_default();
    let credentials = if resolver.auth_stream.is_empty() {
        None
    } else {
        Some(credentials_from(streams.take(ns, &resolver.auth_stream)?))
    };
    Ok(Access {
        plain_http: resolver.default_scheme == "http",
        credentials,
    })
}

/// A pull: from the registry `source` into the image store `dest`. With no platform asked
/// for, the unpack's platform is the one pulled.
fn pull_request(
    streams: &OpenStreams,
    ns: &str,
    source: &Any,
    dest: &Any,
) -> Result<PullRequest, Status> {
    let reg: OciRegistry = decode(source)?;
    let store: ImageStore = decode(dest)?;
    let mut platforms: Vec<Platform> = store.platforms.iter().map(platform_of).collect();
    let unpack = store.unpacks.first().map(|u| {
        if let Some(p) = &u.platform {
            if platforms.is_empty() {
                platforms.push(platform_of(p));
            }
        }
        u.snapshotter.clone()
    });
    Ok(PullRequest {
        reference: reg.reference.clone(),
        name: (!store.name.is_empty()).then(|| store.name.clone()),
        platforms,
        all_platforms: store.all_metadata,
        unpack,
        labels: labels_in(store.labels),
        access: access(streams, ns, &reg)?,
    })
}

/// A push: from the image store `source` to the registry `dest`.
fn push_request(
    streams: &OpenStreams,
    ns: &str,
    source: &Any,
    dest: &Any,
) -> Result<PushRequest, Status> {
    let store: ImageStore = decode(source)?;
    let reg: OciRegistry = decode(dest)?;
    Ok(PushRequest {
        image: store.name.clone(),
        reference: reg.reference.clone(),
        platforms: store.platforms.iter().map(platform_of).collect(),
        access: access(streams, ns, &reg)?,
    })
}

/// An import into the image store `store`.
fn import_request(store: &ImageStore) -> ImportRequest {
    ImportRequest {
        naming: naming(store),
        platforms: store.platforms.iter().map(platform_of).collect(),
        unpacks: store
            .unpacks
            .iter()
            .map(|u| (u.platform.as_ref().map(platform_of), u.snapshotter.clone()))
            .collect(),
    }
}

/// An export of what `store` names to the archive stream `export`.
fn export_request(store: &ImageStore, export: &ImageExportStream) -> Result<ExportRequest, Status> {
    Ok(ExportRequest {
        images: images_named(store)?,
        platforms: export.platforms.iter().map(platform_of).collect(),
        all_platforms: export.all_platforms,
        skip_docker_manifest: export.skip_compatibility_manifest,
        skip_non_distributable: export.skip_non_distributable,
    })
}

/// containerd's echo: an import stream's bytes back out of an export stream, untouched and
/// unread (its client suite checks the transfer plumbing with it, TestTransferEcho).
async fn echo(from: Stream, to: Stream) -> crate::core::error::Result<()> {
    let mut reader = receive_bytes(from);
    let (mut writer, sent) = send_bytes(to);
    let copied = blocking(move || {
        std::io::copy(&mut reader, &mut writer)
            .map(drop)
            .map_err(|e| Error::io("echo the import stream to the export stream", e))
    })
    .await;
    // The writer is gone with the copy: the export stream ends once its bytes are out.
    let _ = sent.await;
    copied
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        let source = r
            .source
            .ok_or_else(|| Status::invalid_argument("transfer source must be set"))?;
        let dest = r
            .destination
            .ok_or_else(|| Status::invalid_argument("transfer destination must be set"))?;
        let progress_id = r.options.map(|o| o.progress_stream).unwrap_or_default();
        let ns = ctx.ns.to_string();
        let (progress, pump) = if progress_id.is_empty() {
            (None, None)
        } else {
            let (tx, task) = progress_pump(self.streams.take(&ns, &progress_id)?);
            (Some(tx), Some(task))
        };
        let result = if is::<OciRegistry>(&source) && is::<ImageStore>(&dest) {
            let req = pull_request(&self.streams, &ns, &source, &dest)?;
            self.puller.pull(ctx, req, progress).await.map(|_| ())
        } else if is::<ImageStore>(&source) && is::<OciRegistry>(&dest) {
            let req = push_request(&self.streams, &ns, &source, &dest)?;
            self.pusher.push(ctx, req, progress).await.map(|_| ())
        } else if is::<ImageImportStream>(&source) && is::<ImageStore>(&dest) {
            let import: ImageImportStream = decode(&source)?;
            let store: ImageStore = decode(&dest)?;
            let bytes = receive_bytes(self.streams.take(&ns, &import.stream)?);
            let req = import_request(&store);
            self.archives
                .import(ctx, Box::new(bytes), req, progress)
                .await
                .map(|_| ())
        } else if is::<ImageStore>(&source) && is::<ImageExportStream>(&dest) {
            let store: ImageStore = decode(&source)?;
            let export: ImageExportStream = decode(&dest)?;
            let req = export_request(&store, &export)?;
            let (writer, sent) = send_bytes(self.streams.take(&ns, &export.stream)?);
            let r = self
                .archives
                .export(ctx, req, Box::new(writer), progress)
                .await;
            let _ = sent.await;
            r
        } else if is::<ImageImportStream>(&source) && is::<ImageExportStream>(&dest) {
            let import: ImageImportStream = decode(&source)?;
            let export: ImageExportStream = decode(&dest)?;
            drop(progress);
            let from = self.streams.take(&ns, &import.stream)?;
            echo(from, self.streams.take(&ns, &export.stream)?).await
        } else if is::<ImageStore>(&source) && is::<ImageStore>(&dest) {
            let from: ImageStore = decode(&source)?;
            let to: ImageStore = decode(&dest)?;
            drop(progress);
            self.archives
                .tag(ctx, &from.name, &naming(&to))
                .await
                .map(|_| ())
        } else {
            drop(progress);
            return Err(Status::unimplemented(format!(
                "transfer from {} to {} is not supported; berth transfers registry -> image store (pull), image store -> registry (push), archive stream -> image store (import), image store -> archive stream (export), image store -> image store (tag) and archive stream -> archive stream (echo)",
                source.type_url, dest.type_url
            )));
        };
        if let Some(task) = pump {
            let _ = task.await;
        }
        result.map(Response::new).map_err(status)
    }
}
