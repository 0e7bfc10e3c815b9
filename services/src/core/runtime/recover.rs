//! Recovery after a daemon restart: every shim a previous daemon left is reconnected (all at
//! once); the bundles of shims that are gone are cleaned up, their exits reported through
//! `<shim> delete`.

use super::{bundle, ShimTask, Tasks};
use crate::core::context::Namespace;
use std::path::PathBuf;

impl Tasks {
    pub async fn recover(&self) {
        let cfg = self.cfg.clone();
        let _ = crate::core::error::blocking(move || {
            bundle::sweep_retired(&cfg);
            Ok(())
        })
        .await;
        let Ok(namespaces) = std::fs::read_dir(self.cfg.bundles()) else {
            return;
        };
        let mut found = vec![];
        for ns_entry in namespaces.flatten() {
            let ns_name = ns_entry.file_name().to_string_lossy().into_owned();
            let Ok(ns) = Namespace::parse(&ns_name) else {
                continue;
            };
            let Ok(bundles) = std::fs::read_dir(ns_entry.path()) else {
                continue;
            };
            for b in bundles.flatten() {
                found.push((
                    ns.clone(),
                    b.file_name().to_string_lossy().into_owned(),
                    b.path(),
                ));
            }
        }
        futures::future::join_all(
            found
                .into_iter()
                .map(|(ns, id, bundle)| async move { self.recover_one(ns, id, bundle).await }),
        )
        .await;
    }

    async fn recover_one(&self, ns: Namespace, id: String, bundle: PathBuf) {
        let container = self.store.container_get(&ns, &id).ok();
        let binary = container
            .as_ref()
            .and_then(|c| super::shim::find_binary(&c.runtime.name).ok());
        // The runtime its runc options name, as when the task was created.
        let runtime = container
            .and_then(|c| c.runtime.options)
            .and_then(|o| self.shims.runc_options(Some(o), &self.cfg.runc_root()).1);
        let socket = bundle::shim_socket(&bundle);
        match (self.shims.connect(&socket).await, binary) {
            (Ok(client), Some(binary)) => {
                tracing::info!(namespace = %ns, id = %id, "reconnected to shim");
                let log = bundle::follow_log(&bundle.join("log"), &id).ok();
                let task = ShimTask::new(client, bundle, binary, runtime, log);
                let _ = self.register(&ns, &id, task);
            }
            (_, binary) => {
                tracing::info!(namespace = %ns, id = %id, "shim gone; cleaning up its bundle");
                if let Some(binary) = binary {
                    let launch = self.launch(&binary, &ns, &id, &bundle, runtime.as_deref());
                    let _ = launch.delete().await;
                }
                bundle::remove(&bundle, &self.cfg.work(ns.as_str(), &id));
            }
        }
    }
}
