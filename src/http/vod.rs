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
//! Media files are answered by actix-files: byte ranges (`Range`, `If-Range`), `HEAD`, `ETag`
//! and `Last-Modified` validators, and cached as immutable (a segment never changes once a
//! playlist names it); on plain HTTP/1 their bodies leave by `sendfile` (`super::sendfile`).
//! Playlists: a finished one for a minute, an EVENT one for a second.
//! Errors are never cached.

use actix_web::http::header::{self, CacheControl, CacheDirective, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use actix_web::http::StatusCode;
use futures_util::TryStreamExt as _;

use super::error::error_response;
use super::AppState;
use crate::actors::archive::remote::{Delivery, Remote};
use crate::actors::archive::retention::POSTER;
use crate::actors::archive::{Located, RecordingIndex};
use crate::error::{Error, ErrorKind};

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
    serve_file(&state, id, POSTER, &req, "public, max-age=3600").await.unwrap_or_else(fail)
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
    let rel = format!("{rendition}/{file}");
    serve_file(&state, id.parse().unwrap_or_default(), &rel, &req, IMMUTABLE).await.unwrap_or_else(fail)
}

/// Media never change once a playlist names them.
pub(super) const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn content_type(rel: &str) -> &'static str {
    if rel.ends_with(".m4s") {
        "video/iso.segment"
    } else if rel.ends_with(".jpg") {
        "image/jpeg"
    } else {
        "video/mp4"
    }
}

/// Serve a recorded file the caller checked (`RecordingIndex::serves`; VOD and DVR) from where
/// it is: the local disk (actix-files: ranges, validators), or the object store it moved to
/// (proxied with the request's byte range, or a redirect to a presigned URL).
pub(super) async fn serve_file(
    state: &AppState,
    video_id: i64,
    rel: &str,
    req: &HttpRequest,
    cache: &'static str,
) -> Result<HttpResponse, Error> {
    let missing = || Error::not_found("no such media file");
    match state.archive.locate(video_id, rel) {
        Located::Local(path) => {
            // Opened on the worker, as nginx does: an `open` of a local file whose directory
            // was just listed is cheaper than the hop to the blocking pool.
            let named = actix_files::NamedFile::open(&path).map_err(|_| missing())?;
            let file = named.file().try_clone().map_err(|_| missing())?;
            let mime: actix_web::mime::Mime = content_type(rel).parse().expect("valid mime");
            let mut res = named
                .set_content_type(mime)
                .disable_content_disposition()
                .use_etag(true)
                .use_last_modified(true)
                .into_response(req);
            if res.status().is_success() || res.status() == StatusCode::NOT_MODIFIED {
                res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            }
            Ok(super::sendfile::respond(req, file, res))
        }
        Located::Remote(remote, name) => match remote.delivery {
            Delivery::Redirect => {
                let url = remote.presign(&name).await.map_err(|e| remote_error(&name, e))?;
                Ok(HttpResponse::Found()
                    .insert_header((header::LOCATION, url))
                    .insert_header((header::CACHE_CONTROL, "private, no-store"))
                    .finish())
            }
            Delivery::Proxy => proxy(&remote, &name, req, cache).await,
        },
        Located::Missing => Err(missing()),
    }
}

fn remote_error(name: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::not_found("no such media file")
    } else {
        tracing::warn!(object = %name, error = %e, "object store read failed");
        Error::new(ErrorKind::Unavailable, "the recording's storage is unavailable; try again")
    }
}

/// A single `bytes=` range of an object of `size` bytes (RFC 9110 §14.1.2); `Err` when it
/// cannot be satisfied, `Ok(None)` for no Range header (or a multi-range one, answered whole).
fn byte_range(header: Option<&str>, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end =
            if b.is_empty() { size } else { b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(size) };
        start..end
    };
    if range.start >= size || range.start >= range.end {
        return Err(());
    }
    Ok(Some(range))
}

/// Proxy an object with the request's byte range.
async fn proxy(
    remote: &Remote,
    name: &str,
    req: &HttpRequest,
    cache: &'static str,
) -> Result<HttpResponse, Error> {
    let meta = remote.head(name).await.map_err(|e| remote_error(name, e))?;
    let etag = meta.e_tag.clone();
    let inm = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if let (Some(tag), Some(inm)) = (&etag, inm) {
        if inm.split(',').any(|t| t.trim() == tag) {
            return Ok(HttpResponse::NotModified().insert_header((header::ETAG, tag.as_str())).finish());
        }
    }
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match byte_range(range, meta.size) {
        Ok(r) => r,
        Err(()) => {
            return Ok(HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{}", meta.size)))
                .finish())
        }
    };
    let got = remote
        .get(name, range.clone().map(object_store::GetRange::Bounded))
        .await
        .map_err(|e| remote_error(name, e))?;
    let len = got.range.end - got.range.start;
    let body = got.into_stream().map_err(|e| actix_web::error::ErrorBadGateway(e.to_string()));
    let mut res = match &range {
        Some(r) => {
            let mut b = HttpResponse::PartialContent();
            b.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size),
            ));
            b
        }
        None => HttpResponse::Ok(),
    };
    res.content_type(content_type(name))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, cache));
    if let Some(tag) = etag {
        res.insert_header((header::ETAG, tag));
    }
    Ok(res.body(actix_web::body::SizedStream::new(len, body)))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn byte_ranges_as_rfc_9110_reads_them() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(byte_range(Some("bytes=-500"), 100), Ok(Some(0..100)), "a suffix longer than the file");
        assert_eq!(byte_range(Some("bytes=50-500"), 100), Ok(Some(50..100)), "an end past the file");
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None), "several ranges: the whole file");
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=9-3"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=x-3"), 100), Err(()));
        assert_eq!(byte_range(Some("items=0-3"), 100), Ok(None), "another unit is ignored");
    }
}
