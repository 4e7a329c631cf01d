//! `api-load`: many keep-alive HTTP/1.1 connections, each sending one request at a time (like
//! real players and apps: no pipelining), against one Platform API endpoint for a fixed time.
//! Reports requests per second, status counts and latency percentiles, as a table on stderr
//! and one JSON line on stdout.
//!
//! The client is a hand-rolled HTTP/1.1 loop over a `TcpStream` (pre-built request bytes,
//! status + Content-Length parsing) so that on a 2-core machine shared with the server it
//! costs as little CPU as possible; a full HTTP client would measure itself.
//!
//! Access tokens are signed here (HS256 JWT, the server's own key ring from
//! `data_dir/secrets/jwt.keys`) for users 1..=N, so the benchmark does not spend minutes on
//! Argon2 logins.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::{Parser, ValueEnum};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    /// POST /api/v1/videos/{id}/watch
    Watch,
    /// GET /api/v1/videos/{id}
    Video,
    /// GET /api/v1/users/me/history
    History,
    /// GET /api/v1/search?q=...
    Search,
}

#[derive(Parser, Debug)]
struct Args {
    /// Server address, ip:port.
    #[arg(long)]
    addr: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Concurrent connections.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to run (after a 1 s warm-up that is not counted).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The server's JWT key ring file (`kid:secret,...`; the first key signs).
    #[arg(long)]
    jwt_keys: String,
    /// Users 1..=users exist in the database.
    #[arg(long, default_value_t = 1000)]
    users: i64,
    /// Videos 1..=videos exist (public, ready).
    #[arg(long, default_value_t = 1000)]
    videos: i64,
    /// Open loop: total requests per second over all connections, each connection paced
    /// evenly; latency counts from the scheduled send time (no coordinated omission). 0 (the
    /// default) is a closed loop: every connection sends its next request as soon as the
    /// previous answer arrives, which measures saturation throughput.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Label in the report.
    #[arg(long, default_value = "")]
    label: String,
}

fn sign_jwt(kid: &str, secret: &[u8], user: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let claims = serde_json::json!({"sub": user.to_string(), "adm": false, "iat": now, "exp": now + 3600, "jti": format!("load-{user}-{now}")});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

const SEARCH_WORDS: &[&str] =
    &["rust", "music", "news", "game", "live", "cook", "travel", "talk", "code", "film"];

fn request(mode: Mode, host: &str, token: &str, n: u64, videos: i64) -> Vec<u8> {
    let video = (n as i64 % videos) + 1;
    let (method, path, body) = match mode {
        Mode::Watch => (
            "POST",
            format!("/api/v1/videos/{video}/watch"),
            format!("{{\"position_seconds\":{}}}", n % 3600),
        ),
        Mode::Video => ("GET", format!("/api/v1/videos/{video}"), String::new()),
        Mode::History => ("GET", "/api/v1/users/me/history?limit=20".to_owned(), String::new()),
        Mode::Search => (
            "GET",
            format!("/api/v1/search?q={}&limit=20", SEARCH_WORDS[n as usize % SEARCH_WORDS.len()]),
            String::new(),
        ),
    };
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n");
    if !body.is_empty() {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(&body);
    r.into_bytes()
}

/// Reads one response; returns its status. `buf` keeps bytes of a following response (none
/// without pipelining, but harmless).
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 head")?;
            let status: u16 = head.split_whitespace().nth(1).context("no status")?.parse()?;
            let lower = head.to_ascii_lowercase();
            if lower.contains("transfer-encoding: chunked") {
                bail!("chunked responses are not expected from the API");
            }
            let len: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse())
                .transpose()?
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let k = sock.read(&mut chunk).await?;
                if k == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let k = sock.read(&mut chunk).await?;
        if k == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

struct WorkerResult {
    latencies_us: Vec<u32>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

async fn worker(
    args: std::sync::Arc<Args>,
    token: String,
    id: usize,
    start_measure: Instant,
    end: Instant,
) -> WorkerResult {
    let mut res = WorkerResult { latencies_us: Vec::new(), statuses: Default::default(), errors: 0 };
    let mut n = id as u64 * 7919;
    // Open loop: this connection's share of the rate, phase-shifted so connections interleave.
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let mut next_send = interval.map(|i| Instant::now() + i.mul_f64(id as f64 / args.concurrency as f64));
    'reconnect: while Instant::now() < end {
        let Ok(mut sock) = TcpStream::connect(&args.addr).await else {
            res.errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let mut buf = Vec::with_capacity(16 * 1024);
        while Instant::now() < end {
            n += 1;
            let req = request(args.mode, &args.addr, &token, n, args.videos);
            let t = match (next_send, interval) {
                (Some(at), Some(i)) => {
                    tokio::time::sleep_until(at.into()).await;
                    next_send = Some(at + i);
                    at
                }
                _ => Instant::now(),
            };
            if sock.write_all(&req).await.is_err() {
                res.errors += 1;
                continue 'reconnect;
            }
            match tokio::time::timeout(Duration::from_secs(10), read_response(&mut sock, &mut buf)).await {
                Ok(Ok(status)) => {
                    if t >= start_measure {
                        res.latencies_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        *res.statuses.entry(status).or_default() += 1;
                    }
                }
                _ => {
                    res.errors += 1;
                    continue 'reconnect;
                }
            }
        }
    }
    res
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    let ring = std::fs::read_to_string(&args.jwt_keys).context("reading the JWT key ring")?;
    let first = ring.split(',').next().context("empty key ring")?.trim();
    let (kid, secret) = first.split_once(':').context("key ring entry is not kid:secret")?;
    let warmup = Duration::from_secs(1);
    let start_measure = Instant::now() + warmup;
    let end = start_measure + Duration::from_secs(args.duration);
    let mut handles = Vec::new();
    for i in 0..args.concurrency {
        let user = (i as i64 % args.users) + 1;
        let token = sign_jwt(kid, secret.as_bytes(), user);
        handles.push(tokio::spawn(worker(args.clone(), token, i, start_measure, end)));
    }
    let mut all = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut errors = 0;
    for h in handles {
        let r = h.await?;
        all.extend(r.latencies_us);
        for (k, v) in r.statuses {
            *statuses.entry(k).or_default() += v;
        }
        errors += r.errors;
    }
    all.sort_unstable();
    let total = all.len() as f64;
    let rps = total / args.duration as f64;
    let (p50, p90, p99, max) = (pct(&all, 0.5), pct(&all, 0.9), pct(&all, 0.99), pct(&all, 1.0));
    eprintln!(
        "{:<24} {:>9.0} req/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  statuses {:?}  errors {}",
        if args.label.is_empty() { format!("{:?}", args.mode) } else { args.label.clone() },
        rps,
        p50,
        p90,
        p99,
        max,
        statuses,
        errors
    );
    let status_json: serde_json::Map<String, serde_json::Value> =
        statuses.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    println!(
        "{}",
        serde_json::json!({
            "label": args.label, "rate": args.rate, "mode": format!("{:?}", args.mode).to_lowercase(), "concurrency": args.concurrency,
            "duration_s": args.duration, "requests": total as u64, "rps": rps.round(),
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max, "statuses": status_json, "errors": errors
        })
    );
    Ok(())
}
