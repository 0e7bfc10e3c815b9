//! Transfer progress for people: a bar per layer (bytes, speed, ETA) on a terminal; one
//! plain line per change of state otherwise.

use berth_proto::types::transfer::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use tokio::sync::mpsc;

/// What the transfer moved, summed from its progress reports.
#[derive(Debug, Default)]
pub struct Totals {
    pub blobs: usize,
    pub bytes: i64,
    pub existing: usize,
}

fn short(name: &str) -> String {
    match name.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None => name.to_string(),
    }
}

/// Renders reports until the sender side closes; returns what was moved.
pub async fn render(mut rx: mpsc::UnboundedReceiver<Progress>) -> Totals {
    let tty = std::io::stdout().is_terminal();
    let multi = MultiProgress::with_draw_target(if tty {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:19} {msg:14} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut last: HashMap<String, String> = HashMap::new();
    let mut totals = Totals::default();
    while let Some(p) = rx.recv().await {
        let is_blob = p.name.starts_with("sha256:");
        if tty && is_blob {
            let bar = bars.entry(p.name.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(p.total.max(0) as u64));
                b.set_style(style.clone());
                b.set_prefix(short(&p.name));
                b
            });
            if p.total > 0 {
                bar.set_length(p.total as u64);
            }
            bar.set_position(p.progress.max(0) as u64);
            bar.set_message(p.event.clone());
            if p.event == "complete" || p.event == "already exists" || p.event == "exists" {
                bar.finish();
            }
        } else if tty {
            let _ = multi.println(format!("{} {}", p.event, p.name));
        } else if last.get(&p.name) != Some(&p.event) {
            if p.total > 0 {
                println!("{} {} {}/{}", short(&p.name), p.event, p.progress, p.total);
            } else {
                println!("{} {}", p.event, p.name);
            }
        }
        if is_blob && last.get(&p.name) != Some(&p.event) {
            match p.event.as_str() {
                "complete" => {
                    totals.blobs += 1;
                    totals.bytes += p.total;
                }
                "already exists" | "exists" => totals.existing += 1,
                _ => {}
            }
        }
        last.insert(p.name.clone(), p.event.clone());
    }
    for b in bars.values() {
        if !b.is_finished() {
            b.abandon();
        }
    }
    totals
}
