//! LL-HLS delivery: multivariant and media playlists (with blocking reload and delta updates),
//! init segments, parts and segments, all from the packagers' in-memory windows.
//!
//! URLs (PRODUCT.md): `/live/<channel>/index.m3u8` (multivariant),
//! `/live/<channel>/<rendition>/index.m3u8` (media playlist), and media files under
//! `/live/<channel>/<rendition>/<session>/` where `<session>` is random per live session, so a
//! CDN may cache media as immutable without ever mixing two sessions of one channel.
//!
//! Blocking requests (RFC 8216bis §6.2.5.2) wait on the rendition's progress `watch`, through
//! this worker's mirror of it (`super::mirror`, so that their release is a local wake-up), with a
//! hard timeout (`hls.block_timeout`): 400 for a request too far ahead, 503 on timeout.
//! Caching (for CDNs): media files are immutable; a blocking playlist response is cacheable
//! briefly, keyed by its query (the directives select the content); a plain live playlist for
//! one second; errors never.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::watch;

use super::error::error_response;
use super::mirror;
use super::AppState;
use crate::actors::hls::{HlsChannel, HlsRendition, Progress, Window};
use crate::actors::pull::DemandGuard;
use crate::error::Error;
use crate::metrics::metrics;
use crate::protocols::hls::{
    advance_part_limit, block_decision, parse_query, render_media, render_multivariant, BlockDecision,
    HlsQuery, MediaPlaylist, PartEntry, PreloadHint, RenderOptions, RenditionReport, SegmentEntry,
    SkipRequest, VariantStream,
};

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// The `/live` routes. Registered first and under one scope: actix tries routes in order and
/// matches each dynamic pattern with a regex, so at 10,000 LL-HLS requests a second walking the
/// API's routes first was a measurable share of the server's CPU; a scope costs one prefix test.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/live")
            .route("/{channel}/index.m3u8", web::get().to(multivariant))
            .route("/{channel}/dvr.m3u8", web::get().to(super::dvr::multivariant))
            .route("/{channel}/{rendition}/index.m3u8", web::get().to(media_playlist))
            .route("/{channel}/{rendition}/dvr.m3u8", web::get().to(super::dvr::media_playlist))
            // Before the LL-HLS media route, which would take `dvr` for a session id.
            .route("/{channel}/{rendition}/dvr/{file}", web::get().to(super::dvr::media_file))
            .route("/{channel}/{rendition}/{session}/{file}", web::get().to(media_file)),
    );
}

fn count(kind: &str, status: u16) {
    metrics().hls_requests.with_label_values(&[kind, &status.to_string()]).inc();
}

/// An error is never cached: an offline channel may be live a second later, and a 503 is a
/// timeout, not an answer.
pub(super) fn fail(kind: &str, err: Error) -> HttpResponse {
    count(kind, err.kind.http_status());
    let mut res = error_response(err.kind, &err.msg);
    res.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    res
}

/// Plain (non-blocking) live playlists: cacheable for one second, the shortest `max-age`. A
/// player starts from such a playlist and then asks for what follows with blocking reloads, so
/// a copy up to a second old only starts it that much further back; a CDN shields the origin
/// from start-up bursts. (A per-viewer token in the query is part of the cache key.)
fn live_playlist_cache() -> CacheControl {
    CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(1)])
}

pub(crate) fn offline() -> Error {
    Error::not_found("channel is offline or does not exist")
}

/// Who may play (`ApiContext::authorize_play`: public, or a playback token in the `token` query
/// parameter). Returns the query to append to every URI we write, so players that never resend
/// headers keep the token on parts and segments.
pub(super) async fn authorize(
    state: &AppState,
    channel: &str,
    entry: &HlsChannel,
    query: &HlsQuery,
) -> Result<String, Error> {
    let token = query.other.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str());
    match state.api.authorize_play(channel, token, Some(entry.visibility)).await? {
        false => Ok(String::new()),
        true => Ok(format!("token={}", token.unwrap_or_default())),
    }
}

/// The live channel's LL-HLS window. Every request is demand for an on-demand pulled source
/// while it is handled (the guard; a blocked request can wait longer than the linger, as the
/// first one does while a camera's first sender report comes) and for the linger after; the
/// first viewer of such a channel that is not live yet (and may watch it) starts the camera and
/// waits for it (`rtsp.start_timeout`).
pub(super) async fn lookup(
    state: &AppState,
    channel: &str,
    query: &HlsQuery,
    demand: &mut Option<DemandGuard>,
) -> Result<Arc<HlsChannel>, Error> {
    *demand = state.pulls.hold(channel);
    if let Some(e) = state.hls.get(channel) {
        return Ok(e.value().clone());
    }
    if state.pulls.status(channel).is_none() {
        return Err(offline());
    }
    let token = query.other.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str());
    state.api.authorize_play(channel, token, None).await?;
    if state.pulls.start_on_demand(channel).await {
        // The packager's window appears with the first frames.
        for _ in 0..20 {
            if let Some(e) = state.hls.get(channel) {
                return Ok(e.value().clone());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Err(offline())
}

/// The release histogram's series for `waiter` (`playlist` or `part`), looked up once: every
/// held request observes it.
fn release_histogram(waiter: &'static str) -> &'static prometheus::Histogram {
    static PLAYLIST: std::sync::OnceLock<prometheus::Histogram> = std::sync::OnceLock::new();
    static PART: std::sync::OnceLock<prometheus::Histogram> = std::sync::OnceLock::new();
    let cell = if waiter == "part" { &PART } else { &PLAYLIST };
    cell.get_or_init(|| metrics().hls_block_release_seconds.with_label_values(&[waiter]))
}

/// Wait until `ready(progress)` holds, or the deadline passes. `waiter` labels the release
/// histogram: `playlist` or `part`. A media playlist request passes its rendition as `hold`
/// so that, while it waits, the part requests released with it wait for it to be answered
/// (`HlsRendition::hold_playlist`).
async fn wait_until(
    waiter: &'static str,
    hold: Option<&HlsRendition>,
    rx: &mut watch::Receiver<Progress>,
    deadline: Instant,
    mut ready: impl FnMut(&Progress) -> Result<bool, Error>,
) -> Result<(), Error> {
    let mut waited = false;
    let mut _held = None;
    loop {
        let p = *rx.borrow_and_update();
        // An ended stream never blocks (RFC 8216bis §6.2.5.2): the caller answers with what
        // exists, e.g. the final playlist with EXT-X-ENDLIST that a player waiting for the next
        // part needs to see.
        if p.ended || ready(&p)? {
            if let (true, Some(at)) = (waited, p.at) {
                // How long after the part was published this held request was released: the
                // server's share of "answered within N ms of its part completing".
                release_histogram(waiter).observe(at.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        if !waited {
            _held = hold.map(|r| r.hold_playlist(&p));
        }
        waited = true;
        match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(offline()),
            Err(_) => {
                let now = *rx.borrow();
                tracing::debug!(progress = ?now, "blocked LL-HLS request timed out");
                return Err(Error::unavailable("timed out waiting for the requested part"));
            }
        }
    }
}

async fn multivariant(path: web::Path<String>, req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    const KIND: &str = "multivariant";
    let channel = path.into_inner();
    let query = match parse_query(req.query_string()) {
        Ok(q) => q,
        Err(e) => return fail(KIND, Error::invalid(e.to_string())),
    };
    let mut _demand = None;
    let entry = match lookup(&state, &channel, &query, &mut _demand).await {
        Ok(e) => e,
        Err(e) => return fail(KIND, e),
    };
    let uri_query = match authorize(&state, &channel, &entry, &query).await {
        Ok(q) => q,
        Err(e) => return fail(KIND, e),
    };
    // A player may arrive before the first part exists: wait for it (bounded), since the
    // multivariant playlist needs the codecs.
    let deadline = Instant::now() + state.hls_settings.block_timeout;
    let first_part = |r: &Arc<HlsRendition>| {
        let mut rx = mirror::subscribe(r, mirror::Kind::Playlist);
        async move { wait_until("playlist", None, &mut rx, deadline, |p| Ok(p.msn.is_some())).await }
    };
    if let Err(e) = first_part(&entry.renditions()[0]).await {
        return fail(KIND, e);
    }
    // At the start of a session a transcode ladder is still adding its rungs: wait for them
    // (bounded) so the player sees the whole ladder; a rung that has no part by the deadline is
    // left out of this answer.
    let mut settled = entry.subscribe_settled();
    let _ = tokio::time::timeout_at(deadline.into(), settled.wait_for(|s| *s)).await;
    let mut renditions = Vec::new();
    for r in entry.renditions().iter() {
        if renditions.is_empty() || (first_part(r).await.is_ok() && r.progress().msn.is_some()) {
            renditions.push(r.clone());
        }
    }
    let variants: Vec<VariantStream> = renditions
        .iter()
        .map(|r| {
            let w = r.window();
            let (peak, avg) = w.bandwidth();
            VariantStream {
                uri: format!("{}/index.m3u8", r.name),
                // BANDWIDTH is a peak: leave headroom over the measured segment peak.
                bandwidth: (peak as f64 * 1.1) as u64,
                average_bandwidth: Some(avg),
                codecs: w.codecs.clone(),
                resolution: w.resolution,
                frame_rate: w.frame_rate,
            }
        })
        .collect();
    count(KIND, 200);
    let body =
        render_multivariant(&variants, &RenderOptions { skip: SkipRequest::No, uri_query: &uri_query });
    egress(body.len());
    HttpResponse::Ok().content_type(PLAYLIST_TYPE).insert_header(live_playlist_cache()).body(body)
}

/// The playlist model of one rendition's window (parts listed by the renderer's own horizon).
fn playlist_of(w: &Window, rendition: &HlsRendition, siblings: &[Arc<HlsRendition>]) -> MediaPlaylist {
    let sid = &w.session;
    let mut prev_init = None;
    let segments: Vec<SegmentEntry> = w
        .segments
        .iter()
        .map(|s| {
            let map_uri =
                (prev_init != Some(s.init_version)).then(|| format!("{sid}/init-{}.mp4", s.init_version));
            prev_init = Some(s.init_version);
            SegmentEntry {
                msn: s.msn,
                duration: s.duration,
                uri: format!("{sid}/seg-{}.m4s", s.msn),
                program_date_time: Some(s.program_date_time),
                discontinuity: s.discontinuity,
                map_uri,
                parts: s
                    .parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| PartEntry {
                        duration: p.duration,
                        uri: format!("{sid}/part-{}-{i}.m4s", s.msn),
                        independent: p.independent,
                    })
                    .collect(),
                complete: s.complete(),
                gap: s.gap,
            }
        })
        .collect();
    let preload_hint = match (w.ended, w.segments.back()) {
        (false, Some(s)) if s.complete() => {
            Some(PreloadHint { uri: format!("{sid}/part-{}-0.m4s", s.msn + 1) })
        }
        (false, Some(s)) => Some(PreloadHint { uri: format!("{sid}/part-{}-{}.m4s", s.msn, s.part_count) }),
        _ => None,
    };
    let rendition_reports = siblings
        .iter()
        .filter(|r| r.name != rendition.name)
        .filter_map(|r| {
            let p = r.progress();
            let msn = p.msn?;
            Some(RenditionReport {
                uri: format!("../{}/index.m3u8", r.name),
                last_msn: msn,
                last_part: p.parts.saturating_sub(1),
            })
        })
        .collect();
    MediaPlaylist {
        target_duration: w.target_duration,
        part_target: w.part_target,
        media_sequence: w.segments.front().map_or(0, |s| s.msn),
        discontinuity_sequence: w.discontinuity_sequence,
        segments,
        preload_hint,
        rendition_reports,
        ended: w.ended,
    }
}

async fn media_playlist(
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (channel, rendition_name) = path.into_inner();
    let query = match parse_query(req.query_string()) {
        Ok(q) => q,
        Err(e) => return fail("playlist", Error::invalid(e.to_string())),
    };
    let kind = if query.msn.is_some() { "blocking_playlist" } else { "playlist" };
    let mut _demand = None;
    let entry = match lookup(&state, &channel, &query, &mut _demand).await {
        Ok(e) => e,
        Err(e) => return fail(kind, e),
    };
    // Authorized before the rendition is looked up, so a private channel's rendition names
    // tell a stranger nothing either.
    let uri_query = match authorize(&state, &channel, &entry, &query).await {
        Ok(q) => q,
        Err(e) => return fail(kind, e),
    };
    let Some(rendition) = entry.rendition(&rendition_name) else {
        return fail(kind, Error::not_found("no such rendition"));
    };
    entry.viewers.touch(client_key(&req));
    let started = Instant::now();
    let deadline = started + state.hls_settings.block_timeout;
    let mut rx = mirror::subscribe(&rendition, mirror::Kind::Playlist);
    let waited = match query.msn {
        Some(msn) => {
            let part = query.part;
            let part_limit = advance_part_limit(state.hls_settings.part_target);
            wait_until("playlist", Some(&rendition), &mut rx, deadline, |p| {
                let Some(last) = p.msn else { return Ok(false) };
                let last_part = p.parts.checked_sub(1);
                match block_decision(msn, part, last, last_part, p.complete, part_limit) {
                    BlockDecision::Ready => Ok(true),
                    BlockDecision::Wait => Ok(false),
                    BlockDecision::TooFarAhead => Err(Error::invalid(format!(
                        "_HLS_msn={msn}{} is too far ahead of the playlist (more than two segments \
                         or {part_limit} parts)",
                        part.map_or(String::new(), |n| format!("&_HLS_part={n}"))
                    ))),
                }
            })
            .await
        }
        // A plain request at the very start of a stream waits for the first complete segment:
        // hls.js 1.x reports a playlist with parts but no EXTINF segment as an error
        // (levelEmptyError) before it recovers.
        None => {
            wait_until("playlist", Some(&rendition), &mut rx, deadline, |p| {
                Ok(p.msn.is_some_and(|m| m > 0 || p.complete))
            })
            .await
        }
    };
    if query.msn.is_some() {
        metrics().hls_block_wait_seconds.observe(started.elapsed().as_secs_f64());
    }
    if let Err(e) = waited {
        tracing::debug!(kind, msn = ?query.msn, part = ?query.part, error = %e, "blocking playlist request failed");
        return fail(kind, e);
    }
    let render = |w: &Window| {
        let pl = playlist_of(w, &rendition, &entry.renditions());
        render_media(&pl, &RenderOptions { skip: query.skip, uri_query: &uri_query })
    };
    let body = if uri_query.is_empty() {
        rendition.cached_playlist(query.skip, render)
    } else {
        bytes::Bytes::from(render(&rendition.window()))
    };
    count(kind, 200);
    let cache = if query.msn.is_some() {
        // The directives in the query select the content, so a CDN keyed by the full URL can
        // serve it to every player asking for the same part.
        CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(state.hls_settings.segment_target.as_secs().max(1) as u32),
        ])
    } else {
        live_playlist_cache()
    };
    egress(body.len());
    HttpResponse::Ok().content_type(PLAYLIST_TYPE).insert_header(cache).body(body)
}

/// Bytes of an LL-HLS answer body, for `tidecast_egress_bytes_total{protocol="hls"}` (counted
/// when the answer is made; a client that goes away mid-body is counted in full).
fn egress(bytes: usize) {
    static HLS: std::sync::OnceLock<prometheus::IntCounter> = std::sync::OnceLock::new();
    HLS.get_or_init(|| metrics().egress_bytes.with_label_values(&["hls"])).inc_by(bytes as u64);
}

/// Who is asking, for counting viewers: the peer address and User-Agent, hashed with a key
/// random per process (so the numbers say nothing about the client).
fn client_key(req: &HttpRequest) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    let ip = req.peer_addr().map(|a| a.ip());
    let agent = req.headers().get(actix_web::http::header::USER_AGENT).map(|v| v.as_bytes());
    KEY.get_or_init(Default::default).hash_one((ip, agent))
}

/// What a media file name asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaFile {
    Init(u32),
    Segment(u64),
    Part(u64, u32),
}

pub fn parse_file(name: &str) -> Option<MediaFile> {
    if let Some(v) = name.strip_prefix("init-").and_then(|r| r.strip_suffix(".mp4")) {
        return v.parse().ok().map(MediaFile::Init);
    }
    if let Some(m) = name.strip_prefix("seg-").and_then(|r| r.strip_suffix(".m4s")) {
        return m.parse().ok().map(MediaFile::Segment);
    }
    let rest = name.strip_prefix("part-")?.strip_suffix(".m4s")?;
    let (m, i) = rest.split_once('-')?;
    Some(MediaFile::Part(m.parse().ok()?, i.parse().ok()?))
}

/// Bodies go out as a stream of slices of the shared buffer: actix-http copies a whole body into
/// the connection's write buffer and keeps that buffer (up to 128 KiB) for the life of a
/// keep-alive connection, so 80 KB parts would pin 80 KB per player; slices keep it small.
const BODY_SLICE: usize = 16 * 1024;

fn media_response(data: bytes::Bytes, init: bool) -> HttpResponse {
    let len = data.len() as u64;
    egress(data.len());
    let slices = (0..data.len())
        .step_by(BODY_SLICE)
        .map(move |at| Ok::<_, std::convert::Infallible>(data.slice(at..(at + BODY_SLICE).min(data.len()))));
    HttpResponse::Ok()
        .insert_header(ContentType(
            if init { "video/mp4" } else { "video/iso.segment" }.parse().expect("static mime"),
        ))
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(86_400),
            CacheDirective::Extension("immutable".into(), None),
        ]))
        .body(actix_web::body::SizedStream::new(len, futures_util::stream::iter(slices)))
}

async fn media_file(
    path: web::Path<(String, String, String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (channel, rendition_name, session, file) = path.into_inner();
    let Some(what) = parse_file(&file) else {
        return fail("media", Error::not_found("no such file"));
    };
    let kind = match what {
        MediaFile::Init(_) => "init",
        MediaFile::Segment(_) => "segment",
        MediaFile::Part(..) => "part",
    };
    let query = match parse_query(req.query_string()) {
        Ok(q) => q,
        Err(e) => return fail(kind, Error::invalid(e.to_string())),
    };
    let mut _demand = None;
    let entry = match lookup(&state, &channel, &query, &mut _demand).await {
        Ok(e) => e,
        Err(e) => return fail(kind, e),
    };
    if let Err(e) = authorize(&state, &channel, &entry, &query).await {
        return fail(kind, e);
    }
    let Some(rendition) = entry.rendition(&rendition_name) else {
        return fail(kind, Error::not_found("no such rendition"));
    };
    if rendition.window().session != session {
        return fail(kind, Error::not_found("that live session is over"));
    }
    let found = |w: &Window| -> Option<bytes::Bytes> {
        match what {
            MediaFile::Init(v) => w.init(v).cloned(),
            // A gap segment has no media (the playlist says so; players never ask).
            MediaFile::Segment(msn) => w.segment(msn).filter(|s| !s.gap).and_then(|s| s.data.clone()),
            MediaFile::Part(msn, i) => {
                w.segment(msn).and_then(|s| s.parts.get(i as usize)).map(|p| p.data.clone())
            }
        }
    };
    let data = found(&rendition.window());
    if let Some(data) = data {
        count(kind, 200);
        return media_response(data, matches!(what, MediaFile::Init(_)));
    }
    // Not there yet: hold a request for the next part (the preload hint, or the one a player
    // computes after it) until it is complete; anything else is simply absent.
    let MediaFile::Part(msn, index) = what else {
        return fail(kind, Error::not_found("no such segment"));
    };
    // The next part is (last, parts) while a segment is open, else (last + 1, 0); we also hold
    // the one after it, and the first part of the next segment (the open one may close early).
    // A client that went away drops this handler future and with it the wait.
    let p = rendition.progress();
    let upcoming = match p.msn {
        Some(last) if !p.complete => (msn == last && index <= p.parts + 1) || (msn == last + 1 && index == 0),
        Some(last) => msn == last + 1 && index <= 1,
        None => msn == 0 && index <= 1,
    };
    if !upcoming {
        return fail(kind, Error::not_found("no such part"));
    }
    let started = Instant::now();
    let deadline = started + state.hls_settings.block_timeout;
    let waited =
        wait_until("part", None, &mut mirror::subscribe(&rendition, mirror::Kind::Media), deadline, |p| {
            Ok(p.msn.is_some_and(|last| last > msn || (last == msn && (p.parts > index || p.complete))))
        })
        .await;
    metrics().hls_block_wait_seconds.observe(started.elapsed().as_secs_f64());
    if let Err(e) = waited {
        tracing::debug!(kind, msn, index, error = %e, "held part request failed");
        return fail(kind, e);
    }
    let data = found(&rendition.window());
    match data {
        Some(data) => {
            count(kind, 200);
            media_response(data, false)
        }
        // The segment closed before reaching that index: the part will never exist.
        None => fail(kind, Error::not_found("no such part")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_file_names_parse() {
        assert_eq!(parse_file("init-3.mp4"), Some(MediaFile::Init(3)));
        assert_eq!(parse_file("seg-12.m4s"), Some(MediaFile::Segment(12)));
        assert_eq!(parse_file("part-12-4.m4s"), Some(MediaFile::Part(12, 4)));
        assert_eq!(parse_file("part-12.m4s"), None);
        assert_eq!(parse_file("../etc/passwd"), None);
        assert_eq!(parse_file("seg-x.m4s"), None);
    }
}
