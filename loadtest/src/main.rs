//! `rtmp-fanout`: an RTMP fan-out benchmark in one process.
//!
//! One optional publisher sends a pre-encoded FLV file in real time; N light viewers (our own
//! client over rml_rtmp, not one ffmpeg each) play the stream. Because publisher and viewers
//! share a process and a clock, publish-to-viewer latency is measured directly.
//!
//! Timeline (all bounded; the process exits by `window.end + 15 s` whatever happens):
//!   t0              publisher starts (if any)
//!   t0+2s..t0+W     baseline: server CPU with the publisher alone, server RSS before viewers
//!   t0+W            (W = `--warmup`, 10 s) viewers connect at `--ramp` per second
//!   ramp end + 3s   measurement window starts (`--settle`), lasts `--duration` seconds;
//!                   server CPU and RSS (with `--server-pid`) are sampled over exactly it
//!   window end      viewers stop, results are printed: a table on stderr, one JSON line on stdout

mod client;
mod fields;
mod flv;
mod proc;
mod publisher;
mod report;
mod viewer;

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "rtmp-fanout", about = "RTMP fan-out benchmark: one publisher, many viewers, one process")]
pub struct Args {
    /// Play URL for the viewers: rtmp://HOST:PORT/APP/STREAM.
    #[arg(long)]
    url: Option<String>,
    /// Number of viewers.
    #[arg(long, default_value_t = 0)]
    viewers: usize,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Viewer connection rate, connections per second.
    #[arg(long, default_value_t = 100.0)]
    ramp: f64,
    /// Seconds between the last viewer connecting and the window opening.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Publish URL: rtmp://HOST:PORT/APP/KEY. Needs --input.
    #[arg(long, requires = "input")]
    publish_url: Option<String>,
    /// Pre-encoded FLV file (H.264 + AAC) to publish in real time, looped.
    #[arg(long)]
    input: Option<PathBuf>,
    /// PID of the server, to sample its CPU time and RSS from /proc over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label put in the results (e.g. "tidecast", "nginx-rtmp").
    #[arg(long, default_value = "server")]
    label: String,
    /// Seconds the publisher runs alone before viewers connect. Longer than the server's GOP
    /// cache / ring (tidecast: channel.ring_duration = 8 s), so the RSS baseline taken at its end
    /// already includes a full ring and the per-viewer memory delta is only the viewers'.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Kept up means: received video timestamp span within this many ms of the publisher's.
    #[arg(long, default_value_t = 1000)]
    keep_up_ms: u32,
}

/// Baseline CPU (publisher alone) is measured from here to the end of the warm-up.
const BASELINE_FROM: Duration = Duration::from_secs(2);

fn main() -> Result<()> {
    let args = Args::parse();
    if args.url.is_none() && args.publish_url.is_none() {
        bail!("nothing to do: give --url (viewers) and/or --publish-url with --input");
    }
    if args.url.is_some() && args.viewers == 0 {
        bail!("--url given but --viewers is 0");
    }
    if !(args.ramp > 0.0 && args.ramp <= 10_000.0) {
        bail!("--ramp must be in (0, 10000] connections per second");
    }
    if args.duration == 0 || args.duration > 3600 {
        bail!("--duration must be 1..=3600 seconds");
    }
    if args.publish_url.is_some() && !(3..=120).contains(&args.warmup) {
        bail!("--warmup must be 3..=120 seconds when publishing");
    }
    if args.viewers > 20_000 {
        bail!("--viewers is capped at 20000");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let ramp_time = Duration::from_secs_f64(args.viewers as f64 / args.ramp);
    let warmup = if args.publish_url.is_some() { Duration::from_secs(args.warmup) } else { Duration::ZERO };
    let window = viewer::Window {
        start: t0 + warmup + ramp_time + Duration::from_secs(args.settle),
        end: t0 + warmup + ramp_time + Duration::from_secs(args.settle + args.duration),
    };
    let hard_deadline = window.end + Duration::from_secs(15);

    // Publisher.
    let mut send_log = None;
    let mut publisher = None;
    if let (Some(purl), Some(input)) = (&args.publish_url, &args.input) {
        let url = client::RtmpUrl::parse(purl)?;
        let tags = Arc::new(flv::read(input)?);
        let log = Arc::new(publisher::SendLog::new(&tags, t0));
        send_log = Some(log.clone());
        let stop = window.end + Duration::from_millis(500);
        publisher = Some(tokio::spawn(publisher::run(url, tags, log, stop)));
    }

    // Baseline: publisher alone.
    let server = args.server_pid.map(proc::Sampler::new);
    tokio::time::sleep_until(t0 + BASELINE_FROM).await;
    let base_a = server.as_ref().map(|s| s.sample()).transpose()?;
    tokio::time::sleep_until(t0 + warmup.max(BASELINE_FROM)).await;
    let base_b = server.as_ref().map(|s| s.sample()).transpose()?;
    let client_self = proc::Sampler::new_self();

    // Viewers, ramped.
    let mut viewers = Vec::with_capacity(args.viewers);
    if let Some(u) = &args.url {
        let url = client::RtmpUrl::parse(u)?;
        let ramp_start = Instant::now();
        for i in 0..args.viewers {
            let at = ramp_start + Duration::from_secs_f64(i as f64 / args.ramp);
            tokio::time::sleep_until(at).await;
            viewers.push(tokio::spawn(viewer::run(url.clone(), window, send_log.clone())));
        }
    }

    // Window: CPU at both ends, RSS every second.
    tokio::time::sleep_until(window.start).await;
    let win_a = server.as_ref().map(|s| s.sample()).transpose()?;
    let self_a = client_self.sample()?;
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(window.end) => break,
            _ = tick.tick() => {
                if let Some(s) = &server {
                    rss.push(s.sample().context("sampling server RSS")?.rss_kib);
                }
            }
        }
    }
    let win_b = server.as_ref().map(|s| s.sample()).transpose()?;
    let self_b = client_self.sample()?;

    // Collect.
    let mut reports = Vec::with_capacity(viewers.len());
    for v in viewers {
        match tokio::time::timeout_at(hard_deadline, v).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => bail!("a viewer task panicked: {e}"),
            Err(_) => bail!("viewers did not stop by the hard deadline"),
        }
    }
    let pub_report = match publisher {
        Some(p) => match tokio::time::timeout_at(hard_deadline, p).await {
            Ok(Ok(r)) => Some(r.map_err(|e| format!("{e:#}"))),
            Ok(Err(e)) => bail!("the publisher task panicked: {e}"),
            Err(_) => bail!("publisher did not stop by the hard deadline"),
        },
        None => None,
    };
    let pub_span = send_log.as_ref().and_then(|l| l.span_ms(window.start, window.end));

    let r = report::Summary::build(report::Inputs {
        label: &args.label,
        n: args.viewers,
        window_secs: (window.end - window.start).as_secs_f64(),
        keep_up_ms: args.keep_up_ms,
        reports: &reports,
        pub_span_ms: pub_span,
        publisher: pub_report.as_ref(),
        server: match (base_a, base_b, win_a, win_b) {
            (Some(a), Some(b), Some(c), Some(d)) => {
                Some(report::ServerSamples { baseline: (a, b), window: (c, d), rss_kib: rss })
            }
            _ => None,
        },
        client_cpu: (self_a, self_b),
    });
    r.print();
    Ok(())
}
