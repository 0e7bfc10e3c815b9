//! containerd.services.content.v1.Content, including the STAT/WRITE/COMMIT Write stream.

use super::{ctx, labels_in, labels_out, mask_paths, namespace, status, timestamp};
use crate::core::content::local::IngestStatus;
use crate::core::content::{BlobRange, Content, NamespacedWriter};
use crate::core::context::Ctx;
use crate::core::metadata::content::BlobRecord;
use berth_proto::content::{
    content_server::Content as ContentApi, AbortRequest, DeleteContentRequest, Info, InfoRequest,
    InfoResponse, ListContentRequest, ListContentResponse, ListStatusesRequest,
    ListStatusesResponse, ReadContentRequest, ReadContentResponse, Status as PbStatus,
    StatusRequest, StatusResponse, UpdateRequest, UpdateResponse, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use std::io::Read;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Bytes per Read message; clients accept 16 MiB messages, 1 MiB keeps latency low.
const READ_CHUNK: usize = 1 << 20;
/// Infos per List message.
const LIST_BATCH: usize = 100;

pub struct ContentService {
    pub core: Content,
}

mod convert {
    use super::*;

    pub fn info(b: BlobRecord) -> Info {
        Info {
            size: b.size,
            created_at: timestamp(b.created_at),
            updated_at: timestamp(b.updated_at),
            labels: labels_out(&b.labels),
            digest: b.digest,
        }
    }

    pub fn status(s: IngestStatus) -> PbStatus {
        PbStatus {
            started_at: timestamp(s.meta.started_at),
            updated_at: timestamp(s.updated_at),
            offset: s.offset,
            total: s.meta.total,
            r#ref: s.meta.reference,
            expected: s.meta.expected,
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ContentApi for ContentService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = namespace(&req)?;
        let b = self
            .core
            .info(ns, req.into_inner().digest)
            .await
            .map_err(status)?;
        Ok(Response::new(InfoResponse {
            info: Some(convert::info(b)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let b = self
            .core
            .update(
                ns,
                info.digest,
                labels_in(info.labels),
                mask_paths(req.update_mask),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateResponse {
            info: Some(convert::info(b)),
        }))
    }

    type ListStream = Boxed<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let all = self.core.list(ns, filter).await.map_err(status)?;
        let mut batches = vec![];
        let mut it = all.into_iter().map(convert::info).peekable();
        while it.peek().is_some() {
            batches.push(Ok(ListContentResponse {
                info: it.by_ref().take(LIST_BATCH).collect(),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.core
            .delete(ns, req.into_inner().digest)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    type ReadStream = Boxed<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let range = self
            .core
            .open_reader(ns, req.digest, req.offset, req.size, READ_CHUNK)
            .await
            .map_err(status)?;
        let (mut file, start, end) = match range {
            BlobRange::Read { offset, data } => {
                let one = ReadContentResponse { offset, data };
                return Ok(Response::new(Box::pin(futures::stream::iter([Ok(one)]))));
            }
            BlobRange::File { file, offset, end } => (file, offset, end),
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::{Seek, SeekFrom};
            if let Err(e) = file.seek(SeekFrom::Start(start as u64)) {
                let _ = tx.blocking_send(Err(Status::internal(format!("seek blob: {e}"))));
                return;
            }
            let mut offset = start;
            while offset < end {
                let want = ((end - offset) as usize).min(READ_CHUNK);
                let mut data = vec![0u8; want];
                if let Err(e) = file.read_exact(&mut data) {
                    let _ = tx.blocking_send(Err(Status::internal(format!("read blob: {e}"))));
                    return;
                }
                if tx
                    .blocking_send(Ok(ReadContentResponse { offset, data }))
                    .is_err()
                {
                    return; // reader went away
                }
                offset += want as i64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let ns = namespace(&req)?;
        let s = self
            .core
            .status(ns, req.into_inner().r#ref)
            .await
            .map_err(status)?;
        Ok(Response::new(StatusResponse {
            status: Some(convert::status(s)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let all = self.core.list_statuses(ns, filter).await.map_err(status)?;
        Ok(Response::new(ListStatusesResponse {
            statuses: all.into_iter().map(convert::status).collect(),
        }))
    }

    type WriteStream = Boxed<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ctx = ctx(&req)?;
        let input = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let core = self.core.clone();
        // Replies start flowing before the first request is read, so clients that wait for
        // response headers before sending (tonic) and clients that send first (Go) both work.
        tokio::spawn(async move {
            if let Err(e) = drive_write(core, ctx, input, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let ctx = ctx(&req)?;
        self.core
            .abort(ctx, req.into_inner().r#ref)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }
}

/// Answers every request of a Write stream exactly once, in order, until COMMIT or the
/// client closes. The writer (and its ref lock) lives as long as this function.
/// The reply to `action` as the ingest stands before it: where it started, how far it is and
/// the total it expects (the client's, or the one it was opened with).
fn ingest_status(
    action: WriteAction,
    writer: &NamespacedWriter,
    total: i64,
) -> WriteContentResponse {
    WriteContentResponse {
        action: action as i32,
        started_at: timestamp(writer.inner.meta().started_at),
        updated_at: None,
        offset: writer.inner.offset(),
        total: total.max(writer.inner.meta().total),
        digest: String::new(),
    }
}

async fn drive_write(
    core: Content,
    ctx: Ctx,
    mut input: Streaming<WriteContentRequest>,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let first = match input.next().await {
        Some(m) => m?,
        None => return Ok(()),
    };
    if first.r#ref.is_empty() {
        return Err(Status::invalid_argument(
            "first message of a write must carry a ref",
        ));
    }
    let mut writer: NamespacedWriter = core
        .writer(
            ctx,
            first.r#ref.clone(),
            first.total,
            first.expected.clone(),
        )
        .await
        .map_err(status)?;
    let mut total = first.total;
    let mut expected = first.expected.clone();
    let mut next = Some(first);
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => match input.next().await {
                Some(r) => r?,
                None => return Ok(()),
            },
        };
        if req.total > 0 {
            total = req.total;
        }
        if !req.expected.is_empty() {
            expected = req.expected.clone();
        }
        let action = WriteAction::try_from(req.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", req.action))
        })?;
        let mut reply = ingest_status(action, &writer, total);
        match action {
            WriteAction::Stat => {
                reply.digest = writer.inner.digest_so_far().to_string();
            }
            WriteAction::Write | WriteAction::Commit => {
                let truncate = req.offset == 0 && writer.inner.offset() > 0;
                if !req.data.is_empty() || truncate || req.offset > 0 {
                    writer = core
                        .write(writer, req.offset, req.data)
                        .await
                        .map_err(status)?;
                }
                reply.offset = writer.inner.offset();
                reply.digest = writer.inner.digest_so_far().to_string();
                if action == WriteAction::Commit {
                    let rec = core
                        .commit(writer, total, expected.clone(), labels_in(req.labels))
                        .await
                        .map_err(status)?;
                    reply.digest = rec.digest;
                    reply.offset = rec.size;
                    reply.updated_at = timestamp(rec.updated_at);
                    let _ = tx.send(Ok(reply)).await;
                    return Ok(());
                }
            }
        }
        reply.updated_at = timestamp(writer.inner.updated_at());
        if tx.send(Ok(reply)).await.is_err() {
            return Ok(()); // client went away; the ingest stays for a resume
        }
    }
}
