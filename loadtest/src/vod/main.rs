//! `vod-clients`: many VOD viewers seeking at random through one recording, in one process (one
//! tokio runtime; the same minimal HTTP/1.1 client as `hls-clients`, `../hls/http.rs`, one
//! keep-alive connection per viewer).
//!
//! Each viewer: GET the media playlist once (and the init segment its `EXT-X-MAP` names, once),
//! then a loop of GETs of random segments of that playlist, a share of them (`--range-share`)
//! with a `Range: bytes=A-B` header (a random start below `--range-max-start`, 16..256 KiB
//! long), the next request as soon as the previous answer is read (closed loop: the load is
//! as much as server and client together manage on the machine).
//!
//! Timeline (all bounded; the process gives up at the window end + 15 s):
//!   t0                 viewers start at `--ramp` per second
//!   ramp end + settle  the window opens: server CPU and RSS from /proc (every `--server-pid`,
//!                      summed), the client's own CPU
//!   window end         `--duration` seconds later, or as soon as `--max-requests` requests
//!                      were started (the cap counts the whole run, ramp included); viewers
//!                      stop after their request in flight
//!
//! Figures count the requests *completed* inside the window: requests/s, MB/s, latency (request
//! written .. whole body read; p50/p90/p99/max), server CPU-seconds and requests per server
//! CPU-second. Errors (transport failures, any status other than 200, or 206 for a Range, or 200
//! with at most the asked length for a Range from byte 0: RFC 9110 lets a server answer a
//! range covering the whole file with all of it) are
//! counted over the whole run, not only the window. Output: a table on stderr, one JSON line on
//! stdout.

#[path = "../proc.rs"]
mod proc;

#[allow(dead_code)]
#[path = "../hls/http.rs"]
mod http;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "vod-clients", about = "VOD load: many viewers seeking at random, one process")]
struct Args {
    /// Media playlist URL (http only); segment URIs are resolved against it.
    #[arg(long)]
    url: String,
    /// Number of viewers (one connection each).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Viewers started per second.
    #[arg(long, default_value_t = 500.0)]
    ramp: f64,
    /// Seconds between the last viewer starting and the window opening.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Requests started in the whole run, at most (the window closes early when reached).
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Share of segment requests with a Range header (0..1).
    #[arg(long, default_value_t = 0.25)]
    range_share: f64,
    /// Range requests start below this byte offset (keep it under the smallest segment).
    #[arg(long, default_value_t = 65536)]
    range_max_start: u64,
    /// Per-request timeout, ms (a timeout is an error).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Server PIDs (comma-separated), CPU and RSS summed over them.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Label in the results.
    #[arg(long, default_value = "server")]
    label: String,
    /// Client worker threads (default: tokio's, one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.url.starts_with("http://") {
        bail!("--url must be an http:// media playlist URL");
    }
    if args.clients == 0 || args.clients > 20_000 {
        bail!("--clients must be 1..=20000");
    }
    if args.duration == 0 || args.duration > 600 {
        bail!("--duration must be 1..=600 seconds");
    }
    if !(args.ramp > 0.0 && args.ramp <= 10_000.0) || args.settle > 60 {
        bail!("--ramp must be in (0, 10000], --settle at most 60 s");
    }
    if !(0.0..=1.0).contains(&args.range_share) || args.range_max_start == 0 || args.max_requests == 0 {
        bail!("--range-share must be 0..=1, --range-max-start and --max-requests above 0");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    rt.enable_all().build()?.block_on(run(args))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Playlist,
    Init,
    Segment,
    Range,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::Init => "init",
            Kind::Segment => "segment",
            Kind::Range => "range",
        }
    }
}

struct Record {
    kind: Kind,
    done: Instant,
    latency: Duration,
    bytes: u64,
}

struct Shared {
    target: http::Target,
    /// The playlist's directory (`/vod/1/source/`), for relative URIs.
    base: String,
    started: AtomicU64,
    max_requests: u64,
    stop: AtomicBool,
    range_share: f64,
    range_max_start: u64,
    timeout: Duration,
    records: Mutex<Vec<Record>>,
    errors: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn error(&self, what: String) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_default() += 1;
    }

    fn resolve(&self, uri: &str) -> String {
        if uri.starts_with('/') {
            uri.to_owned()
        } else {
            format!("{}{}", self.base, uri)
        }
    }

    /// Take one request from the cap; false when the run should stop.
    fn may_start(&self) -> bool {
        if self.stop.load(Relaxed) {
            return false;
        }
        self.started.fetch_add(1, Relaxed) < self.max_requests
    }

    /// One GET; records it (or the error). Returns the body when `keep`.
    async fn request(
        &self,
        pool: &http::Pool,
        kind: Kind,
        path: &str,
        extra: &str,
        keep: bool,
        whole_file: Option<u64>,
    ) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        let sent = Instant::now();
        let deadline = sent + self.timeout;
        let out = if keep { Some(&mut body) } else { None };
        match http::get_with(&self.target, pool, path, extra, out, deadline, self.timeout).await {
            Ok(r) => {
                let want = if kind == Kind::Range { 206 } else { 200 };
                // A range that covers the whole file may be answered with all of it, 200
                // (RFC 9110 §14.2: a server may ignore Range; actix-files does so then).
                let whole = kind == Kind::Range
                    && r.status == 200
                    && whole_file.is_some_and(|len| r.bytes as u64 <= len);
                if r.status != want && !whole {
                    self.error(format!("{} HTTP {}", kind.name(), r.status));
                    return None;
                }
                let done = Instant::now();
                let rec = Record { kind, done, latency: done - sent, bytes: r.bytes as u64 };
                self.records.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
                Some(body)
            }
            Err(e) => {
                self.error(format!(
                    "{} transport: {}",
                    kind.name(),
                    e.to_string().chars().take(80).collect::<String>()
                ));
                None
            }
        }
    }
}

/// xorshift64*: cheap, good enough to pick segments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Segment URIs and the `EXT-X-MAP` URI of a media playlist.
fn parse_playlist(text: &str) -> (Vec<String>, Option<String>) {
    let mut segs = Vec::new();
    let mut init = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(attrs) = line.strip_prefix("#EXT-X-MAP:") {
            if init.is_none() {
                init = attrs.split("URI=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned);
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            segs.push(line.to_owned());
        }
    }
    (segs, init)
}

async fn viewer(sh: Arc<Shared>, playlist_path: String, i: usize) {
    let pool = http::Pool::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)));
    if !sh.may_start() {
        return;
    }
    let Some(text) = sh.request(&pool, Kind::Playlist, &playlist_path, "", true, None).await else { return };
    let (segs, init) = parse_playlist(&String::from_utf8_lossy(&text));
    if segs.is_empty() {
        sh.error("playlist lists no segments".into());
        return;
    }
    let segs: Vec<String> = segs.iter().map(|u| sh.resolve(u)).collect();
    if let Some(init) = init {
        if !sh.may_start() {
            return;
        }
        sh.request(&pool, Kind::Init, &sh.resolve(&init), "", false, None).await;
    }
    let mut header = String::new();
    while sh.may_start() {
        let seg = &segs[rng.below(segs.len() as u64) as usize];
        if rng.unit() < sh.range_share {
            let start = rng.below(sh.range_max_start);
            let len = 16 * 1024 + rng.below(240 * 1024);
            header.clear();
            let _ = write!(header, "Range: bytes={}-{}\r\n", start, start + len - 1);
            // Starting at 0, a range longer than the segment asks for all of it.
            sh.request(&pool, Kind::Range, seg, &header, false, (start == 0).then_some(len)).await;
        } else {
            sh.request(&pool, Kind::Segment, seg, "", false, None).await;
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sample_all(samplers: &[proc::Sampler]) -> Result<(f64, u64)> {
    let mut cpu = 0.0;
    let mut rss = 0;
    for s in samplers {
        let x = s.sample()?;
        cpu += x.cpu_secs;
        rss += x.rss_kib;
    }
    Ok((cpu, rss))
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{:.3}", x)
    } else {
        "null".into()
    }
}

async fn run(args: Args) -> Result<()> {
    let (target, path) = http::Target::from_url(&args.url).await?;
    let base = match path.split('?').next().unwrap_or("/").rfind('/') {
        Some(i) => path[..=i].to_owned(),
        None => "/".to_owned(),
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let sh = Arc::new(Shared {
        target,
        base,
        started: AtomicU64::new(0),
        max_requests: args.max_requests,
        stop: AtomicBool::new(false),
        range_share: args.range_share,
        range_max_start: args.range_max_start,
        timeout,
        records: Mutex::new(Vec::with_capacity(1 << 20)),
        errors: Mutex::new(HashMap::new()),
    });
    let samplers: Vec<proc::Sampler> = args.server_pid.iter().map(|&p| proc::Sampler::new(p)).collect();

    let t0 = Instant::now();
    let ramp_time = Duration::from_secs_f64(args.clients as f64 / args.ramp);
    let win_start = t0 + ramp_time + Duration::from_secs(args.settle);
    let win_planned_end = win_start + Duration::from_secs(args.duration);
    let hard_deadline = win_planned_end + Duration::from_secs(15);

    let mut viewers = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / args.ramp)).await;
        viewers.push(tokio::spawn(viewer(sh.clone(), path.clone(), i)));
    }
    tokio::time::sleep_until(win_start).await;
    let me = proc::Sampler::new_self();
    let (srv_a, _) = sample_all(&samplers)?;
    let self_a = me.sample()?;
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    let capped = loop {
        tick.tick().await;
        if Instant::now() >= win_planned_end {
            break false;
        }
        if sh.started.load(Relaxed) >= sh.max_requests {
            break true;
        }
        n += 1;
        if n.is_multiple_of(10) && !samplers.is_empty() {
            rss.push(sample_all(&samplers)?.1);
        }
    };
    let win_end = Instant::now();
    let (srv_b, rss_end) = sample_all(&samplers)?;
    let self_b = me.sample()?;
    sh.stop.store(true, Relaxed);
    let mut unfinished = 0;
    for v in viewers {
        if tokio::time::timeout_at(hard_deadline, v).await.is_err() {
            unfinished += 1;
        }
    }
    if unfinished > 0 {
        sh.error(format!("{unfinished} viewers still busy at the hard deadline"));
    }

    // --- analysis ----------------------------------------------------------------------
    let window_s = (win_end - win_start).as_secs_f64();
    let records = std::mem::take(&mut *sh.records.lock().unwrap_or_else(|e| e.into_inner()));
    let errors = std::mem::take(&mut *sh.errors.lock().unwrap_or_else(|e| e.into_inner()));
    let errors_total: u64 = errors.values().sum();
    let mut lat = Vec::new();
    let mut bytes = 0u64;
    let mut by_kind: HashMap<Kind, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.done >= win_start && r.done <= win_end) {
        lat.push(r.latency.as_secs_f64() * 1000.0);
        bytes += r.bytes;
        *by_kind.entry(r.kind).or_default() += 1;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let requests = lat.len() as u64;
    let rps = requests as f64 / window_s;
    let server_cpu_s = if samplers.is_empty() { f64::NAN } else { srv_b - srv_a };
    let server_cpu_pct = server_cpu_s / window_s * 100.0;
    let per_cpu_s = requests as f64 / server_cpu_s;
    let client_cpu_pct = proc::cpu_percent(&self_a, &self_b);
    let rss_mean =
        if rss.is_empty() { rss_end as f64 } else { rss.iter().sum::<u64>() as f64 / rss.len() as f64 };
    let mb_s = bytes as f64 / window_s / 1e6;
    let k = |kind| by_kind.get(&kind).copied().unwrap_or(0);

    let mut t = String::new();
    let _ = writeln!(
        t,
        "{}: {} viewers, window {:.1} s{}",
        args.label,
        args.clients,
        window_s,
        if capped { " (closed early: request cap)" } else { "" }
    );
    let _ = writeln!(
        t,
        "  requests {requests} ({:.0}/s; segments {}, ranges {}, playlists {}, inits {}), {:.1} MB/s",
        rps,
        k(Kind::Segment),
        k(Kind::Range),
        k(Kind::Playlist),
        k(Kind::Init),
        mb_s
    );
    let _ = writeln!(
        t,
        "  latency ms p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        pct(&lat, 100.0)
    );
    let _ = writeln!(
        t,
        "  server CPU {:.2} s ({:.1} % of a core), {:.0} requests per server CPU-second, RSS mean {:.1} MiB; client CPU {:.1} %",
        server_cpu_s,
        server_cpu_pct,
        per_cpu_s,
        rss_mean / 1024.0,
        client_cpu_pct
    );
    let _ = writeln!(t, "  errors (whole run): {errors_total}");
    let mut errs: Vec<_> = errors.iter().collect();
    errs.sort_by(|a, b| b.1.cmp(a.1));
    for (what, n) in errs.iter().take(8) {
        let _ = writeln!(t, "    {n} x {what}");
    }
    eprint!("{t}");

    let mut j = String::from("{");
    let _ = write!(
        j,
        "\"label\":\"{}\",\"clients\":{},\"window_s\":{},\"capped\":{}",
        args.label,
        args.clients,
        num(window_s),
        capped
    );
    let _ = write!(j, ",\"requests\":{requests},\"requests_per_s\":{},\"mb_per_s\":{}", num(rps), num(mb_s));
    let _ = write!(
        j,
        ",\"segments\":{},\"ranges\":{},\"playlists\":{},\"inits\":{}",
        k(Kind::Segment),
        k(Kind::Range),
        k(Kind::Playlist),
        k(Kind::Init)
    );
    let _ = write!(
        j,
        ",\"p50_ms\":{},\"p90_ms\":{},\"p99_ms\":{},\"max_ms\":{}",
        num(pct(&lat, 50.0)),
        num(pct(&lat, 90.0)),
        num(pct(&lat, 99.0)),
        num(pct(&lat, 100.0))
    );
    let _ = write!(
        j,
        ",\"server_cpu_s\":{},\"server_cpu_pct\":{},\"requests_per_server_cpu_s\":{},\"server_rss_mean_kib\":{},\"client_cpu_pct\":{}",
        num(server_cpu_s),
        num(server_cpu_pct),
        num(per_cpu_s),
        num(rss_mean),
        num(client_cpu_pct)
    );
    let _ = write!(j, ",\"errors\":{errors_total}}}");
    println!("{j}");
    Ok(())
}
