//! The daemon's API driven through the Rust client: every service of the foundation, its
//! error codes, and hostile requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_client::proto::content::{
    AbortRequest, InfoRequest, ListContentRequest, ListStatusesRequest, ReadContentRequest,
    StatusRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use berth_client::proto::events::SubscribeRequest;
use berth_client::proto::images::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use berth_client::proto::leases::{
    AddResourceRequest, CreateRequest, DeleteRequest, ListRequest, ListResourcesRequest, Resource,
};
use berth_client::proto::namespaces::{
    CreateNamespaceRequest, DeleteNamespaceRequest, GetNamespaceRequest, ListNamespacesRequest,
    Namespace, UpdateNamespaceRequest,
};
use berth_client::proto::types::Descriptor;
use berth_tests::{sha256, Daemon};
use std::collections::HashMap;
use tokio_stream::StreamExt;
use tonic::Code;

fn image(name: &str, digest: &str) -> Image {
    Image {
        name: name.into(),
        labels: HashMap::from([("k".into(), "v".into())]),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 10,
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    }
}

#[tokio::test]
async fn version_and_introspection() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let v = c.version().version(()).await.unwrap().into_inner();
    assert!(v.version.starts_with('v'), "{v:?}");
    let uuid = c
        .introspection()
        .server(())
        .await
        .unwrap()
        .into_inner()
        .uuid;
    assert_eq!(uuid.len(), 36);
    let plugins = c
        .introspection()
        .plugins(berth_client::proto::introspection::PluginsRequest {
            filters: vec!["type==io.containerd.grpc.v1".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .plugins;
    let ids: Vec<_> = plugins.iter().map(|p| p.id.as_str()).collect();
    for want in [
        "content",
        "images",
        "namespaces",
        "leases",
        "events",
        "introspection",
        "version",
        "mounts",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert!(plugins.iter().all(|p| p.r#type == "io.containerd.grpc.v1"));
}

#[tokio::test]
async fn uuid_survives_restart() {
    let mut d = Daemon::start().unwrap();
    let before = d
        .client()
        .await
        .unwrap()
        .introspection()
        .server(())
        .await
        .unwrap()
        .into_inner()
        .uuid;
    d.restart().unwrap();
    let after = d
        .client()
        .await
        .unwrap()
        .introspection()
        .server(())
        .await
        .unwrap()
        .into_inner()
        .uuid;
    assert_eq!(before, after);
}

#[tokio::test]
async fn namespaces_lifecycle() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut ns = c.namespaces();
    ns.create(CreateNamespaceRequest {
        namespace: Some(Namespace {
            name: "team-a".into(),
            labels: HashMap::from([("owner".into(), "a".into())]),
        }),
    })
    .await
    .unwrap();
    let dup = ns
        .create(CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: "team-a".into(),
                labels: HashMap::new(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad = ns
        .create(CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: "../etc".into(),
                labels: HashMap::new(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    ns.update(UpdateNamespaceRequest {
        namespace: Some(Namespace {
            name: "team-a".into(),
            labels: HashMap::from([("env".into(), "prod".into())]),
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels.env".into(), "labels.owner".into()],
        }),
    })
    .await
    .unwrap();
    let got = ns
        .get(GetNamespaceRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!(got.labels, HashMap::from([("env".into(), "prod".into())]));

    let listed = ns
        .list(ListNamespacesRequest {
            filter: "labels.env==prod".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    assert_eq!(listed.len(), 1);

    // A namespace holding an image cannot be deleted until the image is gone.
    let c2 = c.with_namespace("team-a").unwrap();
    c2.images()
        .create(CreateImageRequest {
            image: Some(image("img", &sha256(b"x"))),
        })
        .await
        .unwrap();
    let busy = ns
        .delete(DeleteNamespaceRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);
    c2.images()
        .delete(DeleteImageRequest {
            name: "img".into(),
            sync: false,
        })
        .await
        .unwrap();
    ns.delete(DeleteNamespaceRequest {
        name: "team-a".into(),
    })
    .await
    .unwrap();
    let missing = ns
        .delete(DeleteNamespaceRequest {
            name: "team-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

/// An update of a namespace that does not exist makes it, as containerd's SetLabel does
/// (containerd's own client suite labels `testing` before anything else).
#[tokio::test]
async fn updating_a_missing_namespace_makes_it() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut ns = c.namespaces();
    let names = |list: Vec<Namespace>| list.into_iter().map(|n| n.name).collect::<Vec<_>>();
    let before = ns
        .list(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    assert!(!names(before).contains(&"testing".to_string()));
    ns.update(UpdateNamespaceRequest {
        namespace: Some(Namespace {
            name: "testing".into(),
            labels: HashMap::from([("containerd.io/defaults/snapshotter".into(), "native".into())]),
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels.containerd.io/defaults/snapshotter".into()],
        }),
    })
    .await
    .unwrap();
    let got = ns
        .get(GetNamespaceRequest {
            name: "testing".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!(
        got.labels,
        HashMap::from([("containerd.io/defaults/snapshotter".into(), "native".into())])
    );
    let after = ns
        .list(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    assert!(names(after).contains(&"testing".to_string()));
}

#[tokio::test]
async fn missing_or_invalid_namespace_header_is_failed_precondition() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let bad = c.with_namespace("a..b").unwrap();
    let err = bad
        .images()
        .list(ListImagesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let long = c.with_namespace(&"a".repeat(77)).unwrap();
    let err = long
        .content()
        .list(ListContentRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn images_crud_filters_and_fallbacks() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut im = c.images();
    let dg = sha256(b"manifest");
    im.create(CreateImageRequest {
        image: Some(image("docker.io/library/busybox:latest", &dg)),
    })
    .await
    .unwrap();
    im.create(CreateImageRequest {
        image: Some(image("quay.io/x/y:1", &dg)),
    })
    .await
    .unwrap();
    let e = im
        .create(CreateImageRequest {
            image: Some(image("quay.io/x/y:1", &dg)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    // Update of a missing image is NotFound: clients fall back to Create on it.
    let e = im
        .update(UpdateImageRequest {
            image: Some(image("nope", &dg)),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let got = im
        .get(GetImageRequest {
            name: "quay.io/x/y:1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert!(got.created_at.unwrap().seconds > 0);
    let listed = im
        .list(ListImagesRequest {
            filters: vec!["name~=^docker\\.io/".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "docker.io/library/busybox:latest");

    for bad_digest in ["sha256:../../etc/passwd", "md5:abc", ""] {
        let e = im
            .create(CreateImageRequest {
                image: Some(image("bad", bad_digest)),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad_digest}");
    }
    let e = im
        .list(ListImagesRequest {
            filters: vec!["name=~(".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = im
        .get(GetImageRequest {
            name: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn content_ingest_read_label_delete() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let got = c
        .ingest(
            "blob-1",
            data.as_slice(),
            data.len() as i64,
            Some(&digest),
            HashMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(got, digest);
    // Writing the same content again is AlreadyExists, which the client treats as success.
    let again = c
        .ingest("blob-1b", data.as_slice(), 0, Some(&digest), HashMap::new())
        .await
        .unwrap();
    assert_eq!(again, digest);

    let read = c.read_blob(&digest, 0, 0).await.unwrap();
    assert_eq!(read, data);
    let part = c.read_blob(&digest, 1_000_000, 10).await.unwrap();
    assert_eq!(part, &data[1_000_000..1_000_010]);
    let e = c
        .read_blob(&digest, data.len() as i64 + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::OutOfRange));

    let mut cs = c.content();
    let info = cs
        .update(UpdateRequest {
            info: Some(berth_client::proto::content::Info {
                digest: digest.clone(),
                labels: HashMap::from([("containerd.io/gc.root".into(), "1".into())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.containerd.io/gc.root".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.size, data.len() as i64);
    assert_eq!(info.labels["containerd.io/gc.root"], "1");

    let mut listed = cs
        .list(ListContentRequest {
            filters: vec![r#"labels."containerd.io/gc.root""#.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let batch = listed.next().await.unwrap().unwrap();
    assert_eq!(batch.info.len(), 1);

    // Another namespace does not see it.
    let other = c.with_namespace("other").unwrap();
    let e = other
        .content()
        .info(InfoRequest {
            digest: digest.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    cs.delete(berth_client::proto::content::DeleteContentRequest {
        digest: digest.clone(),
    })
    .await
    .unwrap();
    let e = cs
        .info(InfoRequest {
            digest: digest.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let blob = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(!blob.exists(), "unreferenced blob bytes must be removed");
}

/// Drives a raw Write stream so tests can send exactly what a hostile client would.
async fn raw_write(
    c: &berth_client::Client,
    msgs: Vec<WriteContentRequest>,
) -> Vec<Result<berth_client::proto::content::WriteContentResponse, tonic::Status>> {
    let stream = tokio_stream::iter(msgs);
    let mut out = vec![];
    match c.content().write(stream).await {
        Ok(resp) => {
            let mut s = resp.into_inner();
            while let Some(r) = s.next().await {
                let stop = r.is_err();
                out.push(r);
                if stop {
                    break;
                }
            }
        }
        Err(e) => out.push(Err(e)),
    }
    out
}

#[tokio::test]
async fn write_protocol_errors() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();

    // No ref on the first message.
    let r = raw_write(&c, vec![WriteContentRequest::default()]).await;
    assert_eq!(
        r.last().unwrap().as_ref().unwrap_err().code(),
        Code::InvalidArgument
    );

    // Bytes that do not match the expected digest: refused, nothing visible.
    let claimed = sha256(b"what we promised");
    let r = raw_write(
        &c,
        vec![
            WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: "liar".into(),
                expected: claimed.clone(),
                ..Default::default()
            },
            WriteContentRequest {
                action: WriteAction::Write as i32,
                data: b"something else".to_vec(),
                ..Default::default()
            },
            WriteContentRequest {
                action: WriteAction::Commit as i32,
                offset: 14,
                total: 14,
                expected: claimed.clone(),
                ..Default::default()
            },
        ],
    )
    .await;
    let err = r.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("unexpected commit digest"),
        "{err:?}"
    );
    let e = c
        .content()
        .info(InfoRequest { digest: claimed })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The failed ingest is still there to abort.
    let st = c
        .content()
        .status(StatusRequest {
            r#ref: "liar".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.offset, 14);
    c.content()
        .abort(AbortRequest {
            r#ref: "liar".into(),
        })
        .await
        .unwrap();
    let e = c
        .content()
        .status(StatusRequest {
            r#ref: "liar".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A write at a wrong offset is OutOfRange.
    let r = raw_write(
        &c,
        vec![
            WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: "gap".into(),
                data: b"abc".to_vec(),
                ..Default::default()
            },
            WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: 10,
                data: b"def".to_vec(),
                ..Default::default()
            },
        ],
    )
    .await;
    assert_eq!(r[0].as_ref().unwrap().offset, 3);
    assert_eq!(
        r.last().unwrap().as_ref().unwrap_err().code(),
        Code::OutOfRange
    );

    // Invalid expected digest never becomes a path.
    let r = raw_write(
        &c,
        vec![WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: "evil".into(),
            expected: "sha256:../../../../etc/passwd".into(),
            ..Default::default()
        }],
    )
    .await;
    assert_eq!(
        r.last().unwrap().as_ref().unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn concurrent_writers_on_one_ref_are_refused() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: "shared".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut first = c
        .content()
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    first.next().await.unwrap().unwrap();
    let r = raw_write(
        &c,
        vec![WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: "shared".into(),
            ..Default::default()
        }],
    )
    .await;
    assert_eq!(
        r.last().unwrap().as_ref().unwrap_err().code(),
        Code::Unavailable
    );
    drop(tx);
}

#[tokio::test]
async fn oversized_message_is_refused_and_daemon_keeps_serving() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let huge = "x".repeat(17 << 20);
    let e = c
        .images()
        .get(GetImageRequest { name: huge })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal
        ),
        "{e:?}"
    );
    c.version().version(()).await.unwrap();
}

#[tokio::test]
async fn leases_record_resources() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut l = c.leases();
    let lease = l
        .create(CreateRequest {
            id: "pull-1".into(),
            labels: HashMap::from([(
                "containerd.io/gc.expire".into(),
                "2099-01-01T00:00:00Z".into(),
            )]),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    assert_eq!(lease.id, "pull-1");
    let generated = l
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    assert!(!generated.id.is_empty());
    let e = l
        .create(CreateRequest {
            id: "bad\nid".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Content written under the lease is recorded in it.
    let leased = c.with_lease(Some("pull-1")).unwrap();
    let digest = leased
        .ingest(
            "leased-blob",
            &b"data under lease"[..],
            0,
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    l.add_resource(AddResourceRequest {
        id: "pull-1".into(),
        resource: Some(Resource {
            id: "snap-1".into(),
            r#type: "snapshots/overlayfs".into(),
        }),
    })
    .await
    .unwrap();
    let e = l
        .add_resource(AddResourceRequest {
            id: "pull-1".into(),
            resource: Some(Resource {
                id: "x".into(),
                r#type: "bogus".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let rs = l
        .list_resources(ListResourcesRequest {
            id: "pull-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    let pairs: Vec<(String, String)> = rs.into_iter().map(|r| (r.r#type, r.id)).collect();
    assert!(pairs.contains(&("content".into(), digest)), "{pairs:?}");
    assert!(pairs.contains(&("snapshots/overlayfs".into(), "snap-1".into())));
    assert!(
        !pairs.iter().any(|(t, _)| t == "ingests"),
        "committed ingest still listed: {pairs:?}"
    );

    let listed = l
        .list(ListRequest {
            filters: vec!["id==pull-1".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(listed.len(), 1);
    l.delete(DeleteRequest {
        id: "pull-1".into(),
        sync: false,
    })
    .await
    .unwrap();
    let e = l
        .list_resources(ListResourcesRequest {
            id: "pull-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Writing under a lease that does not exist is refused.
    let e = c
        .with_lease(Some("ghost"))
        .unwrap()
        .ingest("g", &b"x"[..], 0, None, HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
}

#[tokio::test]
async fn events_are_published_and_filtered() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let mut sub = c
        .events()
        .subscribe(SubscribeRequest {
            filters: vec!["topic~=^/images/".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut all = c
        .events()
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    c.namespaces()
        .create(CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: "evns".into(),
                labels: HashMap::new(),
            }),
        })
        .await
        .unwrap();
    c.images()
        .create(CreateImageRequest {
            image: Some(image("ev/img:1", &sha256(b"m"))),
        })
        .await
        .unwrap();
    let env = sub.next().await.unwrap().unwrap();
    assert_eq!(env.topic, "/images/create");
    assert_eq!(env.namespace, "default");
    let any = env.event.unwrap();
    assert_eq!(any.type_url, "containerd.services.images.v1.ImageCreate");
    let ev: berth_client::proto::images::ImageCreate =
        prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(ev.name, "ev/img:1");
    let first = all.next().await.unwrap().unwrap();
    assert_eq!(first.topic, "/namespaces/create");
    assert_eq!(
        first.event.unwrap().type_url,
        "containerd.events.NamespaceCreate"
    );

    // Publish validates topics.
    let e = c
        .events()
        .publish(berth_client::proto::events::PublishRequest {
            topic: "no-slash".into(),
            event: Some(prost_types::Any::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    c.events()
        .publish(berth_client::proto::events::PublishRequest {
            topic: "/images/custom".into(),
            event: Some(prost_types::Any {
                type_url: "example.Custom".into(),
                value: vec![1, 2, 3],
            }),
        })
        .await
        .unwrap();
    let env = sub.next().await.unwrap().unwrap();
    assert_eq!(env.topic, "/images/custom");
    assert_eq!(env.event.unwrap().value, vec![1, 2, 3]);
}

#[tokio::test]
async fn list_statuses_with_empty_filter_lists_everything() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    raw_write(
        &c,
        vec![WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: "partial".into(),
            total: 100,
            data: vec![7; 10],
            ..Default::default()
        }],
    )
    .await;
    let st = c
        .content()
        .list_statuses(ListStatusesRequest {
            filters: vec![String::new()],
        })
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0].r#ref.as_str(), st[0].offset, st[0].total),
        ("partial", 10, 100)
    );
    let read = c
        .content()
        .read(ReadContentRequest {
            digest: sha256(b"nope"),
            offset: 0,
            size: 0,
        })
        .await;
    let code = match read {
        Err(e) => e.code(),
        Ok(s) => {
            let mut s = s.into_inner();
            s.next().await.unwrap().unwrap_err().code()
        }
    };
    assert_eq!(code, Code::NotFound);
}
