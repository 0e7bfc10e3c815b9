//! Images in and out of berth: pulled from and pushed to registries by berthd (progress shown
//! here), imported from and exported to archives.

use crate::output::size;
use berth_client::Client;

/// How to reach a registry, shared by pull and push.
#[derive(clap::Args, Clone)]
pub struct RegistryFlags {
    /// Talk plain HTTP to the registry (for registries without TLS)
    #[arg(long)]
    plain_http: bool,
    /// Credentials, sent only if the registry asks: USER:PASSWORD (or USER, then the
    /// password is read from BERTH_PASSWORD)
    #[arg(long, short = 'u')]
    user: Option<String>,
}

impl RegistryFlags {
    fn options(&self) -> anyhow::Result<berth_client::transfer::RegistryOptions> {
        let credentials = match &self.user {
            None => None,
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => Some((user.to_string(), pass.to_string())),
                None => Some((
                    u.clone(),
                    std::env::var("BERTH_PASSWORD").map_err(|_| {
                        anyhow::anyhow!(
                            "--user {u} has no password: give USER:PASSWORD or set BERTH_PASSWORD"
                        )
                    })?,
                )),
            },
        };
        Ok(berth_client::transfer::RegistryOptions {
            plain_http: self.plain_http,
            credentials,
        })
    }
}

#[derive(clap::Args)]
pub struct PullArgs {
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Platform (os/arch[/variant]) to pull; repeatable; the daemon's by default
    #[arg(long)]
    pub platform: Vec<String>,
    /// Fetch every platform's manifest and layers
    #[arg(long)]
    pub all_platforms: bool,
    /// Snapshotter to unpack into
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    /// Fetch content only; do not unpack
    #[arg(long)]
    pub no_unpack: bool,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The archive; `-` reads it from standard input
    pub file: std::path::PathBuf,
    /// Prefix for the bare tags the archive carries (NAME -> NAME:TAG); whole names are kept
    #[arg(long)]
    pub base_name: Option<String>,
    /// Also name each image BASE@DIGEST (the name of images the archive leaves unnamed)
    #[arg(long)]
    pub digests: bool,
    /// Snapshotter to unpack into
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    /// Import content only; do not unpack
    #[arg(long)]
    pub no_unpack: bool,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    pub file: std::path::PathBuf,
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Platform (os/arch) to export; repeatable; the host's by default
    #[arg(long)]
    pub platform: Vec<String>,
    /// Export every platform whose content is local
    #[arg(long)]
    pub all_platforms: bool,
}

#[derive(clap::Args)]
pub struct PushArgs {
    pub image: String,
    pub reference: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Push only this platform's manifest (os/arch[/variant])
    #[arg(long)]
    pub platform: Vec<String>,
}

pub(super) async fn pull(client: &Client, args: PullArgs) -> anyhow::Result<()> {
    let PullArgs {
        reference,
        registry,
        platform,
        all_platforms,
        snapshotter,
        no_unpack,
    } = args;

    let opts = berth_client::transfer::PullOptions {
        registry: registry.options()?,
        platforms: platform,
        all_platforms,
        unpack: (!no_unpack).then_some(snapshotter),
        name: None,
    };
    let started = std::time::Instant::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let view = tokio::spawn(crate::progress::render(rx));
    let r = client.pull(&reference, &opts, Some(tx)).await;
    let totals = view.await.unwrap_or_default();
    r.map_err(|e| anyhow::anyhow!("cannot pull {reference}: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pulled {reference} in {secs:.2}s: {} blobs fetched ({}, {}/s), {} already present",
        totals.blobs,
        size(totals.bytes),
        size((totals.bytes as f64 / secs.max(0.001)) as i64),
        totals.existing
    );
    Ok(())
}

pub(super) async fn import(client: &Client, args: ImportArgs) -> anyhow::Result<()> {
    let ImportArgs {
        file,
        base_name,
        digests,
        snapshotter,
        no_unpack,
    } = args;
    let started = std::time::Instant::now();
    let file = if file.as_os_str() == "-" {
        std::path::PathBuf::from("/dev/stdin")
    } else {
        file
    };
    let opts = berth_client::archive::ImportOptions {
        base_name,
        digests,
        unpack: (!no_unpack).then_some(snapshotter),
    };
    let imported = client
        .import_archive(&file, &opts, |line| println!("{line}"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot import {}: {e}", file.display()))?;
    println!(
        "imported {} image(s) ({} unpacked) in {:.2}s",
        imported.images.len(),
        imported.unpacked.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) async fn export(client: &Client, args: ExportArgs) -> anyhow::Result<()> {
    let ExportArgs {
        file,
        images,
        platform,
        all_platforms,
    } = args;
    let bytes = client
        .export_archive(&file, &images, &platform, all_platforms)
        .await
        .map_err(|e| anyhow::anyhow!("cannot export to {}: {e}", file.display()))?;
    println!(
        "exported {} image(s), {}, to {}",
        images.len(),
        size(bytes as i64),
        file.display()
    );
    Ok(())
}

pub(super) async fn push(client: &Client, args: PushArgs) -> anyhow::Result<()> {
    let PushArgs {
        image,
        reference,
        registry,
        platform,
    } = args;

    let reference = reference.unwrap_or_default();
    let started = std::time::Instant::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let view = tokio::spawn(crate::progress::render(rx));
    let r = client
        .push(
            &image,
            &reference,
            &registry.options()?,
            &platform,
            Some(tx),
        )
        .await;
    let totals = view.await.unwrap_or_default();
    r.map_err(|e| anyhow::anyhow!("cannot push {image}: {e}"))?;
    println!(
        "pushed {} in {:.2}s: {} blobs uploaded ({}), {} already there",
        if reference.is_empty() {
            &image
        } else {
            &reference
        },
        started.elapsed().as_secs_f64(),
        totals.blobs,
        size(totals.bytes),
        totals.existing
    );
    Ok(())
}
