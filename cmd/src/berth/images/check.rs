//! berth images check: whether each image's content for this platform is all here, and
//! whether its layers are unpacked.

use super::host_platform;
use crate::output::{size, ListFlags};
use crate::verbs;
use berth_client::Client;
use berth_proto::images::Image;

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub flags: ListFlags,
    /// Snapshotter to look for unpacked layers in
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    /// Filters, e.g. name~=busybox
    pub filters: Vec<String>,
}

#[derive(Default)]
struct Checked {
    present: usize,
    missing: usize,
    size: i64,
    unpacked: bool,
}

/// Walks an image for this platform: which blobs are local, and whether its top layer is
/// a committed snapshot.
async fn check_image(client: &Client, img: &Image, snapshotter: &str) -> Checked {
    let mut c = Checked::default();
    let Some(t) = &img.target else { return c };
    let mut digest = t.digest.clone();
    for _ in 0..4 {
        let Ok(raw) = client.read_blob(&digest, 0, 0).await else {
            c.missing += 1;
            return c;
        };
        c.present += 1;
        c.size += raw.len() as i64;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            return c;
        };
        if let Some(list) = v["manifests"].as_array() {
            let (os, arch) = host_platform();
            match list.iter().find(|m| {
                m["platform"]["os"] == os.as_str() && m["platform"]["architecture"] == arch.as_str()
            }) {
                Some(m) => digest = m["digest"].as_str().unwrap_or_default().to_string(),
                None => return c,
            }
            continue;
        }
        let mut descs = vec![v["config"].clone()];
        descs.extend(v["layers"].as_array().cloned().unwrap_or_default());
        for d in &descs {
            let dg = d["digest"].as_str().unwrap_or_default().to_string();
            match client
                .content()
                .info(berth_proto::content::InfoRequest { digest: dg })
                .await
            {
                Ok(_) => {
                    c.present += 1;
                    c.size += d["size"].as_i64().unwrap_or(0);
                }
                Err(_) => c.missing += 1,
            }
        }
        let cfg = v["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Ok(raw) = client.read_blob(&cfg, 0, 0).await {
            let cv: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            let diffs: Vec<String> = cv["rootfs"]["diff_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            if let Some(top) = berth_proto::vocab::chain::chain_id(&diffs) {
                c.unpacked = client
                    .snapshots()
                    .stat(berth_proto::snapshots::StatSnapshotRequest {
                        snapshotter: snapshotter.to_string(),
                        key: top,
                    })
                    .await
                    .is_ok();
            }
        }
        return c;
    }
    c
}

pub(super) async fn check(client: &Client, args: CheckArgs) -> anyhow::Result<()> {
    let CheckArgs {
        flags,
        snapshotter,
        filters,
    } = args;
    let mut checked = vec![];
    for img in super::list(client, filters).await? {
        let c = check_image(client, &img, &snapshotter).await;
        checked.push((img.name, c));
    }
    let header = ["REF", "STATUS", "LAYERS", "SIZE", "UNPACKED"];
    verbs::list(&header, checked, flags, |(name, c)| {
        let json = serde_json::json!({
            "name": name, "complete": c.missing == 0, "present": c.present,
            "total": c.present + c.missing, "size": c.size, "unpacked": c.unpacked,
        });
        let status = if c.missing == 0 {
            "complete".into()
        } else {
            format!("incomplete ({} missing)", c.missing)
        };
        let cells = vec![
            name,
            status,
            format!("{}/{}", c.present, c.present + c.missing),
            size(c.size),
            c.unpacked.to_string(),
        ];
        (cells, json)
    })
}
