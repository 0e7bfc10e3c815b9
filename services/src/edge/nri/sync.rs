//! Synchronize: a joining plugin told every pod and container, in messages that stay well
//! under ttrpc's 4 MiB (all but the last marked `more`, which the plugin must echo and
//! answer with no updates yet).

use super::plugin::{CallError, Plugin};
use berth_proto::nri as api;
use prost::Message;
use std::time::Duration;

/// The most a Synchronize message carries (encoded), leaving ttrpc's framing room.
const CHUNK_BYTES: usize = 1 << 20;

/// The pods first, then the containers, cut into messages of at most `limit` bytes (one
/// object larger than that still goes, alone).
pub(super) fn chunks(
    pods: Vec<api::PodSandbox>,
    containers: Vec<api::Container>,
    limit: usize,
) -> Vec<api::SynchronizeRequest> {
    let mut out = vec![api::SynchronizeRequest::default()];
    let mut size = 0;
    let mut room = |len: usize, out: &mut Vec<api::SynchronizeRequest>| {
        let fresh = out
            .last()
            .is_some_and(|r| r.pods.is_empty() && r.containers.is_empty());
        if size + len > limit && !fresh {
            out.push(api::SynchronizeRequest::default());
            size = 0;
        }
        size += len;
    };
    for p in pods {
        room(p.encoded_len(), &mut out);
        if let Some(last) = out.last_mut() {
            last.pods.push(p);
        }
    }
    for c in containers {
        room(c.encoded_len(), &mut out);
        if let Some(last) = out.last_mut() {
            last.containers.push(c);
        }
    }
    let n = out.len();
    for (i, r) in out.iter_mut().enumerate() {
        r.more = i + 1 < n;
    }
    out
}

/// Sends the plugin the runtime's state; answers the updates it asked for.
pub(super) async fn synchronize(
    plugin: &Plugin,
    pods: Vec<api::PodSandbox>,
    containers: Vec<api::Container>,
    allowance: Duration,
) -> Result<Vec<api::ContainerUpdate>, String> {
    let mut updates = vec![];
    for req in chunks(pods, containers, CHUNK_BYTES) {
        let r: api::SynchronizeResponse = plugin
            .call_within("Synchronize", &req, allowance)
            .await
            .map_err(|e: CallError| format!("{e:?}"))?;
        if req.more && (r.more != req.more || !r.update.is_empty()) {
            return Err("the plugin does not take Synchronize in parts".into());
        }
        updates = r.update;
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_state_goes_in_parts_and_only_the_last_says_no_more() {
        let pods: Vec<_> = (0..50)
            .map(|i| api::PodSandbox {
                id: format!("{i:064}"),
                ..Default::default()
            })
            .collect();
        let containers: Vec<_> = (0..50)
            .map(|i| api::Container {
                id: format!("{i:064}"),
                ..Default::default()
            })
            .collect();
        let parts = chunks(pods, containers, 1000);
        assert!(parts.len() > 2, "{}", parts.len());
        assert!(parts.iter().all(|p| p.encoded_len() <= 1000 + 100));
        let sent: usize = parts
            .iter()
            .map(|p| p.pods.len() + p.containers.len())
            .sum();
        assert_eq!(sent, 100);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.more));
        assert!(!parts.last().unwrap().more);
        let empty = chunks(vec![], vec![], 1000);
        assert_eq!((empty.len(), empty[0].more), (1, false));
    }
}
