//! One pod lifecycle, each RPC timed on its own: RunPodSandbox, CreateContainer, StartContainer,
//! Exec (URL, then URL and stream), ExecSync, StopContainer, StopPodSandbox, RemovePodSandbox;
//! Version a few times first as the floor.

use crate::exec_stream;
use crate::Samples;
use anyhow::Context;
use berth_proto::cri::v1 as cri;
use cri::runtime_service_client::RuntimeServiceClient;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Version calls per round: the floor's samples.
const VERSION_CALLS: usize = 5;
/// No single step of a lifecycle should take this long; a hung runtime fails the bench.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Bench {
    rt: RuntimeServiceClient<Channel>,
    image: String,
    log_dir: PathBuf,
}

/// Runs `f`, records its wall time under `step`, and hands back its result.
async fn timed<T, E, F>(samples: &mut Samples, step: &'static str, f: F) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
    F: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let out = tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .with_context(|| format!("{step} took over {STEP_TIMEOUT:?}"))?
        .map_err(Into::into)
        .with_context(|| format!("{step} failed"))?;
    samples
        .entry(step)
        .or_default()
        .push(start.elapsed().as_secs_f64());
    Ok(out)
}

impl Bench {
    pub fn new(rt: RuntimeServiceClient<Channel>, image: String, log_dir: PathBuf) -> Bench {
        Bench { rt, image, log_dir }
    }

    fn pod_config(&self, round: u32) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("bench-{round}"),
                uid: format!("bench-{round}-{}", std::process::id()),
                namespace: "default".into(),
                attempt: 1,
            }),
            log_directory: self
                .log_dir
                .join(format!("logs-{round}"))
                .display()
                .to_string(),
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    fn container_config(&self) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: ["sh", "-c", "trap \"exit 0\" TERM; sleep 3600 & wait"]
                .map(String::from)
                .to_vec(),
            log_path: "c.log".into(),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// One lifecycle. On a failure after the pod started, the pod is stopped and removed
    /// (untimed) before the error goes up.
    pub async fn round(&mut self, round: u32, samples: &mut Samples) -> anyhow::Result<()> {
        let mut rt = self.rt.clone();
        for _ in 0..VERSION_CALLS {
            let req = cri::VersionRequest {
                version: "v1".into(),
            };
            timed(samples, "version", rt.version(req)).await?;
        }
        let pod_config = self.pod_config(round);
        let req = cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        };
        let pod = timed(samples, "runp", rt.run_pod_sandbox(req))
            .await?
            .into_inner()
            .pod_sandbox_id;
        let result = self.in_pod(&pod, pod_config, samples).await;
        if result.is_err() {
            let _ = self.remove_pod(&pod, &mut Samples::new()).await;
        }
        result
    }

    async fn in_pod(
        &mut self,
        pod: &str,
        pod_config: cri::PodSandboxConfig,
        samples: &mut Samples,
    ) -> anyhow::Result<()> {
        let mut rt = self.rt.clone();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(self.container_config()),
            sandbox_config: Some(pod_config),
        };
        let cid = timed(samples, "create", rt.create_container(req))
            .await?
            .into_inner()
            .container_id;
        let req = cri::StartContainerRequest {
            container_id: cid.clone(),
        };
        timed(samples, "start", rt.start_container(req)).await?;
        self.exec(&cid, samples).await?;
        let req = cri::StopContainerRequest {
            container_id: cid,
            timeout: 10,
        };
        timed(samples, "stop", rt.stop_container(req)).await?;
        self.remove_pod(pod, samples).await
    }

    /// Exec's URL alone, then URL and stream together, then ExecSync; each checks `hi`.
    async fn exec(&mut self, cid: &str, samples: &mut Samples) -> anyhow::Result<()> {
        let echo = ["echo", "hi"].map(String::from).to_vec();
        let req = cri::ExecRequest {
            container_id: cid.into(),
            cmd: echo.clone(),
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut rt = self.rt.clone();
        timed(samples, "exec-url", rt.exec(req.clone())).await?;
        let out = timed(samples, "exec", async {
            let url = rt.exec(req).await?.into_inner().url;
            exec_stream::run(&url).await
        })
        .await?;
        anyhow::ensure!(
            out == b"hi\n",
            "exec printed {:?}, not \"hi\\n\"",
            String::from_utf8_lossy(&out)
        );
        let req = cri::ExecSyncRequest {
            container_id: cid.into(),
            cmd: echo,
            timeout: 10,
        };
        let r = timed(samples, "exec-sync", rt.exec_sync(req))
            .await?
            .into_inner();
        anyhow::ensure!(
            r.exit_code == 0 && r.stdout == b"hi\n",
            "exec -s: exit {} and stdout {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout)
        );
        Ok(())
    }

    async fn remove_pod(&mut self, pod: &str, samples: &mut Samples) -> anyhow::Result<()> {
        let mut rt = self.rt.clone();
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        timed(samples, "stopp", rt.stop_pod_sandbox(req)).await?;
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        timed(samples, "rmp", rt.remove_pod_sandbox(req)).await?;
        Ok(())
    }
}
