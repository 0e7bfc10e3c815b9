//! What references what, read from labels as containerd's collector reads them
//! (`core/metadata/gc.go`): an object is kept when a root reaches it. Edges:
//! - an image -> its target (and, like content, snapshots and containers, what its
//!   `containerd.io/gc.ref.content[.|/<name>]`, `gc.ref.image[.|/<name>]` and
//!   `gc.ref.snapshot.<snapshotter>[/<name>]` labels name);
//! - a snapshot -> its parent; a container -> its snapshot;
//! - back references: an object labelled `containerd.io/gc.bref.{content,image,container}`
//!   or `gc.bref.snapshot.<snapshotter>` is reached from the object the label names;
//! - conditional references: content or an image labelled
//!   `containerd.io/gc.cond.snapshot.<snapshotter>=usedat<5m|<key>` reaches that snapshot
//!   while its `containerd.io/gc.cond.value-usedat` time satisfies a condition;
//! - a flat reference (a lease labelled `containerd.io/gc.flat`) keeps the object and a
//!   snapshot's parents, but follows no labels.
//!
//! The documents themselves are never read: content is kept only as far as labels say.

use crate::core::metadata::images::ImageRecord;
use crate::core::metadata::Labels;
use berth_proto::vocab::labels::{
    GC_BREF_CONTAINER, GC_BREF_CONTENT, GC_BREF_IMAGE, GC_BREF_SNAPSHOT, GC_REF_CONTENT,
    GC_REF_SNAPSHOT, GC_ROOT,
};
use std::collections::{HashMap, HashSet};

/// An image reference: `containerd.io/gc.ref.image[.|/<name>]`.
const REF_IMAGE: &str = "containerd.io/gc.ref.image";
/// A lease that holds its objects but not what they refer to.
pub(super) const FLAT: &str = "containerd.io/gc.flat";
const COND_SNAPSHOT: &str = "containerd.io/gc.cond.snapshot";
const COND_VALUE_USED_AT: &str = "containerd.io/gc.cond.value-usedat";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Node {
    Content {
        digest: String,
        flat: bool,
    },
    Snapshot {
        snapshotter: String,
        key: String,
        flat: bool,
    },
    Image {
        name: String,
        flat: bool,
    },
    Container(String),
}

impl Node {
    pub fn content(digest: &str, flat: bool) -> Node {
        Node::Content {
            digest: digest.to_string(),
            flat,
        }
    }

    pub fn snapshot(snapshotter: &str, key: &str, flat: bool) -> Node {
        Node::Snapshot {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
            flat,
        }
    }

    pub fn image(name: &str, flat: bool) -> Node {
        Node::Image {
            name: name.to_string(),
            flat,
        }
    }
}

/// A snapshot as the graph sees it (its key without the namespace).
pub(super) struct SnapshotNode<'a> {
    pub parent: Option<&'a str>,
    pub labels: &'a Labels,
}

/// One namespace's objects, by the names references use.
#[derive(Default)]
pub(super) struct Objects<'a> {
    pub content: HashMap<&'a str, &'a Labels>,
    pub images: HashMap<&'a str, &'a ImageRecord>,
    /// (snapshotter, key)
    pub snapshots: HashMap<(&'a str, &'a str), SnapshotNode<'a>>,
    /// container id -> (snapshotter, snapshot key, labels)
    pub containers: HashMap<&'a str, (&'a str, &'a str, &'a Labels)>,
    /// Seconds since the epoch, for expiry and conditions.
    pub now: i64,
}

/// What marking reached.
#[derive(Debug, Default)]
pub(super) struct Marked {
    pub content: HashSet<String>,
    /// (snapshotter, key)
    pub snapshots: HashSet<(String, String)>,
    pub images: HashSet<String>,
}

/// Whether `key` is `prefix` itself or `prefix` followed by a `.` or `/` and a name.
fn named(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '/']))
}

/// The snapshotter a `...snapshot.<snapshotter>[/<name>]` key names.
fn snapshotter_of(rest: &str) -> &str {
    rest.split('/').next().unwrap_or(rest)
}

/// The objects `labels` refer to.
pub(super) fn label_refs(labels: &Labels, out: &mut Vec<Node>) {
    for (k, v) in labels {
        if named(k, GC_REF_CONTENT) {
            out.push(Node::content(v, false));
        } else if named(k, REF_IMAGE) {
            out.push(Node::image(v, false));
        } else if let Some(rest) = k.strip_prefix(GC_REF_SNAPSHOT) {
            out.push(Node::snapshot(snapshotter_of(rest), v, false));
        }
    }
}

/// The objects that refer to the object labelled `labels` (its back references).
fn back_refs(labels: &Labels) -> Vec<Node> {
    let mut out = vec![];
    for (k, v) in labels {
        if named(k, GC_BREF_CONTAINER) {
            out.push(Node::Container(v.clone()));
        } else if named(k, GC_BREF_CONTENT) {
            out.push(Node::content(v, false));
        } else if named(k, GC_BREF_IMAGE) {
            out.push(Node::image(v, false));
        } else if let Some(rest) = k.strip_prefix(GC_BREF_SNAPSHOT) {
            out.push(Node::snapshot(snapshotter_of(rest), v, false));
        }
    }
    out
}

/// Whether `labels` make their object a root (`containerd.io/gc.root`).
pub(super) fn is_root(labels: &Labels) -> bool {
    labels.keys().any(|k| k.starts_with(GC_ROOT))
}

/// Whether the image is expired (`containerd.io/gc.expire` in the past): such an image is no
/// root, and goes unless something refers to it. An unreadable time is ignored.
pub(super) fn expired(labels: &Labels, now: i64) -> bool {
    labels
        .get(berth_proto::vocab::labels::GC_EXPIRE)
        .and_then(|t| berth_proto::vocab::time::parse_rfc3339(t))
        .is_some_and(|t| t < now)
}

/// The snapshot a conditional label refers to, and whether a used-at time (seconds) meets
/// one of its conditions (`usedat<D` or `usedat>D`, comma separated: any one suffices).
fn conditional(key: &str, value: &str) -> Option<(Node, Vec<(bool, i128)>)> {
    let rest = key.strip_prefix(COND_SNAPSHOT)?;
    let snapshotter = snapshotter_of(rest.trim_start_matches(['.', '/']));
    let (conditions, target) = value.split_once('|')?;
    let mut tests = vec![];
    for c in conditions.split(',') {
        let Some(d) = c.strip_prefix("usedat") else {
            continue;
        };
        let (less, d) = match (d.strip_prefix('<'), d.strip_prefix('>')) {
            (Some(d), _) if !d.starts_with('=') => (true, d),
            (_, Some(d)) if !d.starts_with('=') => (false, d),
            _ => continue,
        };
        if let Some(ns) = berth_proto::vocab::time::go_duration(d) {
            tests.push((less, ns));
        }
    }
    Some((Node::snapshot(snapshotter, target, false), tests))
}

/// The back references of every object that declares some, and the conditional references
/// whose condition holds now: object -> what it is reached from, inverted (what marking an
/// object must also mark).
pub(super) fn extra_edges(objects: &Objects) -> HashMap<Node, Vec<Node>> {
    let mut edges: HashMap<Node, Vec<Node>> = HashMap::new();
    let mut add = |from: Node, to: Node| edges.entry(from).or_default().push(to);
    for (d, labels) in &objects.content {
        for from in back_refs(labels) {
            add(from, Node::content(d, false));
        }
    }
    for ((sn, key), s) in &objects.snapshots {
        for from in back_refs(s.labels) {
            add(from, Node::snapshot(sn, key, false));
        }
    }
    for (id, (_, _, labels)) in &objects.containers {
        for from in back_refs(labels) {
            add(from, Node::Container(id.to_string()));
        }
    }
    for (name, image) in &objects.images {
        // A live image is a root: its own back references change nothing.
        if expired(&image.labels, objects.now) {
            for from in back_refs(&image.labels) {
                add(from, Node::image(name, false));
            }
        }
    }
    let owners = objects
        .content
        .iter()
        .map(|(d, l)| (Node::content(d, false), *l))
        .chain(
            objects
                .images
                .iter()
                .map(|(n, i)| (Node::image(n, false), &i.labels)),
        );
    for (owner, labels) in owners {
        for (k, v) in labels {
            let Some((target, tests)) = conditional(k, v) else {
                continue;
            };
            if condition_holds(objects, &target, &tests) {
                add(owner.clone(), target);
            }
        }
    }
    edges
}

fn condition_holds(objects: &Objects, target: &Node, tests: &[(bool, i128)]) -> bool {
    let Node::Snapshot {
        snapshotter, key, ..
    } = target
    else {
        return false;
    };
    let Some(used_at) = objects
        .snapshots
        .get(&(snapshotter.as_str(), key.as_str()))
        .and_then(|s| s.labels.get(COND_VALUE_USED_AT))
        .and_then(|t| berth_proto::vocab::time::parse_rfc3339(t))
    else {
        return false;
    };
    let since = i128::from(objects.now - used_at) * 1_000_000_000;
    tests
        .iter()
        .any(|&(less, d)| if less { since < d } else { since > d })
}

/// Marks everything `roots` reach.
pub(super) fn mark(objects: &Objects, roots: Vec<Node>) -> Marked {
    let extra = extra_edges(objects);
    let mut seen: HashSet<Node> = HashSet::new();
    let mut marked = Marked::default();
    let mut stack = roots;
    while let Some(node) = stack.pop() {
        if !seen.insert(node.clone()) {
            continue;
        }
        if let Some(more) = extra.get(&node) {
            stack.extend(more.iter().cloned());
        }
        match node {
            Node::Content { digest, flat } => {
                if let Some(labels) = objects.content.get(digest.as_str()) {
                    if !flat {
                        label_refs(labels, &mut stack);
                    }
                }
                marked.content.insert(digest);
            }
            Node::Snapshot {
                snapshotter,
                key,
                flat,
            } => {
                if let Some(s) = objects.snapshots.get(&(snapshotter.as_str(), key.as_str())) {
                    if let Some(p) = s.parent {
                        stack.push(Node::snapshot(&snapshotter, p, flat));
                    }
                    if !flat {
                        label_refs(s.labels, &mut stack);
                    }
                }
                marked.snapshots.insert((snapshotter, key));
            }
            Node::Image { name, flat } => {
                if let Some(image) = objects.images.get(name.as_str()) {
                    stack.push(Node::content(&image.target.digest, flat));
                    if !flat {
                        label_refs(&image.labels, &mut stack);
                    }
                }
                marked.images.insert(name);
            }
            Node::Container(id) => {
                if let Some((sn, key, labels)) = objects.containers.get(id.as_str()) {
                    if !sn.is_empty() && !key.is_empty() {
                        stack.push(Node::snapshot(sn, key, false));
                    }
                    label_refs(labels, &mut stack);
                }
            }
        }
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reference_labels_are_read_as_containerd_reads_them() {
        let mut out = vec![];
        label_refs(
            &labels(&[
                ("containerd.io/gc.ref.content", "sha256:a"),
                ("containerd.io/gc.ref.content.l.0", "sha256:b"),
                ("containerd.io/gc.ref.content/x", "sha256:c"),
                ("containerd.io/gc.ref.contentx", "sha256:ignored"),
                ("containerd.io/gc.ref.snapshot.overlayfs", "chain"),
                ("containerd.io/gc.ref.snapshot.native/name", "other"),
                ("containerd.io/gc.ref.image.base", "docker.io/library/a:1"),
            ]),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Node::content("sha256:a", false),
                Node::content("sha256:b", false),
                Node::content("sha256:c", false),
                Node::image("docker.io/library/a:1", false),
                Node::snapshot("native", "other", false),
                Node::snapshot("overlayfs", "chain", false),
            ]
        );
    }

    #[test]
    fn a_manifest_keeps_only_what_its_labels_name() {
        let manifest = labels(&[("containerd.io/gc.ref.content.config", "sha256:c")]);
        let (config, layer) = (Labels::new(), Labels::new());
        let objects = Objects {
            content: HashMap::from([
                ("sha256:m", &manifest),
                ("sha256:c", &config),
                ("sha256:l", &layer),
            ]),
            ..Default::default()
        };
        let m = mark(&objects, vec![Node::content("sha256:m", false)]);
        assert!(m.content.contains("sha256:c"));
        assert!(!m.content.contains("sha256:l"), "no label names the layer");
        let flat = mark(&objects, vec![Node::content("sha256:m", true)]);
        assert_eq!(flat.content, HashSet::from(["sha256:m".to_string()]));
    }

    #[test]
    fn snapshots_keep_parents_and_back_references_reach_their_objects() {
        let (none, bref) = (
            Labels::new(),
            labels(&[("containerd.io/gc.bref.content.x", "sha256:m")]),
        );
        let (m, extra) = (Labels::new(), bref.clone());
        let objects = Objects {
            content: HashMap::from([("sha256:m", &m), ("sha256:extra", &extra)]),
            snapshots: HashMap::from([
                (
                    ("overlayfs", "top"),
                    SnapshotNode {
                        parent: Some("base"),
                        labels: &none,
                    },
                ),
                (
                    ("overlayfs", "base"),
                    SnapshotNode {
                        parent: None,
                        labels: &none,
                    },
                ),
            ]),
            ..Default::default()
        };
        let marked = mark(
            &objects,
            vec![
                Node::snapshot("overlayfs", "top", true),
                Node::content("sha256:m", false),
            ],
        );
        assert!(marked
            .snapshots
            .contains(&("overlayfs".into(), "base".into())));
        assert!(marked.content.contains("sha256:extra"));
    }

    #[test]
    fn conditional_references_hold_while_their_condition_does() {
        let now = 1_000_000;
        let used = berth_proto::vocab::time::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(now as u64 - 60),
        );
        let snap = labels(&[(COND_VALUE_USED_AT, &used)]);
        let recent = labels(&[("containerd.io/gc.cond.snapshot.overlayfs", "usedat<5m|s")]);
        let old = labels(&[("containerd.io/gc.cond.snapshot.overlayfs", "usedat>5m|s")]);
        for (owner, kept) in [(&recent, true), (&old, false)] {
            let objects = Objects {
                content: HashMap::from([("sha256:o", owner)]),
                snapshots: HashMap::from([(
                    ("overlayfs", "s"),
                    SnapshotNode {
                        parent: None,
                        labels: &snap,
                    },
                )]),
                now,
                ..Default::default()
            };
            let m = mark(&objects, vec![Node::content("sha256:o", false)]);
            assert_eq!(
                m.snapshots.contains(&("overlayfs".into(), "s".into())),
                kept
            );
        }
    }
}
