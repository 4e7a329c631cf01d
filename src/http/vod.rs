//! VOD delivery of recorded live sessions (`actors::archive`): `/vod/<video_id>/index.m3u8`
//! (multivariant), `/vod/<video_id>/<rendition>/index.m3u8` (EVENT while the session records,
//! VOD after), the DASH manifest `/vod/<video_id>/manifest.mpd` over the same files, and the
//! media files (`<rendition>/init-<v>.mp4`, `<rendition>/seg-<msn>.m4s`).
//!
//! Access is the video's (`ApiContext::authorize_video_play`): public, or a playback token for
//! the video in the `token` query parameter, which every URI we write carries on (players do
//! not resend headers). Playlists are rendered from the recording's journal per request, so
//! they only ever name media that is completely written.
//!
//! Media files are served by actix-files: byte ranges (`Range`, `If-Range`), `HEAD`, `ETag`
//! and `Last-Modified` validators, and cached as immutable (a segment never changes once a
//! playlist names it). Playlists: a finished one for a minute, an EVENT one for a second.
//! Errors are never cached.

use actix_web::http::header::{self, CacheControl, CacheDirective, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::error_response;
use super::AppState;
use crate::actors::archive::RecordingIndex;
use crate::error::Error;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/vod")
            .route("/{video}/index.m3u8", web::get().to(multivariant))
            .route("/{video}/manifest.mpd", web::get().to(manifest))
            .route("/{video}/poster.jpg", web::get().to(poster))
            .route("/{video}/{rendition}/index.m3u8", web::get().to(media_playlist))
            .route("/{video}/{rendition}/{file}", web::get().to(media_file)),
    );
}

fn fail(err: Error) -> HttpResponse {
    let mut res = error_response(err.kind, &err.msg);
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn not_found(id: i64) -> Error {
    Error::not_found(format!("video {id} not found"))
}

/// The `token` query parameter, if any.
fn token(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Authorize the caller for video `id` and find its recording. Returns the index and the query
/// every written URI carries.
async fn open(
    state: &AppState,
    id: &str,
    req: &HttpRequest,
) -> Result<(std::sync::Arc<RecordingIndex>, String), Error> {
    let id: i64 = id.parse().map_err(|_| Error::not_found("no such video"))?;
    let token = token(req);
    let (_video, needs_token) = state.api.authorize_video_play(id, token.as_deref()).await?;
    let index = state.archive.index(id).await.ok_or_else(|| not_found(id))?;
    let query = match (needs_token, token) {
        (true, Some(t)) => format!("token={t}"),
        _ => String::new(),
    };
    Ok((index, query))
}

fn playlist(text: String, recording: bool) -> HttpResponse {
    let max_age = if recording { 1 } else { 60 };
    HttpResponse::Ok()
        .content_type(PLAYLIST_TYPE)
        .insert_header(CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(max_age)]))
        .body(text)
}

async fn multivariant(path: web::Path<String>, req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match open(&state, &path, &req).await {
        Ok((index, query)) => playlist(index.multivariant(&query), index.is_recording()),
        Err(e) => fail(e),
    }
}

/// The recording's poster (a JPEG of its first key frame), when it has one.
async fn poster(path: web::Path<String>, req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let id: i64 = match open(&state, &path, &req).await {
        Ok(_) => path.parse().unwrap_or_default(),
        Err(e) => return fail(e),
    };
    let Some(file) = state.archive.poster_path(id) else {
        return fail(Error::not_found("the video has no poster"));
    };
    match actix_files::NamedFile::open_async(&file).await {
        Ok(f) => {
            let mut res = f.disable_content_disposition().use_etag(true).into_response(&req);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            res
        }
        Err(_) => fail(Error::not_found("the video has no poster")),
    }
}

/// The DASH manifest over the same files (`application/dash+xml`).
async fn manifest(path: web::Path<String>, req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (index, query) = match open(&state, &path, &req).await {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    match index.mpd(&query) {
        Some(xml) => {
            let max_age = if index.is_recording() { 1 } else { 60 };
            HttpResponse::Ok()
                .content_type("application/dash+xml")
                .insert_header(CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(max_age)]))
                .body(xml)
        }
        None => fail(Error::not_found("the video has no DASH presentation (no video track)")),
    }
}

async fn media_playlist(
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (id, rendition) = path.into_inner();
    let (index, query) = match open(&state, &id, &req).await {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    match index.media_playlist(&rendition, &query) {
        Some(text) => playlist(text, index.is_recording()),
        None => fail(Error::not_found(format!("the video has no rendition '{rendition}'"))),
    }
}

async fn media_file(
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (id, rendition, file) = path.into_inner();
    let (index, _) = match open(&state, &id, &req).await {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    // Only what the journal names (so never a path of the request's making, nor a segment
    // still being written).
    if !index.serves(&rendition, &file) {
        return fail(Error::not_found("no such media file"));
    }
    serve_file(&state, id.parse().unwrap_or_default(), &rendition, &file, &req).await.unwrap_or_else(fail)
}

/// Serve a recorded file the caller checked with `RecordingIndex::serves` (VOD and DVR).
pub(super) async fn serve_file(
    state: &AppState,
    video_id: i64,
    rendition: &str,
    file: &str,
    req: &HttpRequest,
) -> Result<HttpResponse, Error> {
    let missing = || Error::not_found("no such media file");
    let local = state.archive.local_path(video_id, rendition, file).ok_or_else(missing)?;
    let named = match actix_files::NamedFile::open_async(&local).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(file = %local.display(), error = %e, "a recorded file the journal names is missing");
            return Err(missing());
        }
    };
    let mime: actix_web::mime::Mime =
        if file.ends_with(".m4s") { "video/iso.segment" } else { "video/mp4" }.parse().expect("valid mime");
    let mut res = named
        .set_content_type(mime)
        .disable_content_disposition()
        .use_etag(true)
        .use_last_modified(true)
        .into_response(req);
    if res.status().is_success() || res.status() == actix_web::http::StatusCode::NOT_MODIFIED {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    }
    Ok(res)
}
