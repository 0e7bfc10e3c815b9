//! berthd's gRPC servers: every service of a [`Daemon`], or only the CRI's, behind the same
//! response mapping and metrics.

use super::{Daemon, MAX_MESSAGE_SIZE};
use crate::core::error::Result;
use crate::edge::grpc;

type ResponseMap = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;

/// The gRPC server berthd serves: every service, behind the response mapping of
/// [`grpc::too_large_is_resource_exhausted`].
pub type GrpcRouter = tonic::transport::server::Router<GrpcLayers>;

/// What every berthd gRPC server puts before its services: see [`mapped`].
type GrpcLayers = tower::layer::util::Stack<
    crate::core::metrics::RpcMetricsLayer,
    tower::layer::util::Stack<
        tower::util::MapResponseLayer<ResponseMap>,
        tower::layer::util::Identity,
    >,
>;

/// `builder` with the response mapping of [`grpc::too_large_is_resource_exhausted`] and the
/// RPC metrics.
fn mapped(builder: tonic::transport::Server) -> tonic::transport::Server<GrpcLayers> {
    builder
        .layer(tower::util::MapResponseLayer::new(
            grpc::too_large_is_resource_exhausted as ResponseMap,
        ))
        .layer(crate::core::metrics::RpcMetricsLayer)
}

/// A generated gRPC service taking and sending messages up to [`MAX_MESSAGE_SIZE`].
macro_rules! sized {
    ($svc:expr) => {
        $svc.max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    };
}

impl Daemon {
    /// The gRPC router with every service of this daemon.
    pub fn router(&self) -> Result<GrpcRouter> {
        use berth_proto::events::events_server::EventsServer;
        crate::core::restart::Supervisor::new(
            self.tasks.clone(),
            self.containers.clone(),
            self.snapshots.clone(),
            self.events.clone(),
        )
        .spawn();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        drop(health_reporter); // overall status "" is SERVING by default
        let builder = tonic::transport::Server::builder().trace_fn(|req| {
            let ns = req
                .headers()
                .get(grpc::NAMESPACE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            tracing::info_span!("rpc", method = %req.uri().path(), namespace = %ns)
        });
        let router = self.with_store_services(mapped(builder).add_service(health));
        let router = self.with_berth_services(self.with_transfer_services(router));
        Ok(router
            .add_service(sized!(EventsServer::new(grpc::events::EventsService {
                exchange: self.events.clone(),
            })))
            .add_optional_service(self.cri.clone().map(|c| {
                sized!(
                    berth_proto::cri::v1::runtime_service_server::RuntimeServiceServer::new(
                        crate::edge::cri::server::CriService { cri: c }
                    )
                )
            }))
            .add_optional_service(self.cri.clone().map(|c| {
                sized!(
                    berth_proto::cri::v1::image_service_server::ImageServiceServer::new(
                        crate::edge::cri::server::CriService { cri: c }
                    )
                )
            })))
    }

    /// containerd's services over the stores and the runtime, with version and introspection.
    fn with_store_services(&self, router: GrpcRouter) -> GrpcRouter {
        use berth_proto::{
            content::content_server::ContentServer, diff::diff_server::DiffServer,
            images::images_server::ImagesServer,
            introspection::introspection_server::IntrospectionServer,
            leases::leases_server::LeasesServer, namespaces::namespaces_server::NamespacesServer,
            snapshots::snapshots_server::SnapshotsServer, version::version_server::VersionServer,
        };
        router
            .add_service(sized!(VersionServer::new(grpc::version::VersionService {
                version: self.version.version.clone(),
                revision: self.version.revision.clone(),
            })))
            .add_service(sized!(IntrospectionServer::new(
                grpc::introspection::IntrospectionService {
                    plugins: self.plugins.clone(),
                    uuid: self.uuid.clone(),
                }
            )))
            .add_service(sized!(NamespacesServer::new(
                grpc::namespaces::NamespacesService {
                    core: self.namespaces.clone(),
                }
            )))
            .add_service(sized!(ImagesServer::new(grpc::images::ImagesService {
                core: self.images.clone(),
            })))
            .add_service(sized!(ContentServer::new(grpc::content::ContentService {
                core: self.content.clone(),
            })))
            .add_service(sized!(LeasesServer::new(grpc::leases::LeasesService {
                core: self.leases.clone(),
            })))
            .add_service(sized!(
                berth_proto::containers::containers_server::ContainersServer::new(
                    grpc::containers::ContainersService {
                        core: self.containers.clone(),
                    }
                )
            ))
            .add_service(sized!(berth_proto::tasks::tasks_server::TasksServer::new(
                grpc::tasks::TasksService {
                    core: self.tasks.clone(),
                    checkpoints: crate::core::checkpoint::Checkpoints {
                        tasks: self.tasks.clone(),
                        content: self.content.clone(),
                        store: self.store.clone(),
                    },
                }
            )))
            .add_service(sized!(SnapshotsServer::new(
                grpc::snapshots::SnapshotsService {
                    core: self.snapshots.clone(),
                }
            )))
            .add_service(sized!(DiffServer::new(grpc::diff::DiffService {
                core: self.differ.clone(),
            })))
            .add_optional_service(self.mount_manager().map(|core| {
                sized!(berth_proto::mounts::mounts_server::MountsServer::new(
                    grpc::mounts::MountsService { core }
                ))
            }))
            .add_service(sized!(
                berth_proto::containerd::services::sandbox::v1::store_server::StoreServer::new(
                    grpc::sandbox::SandboxStoreService {
                        core: crate::core::sandboxes::SandboxStore::new(self.store.clone()),
                        cri: self.cri.clone(),
                    }
                )
            ))
            .add_service(sized!(
                berth_proto::containerd::services::sandbox::v1::controller_server::ControllerServer::new(
                    grpc::sandbox::SandboxControllerService {
                        cri: self.cri.clone(),
                    }
                )
            ))
    }

    /// containerd 2.2's Mount Manager over the metadata store, mounting under
    /// `<state>/mounts`; left out (with a warning) when it cannot start.
    fn mount_manager(&self) -> Option<crate::core::mounts::MountManager> {
        let targets = self.runtime.state.join("mounts");
        match crate::core::mounts::MountManager::open(self.store.clone(), targets, &self.root) {
            Ok(mm) => {
                mm.run();
                Some(mm)
            }
            Err(e) => {
                tracing::warn!(error = %e, "mount manager unavailable");
                None
            }
        }
    }

    /// What moves images in and out: unpack, the client streams and transfer.
    fn with_transfer_services(&self, router: GrpcRouter) -> GrpcRouter {
        router
            .add_service(sized!(
                berth_proto::berth::services::unpack::v1::unpack_server::UnpackServer::new(
                    grpc::unpack::UnpackService {
                        core: self.unpacker.clone(),
                    }
                )
            ))
            .add_service(sized!(
                berth_proto::streaming::streaming_server::StreamingServer::new(
                    grpc::streaming::StreamingService {
                        streams: self.streams.clone(),
                    }
                )
            ))
            .add_service(sized!(
                berth_proto::transfer::transfer_server::TransferServer::new(
                    grpc::transfer::TransferService {
                        puller: self.puller.clone(),
                        pusher: self.pusher.clone(),
                        archives: self.archives.clone(),
                        streams: self.streams.clone(),
                    }
                )
            ))
    }

    /// berth's own services: volumes, networks, check and build.
    fn with_berth_services(&self, router: GrpcRouter) -> GrpcRouter {
        router
            .add_service(sized!(
                berth_proto::berth::services::volumes::v1::volumes_server::VolumesServer::new(
                    grpc::volumes::VolumesService {
                        core: self.volumes.clone(),
                    }
                )
            ))
            .add_service(sized!(
                berth_proto::berth::services::networks::v1::networks_server::NetworksServer::new(
                    grpc::networks::NetworksService {
                        core: self.networks.clone(),
                    }
                )
            ))
            .add_service(sized!(
                berth_proto::berth::services::check::v1::check_server::CheckServer::new(
                    grpc::check::CheckService {
                        root: self.root.clone(),
                        state: self.runtime.state.clone(),
                        store: self.store.clone(),
                        snapshots: self.snapshots.clone(),
                    }
                )
            ))
            .add_service(sized!(
                berth_proto::berth::services::build::v1::build_server::BuildServer::new(
                    grpc::build::BuildService {
                        core: self.builder.clone(),
                    }
                )
            ))
    }

    /// A router with only the CRI services (for a separate `--cri-address`).
    pub fn cri_router(&self) -> Option<GrpcRouter> {
        let c = self.cri.clone()?;
        Some(
            mapped(tonic::transport::Server::builder())
                .add_service(sized!(
                    berth_proto::cri::v1::runtime_service_server::RuntimeServiceServer::new(
                        crate::edge::cri::server::CriService { cri: c.clone() }
                    )
                ))
                .add_service(sized!(
                    berth_proto::cri::v1::image_service_server::ImageServiceServer::new(
                        crate::edge::cri::server::CriService { cri: c }
                    )
                )),
        )
    }
}
