//! `runtime.v1.RuntimeService`: each call's request converted, the adapter core called,
//! its answer converted back.

use super::*;

use crate::edge::cri::metrics;

#[tonic::async_trait]
impl RuntimeService for CriService {
    async fn version(&self, _r: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: self.cri.version.clone(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let r = r.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
        let id = self
            .cri
            .run_sandbox(config, r.runtime_handler)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        self.cri
            .stop_sandbox(&r.into_inner().pod_sandbox_id)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        self.cri
            .remove_sandbox(&r.into_inner().pod_sandbox_id)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let r = r.into_inner();
        let s = self.cri.sandbox(&r.pod_sandbox_id).map_err(status)?;
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "pid": s.meta.pid,
                "netns": s.meta.netns,
                "cniResult": s.meta.cni_result,
                "runtimeHandler": s.meta.runtime_handler,
                "runtimeType": self.cri.pod_handler(&s).runtime_type,
                "snapshotter": self.cri.pod_snapshotter(&s),
            });
            info.insert("info".to_string(), v.to_string());
        }
        let containers = self
            .cri
            .container_list(Some(&cri::ContainerFilter {
                pod_sandbox_id: s.id.clone(),
                ..Default::default()
            }))
            .into_iter()
            .filter_map(|c| self.cri.container(&c.id).ok())
            .map(|c| self.cri.container_status(&c))
            .collect();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(self.cri.sandbox_status(&s)),
            info,
            containers_statuses: containers,
            timestamp: crate::core::metadata::now(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        let f = r.into_inner().filter;
        Ok(Response::new(cri::ListPodSandboxResponse {
            items: self.cri.sandbox_list(f.as_ref()),
        }))
    }

    type StreamPodSandboxesStream = Stream<cri::StreamPodSandboxesResponse>;
    async fn stream_pod_sandboxes(
        &self,
        r: Request<cri::StreamPodSandboxesRequest>,
    ) -> R<Self::StreamPodSandboxesStream> {
        let f = r.into_inner().filter;
        Ok(Response::new(chunked(
            self.cri.sandbox_list(f.as_ref()),
            |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes },
        )))
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let r = r.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?;
        let id = self
            .cri
            .create_container(&r.pod_sandbox_id, config)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        self.cri
            .start_container(&r.into_inner().container_id)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let r = r.into_inner();
        self.cri
            .stop_container(&r.container_id, r.timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        self.cri
            .remove_container(&r.into_inner().container_id)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        let f = r.into_inner().filter;
        Ok(Response::new(cri::ListContainersResponse {
            containers: self.cri.container_list(f.as_ref()),
        }))
    }

    type StreamContainersStream = Stream<cri::StreamContainersResponse>;
    async fn stream_containers(
        &self,
        r: Request<cri::StreamContainersRequest>,
    ) -> R<Self::StreamContainersStream> {
        let f = r.into_inner().filter;
        Ok(Response::new(chunked(
            self.cri.container_list(f.as_ref()),
            |containers| cri::StreamContainersResponse { containers },
        )))
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let r = r.into_inner();
        let c = self.cri.container(&r.container_id).map_err(status)?;
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "pid": c.meta.pid,
                "sandboxID": c.meta.sandbox_id,
                "snapshotKey": c.id,
                "snapshotter": self.cri.container_snapshotter(&c),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(self.cri.container_status(&c)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let r = r.into_inner();
        let linux = r.linux.unwrap_or_default();
        self.cri
            .update_container_resources(&r.container_id, &linux)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        self.cri
            .reopen_log(&r.into_inner().container_id)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let r = r.into_inner();
        let out = self
            .cri
            .exec_sync(&r.container_id, r.cmd, r.timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        let r = r.into_inner();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("Exec needs a command"));
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Status::invalid_argument(
                "Exec needs at least one of stdin, stdout and stderr",
            ));
        }
        let c = self.cri.container(&r.container_id).map_err(status)?;
        if Cri::container_state(&c) != cri::ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let r = cri::ExecRequest {
            container_id: c.id,
            ..r
        };
        let url = self
            .cri
            .stream_url(crate::edge::cri::stream::Pending::Exec(r))
            .map_err(status)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        let r = r.into_inner();
        let c = self.cri.container(&r.container_id).map_err(status)?;
        if Cri::container_state(&c) != cri::ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        if r.tty != c.config.tty {
            return Err(Status::invalid_argument(
                "attach's tty must match the container's",
            ));
        }
        let r = cri::AttachRequest {
            container_id: c.id,
            ..r
        };
        let url = self
            .cri
            .stream_url(crate::edge::cri::stream::Pending::Attach(r))
            .map_err(status)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        let r = r.into_inner();
        let s = self.cri.sandbox(&r.pod_sandbox_id).map_err(status)?;
        let r = cri::PortForwardRequest {
            pod_sandbox_id: s.id,
            ..r
        };
        let url = self
            .cri
            .stream_url(crate::edge::cri::stream::Pending::PortForward(r))
            .map_err(status)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let c = self
            .cri
            .container(&r.into_inner().container_id)
            .map_err(status)?;
        let stats = self.cri.container_stats(&c).await.map_err(status)?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let stats = self.list_stats(r.into_inner().filter).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = Stream<cri::StreamContainerStatsResponse>;
    async fn stream_container_stats(
        &self,
        r: Request<cri::StreamContainerStatsRequest>,
    ) -> R<Self::StreamContainerStatsStream> {
        let stats = self.list_stats(r.into_inner().filter).await?;
        Ok(Response::new(chunked(stats, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        })))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let s = self
            .cri
            .sandbox(&r.into_inner().pod_sandbox_id)
            .map_err(status)?;
        let mut stats = self.cri.sandbox_stats(&s).await.map_err(status)?;
        self.cri.complete_pod_stats(&s, &mut stats).await;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let stats = self.list_pod_stats(r.into_inner().filter).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = Stream<cri::StreamPodSandboxStatsResponse>;
    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> R<Self::StreamPodSandboxStatsStream> {
        let stats = self.list_pod_stats(r.into_inner().filter).await?;
        Ok(Response::new(chunked(stats, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    async fn update_runtime_config(
        &self,
        _r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        // The pod CIDR comes from the CNI configuration; nothing to change here.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let verbose = r.into_inner().verbose;
        let net = crate::core::network::cni::load(&self.cri.cfg.cni_conf_dir);
        let mut conditions = vec![cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            ..Default::default()
        }];
        conditions.push(match &net {
            Ok(_) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                ..Default::default()
            },
            Err(e) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: e.to_string(),
            },
        });
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert(
                "config".to_string(),
                serde_json::to_string(&*self.cri.cfg).unwrap_or_default(),
            );
        }
        let features = cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: crate::edge::cri::spec::kernel_has_mount_setattr(),
            user_namespaces: true,
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .cri
                .cfg
                .handler_names()
                .into_iter()
                .map(|name| cri::RuntimeHandler {
                    name,
                    features: Some(features),
                })
                .collect(),
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        r: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        let r = r.into_inner();
        self.cri
            .checkpoint_container(&r.container_id, &r.location, r.timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::CheckpointContainerResponse {}))
    }

    type GetContainerEventsStream = Stream<cri::ContainerEventResponse>;
    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        let rx = self.cri.subscribe();
        let s = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(futures::StreamExt::map(s, Ok))))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: self.cri.pod_sandbox_metrics().await,
        }))
    }

    type StreamPodSandboxMetricsStream = Stream<cri::StreamPodSandboxMetricsResponse>;
    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> R<Self::StreamPodSandboxMetricsStream> {
        Ok(Response::new(chunked(
            self.cri.pod_sandbox_metrics().await,
            |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }

    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        let driver = if self.cri.cfg.systemd_cgroup() {
            cri::CgroupDriver::Systemd
        } else {
            cri::CgroupDriver::Cgroupfs
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> R<cri::UpdatePodSandboxResourcesResponse> {
        let r = r.into_inner();
        self.cri
            .update_pod_sandbox_resources(&r.pod_sandbox_id, r.overhead, r.resources)
            .await
            .map_err(status)?;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }
}

impl CriService {
    async fn list_stats(
        &self,
        f: Option<cri::ContainerStatsFilter>,
    ) -> Result<Vec<cri::ContainerStats>, Status> {
        let f = f.unwrap_or_default();
        let ids: Vec<String> = self
            .cri
            .container_list(Some(&cri::ContainerFilter {
                id: f.id,
                pod_sandbox_id: f.pod_sandbox_id,
                label_selector: f.label_selector,
                state: None,
            }))
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(c) = self.cri.container(&id) {
                out.push(self.cri.container_stats(&c).await.map_err(status)?);
            }
        }
        Ok(out)
    }

    async fn list_pod_stats(
        &self,
        f: Option<cri::PodSandboxStatsFilter>,
    ) -> Result<Vec<cri::PodSandboxStats>, Status> {
        let f = f.unwrap_or_default();
        let ids: Vec<String> = self
            .cri
            .sandbox_list(Some(&cri::PodSandboxFilter {
                id: f.id,
                state: None,
                label_selector: f.label_selector,
            }))
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(s) = self.cri.sandbox(&id) {
                let mut stats = self.cri.sandbox_stats(&s).await.map_err(status)?;
                self.cri.complete_pod_stats(&s, &mut stats).await;
                out.push(stats);
            }
        }
        Ok(out)
    }
}
