//! `whep-clients`: N WHEP viewers of one channel in one process (one tokio runtime), each an
//! `rtc` peer connection on its own UDP socket that receives and counts RTP (no decoding).
//!
//! Timeline (all bounded; the process gives up at `window.end + 20 s` whatever happens):
//!   t0                 server sampled (CPU, RSS before viewers)
//!   t0 + baseline      sampled again: the server's CPU with no viewer (publish only)
//!                      viewers start at `--ramp` per second: POST offer, set answer, ICE + DTLS
//!   ramp end + settle  the window opens for `--duration` s: server CPU (utime+stime) at both
//!                      ends, RSS once a second; per viewer: RTP packets/bytes, gaps, loss
//!   window end         every viewer DELETEs its session and closes; a table goes to stderr and
//!                      one JSON line to stdout
//!
//! A viewer that gets no RTP for `--stall-ms` (2 s) inside the window has stalled; one whose
//! last stall runs to the window's end (or whose connection failed or closed in the window) was
//! cut off.

#[path = "../fields.rs"]
mod fields;
#[path = "../flv.rs"]
#[allow(dead_code)] // shared with rtmp-fanout, which uses all of it
mod flv;
#[path = "../proc.rs"]
mod proc;

mod http;
mod peer;
mod publish;
mod viewer;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use fields::Value;
use viewer::{ViewerReport, Window};

#[derive(Parser, Debug)]
#[command(name = "whep-clients", about = "WHEP load: many light WebRTC viewers of one channel, one process")]
struct Args {
    /// The WHEP endpoint: http://HOST:PORT/whep/CHANNEL (any http URL that takes a WHEP POST).
    #[arg(long, required_unless_present_any = ["whip_publish", "udp_floor"])]
    url: Option<String>,
    /// Instead of viewers: publish --input's H.264 over WHIP to this URL (real time, looped, for
    /// --duration seconds; --token is the Bearer token, e.g. a tidecast stream key).
    #[arg(long, requires = "input")]
    whip_publish: Option<String>,
    /// The FLV file (H.264 without B-frames) the WHIP publisher sends.
    #[arg(long)]
    input: Option<std::path::PathBuf>,
    /// Number of viewers.
    #[arg(long, default_value_t = 20)]
    viewers: usize,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Viewer connection rate, new peer connections per second.
    #[arg(long, default_value_t = 20.0)]
    ramp: f64,
    /// Seconds between the last viewer starting and the window opening.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Seconds of server sampling before the first viewer (publish-only CPU, RSS before).
    #[arg(long, default_value_t = 3)]
    baseline: u64,
    /// PID of the server, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label put in the results.
    #[arg(long, default_value = "server")]
    label: String,
    /// No RTP for this long inside the window is a stall, ms.
    #[arg(long, default_value_t = 2000)]
    stall_ms: u64,
    /// Bearer token for the POST and DELETE (private channels).
    #[arg(long)]
    token: Option<String>,
    /// ICE + DTLS must complete within this many seconds of the answer.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Datagrams a viewer reads per wake-up before polling its connection.
    #[arg(long, default_value_t = 32)]
    read_burst: usize,
    /// SO_RCVBUF of each viewer's UDP socket, bytes (0: the system default; the kernel caps it
    /// at net.core.rmem_max).
    #[arg(long, default_value_t = 0)]
    rcvbuf: usize,
    /// The IP the viewers' (and the WHIP publisher's) UDP sockets bind and advertise as their
    /// host candidate. 127.0.0.1 by default; a server that leaves loopback out of its own
    /// candidates (webrtc-rs's full ICE agent, in xiu) needs the machine's own address.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: std::net::IpAddr,
    /// Instead of viewers: the kernel's floor for WHEP's sends, this many datagrams a second to
    /// each of --viewers local sockets for --duration seconds (see `udp_floor`).
    #[arg(long)]
    udp_floor: Option<u32>,
    /// Datagram size for --udp-floor, bytes.
    #[arg(long, default_value_t = 1100)]
    floor_size: usize,
    /// --udp-floor with UDP GSO (UDP_SEGMENT): one send per destination per frame, the kernel
    /// cuts it into the datagrams.
    #[arg(long)]
    floor_gso: bool,
    /// Worker threads of the runtime (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.viewers == 0 || args.viewers > 5000 {
        bail!("--viewers must be 1..=5000");
    }
    if !(args.ramp > 0.0 && args.ramp <= 1000.0) {
        bail!("--ramp must be in (0, 1000] connections per second");
    }
    if args.duration == 0 || args.duration > 3600 {
        bail!("--duration must be 1..=3600 seconds");
    }
    if args.baseline > 120 || args.settle > 120 || !(1..=60).contains(&args.connect_timeout) {
        bail!("--baseline and --settle at most 120 s, --connect-timeout 1..=60 s");
    }
    if !(1..=1024).contains(&args.read_burst) || !(100..=60_000).contains(&args.stall_ms) {
        bail!("--read-burst 1..=1024, --stall-ms 100..=60000");
    }
    if let Some(pps) = args.udp_floor {
        if !(1..=10_000).contains(&pps) || !(1..=1472).contains(&args.floor_size) {
            bail!("--udp-floor 1..=10000 datagrams/s, --floor-size 1..=1472 bytes");
        }
        return udp_floor(args.viewers, pps, args.floor_size, args.duration, args.floor_gso);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = rt.enable_all().build()?;
    if let (Some(url), Some(input)) = (&args.whip_publish, &args.input) {
        return rt.block_on(publish::run(
            url,
            args.token.as_deref(),
            input,
            Duration::from_secs(args.duration),
            args.bind_ip,
        ));
    }
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let endpoint = http::Endpoint::parse(args.url.as_deref().unwrap_or_default())?;
    let t0 = Instant::now();
    let ramp_time = Duration::from_secs_f64(args.viewers as f64 / args.ramp);
    let ramp_start = t0 + Duration::from_secs(args.baseline);
    let window = Window {
        start: ramp_start + ramp_time + Duration::from_secs(args.settle),
        end: ramp_start + ramp_time + Duration::from_secs(args.settle + args.duration),
    };
    let hard_deadline = window.end + Duration::from_secs(20);
    let at = |i: Instant| tokio::time::Instant::from_std(i);

    let server = args.server_pid.map(proc::Sampler::new);
    let base_a = server.as_ref().map(|s| s.sample()).transpose()?;
    tokio::time::sleep_until(at(ramp_start)).await;
    let base_b = server.as_ref().map(|s| s.sample()).transpose()?;
    let client_self = proc::Sampler::new_self();

    let (leave_tx, leave) = tokio::sync::watch::channel(false);
    let opts = viewer::Options {
        endpoint,
        token: args.token.clone(),
        window,
        stall: Duration::from_millis(args.stall_ms),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        read_burst: args.read_burst,
        rcvbuf: args.rcvbuf,
        bind_ip: args.bind_ip,
        leave,
    };
    let mut tasks = Vec::with_capacity(args.viewers);
    for i in 0..args.viewers {
        tokio::time::sleep_until(at(ramp_start + Duration::from_secs_f64(i as f64 / args.ramp))).await;
        tasks.push(tokio::spawn(viewer::run(opts.clone())));
    }

    tokio::time::sleep_until(at(window.start)).await;
    let win_a = server.as_ref().map(|s| s.sample()).transpose()?;
    let self_a = client_self.sample()?;
    let drops_a = udp_drops_of_self();
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(at(window.end)) => break,
            _ = tick.tick() => {
                if let Some(s) = &server {
                    rss.push(s.sample().context("sampling the server's RSS")?.rss_kib);
                }
            }
        }
    }
    let win_b = server.as_ref().map(|s| s.sample()).transpose()?;
    let self_b = client_self.sample()?;
    // Datagrams the kernel dropped on the viewers' sockets (full receive buffers): before the
    // window (mostly each viewer's start) and in it. Read before any viewer stops reading.
    let drops_b = udp_drops_of_self();
    let _ = leave_tx.send(true);

    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        match tokio::time::timeout_at(at(hard_deadline), t).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => bail!("a viewer task panicked: {e}"),
            Err(_) => bail!("viewers did not finish by the hard deadline"),
        }
    }

    let mut out = Summary::default();
    out.s("label", &args.label);
    out.i("viewers", args.viewers as u64);
    out.n("window_s", (window.end - window.start).as_secs_f64());
    summarize(&mut out, &reports, args.viewers, (window.end - window.start).as_secs_f64());
    if let (Some(a), Some(b), Some(c), Some(d)) = (base_a, base_b, win_a, win_b) {
        let cpu = proc::cpu_percent(&c, &d);
        let base = proc::cpu_percent(&a, &b);
        let n = args.viewers as f64;
        let rss_mean =
            if rss.is_empty() { d.rss_kib as f64 } else { rss.iter().sum::<u64>() as f64 / rss.len() as f64 };
        out.n("server_cpu_pct", cpu);
        out.n("server_cpu_pct_per_viewer", cpu / n);
        out.n("server_cpu_pct_publish_only", base);
        out.n("server_cpu_pct_per_viewer_marginal", (cpu - base) / n);
        out.i("server_rss_before_kib", b.rss_kib);
        out.n("server_rss_window_mean_kib", rss_mean);
        out.n("server_rss_per_viewer_kib", (rss_mean - b.rss_kib as f64) / n);
    }
    out.n("client_cpu_pct", proc::cpu_percent(&self_a, &self_b));
    out.o("client_udp_drops_before_window", drops_a.map(|d| d as f64));
    out.o("client_udp_drops_in_window", drops_a.zip(drops_b).map(|(a, b)| b.saturating_sub(a) as f64));
    let mut reasons: Vec<String> = Vec::new();
    for r in &reports {
        for e in [&r.setup_error, &r.disconnected, &r.delete_error].into_iter().flatten() {
            if !reasons.contains(e) && reasons.len() < 3 {
                reasons.push(e.clone());
            }
        }
    }
    out.s("errors", &reasons.join(" | "));
    out.print();
    Ok(())
}

/// The sum of the kernel's drop counters (the last column of /proc/net/udp) over this
/// process's UDP sockets, found by their inodes in /proc/self/fd.
fn udp_drops_of_self() -> Option<u64> {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(link) = std::fs::read_link(e.path()) {
            let l = link.to_string_lossy();
            if let Some(i) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(i.to_owned());
            }
        }
    }
    let table = std::fs::read_to_string("/proc/self/net/udp").ok()?;
    let mut drops = 0;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 12 && inodes.contains(f[9]) {
            drops += f[f.len() - 1].parse::<u64>().unwrap_or(0);
        }
    }
    Some(drops)
}

fn pct(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn summarize(out: &mut Summary, reports: &[ViewerReport], n: usize, window_s: f64) {
    let setup_failed = reports.iter().filter(|r| r.setup_error.is_some()).count();
    let connected = reports.iter().filter(|r| r.connected.is_some()).count();
    let received = reports.iter().filter(|r| r.video_packets > 0).count();
    let stalled = reports.iter().filter(|r| r.setup_error.is_none() && r.max_gap_ms >= 2000).count();
    let cut_off = reports.iter().filter(|r| r.setup_error.is_none() && r.cut_off).count();
    let disconnected = reports.iter().filter(|r| r.disconnected.is_some()).count();
    let skipped = reports.iter().filter(|r| r.skips > 0).count();
    let kept_up = reports
        .iter()
        .filter(|r| {
            r.setup_error.is_none()
                && r.video_packets > 0
                && r.max_gap_ms < 2000
                && !r.cut_off
                && r.disconnected.is_none()
        })
        .count();
    out.i("connected", connected as u64);
    out.i("received_in_window", received as u64);
    out.i("kept_up", kept_up as u64);
    out.i("stalled", stalled as u64);
    out.i("cut_off", cut_off as u64);
    out.i("setup_failed", setup_failed as u64);
    out.i("disconnected", disconnected as u64);
    out.i("viewers_with_skip", skipped as u64);

    let ms = |d: Option<Duration>| d.map(|d| d.as_micros() as u64);
    for (name, vals) in [
        ("answer", reports.iter().filter_map(|r| ms(r.answered)).collect::<Vec<_>>()),
        ("connect", reports.iter().filter_map(|r| ms(r.connected)).collect()),
        ("first_video", reports.iter().filter_map(|r| ms(r.first_video)).collect()),
    ] {
        let mut v = vals;
        v.sort_unstable();
        for (p, tag) in [(50.0, "p50"), (95.0, "p95"), (100.0, "max")] {
            let key: &'static str = Box::leak(format!("{name}_{tag}_ms").into_boxed_str());
            out.o(key, pct(&v, p).map(|us| us as f64 / 1000.0));
        }
    }

    let ok: Vec<&ViewerReport> = reports.iter().filter(|r| r.setup_error.is_none()).collect();
    let nok = ok.len().max(1) as f64;
    let packets: Vec<u64> = ok.iter().map(|r| r.video_packets + r.audio_packets).collect();
    let bytes: Vec<u64> = ok.iter().map(|r| r.rtp_bytes).collect();
    out.n("packets_per_viewer_mean", packets.iter().sum::<u64>() as f64 / nok);
    out.i("packets_per_viewer_min", packets.iter().copied().min().unwrap_or(0));
    out.n("video_packets_per_viewer_mean", ok.iter().map(|r| r.video_packets).sum::<u64>() as f64 / nok);
    out.n("audio_packets_per_viewer_mean", ok.iter().map(|r| r.audio_packets).sum::<u64>() as f64 / nok);
    out.n("bytes_per_viewer_mean", bytes.iter().sum::<u64>() as f64 / nok);
    out.i("bytes_per_viewer_min", bytes.iter().copied().min().unwrap_or(0));
    out.n("mbps_per_viewer_mean", bytes.iter().sum::<u64>() as f64 * 8.0 / nok / window_s / 1e6);
    out.i("rtp_lost_first_sight", ok.iter().map(|r| r.lost).sum());
    out.i("rtp_late_or_repaired", ok.iter().map(|r| r.late).sum());
    out.i("rtp_lost_first_sight_before_window", ok.iter().map(|r| r.lost_before).sum());
    out.i("rtp_late_or_repaired_before_window", ok.iter().map(|r| r.late_before).sum());
    out.i("viewers_with_loss_before_window", ok.iter().filter(|r| r.lost_before > 0).count() as u64);
    let mut gaps: Vec<u64> = ok.iter().map(|r| r.max_gap_ms).collect();
    gaps.sort_unstable();
    out.o("max_gap_p50_ms", pct(&gaps, 50.0).map(|v| v as f64));
    out.o("max_gap_max_ms", pct(&gaps, 100.0).map(|v| v as f64));
    out.i(
        "deleted_ok",
        reports.iter().filter(|r| r.delete_status.is_some_and(|s| (200..300).contains(&s))).count() as u64,
    );
    let _ = n;
}

#[derive(Default)]
struct Summary {
    fields: Vec<(&'static str, Value)>,
}

impl Summary {
    fn n(&mut self, k: &'static str, v: f64) {
        self.fields.push((k, Value::Num(v)));
    }
    fn i(&mut self, k: &'static str, v: u64) {
        self.fields.push((k, Value::Int(v)));
    }
    fn s(&mut self, k: &'static str, v: &str) {
        self.fields.push((k, Value::Str(v.to_owned())));
    }
    fn o(&mut self, k: &'static str, v: Option<f64>) {
        self.fields.push((k, v.map(Value::Num).unwrap_or(Value::Null)));
    }

    fn print(&self) {
        fields::print(&self.fields);
    }
}

/// The floor (`--udp-floor PPS`): what the kernel alone charges a sender for WHEP's datagrams on
/// this machine. One thread sends PPS datagrams a second of `--floor-size` bytes to each of
/// `--viewers` sockets (one send per datagram, paced per 1/30 s frame, like a server that sends
/// each RTP packet with its own sendto), while the runtime drains the sockets; prints the sending
/// thread's CPU (RUSAGE_THREAD: user + system, which on loopback includes delivering each
/// datagram into the receiver's queue) as % of a core, and per destination.
fn udp_floor(viewers: usize, pps: u32, size: usize, secs: u64, gso: bool) -> Result<()> {
    use std::net::UdpSocket;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut addrs = Vec::with_capacity(viewers);
    let mut drains = Vec::new();
    for _ in 0..viewers {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_nonblocking(true)?;
        addrs.push(s.local_addr()?);
        let stop = stop.clone();
        drains.push(rt.spawn(async move {
            let s = tokio::net::UdpSocket::from_std(s).expect("a socket");
            let mut buf = vec![0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = tokio::time::timeout(Duration::from_millis(200), s.recv_from(&mut buf)).await;
            }
        }));
    }
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let per_frame = (pps as f64 / 30.0).ceil() as usize;
    if gso {
        nix::sys::socket::setsockopt(&sender, nix::sys::socket::sockopt::UdpGsoSegment, &(size as i32))?;
    }
    let payload = vec![0x5au8; if gso { size * per_frame } else { size }];
    let usage = || -> Result<f64> {
        let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)?;
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        Ok(t(u.user_time()) + t(u.system_time()))
    };
    let (c0, t0) = (usage()?, Instant::now());
    let mut sent = 0u64;
    let mut frame = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        for a in &addrs {
            if gso {
                if sender.send_to(&payload, a).is_ok() {
                    sent += per_frame as u64;
                }
                continue;
            }
            for _ in 0..per_frame {
                if sender.send_to(&payload, a).is_ok() {
                    sent += 1;
                }
            }
        }
        frame += 1;
        let next = t0 + Duration::from_secs_f64(frame as f64 / 30.0);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let (c1, wall) = (usage()?, t0.elapsed().as_secs_f64());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for d in drains {
            let _ = d.await;
        }
    });
    let cpu = (c1 - c0) / wall * 100.0;
    eprintln!(
        "  udp floor{}: {viewers} destinations x {} datagrams/s of {size} bytes = {:.0} datagrams/s",
        if gso { " (GSO, one send per destination per frame)" } else { "" },
        per_frame * 30,
        sent as f64 / wall
    );
    eprintln!("  sender thread CPU {cpu:.2} % of a core, {:.4} % per destination", cpu / viewers as f64);
    println!(
        "{{\"label\":\"udp-floor{}\",\"viewers\":{viewers},\"datagrams_per_s\":{:.0},\"bytes\":{size},\"sender_cpu_pct\":{cpu:.3},\"sender_cpu_pct_per_viewer\":{:.5}}}",
        if gso { "-gso" } else { "" },
        sent as f64 / wall,
        cpu / viewers as f64
    );
    Ok(())
}
