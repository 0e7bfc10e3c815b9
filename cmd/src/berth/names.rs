//! Containers as Docker users name them: a random 64-hex-digit id shown by its first 12
//! digits, a name (given with --name or a generated adjective_noun) kept as a label, and
//! every verb finding a container by its name, its id, or a unique prefix of its id.

use anyhow::{anyhow, bail};
use berth_client::Client;
use berth_proto::containers::{Container, GetContainerRequest, ListContainersRequest};

/// Label holding a container's name (`berth run --name`, or generated).
pub const NAME_LABEL: &str = "berth.name";

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "brisk", "calm", "clever", "cosy", "crisp", "daring", "eager", "fancy",
    "gentle", "glad", "golden", "hardy", "humble", "jolly", "keen", "kind", "lively", "lucid",
    "merry", "mellow", "modest", "nimble", "noble", "patient", "plucky", "polite", "proud",
    "quick", "quiet", "rapid", "robust", "rustic", "serene", "sharp", "shiny", "silent", "sleepy",
    "smooth", "snug", "solid", "spry", "steady", "sturdy", "sunny", "swift", "tidy", "upbeat",
    "vivid", "warm", "wise", "witty", "zesty",
];

const NOUNS: &[&str] = &[
    "anchor",
    "badger",
    "beacon",
    "bison",
    "buoy",
    "cabin",
    "canal",
    "cedar",
    "comet",
    "coral",
    "crane",
    "delta",
    "dolphin",
    "falcon",
    "ferry",
    "fjord",
    "gannet",
    "harbor",
    "heron",
    "island",
    "jetty",
    "kestrel",
    "lagoon",
    "lantern",
    "lighthouse",
    "marlin",
    "meadow",
    "mooring",
    "narwhal",
    "orca",
    "osprey",
    "otter",
    "pelican",
    "pier",
    "puffin",
    "quay",
    "raft",
    "reef",
    "schooner",
    "seal",
    "skiff",
    "sloop",
    "spruce",
    "tern",
    "tide",
    "walrus",
    "wharf",
    "willow",
];

/// `n` random bytes from the kernel.
fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut b)?;
    Ok(b)
}

/// A new container id as Docker makes them: 32 random bytes in hex, never all digits (so a
/// prefix is never taken for a number).
pub fn new_id() -> anyhow::Result<String> {
    loop {
        let id: String = random_bytes::<32>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !id.chars().take(12).all(|c| c.is_ascii_digit()) {
            return Ok(id);
        }
    }
}

/// Whether `id` is one of ours (64 hex digits), shown short.
fn is_long_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id as `ps` shows it: 12 digits for a generated id, a ctr-style id whole.
pub fn short_id(id: &str) -> &str {
    if is_long_id(id) {
        &id[..12]
    } else {
        id
    }
}

/// The container's name: its label, else its id (a container made by ctr or `containers
/// run`).
pub fn name_of(c: &Container) -> &str {
    c.labels
        .get(NAME_LABEL)
        .map(String::as_str)
        .unwrap_or(&c.id)
}

/// Docker's rule for names: a letter or digit, then letters, digits, `_`, `.` or `-`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || name.len() > 128
        || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bail!("invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    Ok(())
}

pub(crate) async fn list(client: &Client, filters: Vec<String>) -> anyhow::Result<Vec<Container>> {
    Ok(client
        .containers()
        .list(ListContainersRequest { filters })
        .await
        .map_err(|e| anyhow!("cannot list containers: {}", e.message()))?
        .into_inner()
        .containers)
}

/// Containers named `name`: by label, or by id for those without one.
async fn named(client: &Client, name: &str) -> anyhow::Result<Vec<Container>> {
    // Both asked at once: neither answer changes the other question.
    let mut containers = client.containers();
    let by_id = containers.get(GetContainerRequest {
        id: name.to_string(),
    });
    let by_label = list(client, vec![format!("labels.\"{NAME_LABEL}\"=={name}")]);
    let (found, by_id) = tokio::join!(by_label, by_id);
    let mut found = found?;
    if let Ok(r) = by_id {
        if let Some(c) = r.into_inner().container {
            if !found.iter().any(|f| f.id == c.id) && name_of(&c) == name {
                found.push(c);
            }
        }
    }
    Ok(found)
}

/// Fails when a container already has `name`.
pub async fn ensure_free(client: &Client, name: &str) -> anyhow::Result<()> {
    if let Some(c) = named(client, name).await?.first() {
        bail!(
            "a container named {name:?} already exists ({}): remove it or choose another name",
            short_id(&c.id)
        );
    }
    Ok(())
}

/// A generated adjective_noun name no container has yet (a number added after a few
/// collisions).
pub async fn generate(client: &Client) -> anyhow::Result<String> {
    let taken: std::collections::HashSet<String> = list(client, vec![])
        .await?
        .iter()
        .map(|c| name_of(c).to_string())
        .collect();
    for attempt in 0..32u32 {
        let [a, n] = random_bytes::<2>()?;
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[a as usize % ADJECTIVES.len()],
            NOUNS[n as usize % NOUNS.len()]
        );
        if attempt >= 8 {
            name.push_str(&(attempt - 7).to_string());
        }
        if !taken.contains(&name) {
            return Ok(name);
        }
    }
    bail!("could not find a free container name; give one with --name")
}

/// The container `what` names: its name, its id, or a prefix of one id.
pub async fn find(client: &Client, what: &str) -> anyhow::Result<Container> {
    if let Some(c) = named(client, what).await?.into_iter().next() {
        return Ok(c);
    }
    if let Ok(r) = client
        .containers()
        .get(GetContainerRequest {
            id: what.to_string(),
        })
        .await
    {
        if let Some(c) = r.into_inner().container {
            return Ok(c);
        }
    }
    if !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches: Vec<Container> = list(client, vec![])
            .await?
            .into_iter()
            .filter(|c| is_long_id(&c.id) && c.id.starts_with(what))
            .collect();
        match matches.len() {
            1 => return Ok(matches.remove(0)),
            0 => {}
            _ => bail!("{what:?} is the start of several containers' ids: give more of it"),
        }
    }
    bail!("no such container: {what}")
}

/// The id of the container `what` names (see [`find`]).
pub async fn resolve(client: &Client, what: &str) -> anyhow::Result<String> {
    Ok(find(client, what).await?.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_shown_by_12() {
        let id = new_id().unwrap();
        assert!(is_long_id(&id), "{id}");
        assert_ne!(id, new_id().unwrap());
        assert_eq!(short_id(&id), &id[..12]);
        assert_eq!(short_id("svc"), "svc");
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["web", "a1", "my_app.v2-x"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "_x", "-x", "a b", "a/b", "ü"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for w in ADJECTIVES.iter().chain(NOUNS) {
            check_name(w).unwrap();
        }
    }
}
