//! One simulated HLS player. Two behaviours:
//!
//! - `LlHls` (hls.js in low-latency mode at the live edge): GET the media playlist once, then
//!   loop: take the preload hint `part-M-I.m4s`, issue the blocking reload
//!   `?_HLS_msn=M&_HLS_part=I[&_HLS_skip=YES]` and, concurrently, GET the hinted part (the server
//!   holds it until complete). The next reload is issued as soon as the playlist answers; part
//!   fetches run on their own (at most `MAX_PARTS_IN_FLIGHT` per player, as spawned tasks), as in
//!   hls.js where playlist reloads and fragment loads are separate loops.
//! - `Plain` (a classic HLS player; nginx-rtmp has no LL-HLS): poll the playlist every
//!   `poll` (random phase per player) and GET each segment that appeared since the last poll,
//!   once. The first poll fetches only the newest segment.
//!
//! Requests go through `http.rs`, our own minimal HTTP/1.1 GET client; each player has its own
//! small pool of keep-alive connections, shared by its reload loop and its part tasks (so at
//! most 1 + `MAX_PARTS_IN_FLIGHT` connections per player are busy at once). Every request is
//! timed; records are returned when the window closes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::http::{self, Pool, Target};
use super::playlist::{self, Playlist};

/// Give up on one request after this long (tidecast's `hls.block_timeout` is 6 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Part fetches one player may have outstanding before it waits for one to finish.
const MAX_PARTS_IN_FLIGHT: usize = 4;
/// Pause after a failed playlist request before trying again (a plain GET, to resync).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Playlist,
    Blocking,
    Part,
    Segment,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Playlist, Kind::Blocking, Kind::Part, Kind::Segment];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::Blocking => "blocking",
            Kind::Part => "part",
            Kind::Segment => "segment",
        }
    }
}

/// One finished (or failed) request.
#[derive(Clone, Debug)]
pub struct Record {
    pub kind: Kind,
    /// 0 for a transport error or timeout.
    pub status: u16,
    pub sent: Instant,
    /// When the whole body had arrived (or the failure).
    pub done: Instant,
    pub done_wall: SystemTime,
    /// The kernel's receive time of the response's first bytes at the player's socket.
    pub arrived: Option<SystemTime>,
    pub bytes: usize,
    /// The part a blocking reload or part fetch asked for.
    pub key: Option<(u64, u32)>,
    /// Blocking reloads: completion of that part by the returned playlist's date-times.
    pub pdt_completion: Option<SystemTime>,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `after_reload`: fetch a part once the reload that asked for it has answered (hls.js
    /// 1.7), instead of fetching the hinted part beside the reload (players that use preload
    /// hints, e.g. Safari).
    LlHls {
        skip: bool,
        parts: bool,
        after_reload: bool,
    },
    Plain {
        poll: Duration,
    },
}

pub struct Ctx {
    pub target: Target,
    /// Path and query of the media playlist.
    pub playlist_path: String,
    /// `playlist_path` up to and including the last '/' of its path.
    pub base: String,
    pub mode: Mode,
    /// Players stop issuing requests here and abandon what is in flight.
    pub stop: Instant,
}

impl Ctx {
    /// `playlist_url`: `http://host[:port]/path[?query]` (the host is resolved once, here).
    pub async fn new(playlist_url: &str, mode: Mode, stop: Instant) -> Result<Self> {
        let (target, playlist_path) = Target::from_url(playlist_url).await?;
        let path_only = playlist_path.split('?').next().unwrap_or_default();
        let base = path_only[..=path_only.rfind('/').unwrap_or(0)].to_string();
        Ok(Ctx { target, playlist_path, base, mode, stop })
    }

    /// The request path for a URI found in the playlist. An absolute URL on another host comes
    /// back unchanged, and the request then fails with an error saying so.
    fn resolve(&self, uri: &str) -> String {
        if let Some(rest) = uri.strip_prefix("http://") {
            match http::split_authority(rest) {
                (host, path) if host == self.target.host => path.to_string(),
                _ => uri.to_string(),
            }
        } else if uri.starts_with('/') {
            uri.to_string()
        } else {
            format!("{}{uri}", self.base)
        }
    }
}

/// GET `path`; keep the body only when asked (playlists), otherwise just count it.
async fn get(
    ctx: &Ctx,
    pool: &Pool,
    kind: Kind,
    path: &str,
    keep: bool,
    key: Option<(u64, u32)>,
) -> (Record, Option<Vec<u8>>) {
    let sent = Instant::now();
    let mut body = keep.then(Vec::new);
    let result =
        http::get(&ctx.target, pool, path, body.as_mut(), sent + REQUEST_TIMEOUT, REQUEST_TIMEOUT).await;
    let (done, done_wall) = (Instant::now(), SystemTime::now());
    match result {
        Ok(r) => (
            Record {
                kind,
                status: r.status,
                sent,
                done,
                done_wall,
                arrived: r.arrived,
                bytes: r.bytes,
                key,
                pdt_completion: None,
                error: None,
            },
            body,
        ),
        Err(e) => (
            Record {
                kind,
                status: 0,
                sent,
                done,
                done_wall,
                arrived: None,
                bytes: 0,
                key,
                pdt_completion: None,
                error: Some(format!("{e:#}")),
            },
            None,
        ),
    }
}

fn parse_body(rec: &Record, body: Option<Vec<u8>>) -> Option<Playlist> {
    if rec.status != 200 {
        return None;
    }
    playlist::parse(std::str::from_utf8(&body?).ok()?).ok()
}

/// Run one player until `ctx.stop`; returns its records.
pub async fn run(ctx: Arc<Ctx>, id: usize) -> Vec<Record> {
    let mut records = Vec::with_capacity(512);
    let stop = ctx.stop;
    let pool = Arc::new(Pool::default());
    let body = async {
        match ctx.mode {
            Mode::LlHls { skip, parts, after_reload } => {
                ll_hls(&ctx, &pool, skip, parts, after_reload, &mut records).await
            }
            Mode::Plain { poll } => plain(&ctx, &pool, poll, id, &mut records).await,
        }
    };
    let _ = tokio::time::timeout_at(stop, body).await;
    records
}

async fn fresh_playlist(ctx: &Ctx, pool: &Pool, records: &mut Vec<Record>) -> Option<Playlist> {
    while Instant::now() < ctx.stop {
        let (rec, body) = get(ctx, pool, Kind::Playlist, &ctx.playlist_path, true, None).await;
        let pl = parse_body(&rec, body);
        records.push(rec);
        if pl.is_some() {
            return pl;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    None
}

async fn ll_hls(
    ctx: &Arc<Ctx>,
    pool: &Arc<Pool>,
    skip: bool,
    fetch_parts: bool,
    after_reload: bool,
    records: &mut Vec<Record>,
) {
    let mut parts: JoinSet<Record> = JoinSet::new();
    let mut pl = match fresh_playlist(ctx, pool, records).await {
        Some(p) => p,
        None => return,
    };
    loop {
        while let Some(r) = parts.try_join_next() {
            if let Ok(r) = r {
                records.push(r);
            }
        }
        let Some((hint_uri, (msn, part))) =
            pl.preload_hint.as_ref().and_then(|u| Some((u.clone(), playlist::part_of_uri(u)?)))
        else {
            // No hint (stream ended or not LL-HLS): start over from a plain reload.
            tokio::time::sleep(RETRY_PAUSE).await;
            pl = match fresh_playlist(ctx, pool, records).await {
                Some(p) => p,
                None => return,
            };
            continue;
        };
        if parts.len() >= MAX_PARTS_IN_FLIGHT {
            if let Some(Ok(r)) = parts.join_next().await {
                records.push(r);
            }
        }
        let fetch_part = |parts: &mut JoinSet<Record>| {
            let part_path = ctx.resolve(&hint_uri);
            let (ctx, pool) = (ctx.clone(), pool.clone());
            parts.spawn(
                async move { get(&ctx, &pool, Kind::Part, &part_path, false, Some((msn, part))).await.0 },
            );
        };
        if fetch_parts && !after_reload {
            fetch_part(&mut parts);
        }
        let path = format!(
            "{}{}_HLS_msn={msn}&_HLS_part={part}{}",
            ctx.playlist_path,
            if ctx.playlist_path.contains('?') { '&' } else { '?' },
            if skip { "&_HLS_skip=YES" } else { "" }
        );
        let (mut rec, body) = get(ctx, pool, Kind::Blocking, &path, true, Some((msn, part))).await;
        let next = parse_body(&rec, body);
        if let Some(p) = &next {
            rec.pdt_completion = p.part_completion(msn, part);
            if fetch_parts && after_reload {
                // The answer lists the part it was blocked on.
                fetch_part(&mut parts);
            }
        }
        records.push(rec);
        pl = match next {
            Some(p) => p,
            None => {
                tokio::time::sleep(RETRY_PAUSE).await;
                match fresh_playlist(ctx, pool, records).await {
                    Some(p) => p,
                    None => return,
                }
            }
        };
    }
}

async fn plain(ctx: &Ctx, pool: &Pool, poll: Duration, id: usize, records: &mut Vec<Record>) {
    // Spread the players' polls over the interval (a fixed pseudo-random phase per player).
    let phase = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (poll.as_micros().max(1) as u64);
    tokio::time::sleep(Duration::from_micros(phase)).await;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fetched: Option<u64> = None;
    loop {
        tick.tick().await;
        let (rec, body) = get(ctx, pool, Kind::Playlist, &ctx.playlist_path, true, None).await;
        let pl = parse_body(&rec, body);
        records.push(rec);
        let Some(pl) = pl else { continue };
        let complete: Vec<_> = pl.segments.iter().filter(|s| s.uri.is_some()).collect();
        let from = match fetched {
            Some(m) => m + 1,
            None => complete.last().map_or(0, |s| s.msn),
        };
        for s in complete.iter().filter(|s| s.msn >= from) {
            let path = ctx.resolve(s.uri.as_deref().unwrap_or_default());
            let (rec, _) = get(ctx, pool, Kind::Segment, &path, false, Some((s.msn, 0))).await;
            records.push(rec);
            fetched = Some(s.msn);
        }
    }
}
