//! A client for berthd or any daemon that speaks containerd's API: a unix-socket channel,
//! the namespace and lease headers on every call, typed service clients and a few helpers
//! for multi-step flows (ingesting and reading blobs).

use berth_proto::berth::services::build::v1::build_client::BuildClient;
use berth_proto::berth::services::check::v1::check_client::CheckClient;
use berth_proto::berth::services::networks::v1::networks_client::NetworksClient;
use berth_proto::berth::services::unpack::v1::unpack_client::UnpackClient;
use berth_proto::berth::services::volumes::v1::volumes_client::VolumesClient;
use berth_proto::content::{
    content_client::ContentClient, ReadContentRequest, WriteAction, WriteContentRequest,
};
use berth_proto::{
    containers::containers_client::ContainersClient, diff::diff_client::DiffClient,
    events::events_client::EventsClient, images::images_client::ImagesClient,
    introspection::introspection_client::IntrospectionClient, leases::leases_client::LeasesClient,
    namespaces::namespaces_client::NamespacesClient, snapshots::snapshots_client::SnapshotsClient,
    streaming::streaming_client::StreamingClient, tasks::tasks_client::TasksClient,
    transfer::transfer_client::TransferClient, version::version_client::VersionClient,
};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

pub use berth_proto as proto;

pub mod archive;
pub mod transfer;

pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";
pub const DEFAULT_NAMESPACE: &str = "default";
/// Messages up to this size are accepted, as containerd's clients do.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;
/// Bytes per WRITE message during an ingest.
pub const WRITE_CHUNK: usize = 1 << 20;
/// How long an ingest waits for another writer of the same ref, and how often it looks.
const LOCKED_REF_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
const LOCKED_REF_POLL: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {path}: {source}; is berthd running? (start it with `berthd`, or pass --address)")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{}", .0.message())]
    Status(#[from] Status),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid header value for {0}")]
    Header(&'static str),
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Error {
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds `containerd-namespace` and, when set, `containerd-lease` to every request.
#[derive(Clone)]
pub struct Headers {
    namespace: MetadataValue<tonic::metadata::Ascii>,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(l) = &self.lease {
            req.metadata_mut().insert("containerd-lease", l.clone());
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, Headers>;

#[derive(Clone)]
pub struct Client {
    channel: Channel,
    headers: Headers,
    namespace: String,
}

macro_rules! service {
    ($($name:ident => $client:ident),* $(,)?) => {$(
        pub fn $name(&self) -> $client<Svc> {
            $client::with_interceptor(self.channel.clone(), self.headers.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE)
        }
    )*};
}

impl Client {
    /// Connects to the daemon's unix socket.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        // The URI is ignored; every connection goes to the socket.
        let channel = Endpoint::from_static("http://berth.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| Error::Connect {
                path: path.clone(),
                source,
            })?;
        Client::from_channel(channel, DEFAULT_NAMESPACE)
    }

    /// The connection itself, for services this client has no wrapper for (the CRI's
    /// `runtime.v1` on the same socket, say).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn from_channel(channel: Channel, namespace: &str) -> Result<Self> {
        Ok(Client {
            channel,
            headers: Headers {
                namespace: namespace
                    .parse()
                    .map_err(|_| Error::Header("containerd-namespace"))?,
                lease: None,
            },
            namespace: namespace.to_string(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The same connection, calling in another namespace.
    pub fn with_namespace(&self, namespace: &str) -> Result<Self> {
        let mut c = self.clone();
        c.headers.namespace = namespace
            .parse()
            .map_err(|_| Error::Header("containerd-namespace"))?;
        c.namespace = namespace.to_string();
        Ok(c)
    }

    /// The same connection, with every call made under `lease`.
    pub fn with_lease(&self, lease: Option<&str>) -> Result<Self> {
        let mut c = self.clone();
        c.headers.lease = match lease {
            Some(l) => Some(l.parse().map_err(|_| Error::Header("containerd-lease"))?),
            None => None,
        };
        Ok(c)
    }

    /// A client whose writes a new lease protects from garbage collection until
    /// [`Client::release_lease`] (or for an hour, if it is never released).
    pub async fn temporary_lease(&self) -> Result<(Client, String)> {
        let expire = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let lease = self
            .leases()
            .create(berth_proto::leases::CreateRequest {
                id: String::new(),
                labels: HashMap::from([(
                    berth_proto::vocab::labels::GC_EXPIRE.to_string(),
                    berth_proto::vocab::time::rfc3339(expire),
                )]),
            })
            .await?
            .into_inner()
            .lease
            .ok_or_else(|| Error::Protocol("the daemon created no lease".into()))?;
        Ok((self.with_lease(Some(&lease.id))?, lease.id))
    }

    pub async fn release_lease(&self, id: &str) -> Result<()> {
        self.leases()
            .delete(berth_proto::leases::DeleteRequest {
                id: id.to_string(),
                sync: false,
            })
            .await?;
        Ok(())
    }

    service! {
        version => VersionClient,
        introspection => IntrospectionClient,
        namespaces => NamespacesClient,
        content => ContentClient,
        images => ImagesClient,
        leases => LeasesClient,
        events => EventsClient,
        containers => ContainersClient,
        tasks => TasksClient,
        snapshots => SnapshotsClient,
        diff => DiffClient,
        unpack => UnpackClient,
        transfer => TransferClient,
        streaming => StreamingClient,
        volumes => VolumesClient,
        networks => NetworksClient,
        build => BuildClient,
        check => CheckClient,
    }

    /// Writes `data` into the content store under `reference`, resuming from whatever the
    /// ingest already holds, and commits it. Returns the digest. An `expected` digest that
    /// is already present is success (AlreadyExists), as containerd's clients treat it.
    pub async fn ingest<R: AsyncRead + Unpin>(
        &self,
        reference: &str,
        mut data: R,
        total: i64,
        expected: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<String> {
        let mut w = match self.open_write(reference, total, expected).await? {
            Opened::Stream(w) => w,
            Opened::Present(digest) => return Ok(digest),
        };
        let (digest, offset) = w.send_data(&mut data).await?;
        w.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset,
            total: offset,
            expected: expected.unwrap_or(&digest).to_string(),
            labels,
            ..Default::default()
        })
        .await?;
        drop(w.tx);
        match w.replies.next().await {
            Some(Ok(r)) => Ok(r.digest),
            Some(Err(s)) if s.code() == tonic::Code::AlreadyExists => Ok(digest),
            Some(Err(s)) => Err(s.into()),
            None => Err(Error::Protocol("no reply to COMMIT".into())),
        }
    }

    /// Opens an ingest's write stream with STAT. Another writer holding the same ref (a
    /// second import of the same archive) is waited for, not failed on: once it is done the
    /// content exists.
    async fn open_write(
        &self,
        reference: &str,
        total: i64,
        expected: Option<&str>,
    ) -> Result<Opened> {
        let mut waited = std::time::Duration::ZERO;
        loop {
            let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
            // Queued before the call: the daemon may wait for it before answering headers.
            tx.send(WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: reference.to_string(),
                total,
                expected: expected.unwrap_or_default().to_string(),
                ..Default::default()
            })
            .await
            .map_err(|_| Error::Protocol("write stream closed by the daemon".into()))?;
            let opened = self
                .content()
                .write(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            let mut replies = match opened {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable && waited < LOCKED_REF_WAIT => {
                    waited += LOCKED_REF_POLL;
                    tokio::time::sleep(LOCKED_REF_POLL).await;
                    continue;
                }
                Err(s) => return Err(s.into()),
            };
            match replies.next().await {
                Some(Ok(status)) => {
                    return Ok(Opened::Stream(Box::new(WriteStream {
                        tx,
                        replies,
                        status,
                    })))
                }
                Some(Err(s)) if s.code() == tonic::Code::AlreadyExists => {
                    return expected
                        .map(|d| Opened::Present(d.to_string()))
                        .ok_or_else(|| Error::Status(s));
                }
                Some(Err(s))
                    if s.code() == tonic::Code::Unavailable && waited < LOCKED_REF_WAIT =>
                {
                    waited += LOCKED_REF_POLL;
                    tokio::time::sleep(LOCKED_REF_POLL).await;
                }
                Some(Err(s)) => return Err(s.into()),
                None => return Err(Error::Protocol("no reply to STAT".into())),
            }
        }
    }

    /// Reads a whole blob (or a range of it) into memory.
    pub async fn read_blob(&self, digest: &str, offset: i64, size: i64) -> Result<Vec<u8>> {
        let mut stream = self
            .content()
            .read(ReadContentRequest {
                digest: digest.to_string(),
                offset,
                size,
            })
            .await?
            .into_inner();
        let mut out = vec![];
        while let Some(msg) = stream.next().await {
            out.extend_from_slice(&msg?.data);
        }
        Ok(out)
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// What opening an ingest found: a stream to write on, or the expected content present.
enum Opened {
    Stream(Box<WriteStream>),
    Present(String),
}

/// An ingest's write stream: the sender, the daemon's replies and what the ingest already
/// held when it was opened.
struct WriteStream {
    tx: tokio::sync::mpsc::Sender<WriteContentRequest>,
    replies: tonic::Streaming<berth_proto::content::WriteContentResponse>,
    status: berth_proto::content::WriteContentResponse,
}

impl WriteStream {
    async fn send(&self, m: WriteContentRequest) -> Result<()> {
        self.tx
            .send(m)
            .await
            .map_err(|_| Error::Protocol("write stream closed by the daemon".into()))
    }

    /// Writes `data` from where the ingest stands (what the daemon already has is read and
    /// hashed, not sent); returns the whole digest and the size.
    async fn send_data<R: AsyncRead + Unpin>(&mut self, data: &mut R) -> Result<(String, i64)> {
        let mut hasher = Sha256::new();
        let mut skip = self.status.offset;
        let mut offset = 0i64;
        let mut buf = vec![0u8; WRITE_CHUNK];
        while skip > 0 {
            let want = (skip as usize).min(buf.len());
            let n = data.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            skip -= n as i64;
            offset += n as i64;
        }
        loop {
            let n = read_full(data, &mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            self.send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset,
                data: buf[..n].to_vec(),
                ..Default::default()
            })
            .await?;
            offset += n as i64;
            match self.replies.next().await {
                Some(Ok(_)) => {}
                Some(Err(s)) => return Err(s.into()),
                None => return Err(Error::Protocol("write stream ended early".into())),
            }
        }
        Ok((format!("sha256:{}", hex::encode(hasher.finalize())), offset))
    }
}
