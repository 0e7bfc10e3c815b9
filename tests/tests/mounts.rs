//! containerd 2.2's Mount Manager (`containerd.services.mounts.v1`): activations are
//! performed on the host, recorded per namespace, listed, updated and undone; mounts that
//! need no manager are refused with Unimplemented as containerd does; a lease's
//! activations go with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_client::proto::leases::{CreateRequest, DeleteRequest};
use berth_client::proto::mounts::mounts_client::MountsClient;
use berth_client::proto::mounts::{
    ActivateRequest, DeactivateRequest, InfoRequest, ListRequest, UpdateRequest,
};
use berth_client::proto::types::{ActivationInfo, Mount};
use berth_tests::{mount_points_under, Daemon};
use std::collections::HashMap;
use std::path::Path;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Intercept = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
type Mm = MountsClient<InterceptedService<Channel, Intercept>>;

async fn manager(d: &Daemon, ns: &str, lease: Option<&str>) -> Mm {
    let channel = d.client().await.unwrap().channel();
    let (ns, lease) = (ns.to_string(), lease.map(str::to_string));
    let f: Intercept = Box::new(move |mut req: Request<()>| {
        req.metadata_mut()
            .insert("containerd-namespace", ns.parse().unwrap());
        if let Some(l) = &lease {
            req.metadata_mut()
                .insert("containerd-lease", l.parse().unwrap());
        }
        Ok(req)
    });
    MountsClient::with_interceptor(channel, f)
}

fn mount(kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        r#type: kind.into(),
        source: source.into(),
        target: String::new(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// A directory made by `mkdir/` and bound, then a bind of that mount left to the caller.
fn chained(src: &Path) -> Vec<Mount> {
    let mkdir = format!("X-containerd.mkdir.path={}:0755", src.display());
    vec![
        mount("mkdir/bind", &src.display().to_string(), &["rbind", &mkdir]),
        mount("format/bind", "{{ mount 0 }}", &["rbind"]),
    ]
}

async fn activate(mm: &mut Mm, name: &str, mounts: Vec<Mount>) -> Result<ActivationInfo, Status> {
    let r = mm
        .activate(ActivateRequest {
            name: name.into(),
            mounts,
            labels: HashMap::from([("k".to_string(), "v".to_string())]),
            temporary: false,
        })
        .await?;
    Ok(r.into_inner().info.unwrap())
}

async fn list(mm: &mut Mm, filters: &[&str]) -> Vec<ActivationInfo> {
    let mut s = mm
        .list(ListRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = vec![];
    while let Some(m) = s.next().await {
        out.push(m.unwrap().info.unwrap());
    }
    out
}

async fn info(mm: &mut Mm, name: &str) -> Result<ActivationInfo, Status> {
    let r = mm.info(InfoRequest { name: name.into() }).await?;
    Ok(r.into_inner().info.unwrap())
}

#[tokio::test]
async fn activations_are_performed_recorded_and_undone() {
    let d = Daemon::start().unwrap();
    let mut mm = manager(&d, "default", None).await;
    assert!(
        list(&mut mm, &[]).await.is_empty(),
        "a fresh daemon has none"
    );

    // Nothing for the manager to do: the caller mounts it itself.
    let plain = activate(&mut mm, "plain", vec![mount("bind", "/tmp", &["rbind"])]).await;
    assert_eq!(plain.unwrap_err().code(), Code::Unimplemented);

    let src = d.root().join("mm-src");
    let a = activate(&mut mm, "one", chained(&src)).await.unwrap();
    assert_eq!(a.name, "one");
    assert_eq!(a.active.len(), 1, "{a:?}");
    let active = &a.active[0];
    let m = active.mount.as_ref().unwrap();
    assert_eq!(
        (m.r#type.as_str(), m.options.clone()),
        ("bind", vec!["rbind".to_string()])
    );
    let mp = Path::new(&active.mount_point);
    assert!(mp.starts_with(d.state().join("mounts")), "{mp:?}");
    assert!(
        mount_points_under(mp).contains(&mp.to_path_buf()),
        "really mounted"
    );
    std::fs::write(src.join("f"), "through").unwrap();
    assert_eq!(std::fs::read_to_string(mp.join("f")).unwrap(), "through");
    assert_eq!(a.system.len(), 1);
    assert_eq!(a.system[0].r#type, "bind");
    assert_eq!(a.system[0].source, active.mount_point, "template filled");
    assert_eq!(a.labels.get("k").map(String::as_str), Some("v"));

    // Names are unique per namespace.
    let again = activate(&mut mm, "one", chained(&src)).await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    let mut other = manager(&d, "other", None).await;
    assert!(list(&mut other, &[]).await.is_empty());
    let o = activate(&mut other, "one", chained(&src)).await.unwrap();
    assert_ne!(o.active[0].mount_point, active.mount_point);

    assert_eq!(info(&mut mm, "one").await.unwrap(), a);
    assert_eq!(list(&mut mm, &[]).await, vec![a.clone()]);
    assert_eq!(list(&mut mm, &["labels.k==v"]).await.len(), 1);
    assert!(list(&mut mm, &["labels.k==w"]).await.is_empty());
    assert!(list(&mut mm, &["name==two"]).await.is_empty());

    let mut change = a.clone();
    change.labels = HashMap::from([("x".to_string(), "y".to_string())]);
    let updated = mm
        .update(UpdateRequest {
            info: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.x".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(updated.labels.len(), 2, "{:?}", updated.labels);
    assert_eq!(info(&mut mm, "one").await.unwrap().labels, updated.labels);
    // Only labels change, and only within their limits; a refused update changes nothing.
    let mut hostile = a.clone();
    hostile.name = "one".into();
    hostile.labels = HashMap::from([("big".to_string(), "v".repeat(5000))]);
    for paths in [
        vec!["active"],
        vec!["name"],
        vec!["labels.big"],
        vec!["labels"],
    ] {
        let refused = mm
            .update(UpdateRequest {
                info: Some(hostile.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{paths:?}: {refused:?}"
        );
    }
    assert_eq!(info(&mut mm, "one").await.unwrap().labels, updated.labels);

    mm.deactivate(DeactivateRequest { name: "one".into() })
        .await
        .unwrap();
    assert!(
        !mount_points_under(mp).contains(&mp.to_path_buf()),
        "unmounted"
    );
    assert!(!mp.exists(), "its directory goes too");
    assert_eq!(
        info(&mut mm, "one").await.unwrap_err().code(),
        Code::NotFound
    );
    let twice = mm
        .deactivate(DeactivateRequest { name: "one".into() })
        .await;
    assert_eq!(twice.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        list(&mut other, &[]).await.len(),
        1,
        "the other namespace's stays"
    );
    // A namespace with an activation is not empty: deleting it would orphan the mount.
    let c = d.client().await.unwrap();
    let del = || {
        let mut ns = c.namespaces();
        async move {
            ns.delete(berth_client::proto::namespaces::DeleteNamespaceRequest {
                name: "other".into(),
            })
            .await
        }
    };
    c.namespaces()
        .create(berth_client::proto::namespaces::CreateNamespaceRequest {
            namespace: Some(berth_client::proto::namespaces::Namespace {
                name: "other".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let held = del().await.unwrap_err();
    assert_eq!(held.code(), Code::FailedPrecondition, "{held:?}");
    assert!(held.message().contains("mount activations"), "{held:?}");
    other
        .deactivate(DeactivateRequest { name: "one".into() })
        .await
        .unwrap();
    assert!(mount_points_under(&d.state().join("mounts")).is_empty());
    del().await.unwrap();
}

#[tokio::test]
async fn bad_activations_are_refused_and_leave_nothing() {
    let d = Daemon::start().unwrap();
    let mut mm = manager(&d, "default", None).await;
    let src = d.root().join("mm-bad");
    let unnamed = activate(&mut mm, "", chained(&src)).await;
    assert_eq!(unnamed.unwrap_err().code(), Code::InvalidArgument);

    let mut beyond = chained(&src);
    beyond[1].source = "{{ mount 3 }}".into();
    let e = activate(&mut mm, "beyond", beyond).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("out of bounds"), "{e:?}");

    let outside = vec![
        mount(
            "mkdir/bind",
            "/etc",
            &["rbind", "X-containerd.mkdir.path=/etc/berth-mm-nope"],
        ),
        mount("format/bind", "{{ mount 0 }}", &[]),
    ];
    let e = activate(&mut mm, "outside", outside).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!Path::new("/etc/berth-mm-nope").exists());

    assert!(list(&mut mm, &[]).await.is_empty(), "no record stays");
    let mounts = d.state().join("mounts");
    assert!(
        mount_points_under(&mounts).is_empty(),
        "nothing stays mounted"
    );
    assert_eq!(
        std::fs::read_dir(&mounts).unwrap().count(),
        0,
        "no directory stays"
    );
}

#[tokio::test]
async fn a_lease_holds_its_activations() {
    let d = Daemon::start().unwrap();
    let c = d.client().await.unwrap();
    let lease = c
        .leases()
        .create(CreateRequest {
            id: "mm-lease".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    let mut leased = manager(&d, "default", Some(&lease.id)).await;
    let a = activate(&mut leased, "held", chained(&d.root().join("mm-held")))
        .await
        .unwrap();
    let mp = Path::new(&a.active[0].mount_point).to_path_buf();
    let mut mm = manager(&d, "default", None).await;
    assert!(info(&mut mm, "held").await.is_ok());

    let mut gone = manager(&d, "default", Some("no-such-lease")).await;
    let e = activate(&mut gone, "x", chained(&d.root().join("mm-x"))).await;
    assert_eq!(e.unwrap_err().code(), Code::NotFound);

    c.leases()
        .delete(DeleteRequest {
            id: lease.id.clone(),
            sync: true,
        })
        .await
        .unwrap();
    assert_eq!(
        info(&mut mm, "held").await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(
        !mount_points_under(&mp).contains(&mp),
        "unmounted with its lease"
    );
    assert!(list(&mut mm, &[]).await.is_empty());
}

#[tokio::test]
async fn a_crash_keeps_activations_and_undoes_strays() {
    let mut d = Daemon::start().unwrap();
    let mut mm = manager(&d, "default", None).await;
    let a = activate(&mut mm, "kept", chained(&d.root().join("mm-kept")))
        .await
        .unwrap();
    let kept = Path::new(&a.active[0].mount_point).to_path_buf();
    // What a crash mid-activation leaves: a mount under a directory no record names.
    let stray = d.state().join("mounts").join("stray");
    let stray_mp = stray.join("0001");
    std::fs::create_dir_all(&stray_mp).unwrap();
    let src = std::ffi::CString::new(d.root().to_str().unwrap()).unwrap();
    let dst = std::ffi::CString::new(stray_mp.to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated paths living across the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());

    d.restart().unwrap();
    let mut mm = manager(&d, "default", None).await;
    assert_eq!(info(&mut mm, "kept").await.unwrap(), a, "the record stays");
    assert!(mount_points_under(&kept).contains(&kept), "its mount stays");
    assert!(
        mount_points_under(&stray).is_empty(),
        "the stray is unmounted"
    );
    assert!(!stray.exists(), "and removed");
    mm.deactivate(DeactivateRequest {
        name: "kept".into(),
    })
    .await
    .unwrap();
    assert!(mount_points_under(&d.state().join("mounts")).is_empty());
}
