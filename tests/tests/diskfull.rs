//! A full disk loses nothing: each writer runs on a berthd whose root is a small ext4
//! filesystem of the test's own (a loop mount), filled until the writer cannot finish — pull,
//! import, unpack, commit, `cp` into a container, volumes, an ingest, a metadata transaction.
//! Each must fail with a clear error (ResourceExhausted, naming what was being written), leave
//! nothing half-visible (no image without its content, no snapshot committed half-applied, no
//! blob under a digest it does not have), keep the daemon serving, and work once space is
//! freed; `berth check` is clean after every case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, Registry};
use berth_tests::{ok, require_root, require_tool, stderr, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Filesystem size: room for the daemon's stores and the test images, not much more.
const FS_MIB: u64 = 128;
/// The big file of each case: larger than what is left free when the disk is "full".
const BIG: usize = 8 << 20;
/// What is left free when the disk is filled: enough to start, not to finish.
const LEFT: u64 = 2 << 20;

/// An ext4 filesystem in a file, loop-mounted at `<daemon dir>/root`; unmounted on drop
/// (after the daemon, which must be declared before it).
struct LoopFs {
    mount: PathBuf,
    image: PathBuf,
}

impl LoopFs {
    /// At `<dir>/<name>` (`root` or `state`).
    fn new(dir: &Path, name: &str) -> Self {
        require_root();
        require_tool("mkfs.ext4");
        let (image, mount) = (dir.join(format!("{name}.img")), dir.join(name));
        std::fs::create_dir_all(&mount).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(FS_MIB << 20).unwrap();
        // -m 0: no blocks reserved for root, which berthd is; full means full.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        LoopFs { mount, image }
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Bytes free for an unprivileged writer.
    fn available(&self) -> u64 {
        let c = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs is plain old data, valid all zeroes.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }

    /// Fills the filesystem until `leave` bytes are free (or fewer): in ever smaller steps,
    /// as the filesystem's own bookkeeping takes some of what looks free.
    fn fill(&self, leave: u64) {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        let mut step = self.available().saturating_sub(leave);
        while step >= 4096 && self.available() > leave {
            let have = f.metadata().unwrap().len();
            let grow = step.min(self.available().saturating_sub(leave));
            // SAFETY: fallocate on a descriptor we own.
            let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, (have + grow) as i64) };
            if rc != 0 {
                assert_eq!(
                    rc,
                    libc::ENOSPC,
                    "fallocate: {}",
                    std::io::Error::from_raw_os_error(rc)
                );
                step /= 2;
            }
        }
        f.sync_all().unwrap();
    }

    /// Frees what [`LoopFs::fill`] took.
    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mount);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

/// A daemon whose root is a filesystem of its own. Fields drop in order: the daemon first.
struct Full {
    d: Daemon,
    fs: LoopFs,
}

fn start() -> Full {
    start_on("root")
}

/// A daemon whose `name` directory (root or state) is a filesystem of its own.
fn start_on(name: &str) -> Full {
    let dir = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .unwrap();
    let fs = LoopFs::new(dir.path(), name);
    let d = Daemon::start_in(dir, |_| {}).unwrap();
    Full { d, fs }
}

impl Full {
    fn berth(&self, args: &[&str]) -> Output {
        self.d.berth(args, None)
    }

    /// The command failed because the disk is full, and says so: ResourceExhausted, the
    /// system's words, and `what` (the thing being written).
    fn assert_full(&self, out: &Output, what: &str) {
        let err = stderr(out);
        assert!(!out.status.success(), "it succeeded on a full disk: {err}");
        assert!(
            [
                "resource exhausted",
                "ResourceExhausted",
                "resource has been exhausted"
            ]
            .iter()
            .any(|code| err.contains(code))
                && (err.contains("No space left on device") || err.contains("nearly full")),
            "not a clear disk-full error: {err}"
        );
        assert!(
            err.contains(what),
            "the error does not name {what:?}: {err}"
        );
        eprintln!("a full disk, as a user sees it: {}", err.trim());
    }

    /// The daemon still answers, and its root audits clean.
    fn assert_serving_and_clean(&self) {
        ok(&self.berth(&["version"]));
        let out = self.berth(&["check"]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !report.contains("CORRUPT"),
            "berth check after a full disk:\n{report}{}",
            stderr(&out)
        );
    }

    /// `args` on a full disk: a clear error naming `what`, no image `image` listed, the
    /// daemon serving and its root clean; once the space is freed, the same succeeds and the
    /// image is listed.
    fn fails_full_then_works(&self, args: &[&str], what: &str, image: &str) {
        self.fs.fill(LEFT);
        let out = self.berth(args);
        self.assert_full(&out, what);
        assert!(
            !self.images().contains(image),
            "{image} without its content"
        );
        self.assert_serving_and_clean();
        self.fs.free();
        ok(&self.berth(args));
        assert!(self.images().contains(image));
        self.assert_serving_and_clean();
    }

    fn images(&self) -> String {
        ok(&self.berth(&["images", "ls", "-q"]))
    }
}

/// An image with one incompressible layer of [`BIG`] bytes, in an OCI layout under `dir`.
fn big_image(dir: &Path, seed: u64) -> oci::Built {
    let data = oci::noise(BIG, seed);
    let layer = oci::layer(&[oci::Entry::File("big", &data, 0o644)]);
    oci::layout(dir, "v1", &[layer])
}

#[test]
fn a_pull_on_a_full_disk_fails_clearly_and_works_once_space_is_freed() {
    let f = start();
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    big_image(&work.path().join("layout"), 1);
    let reference = reg
        .push(&work.path().join("layout"), "v1", "full/pull")
        .unwrap();
    f.fails_full_then_works(
        &["images", "pull", "--plain-http", &reference],
        "ingest",
        "full/pull",
    );
}

#[test]
fn an_import_on_a_full_disk_fails_clearly_and_works_once_space_is_freed() {
    let f = start();
    let work = tempfile::tempdir().unwrap();
    big_image(&work.path().join("layout"), 2);
    let archive = work.path().join("big.tar");
    oci::archive(&work.path().join("layout"), &archive);
    let args = [
        "images",
        "import",
        "--base-name",
        "test.local/full",
        archive.to_str().unwrap(),
    ];
    f.fails_full_then_works(&args, "ingest", "test.local/full");
}

#[test]
fn an_unpack_on_a_full_disk_commits_no_snapshot_and_works_once_space_is_freed() {
    let f = start();
    let work = tempfile::tempdir().unwrap();
    // Zeros: a small blob that unpacks to BIG bytes.
    let zeros = vec![0u8; BIG];
    let layer = oci::layer(&[oci::Entry::File("zeros", &zeros, 0o644)]);
    oci::layout(&work.path().join("layout"), "v1", &[layer]);
    let archive = work.path().join("zeros.tar");
    oci::archive(&work.path().join("layout"), &archive);
    ok(&f.berth(&[
        "images",
        "import",
        "--no-unpack",
        "--base-name",
        "test.local/zeros",
        archive.to_str().unwrap(),
    ]));
    f.fs.fill(LEFT);
    let out = f.berth(&["images", "unpack", "test.local/zeros:v1"]);
    // The applier stops at the free-space floor before the disk is full: the layer is named.
    f.assert_full(&out, "unpack layer sha256:");
    let snaps = ok(&f.berth(&["snapshots", "ls"]));
    assert!(
        !snaps.contains("Committed"),
        "a half-applied layer: {snaps}"
    );
    f.assert_serving_and_clean();
    f.fs.free();
    ok(&f.berth(&["images", "unpack", "test.local/zeros:v1"]));
    assert!(ok(&f.berth(&["snapshots", "ls"])).contains("Committed"));
    f.assert_serving_and_clean();
}

/// The busybox test image, imported and unpacked.
fn with_busybox(f: &Full) -> tempfile::TempDir {
    let (work, archive) = oci::busybox_archive();
    ok(&f.berth(&[
        "images",
        "import",
        "--base-name",
        "test.local/bb",
        archive.to_str().unwrap(),
    ]));
    work
}

/// Runs `script` in a container `id` of the busybox image (kept when it exits).
fn ran(f: &Full, id: &str, script: &str) {
    ok(&f.berth(&[
        "containers",
        "run",
        "test.local/bb:latest",
        id,
        "sh",
        "-c",
        script,
    ]));
}

#[test]
fn a_commit_on_a_full_disk_makes_no_image_and_works_once_space_is_freed() {
    let f = start();
    let _bb = with_busybox(&f);
    ran(&f, "changed", "head -c 8388608 /dev/urandom > /big");
    f.fails_full_then_works(
        &["commit", "changed", "test.local/committed:v1"],
        "changed",
        "committed",
    );
}

#[test]
fn cp_into_a_container_on_a_full_disk_fails_clearly() {
    let f = start();
    let _bb = with_busybox(&f);
    ran(&f, "target", "true");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    std::fs::write(&src, oci::noise(BIG, 3)).unwrap();
    f.fs.fill(LEFT);
    let dst = "target:/big";
    let out = f.berth(&["cp", src.to_str().unwrap(), dst]);
    let err = stderr(&out);
    assert!(!out.status.success(), "cp succeeded on a full disk");
    // (The CLI does not yet say which file it was writing: cmd/src/berth/cp.rs's to add.)
    assert!(err.contains("No space left on device"), "{err}");
    eprintln!("cp on a full disk, as a user sees it: {}", err.trim());
    f.assert_serving_and_clean();
    f.fs.free();
    ok(&f.berth(&["cp", src.to_str().unwrap(), dst]));
    f.assert_serving_and_clean();
}

/// A container that writes [`BIG`] bytes into the volume `data`.
const VOLUME_WRITER: [&str; 10] = [
    "containers",
    "run",
    "--rm",
    "-v",
    "data:/data",
    "test.local/bb:latest",
    "writer",
    "sh",
    "-c",
    "head -c 8388608 /dev/urandom > /data/big",
];

/// The container whose write fails is removed on a full disk, and the snapshotter's redb
/// then refuses every later transaction ("Previous I/O error occurred") until it opens its
/// database again, which it does on the failure itself.
#[test]
fn volumes_on_a_full_disk_fail_clearly_and_work_once_space_is_freed() {
    let f = start();
    let _bb = with_busybox(&f);
    ok(&f.berth(&["volumes", "create", "data"]));
    f.fs.fill(LEFT);
    // A container's own write to a volume: ENOSPC inside, reported by the program.
    let out = f.berth(&VOLUME_WRITER);
    assert!(!out.status.success());
    // (busybox's head says ENOSPC as "I/O error".)
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        said.contains("No space left on device") || said.contains("I/O error"),
        "{said}"
    );
    // A volume berthd seeds from the image: the copy berthd makes fails clearly.
    let seeded = f.berth(&[
        "containers",
        "run",
        "--rm",
        "-v",
        "/bin",
        "test.local/bb:latest",
        "seeded",
        "true",
    ]);
    if !seeded.status.success() {
        f.assert_full(&seeded, "volume");
    }
    f.assert_serving_and_clean();
    f.fs.free();
    ok(&f.berth(&VOLUME_WRITER));
    f.assert_serving_and_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_on_a_full_disk_stores_nothing_under_its_digest() {
    let f = start();
    let client = f.d.client().await.unwrap();
    let data = oci::noise(BIG, 4);
    let digest = berth_tests::sha256(&data);
    let ingest = || {
        client.ingest(
            "full-ref",
            &data[..],
            data.len() as i64,
            Some(&digest),
            Default::default(),
        )
    };
    f.fs.fill(LEFT);
    let err = ingest().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::ResourceExhausted), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("No space left on device"), "{msg}");
    eprintln!("an ingest on a full disk, as a client sees it: {msg}");
    let listed = ok(&f.berth(&["content", "ls"]));
    assert!(!listed.contains(&digest), "a truncated blob: {listed}");
    f.assert_serving_and_clean();
    f.fs.free();
    assert_eq!(ingest().await.unwrap(), digest);
    let back = client.read_blob(&digest, 0, 0).await.unwrap();
    assert_eq!(back, data);
    f.assert_serving_and_clean();
}

/// redb refuses every transaction after one I/O error ("Previous I/O error occurred. Please
/// close and re-open the database."): the metadata store opens its database again, so the
/// daemon serves on and the next write after space is freed succeeds.
#[test]
fn a_metadata_transaction_on_a_full_disk_fails_clearly() {
    let f = start();
    f.fs.fill(0);
    // Namespaces with labels until the store needs a page the disk does not have.
    let label = format!("k={}", "v".repeat(3000));
    // (`namespaces create NAME KEY=VALUE...`)
    let mut failed = None;
    for i in 0..2000 {
        let out = f.berth(&["namespaces", "create", &format!("ns{i}"), &label]);
        if !out.status.success() {
            failed = Some(out);
            break;
        }
    }
    let out = failed.expect("the metadata store never ran out of room");
    f.assert_full(&out, "metadata store");
    f.assert_serving_and_clean();
    f.fs.free();
    ok(&f.berth(&["namespaces", "create", "after", &label]));
    f.assert_serving_and_clean();
}

#[test]
fn a_container_start_with_a_full_state_directory_fails_clearly() {
    let f = start_on("state");
    let _bb = with_busybox(&f);
    f.fs.fill(0);
    let out = f.berth(&["containers", "run", "test.local/bb:latest", "boxed", "true"]);
    f.assert_full(&out, "state");
    // Nothing of it is left running or listed as running.
    let tasks = ok(&f.berth(&["tasks", "ls"]));
    assert!(!tasks.contains("RUNNING"), "{tasks}");
    f.assert_serving_and_clean();
    f.fs.free();
    let _ = f.berth(&["containers", "rm", "boxed"]);
    ok(&f.berth(&[
        "containers",
        "run",
        "--rm",
        "test.local/bb:latest",
        "boxed",
        "true",
    ]));
    f.assert_serving_and_clean();
}
