//! berth-bench-cri: the CRI pod lifecycle timed per RPC over one persistent gRPC connection, so
//! that no client start-up is in the figures (crictl pays ~20 ms of its own per command). The
//! pod and container are `scripts/bench-cri.sh`'s; it prints medians (min, max) per step, or one
//! `step seconds` line per sample for the script.

mod exec_stream;
mod lifecycle;

use anyhow::Context;
use berth_proto::cri::v1 as cri;
use clap::Parser;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The steps in lifecycle order, as the script names them; `version` is the floor (an RPC
/// that does nothing), `exec-url` the Exec RPC alone, `exec` that RPC and its stream.
pub const STEPS: [&str; 10] = [
    "version",
    "runp",
    "create",
    "start",
    "exec-url",
    "exec",
    "exec-sync",
    "stop",
    "stopp",
    "rmp",
];

/// Times each CRI RPC of a pod's lifecycle over one gRPC connection.
#[derive(Parser)]
#[command(name = "berth-bench-cri", version)]
struct Args {
    /// The CRI endpoint: unix:///path/to.sock or a socket path
    #[arg(long, short = 'e')]
    endpoint: String,
    /// Pod lifecycles to run
    #[arg(long, short = 'r', default_value_t = 10)]
    rounds: u32,
    /// The container's image; it must be pulled already
    #[arg(long, default_value = "registry.k8s.io/e2e-test-images/busybox:1.29-2")]
    image: String,
    /// Where the pods' log directories go [a fresh directory under the system's temp dir]
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// table: medians, min and max in ms; lines: one "step seconds" line per sample
    #[arg(long, default_value = "table")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Lines,
}

/// Each step's samples, in seconds.
pub type Samples = BTreeMap<&'static str, Vec<f64>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let socket = socket_path(&args.endpoint)?;
    if !socket.exists() {
        anyhow::bail!(
            "no socket at {}: is the runtime running there?",
            socket.display()
        );
    }
    let channel = berth_client::Client::connect(&socket)
        .await
        .with_context(|| format!("connect to {}", args.endpoint))?
        .channel();
    let rt = RuntimeServiceClient::new(channel.clone());
    let img = ImageServiceClient::new(channel);
    check_image(img, &args.image, &args.endpoint).await?;
    let log_dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("berth-bench-cri.{}", std::process::id())),
    };
    let mut bench = lifecycle::Bench::new(rt, args.image.clone(), log_dir.clone());
    let mut samples = Samples::new();
    for round in 1..=args.rounds {
        bench
            .round(round, &mut samples)
            .await
            .with_context(|| format!("round {round} on {}", args.endpoint))?;
    }
    if args.log_dir.is_none() {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    match args.format {
        Format::Table => print_table(&samples),
        Format::Lines => print_lines(&samples),
    }
    Ok(())
}

fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    match endpoint.split_once("://") {
        None => Ok(PathBuf::from(endpoint)),
        Some(("unix", path)) => Ok(PathBuf::from(path)),
        Some((scheme, _)) => {
            anyhow::bail!("endpoint {endpoint}: only unix:// is spoken, not {scheme}://")
        }
    }
}

/// The lifecycle needs the image present: pulling is not what this times.
async fn check_image(
    mut img: ImageServiceClient<tonic::transport::Channel>,
    image: &str,
    endpoint: &str,
) -> anyhow::Result<()> {
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        img.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        }),
    )
    .await
    .with_context(|| format!("ImageStatus on {endpoint} timed out"))?
    .with_context(|| format!("ImageStatus on {endpoint}: does it serve the CRI (runtime.v1)?"))?;
    if status.into_inner().image.is_none() {
        anyhow::bail!(
            "{image} is not on {endpoint}: run `crictl --image-endpoint {endpoint} pull {image}` first"
        );
    }
    Ok(())
}

/// (median, min, max) of `v`, which is not empty.
fn spread(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    Some((median, s[0], s[n - 1]))
}

fn print_table(samples: &Samples) {
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10}",
        "step", "n", "median ms", "min ms", "max ms"
    );
    for step in STEPS {
        let Some(v) = samples.get(step) else { continue };
        if let Some((median, min, max)) = spread(v) {
            println!(
                "{step:<10} {:>6} {:>10.2} {:>10.2} {:>10.2}",
                v.len(),
                median * 1e3,
                min * 1e3,
                max * 1e3
            );
        }
    }
}

fn print_lines(samples: &Samples) {
    for step in STEPS {
        for s in samples.get(step).into_iter().flatten() {
            println!("{step} {s:.6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/x.sock").ok(),
            Some(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(
            socket_path("/run/x.sock").ok(),
            Some(PathBuf::from("/run/x.sock"))
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
    }
}
