//! berth.services.check.v1.Check: `berth check`, the audit of a running daemon's root.

use super::status;
use crate::core::check::{self, Layout, Severity};
use crate::core::metadata::MetadataStore;
use crate::core::snapshots::Snapshots;
use berth_proto::berth::services::check::v1::{
    check_server::Check as CheckApi, Finding, RunCheckRequest, RunCheckResponse,
};
use std::path::PathBuf;
use tonic::{Request, Response, Status};

pub struct CheckService {
    pub root: PathBuf,
    pub state: PathBuf,
    pub store: MetadataStore,
    pub snapshots: Snapshots,
}

#[tonic::async_trait]
impl CheckApi for CheckService {
    async fn run(
        &self,
        _req: Request<RunCheckRequest>,
    ) -> Result<Response<RunCheckResponse>, Status> {
        let layout = Layout {
            root: self.root.clone(),
            state: self.state.clone(),
        };
        let (store, snapshots) = (self.store.clone(), self.snapshots.clone());
        let report = crate::core::error::blocking(move || {
            // The root's own snapshotters: a proxy plugin keeps its store elsewhere, and
            // audits it itself.
            let in_root = |name: &String| {
                crate::core::snapshots::snapshotter_root(&layout.root, name).exists()
            };
            let backends: Vec<_> = snapshots
                .names()
                .into_iter()
                .filter(in_root)
                .filter_map(|n| snapshots.get(&n).ok().map(|s| (n, s)))
                .collect();
            let refs: Vec<(String, &dyn berth_snapshotters::Snapshotter)> = backends
                .iter()
                .map(|(n, s)| (n.clone(), s.as_ref()))
                .collect();
            check::check_running(&layout, &store, &refs)
        })
        .await
        .map_err(status)?;
        Ok(Response::new(RunCheckResponse {
            findings: report
                .findings
                .into_iter()
                .map(|f| Finding {
                    severity: match f.severity {
                        Severity::Corrupt => "corrupt",
                        Severity::Leftover => "leftover",
                    }
                    .into(),
                    what: f.what,
                })
                .collect(),
            blobs: report.blobs as u64,
            records: report.records as u64,
            snapshots: report.snapshots as u64,
        }))
    }
}
