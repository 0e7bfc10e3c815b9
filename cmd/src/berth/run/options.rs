//! The flags of `berth run`, its two command lines (Docker's `run [OPTIONS] IMAGE [COMMAND]`
//! and the ctr-style `containers run IMAGE ID [COMMAND]`), and what the flags decide before
//! anything is made: the seccomp filter and the restart policy.

use anyhow::{anyhow, bail};
use berth_services::core::restart::Policy;
use berth_services::seccomp;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Run {
    /// Name the container (default: a generated adjective_noun, unique in the namespace)
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Remove the container, its task and its snapshot when it exits
    #[arg(long)]
    pub(super) rm: bool,
    /// Start it, print its id and return; do not wait or attach
    #[arg(long, short = 'd')]
    pub(super) detach: bool,
    /// Keep stdin open and pass this one's to the container (`echo x | berth run -i IMAGE cat`)
    #[arg(long, short = 'i')]
    pub(super) interactive: bool,
    /// Give the container a terminal (with -i, wired to this one: an interactive shell)
    #[arg(long, short = 't')]
    pub(super) tty: bool,
    /// With -d: append the container's stdout and stderr to this file (`berth logs` and
    /// `berth tasks attach` read it) [default: /var/log/berth/NS/ID.log for the default
    /// daemon, beside its socket for another, or under $BERTH_LOG_DIR]
    #[arg(long, requires = "detach")]
    pub(super) log: Option<PathBuf>,
    /// berthd's socket, to place the default log (set by main, not a flag)
    #[arg(skip)]
    pub address: PathBuf,
    /// Environment variables (KEY=VALUE, or KEY to pass this one's value)
    #[arg(long = "env", short = 'e')]
    pub(super) env: Vec<String>,
    /// Files of environment variables, one KEY=VALUE a line (# comments)
    #[arg(long = "env-file")]
    pub(super) env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(long = "workdir", short = 'w', alias = "cwd")]
    pub(super) cwd: Option<String>,
    /// Replace the image's ENTRYPOINT ("" for none); the image's CMD goes with it
    #[arg(long)]
    pub(super) entrypoint: Option<String>,
    /// User: name, uid, or uid:gid (names are looked up in the image's /etc/passwd)
    #[arg(long, short = 'u')]
    pub(super) user: Option<String>,
    /// Labels on the container (KEY=VALUE)
    #[arg(long = "label", short = 'l')]
    pub(super) labels: Vec<String>,
    /// Restart policy: no, on-failure[:MAX], always, unless-stopped (berthd restarts it,
    /// with Docker's back-off)
    #[arg(long, default_value = "no")]
    pub(super) restart: Policy,
    /// Run an init (tini) as PID 1 that reaps zombies and passes signals on
    #[arg(long)]
    pub(super) init: bool,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    pub(super) read_only: bool,
    /// Add capabilities (NET_ADMIN, SYS_PTRACE, …, or ALL)
    #[arg(long = "cap-add")]
    pub(super) cap_add: Vec<String>,
    /// Drop capabilities (…, or ALL)
    #[arg(long = "cap-drop")]
    pub(super) cap_drop: Vec<String>,
    /// Every capability, the host's devices, no seccomp filter, /sys and /proc unmasked
    #[arg(long)]
    pub(super) privileged: bool,
    /// The container's hostname [default: the first 12 characters of its id]
    #[arg(long, short = 'h')]
    pub(super) hostname: Option<String>,
    /// Extra /etc/hosts lines: HOST:IP
    #[arg(long = "add-host")]
    pub(super) add_host: Vec<String>,
    /// Resource limits: TYPE=SOFT[:HARD] (nofile, nproc, core, memlock, stack, …)
    #[arg(long)]
    pub(super) ulimit: Vec<String>,
    /// Size of /dev/shm (e.g. 256m) [default: 64m]
    #[arg(long)]
    pub(super) shm_size: Option<String>,
    /// A tmpfs at PATH[:OPTIONS] (e.g. /run:rw,size=64m)
    #[arg(long)]
    pub(super) tmpfs: Vec<String>,
    /// A host device: HOST[:CONTAINER][:PERMISSIONS] (e.g. /dev/fuse, /dev/sda:/dev/xvdc:r)
    #[arg(long)]
    pub(super) device: Vec<String>,
    /// Mounts: type=bind,src=/host,dst=/ctr[,options=rbind:ro] or
    /// type=volume,src=NAME,dst=/ctr[,options=ro] (a named volume, created on first use;
    /// without src, an anonymous one)
    #[arg(long = "mount")]
    pub(super) mounts: Vec<String>,
    /// Volumes: /host/dir:/ctr[:ro] (bind) or NAME:/ctr[:ro] (named volume)
    #[arg(long = "volume", short = 'v')]
    pub(super) volumes: Vec<String>,
    /// Memory limit (e.g. 256m)
    #[arg(long, short = 'm')]
    pub(super) memory: Option<String>,
    /// CPU limit (e.g. 1.5)
    #[arg(long)]
    pub(super) cpus: Option<f64>,
    /// Largest number of processes
    #[arg(long)]
    pub(super) pids_limit: Option<i64>,
    /// Network: bridge (the default network, made on first use), host, none (loopback
    /// only), or a network made with `berth network create`; several comma-separated
    #[arg(long = "network", alias = "net", default_value = "bridge")]
    pub(super) network: String,
    /// Same as --network host
    #[arg(long, hide = true)]
    pub(super) net_host: bool,
    /// Publish a port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], ranges as 8000-8009:80-89
    #[arg(long = "publish", short = 'p')]
    pub(super) publish: Vec<String>,
    /// Nameservers for the container's resolv.conf (default: the host's)
    #[arg(long)]
    pub(super) dns: Vec<String>,
    /// Runtime (shim): berth's own by default; io.containerd.runc.v2 for containerd's
    #[arg(long, default_value = "io.containerd.berth.v2")]
    pub(super) runtime: String,
    /// Low-level runtime under the shim (runc options' binary_name): `native` (berth's
    /// shim only), runc, or a runc-compatible binary's name or path; default: berthd's
    #[arg(long)]
    pub(super) runc_binary: Option<String>,
    /// Security options: seccomp=unconfined (no seccomp filter), seccomp=PROFILE.json (an
    /// OCI seccomp profile, or one in Docker's format), no-new-privileges[=false]
    /// [default: berth's RuntimeDefault seccomp profile, no new privileges]
    #[arg(long = "security-opt")]
    pub(super) security_opt: Vec<String>,
    /// The filter --security-opt chose (read from it before anything is made)
    #[arg(skip)]
    pub(super) seccomp: seccomp::Profile,
    /// Snapshotter for the container's rootfs
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub(super) snapshotter: String,
    /// The image (set from the command line's positional arguments)
    #[arg(skip)]
    pub(super) image: String,
    /// The container's id: given (ctr-style) or a random one (Docker's form)
    #[arg(skip)]
    pub(super) id: String,
    /// Command and arguments (default: the image's)
    #[arg(skip)]
    pub(super) args: Vec<String>,
}

/// `berth run [OPTIONS] IMAGE [COMMAND [ARG...]]`, as Docker takes it (-h is --hostname,
/// as in Docker; --help prints this).
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct DockerRun {
    #[command(flatten)]
    pub run: Run,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The image to run
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `berth containers run [OPTIONS] IMAGE ID [COMMAND [ARG...]]`, as ctr takes it: the id
/// given, which is also the container's name.
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct CtrRun {
    #[command(flatten)]
    pub run: Run,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The image to run
    pub image: String,
    /// The container's id (and name)
    pub id: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

impl DockerRun {
    pub fn into_run(self) -> Run {
        let mut r = self.run;
        r.image = self.image;
        r.args = self.args;
        r
    }
}

impl CtrRun {
    pub fn into_run(self) -> Run {
        let mut r = self.run;
        r.image = self.image;
        r.id = self.id;
        r.args = self.args;
        r
    }
}

/// What `--security-opt` chose.
pub(super) struct Security {
    pub seccomp: seccomp::Profile,
    pub no_new_privileges: bool,
}

impl Run {
    pub(super) fn host_network(&self) -> bool {
        self.net_host || self.network == "host"
    }

    /// Whether this run's stdin goes to the container.
    pub(super) fn stdin(&self) -> bool {
        self.interactive && !self.detach
    }

    /// What --security-opt asks for: RuntimeDefault seccomp and no new privileges unless
    /// told otherwise (--privileged: no filter).
    pub(super) fn security(&self) -> anyhow::Result<Security> {
        let mut s = Security {
            seccomp: if self.privileged {
                seccomp::Profile::Unconfined
            } else {
                seccomp::Profile::RuntimeDefault
            },
            no_new_privileges: true,
        };
        for opt in &self.security_opt {
            // Docker also takes the older `seccomp:VALUE`.
            match opt.split_once(['=', ':']).unwrap_or((opt, "")) {
                ("seccomp", "unconfined") => s.seccomp = seccomp::Profile::Unconfined,
                ("seccomp", path) if !path.is_empty() => {
                    s.seccomp = seccomp::Profile::Custom(seccomp::load(Path::new(path))?)
                }
                ("no-new-privileges", "" | "true") => s.no_new_privileges = true,
                ("no-new-privileges", "false") => s.no_new_privileges = false,
                // AppArmor and SELinux are not applied by berth; saying so is Docker's answer too
                // on a host without them.
                ("apparmor", "unconfined") | ("label", "disable") => {}
                _ => bail!(
                    "--security-opt {opt:?}: berth takes seccomp=unconfined, seccomp=PROFILE.json \
                     or no-new-privileges[=true|false]"
                ),
            }
        }
        Ok(s)
    }

    /// The environment: --env-file's lines, then -e's (KEY alone takes this one's value, and
    /// is left out when this one has none, as Docker does).
    pub(super) fn environment(&self) -> anyhow::Result<Vec<String>> {
        let mut lines = vec![];
        for f in &self.env_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow!("--env-file {}: {e}", f.display()))?;
            lines.extend(
                text.lines()
                    .map(str::trim_start)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        lines.extend(self.env.iter().cloned());
        for e in &lines {
            let name = e.split_once('=').map_or(e.as_str(), |(n, _)| n);
            if name.is_empty() || name.contains(char::is_whitespace) || e.contains('\0') {
                bail!(
                    "invalid environment variable {e:?}: NAME=VALUE or NAME, a name without spaces, no NUL byte"
                );
            }
        }
        Ok(lines
            .into_iter()
            .filter_map(|e| match e.split_once('=') {
                Some(_) => Some(e),
                None => std::env::var(&e).ok().map(|v| format!("{e}={v}")),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: DockerRun,
    }

    fn parse(args: &[&str]) -> Run {
        let mut all = vec!["berth"];
        all.extend(args);
        Cli::try_parse_from(all).unwrap().run.into_run()
    }

    #[test]
    fn options_come_before_the_image_and_the_command_keeps_its_own() {
        let r = parse(&["--rm", "-it", "busybox", "sh", "-c", "ls -l", "--rm"]);
        assert!(r.rm && r.interactive && r.tty);
        assert_eq!(r.image, "busybox");
        assert_eq!(r.args, ["sh", "-c", "ls -l", "--rm"]);
        assert!(r.id.is_empty());
    }

    #[test]
    fn env_files_and_bare_keys_fill_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# comment\nA=1\n\nB=two words\n").unwrap();
        let mut r = parse(&[
            "-e",
            "A=3",
            "-e",
            "PATH",
            "-e",
            "BERTH_NOT_SET_ANYWHERE",
            "img",
        ]);
        r.env_file = vec![f];
        let env = r.environment().unwrap();
        assert_eq!(env[..3], ["A=1", "B=two words", "A=3"]);
        assert!(env[3].starts_with("PATH="));
        assert_eq!(env.len(), 4);
        for bad in ["=x\n", "A B=1\n", "A=\0\n"] {
            std::fs::write(&r.env_file[0], bad).unwrap();
            assert!(r.environment().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn security_options_as_docker_spells_them() {
        let r = parse(&["--security-opt", "no-new-privileges=false", "img"]);
        assert!(!r.security().unwrap().no_new_privileges);
        let r = parse(&["--privileged", "img"]);
        assert!(matches!(
            r.security().unwrap().seccomp,
            seccomp::Profile::Unconfined
        ));
        let r = parse(&["--security-opt", "bogus", "img"]);
        assert!(r.security().is_err());
    }
}
