//! Pull and push through berthd's Transfer service: the daemon talks to the registry; the
//! client opens a progress stream (and an auth stream when it has credentials) on the
//! Streaming service, as containerd 2.x clients do.

use crate::{Client, Error, Result};
use berth_proto::streaming::StreamInit;
use berth_proto::transfer::{TransferOptions, TransferRequest};
use berth_proto::types::transfer::{
    AuthRequest, AuthResponse, AuthType, ImageStore, OciRegistry, Progress, RegistryResolver,
    UnpackConfiguration,
};
use berth_proto::types::Platform;
use prost::Message;
use prost_types::Any;
use tokio::sync::mpsc;

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Username and password, given only if the registry asks.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    /// `os/arch[/variant]`; empty means the daemon's platform.
    pub platforms: Vec<String>,
    pub all_platforms: bool,
    /// Snapshotter to unpack into; None fetches content only.
    pub unpack: Option<String>,
    /// Store the image under this name instead of the reference.
    pub name: Option<String>,
}

pub(crate) fn platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: String::new(),
        }),
        [os, arch, variant] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
        }),
        _ => Err(Error::Protocol(format!(
            "platform {s:?} is not os/arch[/variant]"
        ))),
    }
}

/// A stream opened on the Streaming service: its id, what to send, what arrives.
pub(crate) struct OpenStream {
    pub id: String,
    pub tx: mpsc::Sender<Any>,
    pub rx: tonic::Streaming<Any>,
}

impl Client {
    pub(crate) async fn open_stream(&self) -> Result<OpenStream> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, out) = mpsc::channel::<Any>(16);
        tx.send(berth_proto::to_any(&StreamInit { id: id.clone() }))
            .await
            .map_err(|_| Error::Protocol("stream closed".into()))?;
        let mut rx = self
            .streaming()
            .stream(tokio_stream::wrappers::ReceiverStream::new(out))
            .await?
            .into_inner();
        // The daemon acknowledges the stream before any call may use it.
        rx.message()
            .await?
            .ok_or_else(|| Error::Protocol("stream closed before it was acknowledged".into()))?;
        Ok(OpenStream { id, tx, rx })
    }

    async fn resolver(&self, opts: &RegistryOptions) -> Result<RegistryResolver> {
        let mut r = RegistryResolver {
            default_scheme: if opts.plain_http { "http" } else { "https" }.into(),
            ..Default::default()
        };
        if let Some((user, secret)) = opts.credentials.clone() {
            let mut s = self.open_stream().await?;
            r.auth_stream = s.id.clone();
            tokio::spawn(async move {
                while let Ok(Some(m)) = s.rx.message().await {
                    if AuthRequest::decode(m.value.as_slice()).is_err() {
                        continue;
                    }
                    let answer = AuthResponse {
                        auth_type: AuthType::Credentials as i32,
                        username: user.clone(),
                        secret: secret.clone(),
                        expire_at: None,
                    };
                    if s.tx.send(berth_proto::to_any(&answer)).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(r)
    }

    pub(crate) async fn transfer_with_progress(
        &self,
        source: Any,
        destination: Any,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<()> {
        let mut options = None;
        let mut pump = None;
        if let Some(ptx) = progress {
            let mut s = self.open_stream().await?;
            options = Some(TransferOptions {
                progress_stream: s.id.clone(),
            });
            pump = Some(tokio::spawn(async move {
                let _keep = s.tx;
                while let Ok(Some(m)) = s.rx.message().await {
                    if let Ok(p) = Progress::decode(m.value.as_slice()) {
                        let _ = ptx.send(p);
                    }
                }
            }));
        }
        let r = self
            .transfer()
            .transfer(TransferRequest {
                source: Some(source),
                destination: Some(destination),
                options,
            })
            .await;
        if let Some(p) = pump {
            // The daemon ends the stream when the transfer is done.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), p).await;
        }
        r?;
        Ok(())
    }

    /// Pulls `reference` into the daemon (content, image record and, with `unpack`,
    /// snapshots); progress reports go to `progress`.
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<()> {
        let platforms = opts
            .platforms
            .iter()
            .map(|p| platform(p))
            .collect::<Result<Vec<_>>>()?;
        let source = OciRegistry {
            reference: reference.to_string(),
            resolver: Some(self.resolver(&opts.registry).await?),
        };
        let dest = ImageStore {
            name: opts.name.clone().unwrap_or_default(),
            platforms: platforms.clone(),
            all_metadata: opts.all_platforms,
            unpacks: opts
                .unpack
                .iter()
                .map(|s| UnpackConfiguration {
                    platform: platforms.first().cloned(),
                    snapshotter: s.clone(),
                })
                .collect(),
            ..Default::default()
        };
        self.transfer_with_progress(
            berth_proto::to_any(&source),
            berth_proto::to_any(&dest),
            progress,
        )
        .await
    }

    /// Pushes the local image `image` to `reference` (its own name when empty).
    pub async fn push(
        &self,
        image: &str,
        reference: &str,
        registry: &RegistryOptions,
        platforms: &[String],
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<()> {
        let source = ImageStore {
            name: image.to_string(),
            platforms: platforms
                .iter()
                .map(|p| platform(p))
                .collect::<Result<Vec<_>>>()?,
            ..Default::default()
        };
        let dest = OciRegistry {
            reference: if reference.is_empty() {
                image
            } else {
                reference
            }
            .to_string(),
            resolver: Some(self.resolver(registry).await?),
        };
        self.transfer_with_progress(
            berth_proto::to_any(&source),
            berth_proto::to_any(&dest),
            progress,
        )
        .await
    }
}
