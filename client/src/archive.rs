//! Image archives (OCI image layouts, `docker save` tarballs) through the daemon's Transfer
//! service, as containerd 2.x's `ctr images import/export` move them: the archive's bytes
//! travel on a Streaming stream, and the daemon reads or writes the archive itself.

use crate::transfer::{platform, OpenStream};
use crate::{Client, Error, Result};
use berth_proto::types::transfer::{
    Data, ImageExportStream, ImageImportStream, ImageReference, ImageStore, Progress,
    UnpackConfiguration, WindowUpdate,
};
use prost::Message;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest Data message sent, whatever the daemon grants.
const MAX_SEND: usize = 256 << 10;
/// What this client grants the daemon at once while receiving an export.
const RECEIVE_WINDOW: i32 = 1 << 20;

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Image names created or updated.
    pub images: Vec<String>,
    /// Snapshot chains unpacked.
    pub unpacked: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Prefix for the names the archive carries: a bare tag `T` becomes `PREFIX:T` (by
    /// default `import-<date>:T`, as `ctr` names them); whole names are kept as they are.
    pub base_name: Option<String>,
    /// Also name every image `PREFIX@DIGEST` (the only name of an image the archive leaves
    /// unnamed; the archive's index gets one too, as containerd does).
    pub digests: bool,
    /// Snapshotter to unpack the host platform's images into; None imports content only.
    pub unpack: Option<String>,
}

/// docker's short names made whole: `busybox` is `docker.io/library/busybox:latest`.
pub fn normalize_name(name: &str) -> String {
    let (repo, suffix) = match name.find('@') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let (repo, tag) = match last.rfind(':') {
        Some(i) => {
            let cut = repo.len() - last.len() + i;
            (&repo[..cut], &repo[cut..])
        }
        None => (repo, if suffix.is_empty() { ":latest" } else { "" }),
    };
    let first = repo.split('/').next().unwrap_or("");
    let is_host =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if is_host {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{full}{tag}{suffix}")
}

fn closed() -> Error {
    Error::Protocol("the daemon closed the archive stream".into())
}

/// Sends `file` on `stream` as Data, never more than the daemon granted; ends the sending
/// side and returns the receiving side, to hold until the transfer is over (dropping it
/// would cancel the stream before the daemon has read everything).
async fn send_file(
    mut stream: OpenStream,
    mut file: tokio::fs::File,
) -> Result<tonic::Streaming<prost_types::Any>> {
    let mut credit: i64 = 0;
    let mut buf = vec![0u8; MAX_SEND];
    loop {
        while credit <= 0 {
            let m = stream.rx.message().await?.ok_or_else(closed)?;
            if let Ok(w) = WindowUpdate::decode(m.value.as_slice()) {
                credit += i64::from(w.update.max(0));
            }
        }
        let want = buf.len().min(credit as usize);
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            // Dropping the sender ends the stream: the daemon sees the end of the archive.
            drop(stream.tx);
            return Ok(stream.rx);
        }
        let data = Data {
            data: buf[..n].to_vec(),
        };
        stream
            .tx
            .send(berth_proto::to_any(&data))
            .await
            .map_err(|_| closed())?;
        credit -= n as i64;
    }
}

/// Writes what the daemon sends on `stream` into `file`, granting as it writes.
async fn receive_file(mut stream: OpenStream, file: tokio::fs::File) -> Result<u64> {
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let grant = |n: i32| berth_proto::to_any(&WindowUpdate { update: n });
    stream
        .tx
        .send(grant(RECEIVE_WINDOW))
        .await
        .map_err(|_| closed())?;
    let mut total = 0u64;
    while let Some(m) = stream.rx.message().await? {
        let Ok(d) = Data::decode(m.value.as_slice()) else {
            continue;
        };
        out.write_all(&d.data).await?;
        total += d.data.len() as u64;
        // The daemon may be done with its stream already: a refused grant is no error.
        let _ = stream.tx.send(grant(d.data.len() as i32)).await;
    }
    out.flush().await?;
    out.get_ref().sync_all().await?;
    Ok(total)
}

impl Client {
    /// Imports every image of an OCI layout or `docker save` archive (plain, gzip or zstd);
    /// `progress` gets one line per step the daemon reports.
    pub async fn import_archive(
        &self,
        archive: &Path,
        opts: &ImportOptions,
        mut progress: impl FnMut(&str),
    ) -> Result<Imported> {
        let file = tokio::fs::File::open(archive).await?;
        let stream = self.open_stream().await?;
        let source = ImageImportStream {
            stream: stream.id.clone(),
            media_type: String::new(),
            force_compress: false,
        };
        let prefix = opts.base_name.clone().unwrap_or_else(|| {
            let now = berth_proto::vocab::time::rfc3339(std::time::SystemTime::now());
            format!("import-{}", &now[..10])
        });
        let dest = ImageStore {
            extra_references: vec![ImageReference {
                name: prefix,
                is_prefix: true,
                allow_overwrite: true,
                add_digest: opts.digests,
                skip_named_digest: true,
            }],
            unpacks: opts
                .unpack
                .iter()
                .map(|s| UnpackConfiguration {
                    platform: None,
                    snapshotter: s.clone(),
                })
                .collect(),
            ..Default::default()
        };
        let sender = tokio::spawn(send_file(stream, file));
        let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
        let transfer = self.transfer_with_progress(
            berth_proto::to_any(&source),
            berth_proto::to_any(&dest),
            Some(tx),
        );
        let mut out = Imported::default();
        let watch = async {
            while let Some(p) = rx.recv().await {
                match p.event.as_str() {
                    "saved" => {
                        progress(&format!("{} imported", p.name));
                        out.images.push(p.name);
                    }
                    "unpacked" => {
                        progress(&format!("unpacked {}", p.name));
                        out.unpacked.push(p.name);
                    }
                    _ => {}
                }
            }
        };
        let (result, ()) = tokio::join!(transfer, watch);
        // The sender holds its stream's receiving side until now; it is done once the
        // daemon ends the stream. The daemon judges the archive: a sender cut off after the
        // archive's end is no failure, but a file that could not be read explains one.
        let abort = sender.abort_handle();
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), sender).await;
        abort.abort();
        match (result, sent) {
            (Ok(()), _) => Ok(out),
            (Err(_), Ok(Ok(Err(Error::Io(e))))) => Err(Error::Io(e)),
            (Err(e), _) => Err(e),
        }
    }

    /// Writes `images` into one archive at `out` (an OCI layout that `docker load` also
    /// reads), for `platforms` (`os/arch[/variant]`; the daemon's when empty, every one with
    /// `all_platforms`). The file appears only once complete.
    pub async fn export_archive(
        &self,
        out: &Path,
        images: &[String],
        platforms: &[String],
        all_platforms: bool,
    ) -> Result<u64> {
        let platforms = platforms
            .iter()
            .map(|p| platform(p))
            .collect::<Result<Vec<_>>>()?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.partial-{}",
            out.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            std::process::id()
        ));
        let file = tokio::fs::File::create(&tmp).await?;
        let written = async {
            let stream = self.open_stream().await?;
            let dest = ImageExportStream {
                stream: stream.id.clone(),
                platforms,
                all_platforms,
                ..Default::default()
            };
            let source = ImageStore {
                extra_references: images
                    .iter()
                    .map(|name| ImageReference {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let receiver = tokio::spawn(receive_file(stream, file));
            self.transfer_with_progress(
                berth_proto::to_any(&source),
                berth_proto::to_any(&dest),
                None,
            )
            .await?;
            // The daemon ends the stream once it handed over the last bytes.
            match tokio::time::timeout(std::time::Duration::from_secs(60), receiver).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(Error::Protocol(format!(
                    "receiving the archive failed: {e}"
                ))),
                Err(_) => Err(Error::Protocol(
                    "the daemon did not finish sending the archive".into(),
                )),
            }
        }
        .await;
        match written {
            Ok(n) => {
                tokio::fs::rename(&tmp, out).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_normalize() {
        assert_eq!(
            normalize_name("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_name("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_name("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_name("reg.io/a/b:v1"), "reg.io/a/b:v1");
    }
}
