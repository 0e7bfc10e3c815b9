//! PullImage with berth's own puller, and the unpacking a container's or pod's image needs:
//! into the snapshotter of the runtime handler it is for.

use super::*;

impl Cri {
    /// Pulls `reference` for runtime handler `handler` (empty: the default), unpacks it
    /// into that handler's snapshotter, and records it under its tag, digest and id. Images
    /// are one set whichever snapshotters hold them, as in containerd.
    pub async fn image_pull(
        &self,
        reference: &str,
        auth: Option<&cri::AuthConfig>,
        handler: &str,
    ) -> Result<ImageInfo> {
        let snapshotter = self.runtime_handler(handler)?.snapshotter;
        self.image_pull_into(reference, auth, snapshotter).await
    }

    /// Pulls `reference`, unpacked into `snapshotter`.
    async fn image_pull_into(
        &self,
        reference: &str,
        auth: Option<&cri::AuthConfig>,
        snapshotter: String,
    ) -> Result<ImageInfo> {
        let r = crate::core::registry::parse_reference(reference)?;
        let name = crate::core::registry::image_name(&r);
        let creds = credentials(auth)?;
        let access = Access {
            plain_http: false,
            credentials: creds.map(|c| {
                let c = Arc::new(c);
                let f: crate::core::registry::CredentialsFn = Arc::new(move |_challenge| {
                    let c = c.clone();
                    Box::pin(async move { Ok(Some((*c).clone())) })
                });
                f
            }),
        };
        let req = PullRequest {
            reference: reference.to_string(),
            name: Some(name.clone()),
            unpack: Some(snapshotter),
            labels: [(MANAGED_LABEL.to_string(), "managed".to_string())].into(),
            access,
            ..Default::default()
        };
        let pulled = self.puller.pull(self.ctx(), req, None).await?;
        let rec = self
            .images
            .get(self.ns.clone(), pulled.name.clone())
            .await?;
        let info = self.describe(&rec).await?;
        let repo = repo_of(&name);
        for alias in [format!("{repo}@{}", pulled.target.digest), info.id.clone()] {
            if alias == name {
                continue;
            }
            let rec = ImageRecord {
                name: alias,
                labels: [(MANAGED_LABEL.to_string(), "managed".to_string())].into(),
                target: pulled.target.clone(),
                ..Default::default()
            };
            self.images.put(self.ns.clone(), rec).await?;
        }
        self.image_find(&info.id).await?.ok_or_else(|| {
            Error::new(
                Kind::Internal,
                format!("image {name} vanished after its pull"),
            )
        })
    }

    /// The image, pulled into `snapshotter` when missing (the sandbox image).
    pub async fn image_ensure(&self, reference: &str, snapshotter: &str) -> Result<ImageInfo> {
        match self.image_find(reference).await? {
            Some(i) => Ok(i),
            None => {
                self.image_pull_into(reference, None, snapshotter.to_string())
                    .await
            }
        }
    }

    /// Makes sure the image's layers are unpacked in `snapshotter`; returns the top
    /// snapshot's name.
    pub async fn image_unpack(&self, info: &ImageInfo, snapshotter: &str) -> Result<String> {
        let snapshotter = snapshotter.to_string();
        if self
            .snapshots
            .stat(self.ns.clone(), &snapshotter, info.chain_id.clone())
            .await
            .is_ok()
        {
            return Ok(info.chain_id.clone());
        }
        let name = info.names.first().cloned().unwrap_or_default();
        let u = self
            .unpacker
            .unpack(self.ctx(), name, snapshotter, None)
            .await?;
        Ok(u.chain_id)
    }
}
