//! berthd's own figures for Prometheus: gRPC requests per method (count, errors, latency to
//! the response headers), pulls and unpacks (count, bytes, seconds), GC runs and what they
//! reclaimed. Counters are process-wide by nature, so they live in one registry the code
//! that counts reaches directly ([`registry`]); per-container cgroup figures and the content
//! store's size are read when scraped (see `berthd`'s metrics endpoint) and rendered here.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];
/// Distinct methods tracked; a client inventing paths cannot grow the table past this.
const MAX_METHODS: usize = 256;

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Rpc {
    latency: Histogram,
    /// By gRPC status code.
    codes: HashMap<String, u64>,
}

#[derive(Default)]
pub struct Registry {
    rpcs: Mutex<HashMap<String, Rpc>>,
    pulls: Mutex<Histogram>,
    pull_bytes: AtomicU64,
    pull_failures: AtomicU64,
    unpacks: Mutex<Histogram>,
    unpacked_layers: AtomicU64,
    unpacked_bytes: AtomicU64,
    gc_runs: AtomicU64,
    gc_reclaimed_bytes: AtomicU64,
    gc_removed_blobs: AtomicU64,
    gc_removed_snapshots: AtomicU64,
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// A label value in the exposition format: backslash, quote and newline escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Registry {
    pub fn rpc_done(&self, method: &str, code: &str, took: Duration) {
        let Ok(mut rpcs) = self.rpcs.lock() else {
            return;
        };
        let key = if rpcs.contains_key(method) || rpcs.len() < MAX_METHODS {
            method
        } else {
            "other"
        };
        let r = rpcs.entry(key.to_string()).or_default();
        r.latency.observe(took);
        *r.codes.entry(code.to_string()).or_default() += 1;
    }

    pub fn pull_done(&self, bytes: u64, took: Duration, ok: bool) {
        if !ok {
            self.pull_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.pull_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut h) = self.pulls.lock() {
            h.observe(took);
        }
    }

    pub fn unpack_done(&self, extracted: usize, bytes: u64, took: Duration) {
        self.unpacked_layers
            .fetch_add(extracted as u64, Ordering::Relaxed);
        self.unpacked_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut h) = self.unpacks.lock() {
            h.observe(took);
        }
    }

    pub fn gc_done(&self, blobs: usize, snapshots: usize, bytes: u64) {
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.gc_removed_blobs
            .fetch_add(blobs as u64, Ordering::Relaxed);
        self.gc_removed_snapshots
            .fetch_add(snapshots as u64, Ordering::Relaxed);
        self.gc_reclaimed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Every figure here in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.render_rpcs(out);
        self.render_images(out);
        self.render_gc(out);
    }

    /// gRPC requests: counts by method and code, and latency by method.
    fn render_rpcs(&self, out: &mut String) {
        header(
            out,
            "berth_grpc_requests_total",
            "counter",
            "gRPC requests answered, by method and status code",
        );
        let rpcs = self.rpcs.lock().map(|r| {
            let mut v: Vec<(String, HashMap<String, u64>, Histogram)> = r
                .iter()
                .map(|(m, r)| (m.clone(), r.codes.clone(), r.latency.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        });
        let rpcs = rpcs.unwrap_or_default();
        for (m, codes, _) in &rpcs {
            let mut codes: Vec<_> = codes.iter().collect();
            codes.sort();
            for (code, n) in codes {
                let _ = writeln!(
                    out,
                    "berth_grpc_requests_total{{method=\"{}\",code=\"{}\"}} {n}",
                    escape(m),
                    escape(code)
                );
            }
        }
        header(
            out,
            "berth_grpc_request_duration_seconds",
            "histogram",
            "Time from a gRPC request to its response headers",
        );
        for (m, _, h) in &rpcs {
            h.render(
                out,
                "berth_grpc_request_duration_seconds",
                &format!("method=\"{}\"", escape(m)),
            );
        }
    }

    /// Pulls and unpacks: durations, bytes and failures.
    fn render_images(&self, out: &mut String) {
        header(
            out,
            "berth_pull_duration_seconds",
            "histogram",
            "Image pulls that succeeded, by duration",
        );
        if let Ok(h) = self.pulls.lock() {
            h.render(out, "berth_pull_duration_seconds", "");
        }
        counter(
            out,
            "berth_pull_bytes_total",
            "Bytes downloaded by pulls",
            self.pull_bytes.load(Ordering::Relaxed),
        );
        counter(
            out,
            "berth_pull_failures_total",
            "Image pulls that failed",
            self.pull_failures.load(Ordering::Relaxed),
        );
        header(
            out,
            "berth_unpack_duration_seconds",
            "histogram",
            "Image unpacks, by duration",
        );
        if let Ok(h) = self.unpacks.lock() {
            h.render(out, "berth_unpack_duration_seconds", "");
        }
        counter(
            out,
            "berth_unpack_layers_total",
            "Layers extracted into snapshots",
            self.unpacked_layers.load(Ordering::Relaxed),
        );
        counter(
            out,
            "berth_unpack_layer_bytes_total",
            "Compressed bytes of the layers extracted",
            self.unpacked_bytes.load(Ordering::Relaxed),
        );
    }

    /// Garbage collection: runs and what they removed.
    fn render_gc(&self, out: &mut String) {
        counter(
            out,
            "berth_gc_runs_total",
            "Garbage collections run",
            self.gc_runs.load(Ordering::Relaxed),
        );
        counter(
            out,
            "berth_gc_removed_blobs_total",
            "Content blobs garbage collection removed",
            self.gc_removed_blobs.load(Ordering::Relaxed),
        );
        counter(
            out,
            "berth_gc_removed_snapshots_total",
            "Snapshots garbage collection removed",
            self.gc_removed_snapshots.load(Ordering::Relaxed),
        );
        counter(
            out,
            "berth_gc_reclaimed_bytes_total",
            "Bytes of content garbage collection reclaimed",
            self.gc_reclaimed_bytes.load(Ordering::Relaxed),
        );
    }
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

/// A tower layer that times every gRPC request into [`registry`].
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let start = std::time::Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await;
            let code = match &resp {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_string(),
                Err(_) => "transport".to_string(),
            };
            registry().rpc_done(&method, &code, start.elapsed());
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_lines() {
        let r = Registry::default();
        r.rpc_done(
            "/containerd.services.version.v1.Version/Version",
            "0",
            Duration::from_millis(3),
        );
        r.rpc_done("/x\"y", "5", Duration::from_secs(2));
        r.pull_done(100, Duration::from_millis(20), true);
        r.gc_done(2, 1, 4096);
        let mut out = String::new();
        r.render(&mut out);
        assert!(out.contains("berth_grpc_requests_total{method=\"/containerd.services.version.v1.Version/Version\",code=\"0\"} 1"), "{out}");
        assert!(out.contains("method=\"/x\\\"y\""), "{out}");
        assert!(out.contains("berth_grpc_request_duration_seconds_bucket{method=\"/containerd.services.version.v1.Version/Version\",le=\"0.005\"} 1"));
        assert!(out.contains("berth_pull_bytes_total 100"));
        assert!(out.contains("berth_gc_reclaimed_bytes_total 4096"));
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap_or_else(|_| panic!("{l}"));
        }
    }

    #[test]
    fn invented_methods_cannot_grow_the_table() {
        let r = Registry::default();
        for i in 0..(MAX_METHODS + 50) {
            r.rpc_done(&format!("/m{i}"), "12", Duration::ZERO);
        }
        let rpcs = r.rpcs.lock().unwrap();
        assert_eq!(rpcs.len(), MAX_METHODS + 1);
        assert_eq!(rpcs["other"].latency.count, 50);
    }
}
