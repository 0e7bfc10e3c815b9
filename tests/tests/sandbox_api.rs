//! containerd 2.x's Sandbox API (`containerd.services.sandbox.v1`): the Store keeps
//! namespaced sandbox records with containerd's errors, and shows the CRI's pods as
//! sandboxes (sandboxer "podsandbox") that the Controller reports on, stops and removes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::containerd::services::sandbox::v1 as sb;
use berth_proto::cri::v1 as cri;
use berth_proto::types::{sandbox::Runtime, Sandbox};
use berth_tests::Daemon;
use sb::controller_client::ControllerClient;
use sb::store_client::StoreClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

mod cri_kit;
use cri_kit::*;

type Intercept = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
type Svc = InterceptedService<Channel, Intercept>;

fn with_ns(ns: &str) -> Intercept {
    let ns = ns.to_string();
    Box::new(move |mut req: Request<()>| {
        req.metadata_mut()
            .insert("containerd-namespace", ns.parse().unwrap());
        Ok(req)
    })
}

async fn store(channel: Channel, ns: &str) -> StoreClient<Svc> {
    StoreClient::with_interceptor(channel, with_ns(ns))
}

async fn controller(channel: Channel, ns: &str) -> ControllerClient<Svc> {
    ControllerClient::with_interceptor(channel, with_ns(ns))
}

fn sandbox(id: &str, labels: &[(&str, &str)]) -> Sandbox {
    Sandbox {
        sandbox_id: id.into(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{}".to_vec(),
        }),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        sandboxer: "shim".into(),
        ..Default::default()
    }
}

async fn ids(s: &mut StoreClient<Svc>, filters: &[&str]) -> Vec<String> {
    let list = s
        .list(sb::StoreListRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .list;
    list.into_iter().map(|s| s.sandbox_id).collect()
}

/// `ctr -n k8s.io <args>` of containerd 2.x against the kit's berthd, when this machine has
/// that ctr (BERTH_TEST_CONTAINERD2, or ../shared/containerd-suite's build); its output.
fn ctr2(k: &Kit, args: &[&str]) -> Option<String> {
    let bin = std::env::var_os("BERTH_TEST_CONTAINERD2")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/tmp/containerd-suite/bin".into())
        .join("ctr");
    if !bin.is_file() {
        eprintln!("skipped the ctr check: no containerd 2.x ctr (set BERTH_TEST_CONTAINERD2)");
        return None;
    }
    let out = std::process::Command::new(bin)
        .arg("--address")
        .arg(k.d.socket())
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctr {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!errors.contains("level=error"), "ctr {args:?}: {errors}");
    eprintln!("ctr {args:?}:\n{text}");
    Some(text)
}

#[tokio::test]
async fn store_crud_and_errors() {
    let d = Daemon::start().unwrap();
    let channel = d.client().await.unwrap().channel();
    let mut s = store(channel.clone(), "sbx").await;
    let made = s
        .create(sb::StoreCreateRequest {
            sandbox: Some(sandbox("one", &[("team", "a")])),
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    assert!(made.created_at.is_some() && made.created_at == made.updated_at);
    assert_eq!(made.sandboxer, "shim");
    let again = s
        .create(sb::StoreCreateRequest {
            sandbox: Some(sandbox("one", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    let empty = s
        .create(sb::StoreCreateRequest {
            sandbox: Some(sandbox("", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    s.create(sb::StoreCreateRequest {
        sandbox: Some(sandbox("two", &[("team", "b")])),
    })
    .await
    .unwrap();

    assert_eq!(ids(&mut s, &[]).await, ["one", "two"]);
    assert_eq!(ids(&mut s, &["labels.team==b"]).await, ["two"]);
    assert_eq!(ids(&mut s, &["id==one"]).await, ["one"]);
    let bad = s
        .list(sb::StoreListRequest {
            filters: vec!["labels.==".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    // Another namespace sees none of them.
    let mut other = store(channel.clone(), "elsewhere").await;
    assert!(ids(&mut other, &[]).await.is_empty());
    let missing = other
        .get(sb::StoreGetRequest {
            sandbox_id: "one".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let got = s
        .get(sb::StoreGetRequest {
            sandbox_id: "one".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    assert_eq!(got.runtime.unwrap().name, "io.containerd.runc.v2");
    assert_eq!(got.spec.unwrap().value, b"{}");

    let updated = s
        .update(sb::StoreUpdateRequest {
            sandbox: Some(sandbox("one", &[("extra", "x")])),
            fields: vec!["labels.extra".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    assert_eq!(updated.labels.get("extra").map(String::as_str), Some("x"));
    assert_eq!(updated.labels.get("team").map(String::as_str), Some("a"));
    assert!(updated.updated_at.unwrap().seconds >= made.created_at.unwrap().seconds);
    let mut renamed = sandbox("one", &[]);
    renamed.runtime.as_mut().unwrap().name = "other".into();
    let immutable = s
        .update(sb::StoreUpdateRequest {
            sandbox: Some(renamed),
            fields: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(immutable.code(), Code::InvalidArgument, "{immutable:?}");
    let not_there = s
        .update(sb::StoreUpdateRequest {
            sandbox: Some(sandbox("nope", &[])),
            fields: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(not_there.code(), Code::NotFound, "{not_there:?}");

    s.delete(sb::StoreDeleteRequest {
        sandbox_id: "one".into(),
    })
    .await
    .unwrap();
    let gone = s
        .delete(sb::StoreDeleteRequest {
            sandbox_id: "one".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert_eq!(ids(&mut s, &[]).await, ["two"]);

    // A namespace holding a sandbox record is not empty.
    let cl = d.client().await.unwrap();
    let _ = cl
        .namespaces()
        .create(berth_client::proto::namespaces::CreateNamespaceRequest {
            namespace: Some(berth_client::proto::namespaces::Namespace {
                name: "sbx".into(),
                ..Default::default()
            }),
        })
        .await;
    let held = cl
        .namespaces()
        .delete(berth_client::proto::namespaces::DeleteNamespaceRequest { name: "sbx".into() })
        .await
        .unwrap_err();
    assert_eq!(held.code(), Code::FailedPrecondition, "{held:?}");
    assert!(held.message().contains("sandboxes"), "{held:?}");

    // Records last across a restart.
    let mut d = d;
    d.restart().unwrap();
    let mut s = store(d.client().await.unwrap().channel(), "sbx").await;
    assert_eq!(ids(&mut s, &[]).await, ["two"]);

    // The controller answers only for the CRI's pods.
    let mut c = controller(d.client().await.unwrap().channel(), "sbx").await;
    let no_pod = c
        .status(sb::ControllerStatusRequest {
            sandbox_id: "two".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_pod.code(), Code::NotFound, "{no_pod:?}");
}

#[tokio::test]
async fn cri_pods_are_sandboxes() {
    let k = Kit::start();
    let (id, _) = run_pod(&k, "sbxpod").await;
    let mut s = store(k.channel().await, "k8s.io").await;
    let got = s
        .get(sb::StoreGetRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    assert_eq!(got.sandboxer, "podsandbox");
    assert_eq!(got.labels.get("app").map(String::as_str), Some("sbxpod"));
    assert!(got.created_at.unwrap().seconds > 0);
    assert_eq!(ids(&mut s, &["labels.app==sbxpod"]).await, vec![id.clone()]);
    assert!(ids(&mut s, &["labels.app==other"]).await.is_empty());
    if let Some(out) = ctr2(&k, &["sandboxes", "ls"]) {
        let line = out
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("containerd 2.x's ctr does not list the pod {id}:\n{out}"));
        assert!(out.starts_with("ID "), "{out}");
        assert!(
            line.trim_end().ends_with(&got.runtime.unwrap().name),
            "{line}"
        );
    }
    // The CRI owns the record.
    let refused = s
        .delete(sb::StoreDeleteRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // Not in another namespace.
    let mut default = store(k.channel().await, "default").await;
    assert!(!ids(&mut default, &[]).await.contains(&id));

    let mut c = controller(k.channel().await, "k8s.io").await;
    let st = c
        .status(sb::ControllerStatusRequest {
            sandbox_id: id.clone(),
            verbose: true,
            sandboxer: "podsandbox".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, "SANDBOX_READY");
    assert!(st.pid > 0);
    assert!(st.info.get("name").unwrap().starts_with("sbxpod_"));
    let platform = c
        .platform(sb::ControllerPlatformRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .platform
        .unwrap();
    assert_eq!(platform.os, "linux");
    let other_ctl = c
        .status(sb::ControllerStatusRequest {
            sandbox_id: id.clone(),
            verbose: false,
            sandboxer: "shim".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other_ctl.code(), Code::NotFound, "{other_ctl:?}");
    let create = c
        .create(sb::ControllerCreateRequest {
            sandbox_id: "new".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::Unimplemented, "{create:?}");

    // Wait answers when Stop ends the pause process.
    let mut waiter = controller(k.channel().await, "k8s.io").await;
    let wid = id.clone();
    let wait = tokio::spawn(async move {
        waiter
            .wait(sb::ControllerWaitRequest {
                sandbox_id: wid,
                ..Default::default()
            })
            .await
    });
    c.stop(sb::ControllerStopRequest {
        sandbox_id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let st = pod_status(&k, &id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    let waited = wait.await.unwrap();
    match waited {
        Ok(w) => assert!(w.into_inner().exited_at.is_some()),
        // The Wait arrived after the pause process was gone: said, not invented.
        Err(e) => assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}"),
    }
    let st = c
        .status(sb::ControllerStatusRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, "SANDBOX_NOTREADY");

    // Shutdown removes the pod, and with it the sandbox.
    c.shutdown(sb::ControllerShutdownRequest {
        sandbox_id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let gone = s
        .get(sb::StoreGetRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    // containerd 2.x's `ctr sandboxes rm` (Stop, Shutdown, then the store's Delete) removes
    // a pod as RemovePodSandbox would.
    let (other, _) = run_pod(&k, "sbxrm").await;
    if ctr2(&k, &["sandboxes", "rm", &other]).is_some() {
        let left = ctr2(&k, &["sandboxes", "ls"]).unwrap();
        assert!(!left.contains(&other), "{left}");
        let gone = s
            .get(sb::StoreGetRequest {
                sandbox_id: other.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    }
    let listed = k
        .rt()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.iter().all(|p| p.id != id));
    if ctr2(&k, &["version"]).is_some() {
        assert!(listed.iter().all(|p| p.id != other));
    }
}
