//! berth.services.networks.v1.Networks

use super::{labels_in, labels_out, namespace, status, timestamp};
use crate::core::network::{cni, CreateNetwork, NetworkInfo, Networks};
use berth_proto::berth::services::networks::v1::{
    networks_server::Networks as NetworksApi, AddressesRequest, AddressesResponse,
    CreateNetworkRequest, CreateNetworkResponse, Endpoint, GetNetworkRequest, GetNetworkResponse,
    ListNetworksRequest, ListNetworksResponse, Network, NetworkAddresses, PortMapping,
    RemoveNetworkRequest,
};
use tonic::{Request, Response, Status};

pub struct NetworksService {
    pub core: Networks,
}

fn port_out(p: cni::PortMapping) -> PortMapping {
    PortMapping {
        host_port: p.host_port,
        container_port: p.container_port,
        protocol: p.protocol,
        host_ip: p.host_ip,
    }
}

fn network_out(n: NetworkInfo) -> Network {
    let endpoints = n
        .endpoints
        .into_iter()
        .map(|e| Endpoint {
            namespace: e.namespace,
            container_id: e.container_id,
            ifname: e.ifname,
            ips: e.ips,
            ports: e.ports.into_iter().map(port_out).collect(),
        })
        .collect();
    let file = n.file.to_string_lossy().into_owned();
    match n.definition {
        Some(d) => Network {
            name: n.name,
            subnet: d.subnet.to_string(),
            gateway: d.gateway.to_string(),
            bridge: d.bridge,
            internal: d.internal,
            labels: labels_out(&d.labels),
            created_at: timestamp(d.created * 1_000_000_000),
            file,
            endpoints,
            managed: true,
        },
        None => Network {
            name: n.name,
            file,
            endpoints,
            ..Default::default()
        },
    }
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl NetworksApi for NetworksService {
    async fn create(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        let r = req.into_inner();
        let n = self
            .core
            .create(CreateNetwork {
                name: r.name,
                subnet: nonempty(r.subnet),
                gateway: nonempty(r.gateway),
                internal: r.internal,
                labels: labels_in(r.labels),
            })
            .await
            .map_err(status)?;
        Ok(Response::new(CreateNetworkResponse {
            network: Some(network_out(n)),
        }))
    }

    async fn get(
        &self,
        req: Request<GetNetworkRequest>,
    ) -> Result<Response<GetNetworkResponse>, Status> {
        let n = self
            .core
            .get(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(GetNetworkResponse {
            network: Some(network_out(n)),
        }))
    }

    async fn list(
        &self,
        _req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let all = self.core.list().await.map_err(status)?;
        Ok(Response::new(ListNetworksResponse {
            networks: all.into_iter().map(network_out).collect(),
        }))
    }

    async fn remove(&self, req: Request<RemoveNetworkRequest>) -> Result<Response<()>, Status> {
        self.core
            .remove(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn addresses(
        &self,
        req: Request<AddressesRequest>,
    ) -> Result<Response<AddressesResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let networks = self
            .core
            .addresses(ns.as_str(), &id)
            .await
            .map_err(status)?
            .into_iter()
            .map(|(network, ips)| NetworkAddresses { network, ips })
            .collect();
        Ok(Response::new(AddressesResponse { networks }))
    }
}
