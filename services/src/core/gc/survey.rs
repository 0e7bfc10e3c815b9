//! The snapshotters in other processes (proxy plugins, [`Snapshotter::changes`]) as a
//! collection sees them. Such a plugin may be stuck or gone, so it is listed before the
//! collection stops writers: a stuck one costs the collection its deadline, never a writer.
//! A plugin that cannot be listed, or whose snapshots changed between its listing and the
//! fence, is left out of that collection: every snapshot it holds is kept, and what its
//! snapshots' labels referred to when it was last listed is kept with them; everything else
//! (content, other snapshotters, leases, images) is collected as usual.

use crate::core::snapshots::Snapshots;
use berth_snapshotters::Info;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What the last listing of each plugin found: the labels a plugin that is left out keeps
/// the objects of.
pub(super) type Remembered = Arc<Mutex<BTreeMap<String, Vec<Info>>>>;

/// How a collection reads one snapshotter.
pub(super) enum Source<'a> {
    /// In process: walked while writers are stopped.
    Local,
    /// Listed before the fence, and unchanged since.
    Listed(&'a [Info]),
    /// Left out: all of it is kept; these are its snapshots when last listed (maybe none).
    Kept(&'a [Info]),
}

/// The plugins one collection listed before taking the fence.
#[derive(Default)]
pub(super) struct Survey {
    /// By snapshotter: the change count read before the listing, and the listing.
    listed: BTreeMap<String, (u64, Vec<Info>)>,
    /// By snapshotter: why it is left out, and its last listing.
    kept: BTreeMap<String, (String, Vec<Info>)>,
}

impl Survey {
    /// Lists every plugin (blocking: each call may take the plugin's deadline).
    pub fn take(snapshots: &Snapshots, remembered: &Remembered) -> Survey {
        let mut survey = Survey::default();
        for name in snapshots.names() {
            let Ok(snap) = snapshots.get(&name) else {
                continue;
            };
            let Some(before) = snap.changes() else {
                continue;
            };
            let mut infos = vec![];
            match snap.walk(&mut |i| {
                infos.push(i.clone());
                true
            }) {
                Ok(()) => {
                    survey.listed.insert(name, (before, infos));
                }
                Err(e) => survey.keep(name, e.to_string(), remembered),
            }
        }
        survey
    }

    /// With writers stopped: leaves out each plugin whose snapshots changed since it was
    /// listed (its listing may lack a new child or a new label), and remembers the others'.
    pub fn settle(mut self, snapshots: &Snapshots, remembered: &Remembered) -> Survey {
        let listed = std::mem::take(&mut self.listed);
        for (name, (before, infos)) in listed {
            let now = snapshots.get(&name).ok().and_then(|s| s.changes());
            if now == Some(before) {
                if let Ok(mut r) = remembered.lock() {
                    r.insert(name.clone(), infos.clone());
                }
                self.listed.insert(name, (before, infos));
            } else {
                let why = "its snapshots changed while it was being listed".to_string();
                self.keep(name, why, remembered);
            }
        }
        self
    }

    fn keep(&mut self, name: String, why: String, remembered: &Remembered) {
        let last = remembered
            .lock()
            .ok()
            .and_then(|r| r.get(&name).cloned())
            .unwrap_or_default();
        self.kept.insert(name, (why, last));
    }

    pub fn source(&self, snapshotter: &str) -> Source<'_> {
        if let Some((_, infos)) = self.listed.get(snapshotter) {
            Source::Listed(infos)
        } else if let Some((_, last)) = self.kept.get(snapshotter) {
            Source::Kept(last)
        } else {
            Source::Local
        }
    }

    /// The plugins left out, and why.
    pub fn left_out(&self) -> impl Iterator<Item = (&str, &str)> {
        self.kept
            .iter()
            .map(|(n, (why, _))| (n.as_str(), why.as_str()))
    }
}
