//! Chain IDs: how containerd names the snapshot of a stack of layers.

use sha2::{Digest, Sha256};

/// The chain ID of a layer applied onto the stack named `parent` (empty: no parent):
/// the diffID itself at the bottom, `sha256("<parent> <diffID>")` above.
pub fn chain_next(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        return diff_id.to_string();
    }
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
    )
}

/// The chain ID of each prefix of `diff_ids`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_next(out.last().map_or("", String::as_str), d);
        out.push(next);
    }
    out
}

/// The chain ID of the whole stack (None for no layers).
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    chain_ids(diff_ids).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_containerd() {
        // Values as containerd's identity.ChainIDs computes them.
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(ids[1], want);
        assert_eq!(chain_id(&[a.clone(), b]), Some(want));
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_next("", &a), a);
    }
}
