//! DVR: a live channel's viewers seek back into the session so far, through playlists built
//! from its recording (`actors::archive`): `/live/<channel>/dvr.m3u8` (multivariant),
//! `/live/<channel>/<rendition>/dvr.m3u8` (the newest `[archive] dvr_window` of complete
//! segments: an EVENT playlist while the session is shorter, a sliding one after) and the
//! recorded media under `/live/<channel>/<rendition>/dvr/`. Registered in the `/live` scope
//! (`hls::configure`) with the LL-HLS routes, and authorized exactly like them: public, or the
//! channel's playback token in the `token` query parameter, carried on every URI we write.
//!
//! The live edge of a DVR playlist is the newest complete segment (a few seconds behind the
//! LL-HLS edge); the watch page goes back to LL-HLS for "live".

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};

use super::hls::{authorize, fail, lookup};
use super::AppState;
use crate::actors::archive::RecordingIndex;
use crate::error::Error;
use crate::protocols::hls::parse_query;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

fn not_recorded() -> Error {
    Error::not_found("this live session is not recorded (no DVR)")
}

/// Authorize like the live routes, then find the session's recording.
async fn open(
    state: &AppState,
    channel: &str,
    req: &HttpRequest,
) -> Result<(i64, std::sync::Arc<RecordingIndex>, String), Error> {
    let query = parse_query(req.query_string()).map_err(|e| Error::invalid(e.to_string()))?;
    let mut demand = None;
    let entry = lookup(state, channel, &query, &mut demand).await?;
    let uri_query = authorize(state, channel, &entry, &query).await?;
    let (id, index) = state.archive.live_recording(channel).ok_or_else(not_recorded)?;
    Ok((id, index, uri_query))
}

fn playlist(text: String) -> HttpResponse {
    // Complete segments only, a new one every segment target: a second of caching is plenty.
    HttpResponse::Ok()
        .content_type(PLAYLIST_TYPE)
        .insert_header(CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(1)]))
        .body(text)
}

pub(super) async fn multivariant(
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    match open(&state, &path, &req).await {
        Ok((_, index, query)) => playlist(index.dvr_multivariant(&query)),
        Err(e) => fail("dvr", e),
    }
}

pub(super) async fn media_playlist(
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (channel, rendition) = path.into_inner();
    let (_, index, query) = match open(&state, &channel, &req).await {
        Ok(found) => found,
        Err(e) => return fail("dvr", e),
    };
    match index.dvr_playlist(&rendition, state.archive.dvr_window(), &query) {
        Some(text) => playlist(text),
        None => fail("dvr", Error::not_found("no such rendition")),
    }
}

pub(super) async fn media_file(
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (channel, rendition, file) = path.into_inner();
    let (id, index, _) = match open(&state, &channel, &req).await {
        Ok(found) => found,
        Err(e) => return fail("dvr", e),
    };
    if !index.serves(&rendition, &file) {
        return fail("dvr", Error::not_found("no such media file"));
    }
    let rel = format!("{rendition}/{file}");
    super::vod::serve_file(&state, id, &rel, &req, super::vod::IMMUTABLE)
        .await
        .unwrap_or_else(|e| fail("dvr", e))
}
