//! What Docker's run flags change in the engine's default spec (`berth_services::spec`):
//! hostname, read-only root, capabilities and privilege, limits, /dev/shm, tmpfs mounts,
//! devices, and an init as PID 1. The spec is JSON; each flag is one small edit of it.

use super::options::Security;
use super::Run;
use anyhow::{anyhow, bail, Context};
use berth_services::spec::{bounded_caps, parse_size, ALL_CAPS, DEFAULT_CAPS};
use serde_json::{json, Value};
use std::path::Path;

/// Where --init's binary appears in the container, as in Docker.
const INIT_PATH: &str = "/sbin/docker-init";

/// Applies the flags `spec::build` does not know to `spec`.
pub(super) fn apply(spec: &mut Value, r: &Run, security: &Security) -> anyhow::Result<()> {
    spec["hostname"] = json!(match &r.hostname {
        Some(h) => h.clone(),
        None => crate::names::short_id(&r.id).to_string(),
    });
    if r.read_only {
        spec["root"]["readonly"] = json!(true);
    }
    let caps = capabilities(r)?;
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    spec["process"]["noNewPrivileges"] = json!(security.no_new_privileges);
    match security.seccomp.render(&caps) {
        Some(filter) => spec["linux"]["seccomp"] = filter,
        None => {
            if let Some(l) = spec["linux"].as_object_mut() {
                l.remove("seccomp");
            }
        }
    }
    if r.privileged {
        privileged(spec)?;
    }
    for u in &r.ulimit {
        ulimit(spec, u)?;
    }
    if let Some(size) = &r.shm_size {
        shm_size(spec, size)?;
    }
    for t in &r.tmpfs {
        tmpfs(spec, t)?;
    }
    for d in &r.device {
        device(spec, d)?;
    }
    if r.init {
        init(spec)?;
    }
    Ok(())
}

fn mounts(spec: &mut Value) -> &mut Vec<Value> {
    if !spec["mounts"].is_array() {
        spec["mounts"] = json!([]);
    }
    match spec["mounts"].as_array_mut() {
        Some(m) => m,
        None => unreachable!("set to an array above"),
    }
}

/// Pushes `v` onto the array at `spec.linux[key]` (made when missing).
fn push_linux(spec: &mut Value, key: &str, v: Value) {
    let slot = &mut spec["linux"][key];
    if !slot.is_array() {
        *slot = json!([]);
    }
    if let Some(a) = slot.as_array_mut() {
        a.push(v);
    }
}

/// The capability set: berth's defaults (or all with --privileged), --cap-add's added and
/// --cap-drop's removed, either of which may say ALL.
fn capabilities(r: &Run) -> anyhow::Result<Vec<String>> {
    let all = bounded_caps();
    if r.privileged {
        return Ok(all);
    }
    let name = |c: &str| -> anyhow::Result<String> {
        let up = c.to_ascii_uppercase();
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if !ALL_CAPS.contains(&full.as_str()) {
            bail!("unknown capability {c:?}");
        }
        if !all.contains(&full) {
            bail!(
                "capability {full} is outside this host's bounding set: no container can have it"
            );
        }
        Ok(full)
    };
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if r.cap_add.iter().any(is_all) {
        all.clone()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if r.cap_drop.iter().any(is_all) {
        caps.clear();
    }
    for c in r.cap_add.iter().filter(|c| !is_all(c)) {
        let c = name(c)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    for c in r.cap_drop.iter().filter(|c| !is_all(c)) {
        let c = name(c)?;
        caps.retain(|x| *x != c);
    }
    Ok(caps)
}

/// --privileged: nothing masked or read-only, /sys and cgroups writable, every device.
fn privileged(spec: &mut Value) -> anyhow::Result<()> {
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    for m in mounts(spec).iter_mut() {
        if matches!(m["destination"].as_str(), Some("/sys" | "/sys/fs/cgroup")) {
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| o != "ro");
                opts.push(json!("rw"));
            }
        }
    }
    spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    for dev in host_devices(Path::new("/dev"))? {
        push_linux(spec, "devices", dev);
    }
    Ok(())
}

/// The host's device nodes under `dir` (not its pts, shm or mqueue), as spec devices.
fn host_devices(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut out = vec![];
    let entries = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            continue;
        }
        if ft.is_dir() {
            if !matches!(e.file_name().to_str(), Some("pts" | "shm" | "mqueue")) {
                out.extend(host_devices(&path)?);
            }
            continue;
        }
        // Every container has these already (the runtime makes them).
        const DEFAULT: &[&str] = &[
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/dev/console",
            "/dev/ptmx",
        ];
        if DEFAULT.iter().any(|d| path == Path::new(d)) {
            continue;
        }
        if let Ok((dev, _)) = device_node(&path, &path.display().to_string(), "rwm") {
            out.push(dev);
        }
    }
    Ok(out)
}

/// A device node as a spec device at `at` and the cgroup rule allowing `access` to it.
fn device_node(host: &Path, at: &str, access: &str) -> anyhow::Result<(Value, Value)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(host).map_err(|e| anyhow!("--device {}: {e}", host.display()))?;
    let kind = match meta.file_type() {
        t if t.is_char_device() => "c",
        t if t.is_block_device() => "b",
        _ => bail!("--device {}: not a device node", host.display()),
    };
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    Ok((
        json!({"path": at, "type": kind, "major": major, "minor": minor,
               "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid()}),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}),
    ))
}

/// --device HOST[:CONTAINER][:PERMISSIONS].
fn device(spec: &mut Value, arg: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = arg.split(':').collect();
    let perms_like = |s: &str| !s.is_empty() && s.chars().all(|c| "rwm".contains(c));
    let (host, at, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms_like(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if perms_like(p) => (*h, *c, *p),
        _ => bail!("--device {arg:?}: use HOST[:CONTAINER][:PERMISSIONS]"),
    };
    if !at.starts_with('/') {
        bail!("--device {arg:?}: the container path must be absolute");
    }
    let (dev, rule) = device_node(Path::new(host), at, access)?;
    push_linux(spec, "devices", dev);
    let rules = &mut spec["linux"]["resources"]["devices"];
    if !rules.is_array() {
        *rules = json!([]);
    }
    if let Some(a) = rules.as_array_mut() {
        a.push(rule);
    }
    Ok(())
}

/// --ulimit TYPE=SOFT[:HARD] (-1 or unlimited for no limit).
fn ulimit(spec: &mut Value, arg: &str) -> anyhow::Result<()> {
    let bad = || anyhow!("--ulimit {arg:?}: use TYPE=SOFT[:HARD], e.g. nofile=1024:2048");
    let (kind, values) = arg.split_once('=').ok_or_else(bad)?;
    const KNOWN: &[&str] = &[
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    if !KNOWN.contains(&kind) {
        bail!(
            "--ulimit {arg:?}: unknown limit {kind:?} ({})",
            KNOWN.join(", ")
        );
    }
    let value = |s: &str| -> anyhow::Result<u64> {
        match s {
            "-1" | "unlimited" => Ok(u64::MAX),
            n => n.parse().map_err(|_| bad()),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        bail!("--ulimit {arg:?}: the soft limit is above the hard one");
    }
    let name = format!("RLIMIT_{}", kind.to_ascii_uppercase());
    let limit = json!({"type": name, "soft": soft, "hard": hard});
    let rlimits = &mut spec["process"]["rlimits"];
    if !rlimits.is_array() {
        *rlimits = json!([]);
    }
    if let Some(a) = rlimits.as_array_mut() {
        a.retain(|l| l["type"] != name.as_str());
        a.push(limit);
    }
    Ok(())
}

/// --shm-size: the size of the container's /dev/shm.
fn shm_size(spec: &mut Value, size: &str) -> anyhow::Result<()> {
    let bytes = parse_size(size)
        .filter(|b| *b > 0)
        .ok_or_else(|| anyhow!("--shm-size {size:?} is not a size like 256m"))?;
    for m in mounts(spec).iter_mut() {
        if m["destination"] == "/dev/shm" {
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("size=")));
                opts.push(json!(format!("size={}k", (bytes as u64).div_ceil(1024))));
            }
        }
    }
    Ok(())
}

/// --tmpfs PATH[:OPTIONS]: a tmpfs with Docker's defaults (noexec, nosuid, nodev) under the
/// options given.
fn tmpfs(spec: &mut Value, arg: &str) -> anyhow::Result<()> {
    let (path, given) = arg.split_once(':').unwrap_or((arg, ""));
    if !path.starts_with('/') {
        bail!("--tmpfs {arg:?}: the path must be absolute");
    }
    let mut options: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for o in given.split(',').filter(|o| !o.is_empty()) {
        let opposite = match o {
            "exec" => Some("noexec"),
            "suid" => Some("nosuid"),
            "dev" => Some("nodev"),
            _ => None,
        };
        options.retain(|x| Some(x.as_str()) != opposite);
        options.push(o.to_string());
    }
    let m = mounts(spec);
    m.retain(|x| x["destination"] != path);
    m.push(json!({"destination": path, "type": "tmpfs", "source": "tmpfs", "options": options}));
    Ok(())
}

/// --init: a static tini from the host, bound read-only at /sbin/docker-init, runs the
/// command as its child.
fn init(spec: &mut Value) -> anyhow::Result<()> {
    let host = [
        "/usr/bin/docker-init",
        "/usr/bin/tini-static",
        "/usr/local/bin/docker-init",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .ok_or_else(|| {
        anyhow!(
            "--init needs a static tini on the host (/usr/bin/tini-static: apt-get install tini)"
        )
    })?;
    mounts(spec).push(json!({"destination": INIT_PATH, "type": "bind", "source": host, "options": ["rbind", "ro"]}));
    let mut args = vec![json!(INIT_PATH), json!("--")];
    args.extend(
        spec["process"]["args"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    spec["process"]["args"] = json!(args);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({
            "process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]},
            "mounts": [{"destination": "/dev/shm", "type": "tmpfs", "options": ["nosuid", "size=65536k"]}],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}},
        })
    }

    #[test]
    fn ulimits_replace_the_default_and_check_their_shape() {
        let mut s = spec();
        ulimit(&mut s, "nofile=100:200").unwrap();
        ulimit(&mut s, "core=unlimited").unwrap();
        let l = s["process"]["rlimits"].as_array().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            json!({"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200})
        );
        assert_eq!(l[1]["soft"], json!(u64::MAX));
        for bad in ["nofile", "bogus=1", "nofile=2:1", "nofile=x"] {
            assert!(ulimit(&mut s, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shm_and_tmpfs_sizes_and_options() {
        let mut s = spec();
        shm_size(&mut s, "1m").unwrap();
        assert_eq!(s["mounts"][0]["options"], json!(["nosuid", "size=1024k"]));
        tmpfs(&mut s, "/run:exec,size=1m").unwrap();
        assert_eq!(
            s["mounts"][1]["options"],
            json!(["nosuid", "nodev", "exec", "size=1m"])
        );
        assert!(tmpfs(&mut s, "run").is_err());
    }

    #[test]
    fn devices_are_nodes_with_rules() {
        let mut s = spec();
        device(&mut s, "/dev/null:/dev/mynull:r").unwrap();
        assert_eq!(s["linux"]["devices"][0]["path"], "/dev/mynull");
        assert_eq!(s["linux"]["devices"][0]["type"], "c");
        assert_eq!(s["linux"]["resources"]["devices"][1]["access"], "r");
        assert!(device(&mut s, "/etc/passwd").is_err());
    }
}
