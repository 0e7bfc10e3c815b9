//! `[metrics] address`: an HTTP endpoint serving Prometheus text at `/metrics` — every
//! running container's cgroup figures (as containerd's task metrics: cpu, memory, pids, io,
//! OOM events), the content store's size, and the counters of [`crate::core::metrics`].

use crate::core::context::Namespace;
use crate::core::metadata::MetadataStore;
use crate::core::metrics::{escape, header, registry};
use crate::core::runtime::Tasks;
use crate::edge::http1;
use std::fmt::Write;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub store: MetadataStore,
    pub tasks: Tasks,
}

/// Longest a request may take to arrive; a scraper that dawdles is dropped.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `/metrics` on `address` (host:port) until the process ends.
pub async fn serve(
    address: &str,
    sources: Sources,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address, "metrics endpoint listening");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT, answer(conn, sources)).await;
            });
        }
    }))
}

/// Longest request head accepted: a scrape has no body, and a few headers.
const MAX_HEAD: usize = 8 << 10;

async fn answer(mut conn: tokio::net::TcpStream, sources: Sources) -> std::io::Result<()> {
    let (head, _) = http1::read_head(&mut conn, MAX_HEAD).await?;
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let body = scrape(&sources).await;
            http1::respond(
                &mut conn,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", _) => {
            http1::respond(
                &mut conn,
                "404 Not Found",
                "text/plain",
                "not found: try /metrics\n",
            )
            .await
        }
        _ => {
            http1::respond(
                &mut conn,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await
        }
    }
}

/// One container's figures, each as (metric, value); what its cgroup version lacks is left out.
fn container_figures(
    data: &crate::core::metadata::containers::AnyValue,
) -> Vec<(&'static str, f64)> {
    let Some(f) = crate::edge::shim::cgroup_figures(data) else {
        return vec![];
    };
    let secs = |ns: u64| ns as f64 / 1e9;
    let always = [
        ("container_cpu_usage_seconds_total", secs(f.cpu_ns)),
        ("container_cpu_user_seconds_total", secs(f.cpu_user_ns)),
        ("container_cpu_system_seconds_total", secs(f.cpu_system_ns)),
        ("container_memory_usage_bytes", f.memory_usage as f64),
        ("container_memory_limit_bytes", f.memory_limit as f64),
        ("container_memory_oom_kills_total", f.oom_kills as f64),
        ("container_pids_current", f.pids as f64),
        ("container_pids_limit", f.pids_limit as f64),
    ];
    let some = [
        (
            "container_cpu_throttled_periods_total",
            f.cpu_throttled_periods,
        ),
        ("container_memory_anon_bytes", f.memory_anon),
        ("container_memory_file_bytes", f.memory_file),
        ("container_memory_oom_events_total", f.oom_events),
        ("container_io_read_bytes_total", f.io_read_bytes),
        ("container_io_write_bytes_total", f.io_write_bytes),
    ];
    always
        .into_iter()
        .chain(
            some.into_iter()
                .filter_map(|(m, v)| v.map(|v| (m, v as f64))),
        )
        .collect()
}

/// Kind of each container metric, for its TYPE line.
fn kind(metric: &str) -> &'static str {
    if metric.ends_with("_total") {
        "counter"
    } else {
        "gauge"
    }
}

pub async fn scrape(s: &Sources) -> String {
    let mut out = String::new();
    container_metrics(s, &mut out).await;
    let (blobs, bytes) = content_totals(s).await;
    header(
        &mut out,
        "berth_content_blobs",
        "gauge",
        "Distinct blobs in the content store",
    );
    let _ = writeln!(out, "berth_content_blobs {blobs}");
    header(
        &mut out,
        "berth_content_bytes",
        "gauge",
        "Bytes in the content store",
    );
    let _ = writeln!(out, "berth_content_bytes {bytes}");
    header(
        &mut out,
        "berth_build_info",
        "gauge",
        "Always 1; the version is a label",
    );
    let _ = writeln!(
        out,
        "berth_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    registry().render(&mut out);
    out
}

/// The running-container count and each running container's cgroup figures, every shim
/// asked at once; each metric's samples under one TYPE line.
async fn container_metrics(s: &Sources, out: &mut String) {
    let namespaces: Vec<String> = s
        .store
        .namespace_list()
        .map(|l| l.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let mut by_metric: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    let mut running = 0u64;
    let mut asks = vec![];
    for name in &namespaces {
        let Ok(ns) = Namespace::parse(name) else {
            continue;
        };
        for id in s.tasks.running(&ns) {
            let (tasks, ns, name) = (s.tasks.clone(), ns.clone(), name.clone());
            asks.push(async move { (name, id.clone(), tasks.stats(ns, id).await) });
        }
    }
    for (name, id, stats) in futures::future::join_all(asks).await {
        let Ok(Some(data)) = stats else {
            continue;
        };
        running += 1;
        for (metric, v) in container_figures(&data) {
            by_metric.entry(metric).or_default().push(format!(
                "{metric}{{namespace=\"{}\",id=\"{}\"}} {v}",
                escape(&name),
                escape(&id)
            ));
        }
    }
    header(
        out,
        "berth_containers_running",
        "gauge",
        "Containers whose task berthd holds",
    );
    let _ = writeln!(out, "berth_containers_running {running}");
    for (metric, lines) in by_metric {
        header(
            out,
            metric,
            kind(metric),
            "Per container, from its cgroup (as containerd's task metrics)",
        );
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
}

/// Distinct blobs in the content store, and their bytes.
async fn content_totals(s: &Sources) -> (u64, u64) {
    let store = s.store.clone();
    crate::core::error::blocking(move || {
        let mut seen = std::collections::HashMap::new();
        for (name, _) in store.namespace_list()? {
            let Ok(ns) = Namespace::parse(&name) else {
                continue;
            };
            for b in store.blob_list(&ns)? {
                seen.insert(b.digest, b.size.max(0) as u64);
            }
        }
        Ok((seen.len() as u64, seen.values().sum::<u64>()))
    })
    .await
    .unwrap_or((0, 0))
}
