//! Test images built from scratch: OCI layouts and archives with chosen layers, and a real
//! registry (Debian's docker-registry) on loopback to push them to.

use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// One layer entry.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    /// A whiteout of the named path (`dir/.wh.name`).
    Whiteout(&'a str),
    /// An opaque marker for the directory.
    Opaque(&'a str),
}

/// An uncompressed tar layer.
pub fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for e in entries {
        match e {
            Entry::File(p, data, mode) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, *mode);
                b.append_data(&mut h, p, *data).unwrap();
            }
            Entry::Dir(p, mode) => {
                let mut h = header(tar::EntryType::Directory, 0, *mode);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::Symlink(p, target) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Whiteout(p) => {
                let path = Path::new(p);
                let name = format!(".wh.{}", path.file_name().unwrap().to_string_lossy());
                let wh = path.parent().unwrap_or(Path::new("")).join(name);
                let mut h = header(tar::EntryType::Regular, 0, 0o644);
                b.append_data(&mut h, wh, std::io::empty()).unwrap();
            }
            Entry::Opaque(dir) => {
                let mut h = header(tar::EntryType::Regular, 0, 0o644);
                b.append_data(
                    &mut h,
                    Path::new(dir).join(".wh..wh..opq"),
                    std::io::empty(),
                )
                .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// What a built image is made of.
pub struct Built {
    pub manifest_digest: String,
    pub manifest_size: usize,
    pub diff_ids: Vec<String>,
    pub chain_ids: Vec<String>,
}

pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Writes an OCI image layout with one image tagged `tag`, from uncompressed tar layers
/// (stored gzip-compressed).
pub fn layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> Built {
    layout_with(
        dir,
        tag,
        layers,
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}),
    )
}

/// [`layout`] with the image config's `config` section given (Cmd, Env, Volumes, ...).
pub fn layout_with(
    dir: &Path,
    tag: &str,
    layers: &[Vec<u8>],
    image_config: serde_json::Value,
) -> Built {
    let gzipped: Vec<(Vec<u8>, String)> = layers.iter().map(|l| (gzip(l), sha256(l))).collect();
    layout_gzipped(dir, tag, &gzipped, image_config)
}

/// [`layout_with`] from layers gzipped already, each with the diffID its config claims
/// (for layers too large to hold uncompressed, whose claim is never checked).
pub fn layout_gzipped(
    dir: &Path,
    tag: &str,
    layers: &[(Vec<u8>, String)],
    image_config: serde_json::Value,
) -> Built {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        (d, data.len())
    };
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let mut descs = vec![];
    for (gz, _) in layers {
        let (d, size) = put(gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    let mbytes = manifest.to_string();
    let (md, ms) = put(mbytes.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Built {
        manifest_digest: md,
        manifest_size: ms,
        chain_ids: chain_ids(&diff_ids),
        diff_ids,
    }
}

/// Tars a layout directory into an OCI archive file.
pub fn archive(layout_dir: &Path, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", layout_dir).unwrap();
    b.finish().unwrap();
}

/// A docker-registry on a free loopback port, storing under a temporary directory.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Result<Self> {
        Self::start_inner(None)
    }

    /// A registry that wants HTTP basic auth (htpasswd, bcrypt) for `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Result<Self> {
        Self::start_inner(Some((user, password)))
    }

    /// Where the registry keeps the blob `digest` (to damage it in tests).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Result<Self> {
        let bin = super::require_tool("docker-registry");
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 5)?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n"))?;
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&cfg, text)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start docker-registry")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(Registry {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("docker-registry did not listen on {addr}")
    }

    /// Pushes the image tagged `tag` in an OCI layout to `repo:tag` with skopeo.
    pub fn push(&self, layout_dir: &Path, tag: &str, repo: &str) -> Result<String> {
        let skopeo = super::require_tool("skopeo");
        let reference = format!("{}/{repo}:{tag}", self.addr);
        let out = Command::new(skopeo)
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout_dir.display()))
            .arg(format!("docker://{reference}"))
            .output()?;
        if !out.status.success() {
            bail!(
                "skopeo push failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mounts what `ctr snapshots mounts` prints for `key` on `target`; returns a guard that
/// unmounts.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A layer with Debian's static busybox as /bin/busybox, the usual applets linked to it,
/// and a minimal /etc/passwd and /etc/group.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: apt-get install busybox-static (or run .ci/run)");
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::File("bin/busybox", &busybox, 0o755),
        Entry::Dir("etc", 0o755),
        Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
            0o644,
        ),
        Entry::File("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644),
        Entry::Dir("proc", 0o755),
        Entry::Dir("sys", 0o755),
        Entry::Dir("dev", 0o755),
        Entry::Dir("tmp", 0o1777),
        Entry::Dir("root", 0o700),
    ];
    let applets = [
        "sh", "echo", "cat", "ls", "sleep", "true", "false", "id", "hostname", "ps", "touch",
        "mkdir", "rm", "wc", "head", "dd", "env", "pwd", "kill",
    ];
    let links: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();
    for l in &links {
        entries.push(Entry::Symlink(l, "busybox"));
    }
    layer(&entries)
}

/// An OCI archive of the busybox image (`<base>:latest`) in a new temporary directory,
/// which the caller keeps alive while the archive is used.
pub fn busybox_archive() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let layout_path = work.path().join("layout");
    layout(&layout_path, "latest", &[busybox_layer()]);
    let out = work.path().join("busybox.tar");
    archive(&layout_path, &out);
    (work, out)
}

/// What a [`Proxy`] does to a connection once it has passed `after` response bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum Fault {
    /// Close both sides (a dropped connection).
    Cut,
    /// Stop forwarding and keep the connection open (a stalled registry).
    Stall,
}

/// A TCP proxy in front of a registry that breaks the first `max` connections which carry
/// more than `after` bytes of response.
pub struct Proxy {
    pub addr: String,
    pub faults: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: &str, after: usize, max: usize, fault: Fault) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let faults = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let counter = faults.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let upstream = upstream.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
                        return;
                    };
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut u2);
                        let _ = u2.shutdown(std::net::Shutdown::Write);
                    });
                    let mut buf = vec![0u8; 64 << 10];
                    let mut passed = 0usize;
                    loop {
                        let n = match std::io::Read::read(&mut up, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if passed + n > after && counter.load(Ordering::SeqCst) < max {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let keep = after.saturating_sub(passed);
                            let _ = client.write_all(&buf[..keep]);
                            match fault {
                                Fault::Cut => {
                                    let _ = client.shutdown(std::net::Shutdown::Both);
                                    let _ = up.shutdown(std::net::Shutdown::Both);
                                }
                                Fault::Stall => std::thread::sleep(Duration::from_secs(3600)),
                            }
                            return;
                        }
                        passed += n;
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Proxy { addr, faults })
    }
}

/// `n` bytes that do not compress (so a gzip layer is about `n` bytes too).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
