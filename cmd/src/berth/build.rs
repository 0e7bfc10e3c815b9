//! berth build: the context (minus .dockerignore) goes into the content store as a tar, and
//! berthd builds the Dockerfile with it; each step is shown with CACHED or its time.

use berth_client::Client;
use berth_proto::berth::services::build::v1::{BuildProgress, BuildRequest};
use clap::Args;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

#[derive(Args)]
pub struct Build {
    /// Name (and tag) of the image; repeatable
    #[arg(long, short = 't', required = true)]
    tag: Vec<String>,
    /// Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Build arguments (KEY=VALUE) for ARG instructions
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Pull FROM images over plain HTTP
    #[arg(long)]
    plain_http: bool,
    /// Run every step, ignoring cached results
    #[arg(long)]
    no_cache: bool,
    /// Snapshotter to build on
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// The build context directory
    context: PathBuf,
}

/// One .dockerignore rule.
struct Rule {
    pattern: Vec<String>,
    negate: bool,
}

fn rules(context: &Path) -> Vec<Rule> {
    std::fs::read_to_string(context.join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (negate, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            Rule {
                pattern: p
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect(),
                negate,
            }
        })
        .collect()
}

/// `*` and `?` within one path component.
fn component_match(p: &[char], s: &[char]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some('*'), _) => {
            component_match(&p[1..], s) || (!s.is_empty() && component_match(p, &s[1..]))
        }
        (Some('?'), Some(_)) => component_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => component_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// A pattern matches a path or one of its parents; `**` spans any number of components.
fn matches(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, _) => true,
        (Some(p), _) if p == "**" => (0..=path.len()).any(|i| matches(&pattern[1..], &path[i..])),
        (Some(_), None) => false,
        (Some(p), Some(s)) => {
            let (pc, sc): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
            component_match(&pc, &sc) && matches(&pattern[1..], &path[1..])
        }
    }
}

fn ignored(rules: &[Rule], rel: &Path) -> bool {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let mut out = false;
    for r in rules {
        if matches(&r.pattern, &parts) {
            out = !r.negate;
        }
    }
    out
}

/// Writes the context as a tar, in a stable order, skipping what .dockerignore names.
fn context_tar(context: &Path, out: &Path) -> anyhow::Result<usize> {
    let rules = rules(context);
    let f = std::fs::File::create(out)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    b.follow_symlinks(false);
    let mut count = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(context.join(&rel))?.flatten().collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in entries {
            let r = rel.join(e.file_name());
            if ignored(&rules, &r) {
                continue;
            }
            let md = std::fs::symlink_metadata(e.path())?;
            b.append_path_with_name(e.path(), &r)?;
            count += 1;
            if md.is_dir() {
                stack.push(r);
            }
        }
    }
    b.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(count)
}

pub async fn run(client: &Client, b: Build) -> anyhow::Result<()> {
    // The context blob, and all the build writes, are kept by a lease until it ends.
    let (leased, lease) = client.temporary_lease().await?;
    let r = build(&leased, b).await;
    let _ = client.release_lease(&lease).await;
    r
}

async fn build(client: &Client, b: Build) -> anyhow::Result<()> {
    let dockerfile_path = b
        .file
        .clone()
        .unwrap_or_else(|| b.context.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dockerfile_path.display()))?;
    if !b.context.is_dir() {
        anyhow::bail!(
            "the build context {} is not a directory",
            b.context.display()
        );
    }
    let started = std::time::Instant::now();
    let context = send_context(client, &b.context).await?;
    let mut build_args = HashMap::new();
    for a in &b.build_args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--build-arg {a:?} is not KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let stream = client
        .build()
        .build(BuildRequest {
            dockerfile,
            context,
            build_args,
            tags: b.tag.clone(),
            snapshotter: b.snapshotter,
            plain_http: b.plain_http,
            no_cache: b.no_cache,
        })
        .await?
        .into_inner();
    let digest = show_progress(stream).await?;
    println!(
        "built {digest} in {:.2}s, tagged {}",
        started.elapsed().as_secs_f64(),
        b.tag.join(", ")
    );
    Ok(())
}

/// The context as a tar blob in the content store; its digest.
async fn send_context(client: &Client, context: &Path) -> anyhow::Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("berth-context-")
        .tempfile()?;
    let (ctxdir, path) = (context.to_path_buf(), tmp.path().to_path_buf());
    let files = tokio::task::spawn_blocking(move || context_tar(&ctxdir, &path)).await??;
    let size = std::fs::metadata(tmp.path())?.len();
    let f = tokio::fs::File::open(tmp.path()).await?;
    let reference = format!("build-context-{}", std::process::id());
    let digest = client
        .ingest(&reference, f, size as i64, None, HashMap::new())
        .await
        .map_err(|e| anyhow::anyhow!("cannot send the build context: {e}"))?;
    println!(
        "sent the build context: {files} files, {}",
        crate::output::size(size as i64)
    );
    Ok(digest)
}

/// Prints each step as berthd reports it (its output, then CACHED or its time); returns
/// the digest of the image built.
async fn show_progress(mut stream: tonic::Streaming<BuildProgress>) -> anyhow::Result<String> {
    let mut digest = String::new();
    while let Some(msg) = stream.next().await {
        let p = msg.map_err(|e| anyhow::anyhow!("build failed: {}", e.message()))?;
        if !p.image_digest.is_empty() {
            digest = p.image_digest;
            continue;
        }
        if !p.output.is_empty() {
            use std::io::Write;
            let mut out = std::io::stdout();
            out.write_all(&p.output)?;
            out.flush()?;
            continue;
        }
        if !p.done {
            println!("Step {}/{} : {}", p.step, p.steps, p.instruction);
        } else if p.cached {
            println!(" ---> CACHED");
        } else {
            println!(" ---> done in {:.2}s", p.duration_ms as f64 / 1000.0);
        }
    }
    if digest.is_empty() {
        anyhow::bail!("the daemon ended the build without an image");
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns() {
        let r = |p: &str| Rule {
            pattern: p.split('/').map(str::to_string).collect(),
            negate: false,
        };
        let rules = vec![
            r("*.log"),
            r("secret"),
            r("**/tmp"),
            Rule {
                pattern: vec!["keep.log".into()],
                negate: true,
            },
        ];
        assert!(ignored(&rules, Path::new("a.log")));
        assert!(!ignored(&rules, Path::new("keep.log")));
        assert!(ignored(&rules, Path::new("secret/inner/file")));
        assert!(ignored(&rules, Path::new("x/y/tmp")));
        assert!(!ignored(&rules, Path::new("src/main.rs")));
        assert!(!ignored(&rules, Path::new("dir/a.log")));
    }
}
