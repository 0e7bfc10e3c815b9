//! What containerd 2.x's clients expect of the API beyond the v1 basics, as its client suite
//! (`integration/client` at v2.3.4) checks them: the content store's conformance cases
//! (CommitExists, CommitErrorState, UpdateStatus, Resume) driven the way containerd's Go
//! proxy writer drives a Write stream, the namespaces' Get, and Introspection's PluginInfo
//! (a runtime's `-info`, as TestRuntimeInfo asks for it), and Transfer's echo (an import
//! stream's bytes back out of an export stream, TestTransferEcho).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_client::proto::content::{
    ListStatusesRequest, StatusRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use berth_client::proto::introspection::PluginInfoRequest;
use berth_client::proto::namespaces::GetNamespaceRequest;
use berth_client::proto::streaming::StreamInit;
use berth_client::proto::to_any;
use berth_client::proto::transfer::TransferRequest;
use berth_client::proto::types::transfer::{
    Data, ImageExportStream, ImageImportStream, WindowUpdate,
};
use berth_client::proto::types::{RuntimeInfo, RuntimeRequest, RuntimeVersion};
use berth_client::Client;
use berth_tests::{sha256, Daemon};
use prost::{Message, Name};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};

/// A Write stream held open the way containerd's `remoteWriter` holds one: STAT to open,
/// WRITE at the offset it tracks, COMMIT that ends the stream, Truncate only locally.
struct RemoteWriter {
    tx: mpsc::Sender<WriteContentRequest>,
    replies: Streaming<WriteContentResponse>,
    offset: i64,
    digest: String,
}

impl RemoteWriter {
    /// `cs.Writer`: one attempt, as containerd's checkRefNotAvailable makes it.
    async fn open(c: &Client, r: &str, total: i64, expected: &str) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: r.into(),
            total,
            expected: expected.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut replies = c
            .content()
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = replies.next().await.expect("a reply to STAT")?;
        Ok(RemoteWriter {
            tx,
            replies,
            offset: first.offset,
            digest: String::new(),
        })
    }

    /// `content.OpenWriter`: retries while another writer still holds the ref.
    async fn open_waiting(c: &Client, r: &str, total: i64, expected: &str) -> Self {
        for _ in 0..200 {
            match Self::open(c, r, total, expected).await {
                Ok(w) => return w,
                Err(s) if s.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(s) => panic!("open {r}: {s:?}"),
            }
        }
        panic!("ref {r} stayed locked");
    }

    async fn send(&mut self, req: WriteContentRequest) -> Result<WriteContentResponse, Status> {
        self.tx.send(req).await.expect("stream open");
        let resp = self.replies.next().await.expect("a reply")?;
        if !resp.digest.is_empty() {
            self.digest = resp.digest.clone();
        }
        Ok(resp)
    }

    async fn stat(&mut self) -> WriteContentResponse {
        self.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    async fn write(&mut self, data: &[u8]) {
        let resp = self
            .send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: self.offset,
                data: data.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(resp.offset, self.offset + data.len() as i64);
        self.offset = resp.offset;
    }

    /// Ends the stream, whatever the answer.
    async fn commit(mut self, size: i64, expected: &str) -> Result<WriteContentResponse, Status> {
        let offset = self.offset;
        self.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            total: size,
            offset,
            expected: expected.into(),
            labels: HashMap::new(),
            ..Default::default()
        })
        .await
    }
}

fn time(t: Option<prost_types::Timestamp>) -> SystemTime {
    let t = t.expect("a timestamp");
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
}

fn within(t: SystemTime, from: SystemTime, to: SystemTime, what: &str) {
    assert!(
        from <= t && t <= to,
        "{what} {t:?} is not between {from:?} and {to:?}"
    );
}

/// Bytes that differ per call, like the suite's createContent.
fn content(seed: u8, size: usize) -> (Vec<u8>, String) {
    let b: Vec<u8> = (0..size)
        .map(|i| (i as u32 * 31 + seed as u32 * 7) as u8)
        .collect();
    let d = sha256(&b);
    (b, d)
}

/// A writer for 256 bytes hashing to `d`, with the instants just before and after it opened.
async fn timed_open(c: &Client, r: &str, d: &str) -> (RemoteWriter, SystemTime, SystemTime) {
    let pre = SystemTime::now();
    let w = RemoteWriter::open_waiting(c, r, 256, d).await;
    (w, pre, SystemTime::now())
}

async fn store(c: &Client, r: &str, data: &[u8]) -> String {
    let d = sha256(data);
    c.ingest(r, data, 0, Some(&d), HashMap::new())
        .await
        .unwrap();
    d
}

async fn ingest_gone(c: &Client, r: &str) -> bool {
    let e = c.content().status(StatusRequest { r#ref: r.into() }).await;
    e.is_err_and(|s| s.code() == Code::NotFound)
}

/// CommitExists: a commit of bytes the namespace holds is AlreadyExists, with or without the
/// digest, and leaves no ingest behind.
#[tokio::test]
async fn commit_of_stored_bytes_is_already_exists() {
    let d = Daemon::start().unwrap();
    let (c, lease) = d.client().await.unwrap().temporary_lease().await.unwrap();
    let (c1, d1) = content(1, 256);
    store(&c, "c1", &c1).await;
    for (i, expected) in [d1.as_str(), ""].into_iter().enumerate() {
        let r = format!("c1-commitexists-{i}");
        let mut w = RemoteWriter::open_waiting(&c, &r, 0, "").await;
        w.write(&c1).await;
        let e = w.commit(c1.len() as i64, expected).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "({i}) {e:?}");
        assert!(ingest_gone(&c, &r).await, "({i}) the ingest must go");
    }
    c.release_lease(&lease).await.unwrap();
}

/// CommitErrorState: what each failed commit leaves: AlreadyExists drops the ingest, a size
/// or digest mismatch keeps it for another try; the ref is locked while a writer holds it and
/// free once its stream ends.
#[tokio::test]
async fn failed_commits_keep_or_drop_the_ingest_as_containerd_does() {
    let d = Daemon::start().unwrap();
    let (c, lease) = d.client().await.unwrap().temporary_lease().await.unwrap();
    let (c1, d1) = content(2, 256);
    let (_, d2) = content(3, 256);
    store(&c, "c1", &c1).await;
    let r = "c1-commiterror-state";
    let locked = |c: Client| async move {
        let e = RemoteWriter::open(&c, r, 0, "")
            .await
            .err()
            .expect("locked");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    };
    let n = c1.len() as i64;

    // Exists, named by digest.
    let mut w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    w.write(&c1).await;
    locked(c.clone()).await;
    assert_eq!(
        w.commit(n, &d1).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Exists, found by hashing: the ingest started again from nothing.
    let mut w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    assert_eq!(w.offset, 0, "the refused ingest must be gone");
    locked(c.clone()).await;
    w.write(&c1).await;
    assert_eq!(
        w.commit(n, "").await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // A wrong digest: FailedPrecondition, the bytes stay.
    let mut w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    assert_eq!(w.offset, 0);
    locked(c.clone()).await;
    let more = [c1.as_slice(), b"more"].concat();
    w.write(&more).await;
    let e = w.commit(n + 4, &d2).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // A wrong size: FailedPrecondition, the bytes stay.
    let w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    assert_eq!(w.offset, n + 4, "a failed check keeps the ingest");
    locked(c.clone()).await;
    let e = w.commit(n, "").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The right size commits what was kept.
    let w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    locked(c.clone()).await;
    let done = w.commit(n + 4, "").await.unwrap();
    assert_eq!(done.digest, sha256(&more));
    assert!(ingest_gone(&c, r).await);

    // The same ref again, for bytes that exist.
    let mut w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    w.write(&c1).await;
    locked(c.clone()).await;
    assert_eq!(
        w.commit(n, &d1).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Opened and closed without a commit: the ref is free again.
    let w = RemoteWriter::open_waiting(&c, r, 0, "").await;
    locked(c.clone()).await;
    drop(w);
    drop(RemoteWriter::open_waiting(&c, r, 0, "").await);
    c.release_lease(&lease).await.unwrap();
}

/// UpdateStatus: an ingest's status after each write: the offset, the total it was opened
/// with, the same start, and an updated_at that moved to the write.
#[tokio::test]
async fn an_ingest_status_moves_with_each_write() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let (c1, d1) = content(4, 256);
    let (mut w, pre_start, post_start) = timed_open(&c, "c1", &d1).await;
    let st = w.stat().await;
    assert_eq!((st.offset, st.total), (0, 256));
    assert_eq!(w.digest, sha256(b""));
    within(time(st.started_at), pre_start, post_start, "started_at");
    within(time(st.updated_at), pre_start, post_start, "updated_at");
    let mut written = 0;
    for end in [64, 192, 256] {
        let pre = SystemTime::now();
        w.write(&c1[written..end]).await;
        let post = SystemTime::now();
        written = end;
        assert_eq!(
            w.digest,
            sha256(&c1[..end]),
            "a WRITE reply carries the digest"
        );
        let st = w.stat().await;
        assert_eq!((st.offset, st.total), (end as i64, 256));
        within(time(st.started_at), pre_start, post_start, "started_at");
        within(time(st.updated_at), pre, post, "updated_at");
        // The Status and ListStatuses RPCs tell the same.
        let s = c
            .content()
            .status(StatusRequest { r#ref: "c1".into() })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(
            (s.r#ref.as_str(), s.offset, s.total),
            ("c1", end as i64, 256)
        );
        assert_eq!(s.expected, d1);
        assert_eq!((s.started_at, s.updated_at), (st.started_at, st.updated_at));
        let all = c
            .content()
            .list_statuses(ListStatusesRequest { filters: vec![] })
            .await
            .unwrap()
            .into_inner()
            .statuses;
        assert_eq!(all, vec![s]);
    }
    assert_eq!(w.commit(0, "").await.unwrap().digest, d1);
}

/// Resume: a second writer on the ref sees the first one's status, times included, and
/// finishes the blob.
#[tokio::test]
async fn a_resumed_ingest_keeps_its_status() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let (cb, dgst) = content(5, 256);
    let (mut w1, pre_start, post_start) = timed_open(&c, "cb", &dgst).await;
    w1.write(&cb[..128]).await;
    let post_update = SystemTime::now();
    let first = w1.stat().await;
    drop(w1);
    let mut w2 = RemoteWriter::open_waiting(&c, "cb", 256, &dgst).await;
    assert_eq!(w2.offset, 128);
    let st = w2.stat().await;
    assert_eq!((st.offset, st.total), (128, 256));
    assert_eq!(w2.digest, sha256(&cb[..128]));
    assert_eq!(
        (st.started_at, st.updated_at),
        (first.started_at, first.updated_at)
    );
    within(time(st.started_at), pre_start, post_start, "started_at");
    within(time(st.updated_at), post_start, post_update, "updated_at");
    let pre = SystemTime::now();
    w2.write(&cb[128..]).await;
    let post = SystemTime::now();
    let st = w2.stat().await;
    within(time(st.updated_at), pre, post, "updated_at");
    assert_eq!(w2.commit(0, "").await.unwrap().digest, dgst);
}

/// containerd answers a Get of a namespace it has never seen with the name and no labels
/// (its store reads an absent labels bucket as empty); berth does the same.
#[tokio::test]
async fn get_of_an_unknown_namespace_answers_empty_labels() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let ns = c
        .namespaces()
        .get(GetNamespaceRequest {
            name: "never-made".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!(ns.name, "never-made");
    assert!(ns.labels.is_empty());
}

const RUNTIME_PLUGIN: &str = "io.containerd.runtime.v2";

fn runtime_request(runtime_path: &str, options: Option<prost_types::Any>) -> prost_types::Any {
    prost_types::Any {
        type_url: RuntimeRequest::full_name(),
        value: RuntimeRequest {
            runtime_path: runtime_path.into(),
            options,
        }
        .encode_to_vec(),
    }
}

/// A shim whose `-info` keeps what it read on stdin in `dir/stdin` and prints `answer`.
fn fake_shim(dir: &Path, answer: &[u8]) -> String {
    std::fs::write(dir.join("answer"), answer).unwrap();
    let shim = dir.join("containerd-shim-fake-v2");
    let d = dir.display();
    std::fs::write(
        &shim,
        format!("#!/bin/sh\n[ \"$1\" = -info ] || exit 9\ncat > {d}/stdin\ncat {d}/answer\n"),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    shim.display().to_string()
}

/// PluginInfo: a plugin's record, and with a RuntimeRequest the task runtime's answer is the
/// named shim's own `-info`, options passed on its stdin.
#[tokio::test]
async fn plugin_info_asks_the_runtime_s_shim() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut intro = c.introspection();
    let e = intro
        .plugin_info(PluginInfoRequest {
            r#type: RUNTIME_PLUGIN.into(),
            id: "nonesuch".into(),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let plain = intro
        .plugin_info(PluginInfoRequest {
            r#type: RUNTIME_PLUGIN.into(),
            id: "task".into(),
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plugin.unwrap().id, "task");
    assert!(plain.extra.is_none());

    let dir = tempfile::tempdir().unwrap();
    let said = RuntimeInfo {
        name: "io.containerd.fake.v2".into(),
        version: Some(RuntimeVersion {
            version: "9.9".into(),
            revision: "r".into(),
        }),
        options: None,
        features: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/features/Features".into(),
            value: br#"{"mountOptions":["rro"]}"#.to_vec(),
        }),
        annotations: HashMap::from([("k".into(), "v".into())]),
    };
    let shim = fake_shim(dir.path(), &said.encode_to_vec());
    let opts = prost_types::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: vec![0x12, 0x04, b'r', b'u', b'n', b'c'],
    };
    let got = intro
        .plugin_info(PluginInfoRequest {
            r#type: RUNTIME_PLUGIN.into(),
            id: "task".into(),
            options: Some(runtime_request(&shim, Some(opts.clone()))),
        })
        .await
        .unwrap()
        .into_inner()
        .extra
        .unwrap();
    // The type URL containerd's Go client insists on for UnmarshalTo.
    assert_eq!(got.type_url, "containerd.types.RuntimeInfo");
    assert_eq!(RuntimeInfo::decode(got.value.as_slice()).unwrap(), said);
    let stdin = std::fs::read(dir.path().join("stdin")).unwrap();
    assert_eq!(prost_types::Any::decode(stdin.as_slice()).unwrap(), opts);

    // What cannot be answered, and why.
    let ask = |options: prost_types::Any, id: &str| {
        let mut intro = c.introspection();
        let id = id.to_string();
        async move {
            intro
                .plugin_info(PluginInfoRequest {
                    r#type: if id == "task" {
                        RUNTIME_PLUGIN
                    } else {
                        "io.containerd.grpc.v1"
                    }
                    .into(),
                    id,
                    options: Some(options),
                })
                .await
                .unwrap_err()
                .code()
        }
    };
    let not_info = fake_shim(dir.path(), b"\xff\xff\xff");
    assert_eq!(
        ask(runtime_request(&not_info, None), "task").await,
        Code::FailedPrecondition
    );
    assert_eq!(
        ask(runtime_request("bin/relative", None), "task").await,
        Code::InvalidArgument
    );
    assert_eq!(
        ask(runtime_request("", None), "task").await,
        Code::InvalidArgument
    );
    let other_kind = prost_types::Any {
        type_url: "containerd.types.Something".into(),
        value: vec![],
    };
    assert_eq!(ask(other_kind, "task").await, Code::InvalidArgument);
    assert_eq!(
        ask(runtime_request(&shim, None), "content").await,
        Code::Unimplemented
    );
}

/// The runtime's info through a real containerd 2.x runc shim, when this machine has one
/// (CI does not: Debian's is 1.6, which has no `-info`): `rro` among runc's mount options,
/// as TestRuntimeInfo checks.
#[tokio::test]
async fn plugin_info_of_a_containerd_2_runc_shim() {
    let Some(shim) = std::env::var("BERTH_TEST_SHIM2")
        .ok()
        .or_else(|| Some("/tmp/containerd-suite/bin/containerd-shim-runc-v2".into()))
        .filter(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: no containerd 2.x shim (set BERTH_TEST_SHIM2 to one)");
        return;
    };
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let extra = c
        .introspection()
        .plugin_info(PluginInfoRequest {
            r#type: RUNTIME_PLUGIN.into(),
            id: "task".into(),
            options: Some(runtime_request(&shim, None)),
        })
        .await
        .unwrap()
        .into_inner()
        .extra
        .unwrap();
    let info = RuntimeInfo::decode(extra.value.as_slice()).unwrap();
    assert_eq!(info.name, "io.containerd.runc.v2");
    let features: serde_json::Value =
        serde_json::from_slice(&info.features.unwrap().value).unwrap();
    assert!(features["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rro"));
}

/// berth's own shim answers `-info` too: its name, its version, and runc's features (the
/// runtime it hands what native cannot isolate as runc does).
#[tokio::test]
async fn plugin_info_of_berths_own_shim() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let extra = c
        .introspection()
        .plugin_info(PluginInfoRequest {
            r#type: RUNTIME_PLUGIN.into(),
            id: "task".into(),
            options: Some(runtime_request("io.containerd.berth.v2", None)),
        })
        .await
        .unwrap()
        .into_inner()
        .extra
        .unwrap();
    let info = RuntimeInfo::decode(extra.value.as_slice()).unwrap();
    assert_eq!(info.name, "io.containerd.berth.v2");
    assert!(info.version.unwrap().version.starts_with("berth "));
    let features: serde_json::Value =
        serde_json::from_slice(&info.features.unwrap().value).unwrap();
    assert!(features["ociVersionMax"].is_string(), "{features}");
}

/// Server: the daemon's pid and PID namespace, as containerd 2.x reports them.
#[tokio::test]
async fn server_reports_pid_and_pid_namespace() {
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let s = c.introspection().server(()).await.unwrap().into_inner();
    assert_eq!(s.pid, u64::from(d.pid().unwrap()));
    let ns = std::fs::metadata(format!("/proc/{}/ns/pid", s.pid))
        .unwrap()
        .ino();
    assert_eq!(s.pidns, ns);
}

/// Plugins: overlayfs says `remap-ids` where this kernel stacks it on idmapped layers
/// (5.19+), as containerd's does, so a 2.x client hands it the mapping labels instead of
/// chowning a copy of the image that the mapping would then map a second time.
#[tokio::test]
async fn overlayfs_advertises_remap_ids_where_the_kernel_can() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let can = (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (5, 19);
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let plugins = c
        .introspection()
        .plugins(berth_client::proto::introspection::PluginsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .plugins;
    let caps = |id: &str| {
        plugins
            .iter()
            .find(|p| p.r#type == "io.containerd.snapshotter.v1" && p.id == id)
            .unwrap_or_else(|| panic!("no snapshotter plugin {id}"))
            .capabilities
            .clone()
    };
    assert_eq!(caps("overlayfs").contains(&"remap-ids".to_string()), can);
    assert!(caps("native").is_empty());
}

/// A stream opened on the Streaming service and acknowledged: its id, both directions.
async fn open_stream(
    c: &Client,
    id: &str,
) -> (mpsc::Sender<prost_types::Any>, Streaming<prost_types::Any>) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(to_any(&StreamInit { id: id.into() }))
        .await
        .unwrap();
    let mut replies = c
        .streaming()
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    replies
        .next()
        .await
        .expect("the stream's acknowledgement")
        .unwrap();
    (tx, replies)
}

/// Sends `data` as the daemon grants it, in chunks of at most 4 KiB, then ends the stream;
/// the receiving side is kept until the transfer is over.
async fn send_granted(
    tx: mpsc::Sender<prost_types::Any>,
    mut rx: Streaming<prost_types::Any>,
    data: Vec<u8>,
) -> Streaming<prost_types::Any> {
    let mut credit = 0i64;
    for chunk in data.chunks(4096) {
        while credit < chunk.len() as i64 {
            let m = rx.next().await.expect("a window update").unwrap();
            credit += i64::from(WindowUpdate::decode(m.value.as_slice()).unwrap().update);
        }
        tx.send(to_any(&Data {
            data: chunk.to_vec(),
        }))
        .await
        .unwrap();
        credit -= chunk.len() as i64;
    }
    drop(tx);
    rx
}

/// Collects what the daemon sends until it ends the stream, granting as it reads.
async fn receive_granted(
    tx: mpsc::Sender<prost_types::Any>,
    mut rx: Streaming<prost_types::Any>,
) -> Vec<u8> {
    let grant = |n: usize| to_any(&WindowUpdate { update: n as i32 });
    tx.send(grant(1 << 20)).await.unwrap();
    let mut got = vec![];
    while let Some(m) = rx.next().await {
        let d = Data::decode(m.unwrap().value.as_slice()).unwrap();
        got.extend_from_slice(&d.data);
        let _ = tx.send(grant(d.data.len())).await;
    }
    got
}

/// TestTransferEcho: an import stream to an export stream gives the bytes back as they were,
/// for a large, a small and an empty stream.
#[tokio::test]
async fn transfer_echoes_an_import_stream_to_an_export_stream() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let big = b"somecontent".repeat(17 * 1024);
    for (n, sent) in [big, b"somecontent".to_vec(), vec![]]
        .into_iter()
        .enumerate()
    {
        let (in_id, out_id) = (format!("echo-in-{n}"), format!("echo-out-{n}"));
        let (in_tx, in_rx) = open_stream(&c, &in_id).await;
        let (out_tx, out_rx) = open_stream(&c, &out_id).await;
        let sender = tokio::spawn(send_granted(in_tx, in_rx, sent.clone()));
        let receiver = tokio::spawn(receive_granted(out_tx, out_rx));
        c.transfer()
            .transfer(TransferRequest {
                source: Some(to_any(&ImageImportStream {
                    stream: in_id,
                    media_type: "application/octet-stream".into(),
                    force_compress: false,
                })),
                destination: Some(to_any(&ImageExportStream {
                    stream: out_id,
                    media_type: "application/octet-stream".into(),
                    ..Default::default()
                })),
                options: None,
            })
            .await
            .unwrap();
        let got = receiver.await.unwrap();
        assert_eq!(got.len(), sent.len(), "stream {n}");
        assert!(got == sent, "stream {n}: the bytes changed");
        drop(sender.await.unwrap());
    }
}
