//! `hls-clients`: many HLS players in one process (one tokio runtime; our own minimal HTTP/1.1
//! GET client over tokio `TcpStream`s, a small keep-alive pool per player, see `http.rs`),
//! against one media playlist.
//!
//! Timeline (all bounded; the process exits by the window end + 15 s whatever happens):
//!   t0                 `--baseline` seconds of server CPU with no player (the publisher runs)
//!   t0+B               players start at `--ramp` per second
//!   ramp end + settle  measurement window opens for `--duration` seconds; server CPU (/proc)
//!                      at both ends, RSS once a second
//!   window end         players stop, abandoning what is in flight; results: a table on
//!                      stderr, one JSON line on stdout
//!
//! Blocking-reload delay (LL-HLS mode), per reload answered in the window, measured twice:
//!   - on *arrival*: the kernel's receive time of the answer's first bytes at the player's socket
//!     (`SO_TIMESTAMPNS`), i.e. when the server's answer got there. This is the target's
//!     figure: it does not count the time the answer then waits for a player task, which on one
//!     machine shared with the server and ~1,000 players is the load client's own queueing;
//!   - on *read*: when the player task had read the whole answer (what a player on this
//!     machine would see).
//!
//! and against two references:
//!   - `vs first`: minus the earliest answer to the same (msn, part) across all players (the
//!     first answer approximates the part's completion; includes requests answered outside the
//!     window when searching for the earliest);
//!   - `vs PDT`: minus the part's completion by the returned playlist's date-times (segment PDT
//!     + durations of its parts up to and including that part).

#[path = "../proc.rs"]
mod proc;

mod client;
mod http;
mod playlist;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use tokio::time::Instant;

use client::{Kind, Mode, Record};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// LL-HLS: blocking playlist reloads plus preload-hinted part fetches (hls.js low-latency).
    Ll,
    /// Plain HLS: poll the playlist, fetch each new segment once.
    Plain,
}

#[derive(Parser, Debug)]
#[command(name = "hls-clients", about = "HLS load: many players in one process")]
struct Args {
    /// Media playlist URL (http only).
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value_t = ModeArg::Ll)]
    mode: ModeArg,
    /// Number of players.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Players started per second.
    #[arg(long, default_value_t = 200.0)]
    ramp: f64,
    /// Seconds between the last player starting and the window opening.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Seconds of server CPU sampled before any player starts (publish/package-only baseline).
    #[arg(long, default_value_t = 4)]
    baseline: u64,
    /// Plain mode: playlist poll interval, ms.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// LL-HLS mode: do not ask for delta updates (hls.js sends _HLS_skip=YES when the playlist
    /// advertises CAN-SKIP-UNTIL; this turns that off).
    #[arg(long)]
    no_skip: bool,
    /// LL-HLS mode: blocking playlist reloads only, no part fetches (a diagnostic: separates
    /// the playlist path from the cost of moving part bytes).
    #[arg(long)]
    no_parts: bool,
    /// LL-HLS mode: fetch each part once the blocking reload that asked for it has answered,
    /// as hls.js 1.7 does (it parses EXT-X-PRELOAD-HINT but does not fetch it), instead of
    /// fetching the hinted part beside the reload as players that use preload hints do.
    #[arg(long)]
    parts_after_reload: bool,
    /// Server PID, for CPU and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label in the results.
    #[arg(long, default_value = "server")]
    label: String,
    /// Blocking-reload delay target for the p99 verdict, ms.
    #[arg(long, default_value_t = 50.0)]
    target_ms: f64,
    /// Client worker threads (default: tokio's, one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Also write every blocking reload answered in the window to this CSV file
    /// (`msn,part,delay_first_ms,arrival_first_ms,arrival_pdt_ms,wait_ms`), for looking at the spread part by part.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
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
    if !(args.ramp > 0.0 && args.ramp <= 10_000.0) {
        bail!("--ramp must be in (0, 10000]");
    }
    if args.baseline > 60 || args.settle > 60 || !(50..=10_000).contains(&args.poll_ms) {
        bail!("--baseline/--settle at most 60 s, --poll-ms 50..=10000");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    rt.enable_all().build()?.block_on(run(args))
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

struct Dist {
    n: usize,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    min: Option<f64>,
}

fn dist(mut v: Vec<f64>) -> Dist {
    v.sort_by(|a, b| a.total_cmp(b));
    Dist {
        n: v.len(),
        p50: pct(&v, 50.0),
        p95: pct(&v, 95.0),
        p99: pct(&v, 99.0),
        max: v.last().copied(),
        min: v.first().copied(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let ramp_time = Duration::from_secs_f64(args.clients as f64 / args.ramp);
    let baseline = Duration::from_secs(args.baseline);
    let win_start = t0 + baseline + ramp_time + Duration::from_secs(args.settle);
    let win_end = win_start + Duration::from_secs(args.duration);
    let hard_deadline = win_end + Duration::from_secs(15);

    let mode = match args.mode {
        ModeArg::Ll => {
            Mode::LlHls { skip: !args.no_skip, parts: !args.no_parts, after_reload: args.parts_after_reload }
        }
        ModeArg::Plain => Mode::Plain { poll: Duration::from_millis(args.poll_ms) },
    };
    let ctx = Arc::new(client::Ctx::new(&args.url, mode, win_end).await?);

    let server = args.server_pid.map(proc::Sampler::new);
    let base_a = server.as_ref().map(|s| s.sample()).transpose()?;
    tokio::time::sleep_until(t0 + baseline).await;
    let base_b = server.as_ref().map(|s| s.sample()).transpose()?;

    let ramp_start = Instant::now();
    let mut players = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        tokio::time::sleep_until(ramp_start + Duration::from_secs_f64(i as f64 / args.ramp)).await;
        players.push(tokio::spawn(client::run(ctx.clone(), i)));
    }

    tokio::time::sleep_until(win_start).await;
    let win_a = server.as_ref().map(|s| s.sample()).transpose()?;
    let me = proc::Sampler::new_self();
    let self_a = me.sample()?;
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(win_end) => break,
            _ = tick.tick() => if let Some(s) = &server { rss.push(s.sample()?.rss_kib) },
        }
    }
    let win_b = server.as_ref().map(|s| s.sample()).transpose()?;
    let self_b = me.sample()?;

    let mut all: Vec<Vec<Record>> = Vec::with_capacity(players.len());
    for p in players {
        match tokio::time::timeout_at(hard_deadline, p).await {
            Ok(Ok(r)) => all.push(r),
            Ok(Err(e)) => bail!("a player task panicked: {e}"),
            Err(_) => bail!("players did not stop by the hard deadline"),
        }
    }

    // --- analysis ------------------------------------------------------------------------
    let window_s = (win_end - win_start).as_secs_f64();
    let in_window = |r: &Record| r.done >= win_start && r.done <= win_end;
    // Earliest answer per (msn, part) across all players, whenever it came.
    let mut first_blocking: HashMap<(u64, u32), Instant> = HashMap::new();
    let mut first_part: HashMap<(u64, u32), Instant> = HashMap::new();
    let mut first_arrival: HashMap<(u64, u32), SystemTime> = HashMap::new();
    for r in all.iter().flatten().filter(|r| r.status == 200) {
        let (Some(k), map) = (
            r.key,
            match r.kind {
                Kind::Blocking => &mut first_blocking,
                Kind::Part => &mut first_part,
                _ => continue,
            },
        ) else {
            continue;
        };
        map.entry(k).and_modify(|t| *t = (*t).min(r.done)).or_insert(r.done);
        if let (Kind::Blocking, Some(at)) = (r.kind, r.arrived) {
            first_arrival.entry(k).and_modify(|t| *t = (*t).min(at)).or_insert(at);
        }
    }
    // Signed milliseconds from `from` to `to`.
    let wall_ms = |to: SystemTime, from: SystemTime| match to.duration_since(from) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    };
    let mut vs_first = Vec::new();
    let mut vs_pdt = Vec::new();
    let mut arr_first = Vec::new();
    let mut arr_pdt = Vec::new();
    let mut unstamped = 0u64;
    let mut part_vs_first = Vec::new();
    let mut blocking_wait = Vec::new();
    let mut counts: HashMap<&'static str, (u64, u64)> = HashMap::new(); // kind -> (ok, failed)
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut bytes = 0u64;
    let mut dump = String::new();
    for r in all.iter().flatten().filter(|r| in_window(r)) {
        let c = counts.entry(r.kind.name()).or_default();
        if r.status == 200 {
            c.0 += 1;
        } else {
            c.1 += 1;
            let what = match &r.error {
                Some(e) => format!("{} transport: {}", r.kind.name(), e.chars().take(80).collect::<String>()),
                None => format!("{} HTTP {}", r.kind.name(), r.status),
            };
            *errors.entry(what).or_default() += 1;
            continue;
        }
        bytes += r.bytes as u64;
        match (r.kind, r.key) {
            (Kind::Blocking, Some(k)) => {
                vs_first.push(ms(r.done - first_blocking[&k]));
                if args.dump.is_some() {
                    let _ = writeln!(
                        dump,
                        "{},{},{:.3},{},{},{:.3}",
                        k.0,
                        k.1,
                        ms(r.done - first_blocking[&k]),
                        r.arrived
                            .map_or(String::new(), |at| format!("{:.3}", wall_ms(at, first_arrival[&k]))),
                        match (r.arrived, r.pdt_completion) {
                            (Some(at), Some(c)) => format!("{:.3}", wall_ms(at, c)),
                            _ => String::new(),
                        },
                        ms(r.done - r.sent)
                    );
                }
                blocking_wait.push(ms(r.done - r.sent));
                if let Some(c) = r.pdt_completion {
                    vs_pdt.push(wall_ms(r.done_wall, c));
                }
                match r.arrived {
                    Some(at) => {
                        arr_first.push(wall_ms(at, first_arrival[&k]));
                        if let Some(c) = r.pdt_completion {
                            arr_pdt.push(wall_ms(at, c));
                        }
                    }
                    None => unstamped += 1,
                }
            }
            (Kind::Part, Some(k)) => part_vs_first.push(ms(r.done - first_part[&k])),
            _ => {}
        }
    }
    if let Some(path) = &args.dump {
        std::fs::write(
            path,
            format!("msn,part,delay_first_ms,arrival_first_ms,arrival_pdt_ms,wait_ms\n{dump}"),
        )?;
    }
    let total_ok: u64 = counts.values().map(|c| c.0).sum();
    let total_failed: u64 = counts.values().map(|c| c.1).sum();
    let cpu = |a: &Option<proc::Sample>, b: &Option<proc::Sample>| match (a, b) {
        (Some(a), Some(b)) => Some((b.cpu_secs - a.cpu_secs, proc::cpu_percent(a, b))),
        _ => None,
    };
    let server_win = cpu(&win_a, &win_b);
    let server_base = cpu(&base_a, &base_b);
    let rss_mean = (!rss.is_empty()).then(|| rss.iter().sum::<u64>() as f64 / rss.len() as f64);
    let rss_max = rss.iter().max().copied();
    let rss_before = base_b.map(|s| s.rss_kib);
    let client_cpu = proc::cpu_percent(&self_a, &self_b);
    let vf = dist(vs_first);
    let vp = dist(vs_pdt);
    let af = dist(arr_first);
    let ap = dist(arr_pdt);
    let pf = dist(part_vs_first);
    let bw = dist(blocking_wait);
    let total = total_ok + total_failed;
    let req_per_cpu_s = server_win.and_then(|(s, _)| (s > 0.0).then(|| total as f64 / s));
    let verdict = af.p99.map(|p| p <= args.target_ms);

    // --- output --------------------------------------------------------------------------
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    let mut t = String::new();
    let _ = writeln!(t, "{} ({:?}), {} players, window {window_s:.0} s", args.label, args.mode, args.clients);
    for k in Kind::ALL {
        if let Some((ok, bad)) = counts.get(k.name()) {
            let _ = writeln!(
                t,
                "  {:<9} {:>8} ok {:>6} failed  {:>8.1}/s",
                k.name(),
                ok,
                bad,
                (ok + bad) as f64 / window_s
            );
        }
    }
    let _ = writeln!(
        t,
        "  requests total {total} ({:.1}/s), {:.1} MiB/s received",
        total as f64 / window_s,
        bytes as f64 / window_s / 1048576.0
    );
    if vf.n > 0 {
        for (what, first, pdt) in
            [("arrival (kernel receive time)", &af, &ap), ("read by the player task", &vf, &vp)]
        {
            let _ = writeln!(
                t,
                "  blocking reload answer, {what}, ms after the first answer to its part: p50 {} p95 {} p99 {} max {} (n={})",
                f(first.p50),
                f(first.p95),
                f(first.p99),
                f(first.max),
                first.n
            );
            let _ = writeln!(
                t,
                "  blocking reload answer, {what}, ms after its part's PDT completion: min {} p50 {} p95 {} p99 {} max {} (n={})",
                f(pdt.min),
                f(pdt.p50),
                f(pdt.p95),
                f(pdt.p99),
                f(pdt.max),
                pdt.n
            );
        }
        if unstamped > 0 {
            let _ = writeln!(
                t,
                "  {unstamped} answers without a kernel receive time (not in the arrival figures)"
            );
        }
        let _ = writeln!(
            t,
            "  part response delay vs first answer ms: p50 {} p95 {} p99 {} max {}",
            f(pf.p50),
            f(pf.p95),
            f(pf.p99),
            f(pf.max)
        );
        let _ = writeln!(
            t,
            "  blocking reload time request->response ms: p50 {} p95 {} p99 {} max {}",
            f(bw.p50),
            f(bw.p95),
            f(bw.p99),
            f(bw.max)
        );
        let _ = writeln!(
            t,
            "  target p99 <= {} ms (arrival, vs first answer): {}",
            args.target_ms,
            match verdict {
                Some(true) => "MET",
                Some(false) => "NOT MET",
                None => "-",
            }
        );
    }
    if let Some((secs, pctc)) = server_win {
        let _ = writeln!(t, "  server CPU {pctc:.1}% of a core ({secs:.2} CPU s), baseline (no players) {}%, RSS mean {} KiB max {} KiB (before players {} KiB)",
            f(server_base.map(|b| b.1)), f(rss_mean), rss_max.map_or("-".into(), |x| x.to_string()), rss_before.map_or("-".into(), |x| x.to_string()));
        let _ = writeln!(t, "  requests per server CPU-second: {}", f(req_per_cpu_s));
    }
    let _ = writeln!(t, "  client CPU {client_cpu:.1}% of a core");
    for (e, n) in &errors {
        let _ = writeln!(t, "  error x{n}: {e}");
    }
    eprint!("{t}");

    // JSON line (hand-written: flat numbers and strings only).
    let mut j = String::from("{");
    let mut put = |k: &str, v: String| {
        if j.len() > 1 {
            j.push(',');
        }
        let _ = write!(j, "\"{k}\":{v}");
    };
    let num = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.3}"));
    let s = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    put("label", s(&args.label));
    put(
        "mode",
        s(match args.mode {
            ModeArg::Ll => "ll",
            ModeArg::Plain => "plain",
        }),
    );
    put("clients", args.clients.to_string());
    put("window_s", format!("{window_s:.3}"));
    for k in Kind::ALL {
        let (ok, bad) = counts.get(k.name()).copied().unwrap_or_default();
        put(&format!("{}_ok", k.name()), ok.to_string());
        put(&format!("{}_failed", k.name()), bad.to_string());
    }
    put("requests", total.to_string());
    put("requests_per_s", format!("{:.3}", total as f64 / window_s));
    put("failed", total_failed.to_string());
    put("mib_per_s", format!("{:.3}", bytes as f64 / window_s / 1048576.0));
    for (name, d) in [
        ("arrival_first", &af),
        ("arrival_pdt", &ap),
        ("delay_first", &vf),
        ("delay_pdt", &vp),
        ("part_delay_first", &pf),
        ("blocking_wait", &bw),
    ] {
        put(&format!("{name}_n"), d.n.to_string());
        put(&format!("{name}_p50_ms"), num(d.p50));
        put(&format!("{name}_p95_ms"), num(d.p95));
        put(&format!("{name}_p99_ms"), num(d.p99));
        put(&format!("{name}_max_ms"), num(d.max));
    }
    put("delay_pdt_min_ms", num(vp.min));
    put("arrival_pdt_min_ms", num(ap.min));
    put("unstamped", unstamped.to_string());
    put("target_met", verdict.map_or("null".into(), |b| b.to_string()));
    put("server_cpu_s", num(server_win.map(|x| x.0)));
    put("server_cpu_pct", num(server_win.map(|x| x.1)));
    put("server_cpu_pct_baseline", num(server_base.map(|x| x.1)));
    put("server_rss_mean_kib", num(rss_mean));
    put("server_rss_max_kib", rss_max.map_or("null".into(), |x| x.to_string()));
    put("server_rss_before_kib", rss_before.map_or("null".into(), |x| x.to_string()));
    put("requests_per_server_cpu_s", num(req_per_cpu_s));
    put("client_cpu_pct", format!("{client_cpu:.3}"));
    let errs: Vec<String> = errors.iter().map(|(e, n)| format!("{n}x {e}")).collect();
    put("errors", s(&errs.join("; ")));
    j.push('}');
    println!("{j}");
    Ok(())
}
