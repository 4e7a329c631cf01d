//! Videos: metadata with playback URL/token and resume position, watch progress, the feed,
//! and comments.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{check_text, page_limit, ApiContext, Caller, ErrorBody, MaybeCaller, API_PREFIX};
use crate::actors::watch_history::{Peek, Record};
use crate::auth::entitlements::Viewer;
use crate::auth::playback::PlaybackScope;
use crate::error::{Error, ErrorKind};
use crate::store::{now_ms, Comment, Recording, Video, VideoSource, Visibility, WatchUpdate};

/// Largest position accepted: ten days, far beyond any video or live archive.
const MAX_POSITION_SECONDS: f64 = 10.0 * 86400.0;

#[derive(Serialize, ToSchema)]
pub struct VideoView {
    #[serde(flatten)]
    pub video: Video,
    /// Whether the caller may play it.
    pub can_play: bool,
    /// HLS playlist, with the token in the query when one is needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_url: Option<String>,
    /// The DASH manifest over the same media (recorded live sessions), token as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dash_url: Option<String>,
    /// A still of the video (recorded live sessions, once finished), token as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster_url: Option<String>,
    /// How the recording of a live session went (videos of source `live`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recording>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_token_expires: Option<u64>,
    /// Where the caller stopped, if signed in and they watched it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_position_seconds: Option<f64>,
}

/// The video if the caller may know it exists (private: owner and admins only).
async fn find_visible(ctx: &ApiContext, viewer: Option<&Viewer>, id: i64) -> Result<Video, Error> {
    let v = ctx.video(id).await?.ok_or_else(|| Error::not_found(format!("video {id} not found")))?;
    if !ApiContext::can_list(viewer, v.owner_id, v.visibility) {
        return Err(Error::not_found(format!("video {id} not found")));
    }
    Ok(v)
}

/// The video if the caller may play it: 404 if hidden, 403 if visible but not entitled.
async fn find_playable(ctx: &ApiContext, viewer: Option<&Viewer>, id: i64) -> Result<Video, Error> {
    let v = find_visible(ctx, viewer, id).await?;
    if !ctx.can_play_video(viewer, &v).await? {
        return Err(Error::new(ErrorKind::PermissionDenied, "this video needs an active subscription"));
    }
    Ok(v)
}

/// Video metadata, playback URL and token (for entitled callers), and the resume position.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "videos",
    security((), ("bearer" = [])),
    responses((status = 200, body = VideoView), (status = 404, body = ErrorBody))
)]
#[get("/videos/{id}")]
pub async fn get_video(
    ctx: web::Data<ApiContext>,
    caller: MaybeCaller,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let viewer = caller.0.as_ref().map(Caller::viewer);
    let video = find_visible(&ctx, viewer.as_ref(), *id).await?;
    let can_play = ctx.can_play_video(viewer.as_ref(), &video).await?;
    let mut view = VideoView {
        can_play,
        playback_url: None,
        dash_url: None,
        poster_url: None,
        recording: None,
        playback_token: None,
        playback_token_expires: None,
        resume_position_seconds: None,
        video,
    };
    if view.video.source == VideoSource::Live {
        view.recording = ctx.store.recording(view.video.id).await?;
    }
    if can_play {
        let url = format!("/vod/{}/index.m3u8", view.video.id);
        let dash = format!("/vod/{}/manifest.mpd", view.video.id);
        let live = view.video.source == VideoSource::Live;
        let backend = view.recording.as_ref().map(|r| r.backend.as_str());
        let poster = ctx
            .archive
            .has_poster(view.video.id, backend)
            .then(|| format!("/vod/{}/poster.jpg", view.video.id));
        if view.video.visibility == Visibility::Public {
            view.playback_url = Some(url);
            view.dash_url = live.then_some(dash);
            view.poster_url = poster;
        } else {
            let (token, expires) = ctx.playback_token(&PlaybackScope::Video(view.video.id), viewer.as_ref());
            view.playback_url = Some(format!("{url}?token={token}"));
            view.dash_url = live.then(|| format!("{dash}?token={token}"));
            view.poster_url = poster.map(|p| format!("{p}?token={token}"));
            view.playback_token = Some(token);
            view.playback_token_expires = Some(expires);
        }
        if let Some(v) = &viewer {
            // The buffer first (read your own writes before the next flush), then the store.
            let peek = Peek { user_id: v.user_id, video_id: view.video.id };
            let pos = match ctx.history.send(peek).await? {
                Some(ms) => Some(ms),
                None => ctx.store.watch_position(v.user_id, view.video.id).await?,
            };
            view.resume_position_seconds = pos.map(|ms| ms as f64 / 1000.0);
        }
    }
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a video (its owner or an admin): its media (a recording's files), its comments and
/// watch history. A recording in progress cannot be deleted (409).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "videos",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
#[delete("/videos/{id}")]
pub async fn delete_video(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    let viewer = caller.viewer();
    let video = find_visible(&ctx, Some(&viewer), *id).await?;
    if !(caller.is_admin || video.owner_id == Some(caller.user_id)) {
        return Err(Error::new(ErrorKind::PermissionDenied, "only the video's owner may delete it"));
    }
    if ctx.archive.is_recording(video.id) {
        return Err(Error::new(ErrorKind::Conflict, "the video's live session is still being recorded"));
    }
    ctx.archive
        .delete_media(video.id)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "cannot delete the video's media", e))?;
    ctx.store.delete_video(video.id).await?;
    ctx.invalidate_video(video.id);
    tracing::info!(video_id = video.id, by = caller.user_id, "video deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// Playback position, in seconds from the start: 0 to ten days.
    #[schema(minimum = 0, maximum = 864000)]
    pub position_seconds: f64,
}

/// Record watch progress. Acknowledged once buffered; written in batches (at most one
/// `api.watch_flush_interval` is lost on a crash, nothing on a graceful shutdown).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "videos",
    security(("bearer" = [])),
    request_body = WatchRequest,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "Too many updates waiting; retry", body = ErrorBody),
    )
)]
#[post("/videos/{id}/watch")]
pub async fn record_watch(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    id: web::Path<i64>,
    body: web::Json<WatchRequest>,
) -> Result<HttpResponse, Error> {
    let pos = body.position_seconds;
    if !pos.is_finite() || !(0.0..=MAX_POSITION_SECONDS).contains(&pos) {
        return Err(Error::invalid("position_seconds must be a number between 0 and 864000"));
    }
    let video = find_playable(&ctx, Some(&caller.viewer()), *id).await?;
    let update = WatchUpdate {
        user_id: caller.user_id,
        video_id: video.id,
        position_ms: (pos * 1000.0).round() as i64,
        at_ms: now_ms(),
    };
    ctx.history.send(Record(update)).await??;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Items (default 20); clamped to 1-100.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct FeedItem {
    /// `live` (a channel on air now: `channel` is set), `subscription` (live or recent video
    /// on a subscribed channel), `similar` (watched by people with a similar history),
    /// `popular`, or `recent`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<Video>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<super::channels::ChannelView>,
}

/// Personalized feed: channels live now, subscribed channels' live and recent videos, then
/// what people with a similar history watched, then popular and recent ones. Only what the
/// caller may play.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "videos",
    security((), ("bearer" = [])),
    params(FeedQuery),
    responses((status = 200, body = Vec<FeedItem>))
)]
#[get("/videos/feed")]
pub async fn feed(
    ctx: web::Data<ApiContext>,
    caller: MaybeCaller,
    q: web::Query<FeedQuery>,
    server: Option<web::Data<crate::http::AppState>>,
) -> Result<HttpResponse, Error> {
    let limit = page_limit(q.limit);
    let viewer = caller.0.as_ref().map(Caller::viewer);
    let mut items: Vec<FeedItem> = Vec::new();
    // Channels on air now (the LL-HLS directory of this node), when the server has one.
    if let Some(server) = &server {
        let mut live: Vec<String> = server.hls.iter().map(|e| e.key().clone()).collect();
        live.sort();
        for name in live {
            if items.len() as i64 >= limit {
                break;
            }
            let Some(c) = ctx.channel_cached(&name).await? else { continue };
            if ctx.can_play_channel(viewer.as_ref(), &c).await? {
                let viewers = ctx.shared.viewers(&c.name).await;
                let channel = Some(super::channels::ChannelView::new(c, viewers));
                items.push(FeedItem { reason: "live".to_owned(), video: None, channel });
            }
        }
    }
    let mut sections: Vec<(&str, Vec<Video>)> = Vec::new();
    if let Some(v) = &viewer {
        let plans = ctx.active_plans(v.user_id).await?;
        if !plans.is_empty() {
            let channels = ctx.billing.covered_channels(&plans);
            sections.push(("subscription", ctx.store.recent_videos(channels.as_deref(), limit * 2).await?));
        }
        sections.push(("similar", ctx.store.similar_videos(v.user_id, limit * 2).await?));
    }
    sections.push(("popular", ctx.store.popular_videos(limit * 2).await?));
    sections.push(("recent", ctx.store.recent_videos(None, limit * 2).await?));
    let mut seen = std::collections::HashSet::new();
    'outer: for (reason, videos) in sections {
        for video in videos {
            if items.len() as i64 >= limit {
                break 'outer;
            }
            if !seen.insert(video.id) || !ctx.can_play_video(viewer.as_ref(), &video).await? {
                continue;
            }
            items.push(FeedItem { reason: reason.to_owned(), video: Some(video), channel: None });
        }
    }
    Ok(HttpResponse::Ok().json(items))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CommentsQuery {
    /// Page size (default 20); clamped to 1-100.
    pub limit: Option<i64>,
    /// Cursor: `next_cursor` of the previous page (comments older than this id).
    pub before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CommentPage {
    pub items: Vec<Comment>,
    pub next_cursor: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    /// 1 to `api.comment_max_len` characters (default 2000), not blank; no control
    /// characters but tab and line breaks.
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    pub body: String,
}

/// Comments on a video, newest first (cursor pagination).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "comments",
    security((), ("bearer" = [])),
    params(CommentsQuery),
    responses((status = 200, body = CommentPage), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/videos/{id}/comments")]
pub async fn list_comments(
    ctx: web::Data<ApiContext>,
    caller: MaybeCaller,
    id: web::Path<i64>,
    q: web::Query<CommentsQuery>,
) -> Result<HttpResponse, Error> {
    let viewer = caller.0.as_ref().map(Caller::viewer);
    let video = find_playable(&ctx, viewer.as_ref(), *id).await?;
    let limit = page_limit(q.limit);
    // One more than asked tells whether there is a next page.
    let mut items = ctx.store.list_comments(video.id, q.before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(|c| c.id) } else { None };
    Ok(HttpResponse::Ok().json(CommentPage { items, next_cursor }))
}

/// Comment on a video the caller may play.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "comments",
    security(("bearer" = [])),
    request_body = CommentRequest,
    responses(
        (status = 201, body = Comment),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[post("/videos/{id}/comments")]
pub async fn create_comment(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    id: web::Path<i64>,
    body: web::Json<CommentRequest>,
) -> Result<HttpResponse, Error> {
    // The whole body counts toward the limit, as the schema says; stored trimmed.
    check_text("comment body", &body.body, ctx.api.comment_max_len, true)?;
    let text = body.body.trim();
    if text.is_empty() {
        return Err(Error::invalid("comment body must not be empty"));
    }
    let video = find_playable(&ctx, Some(&caller.viewer()), *id).await?;
    let comment = ctx.store.create_comment(video.id, caller.user_id, text).await?;
    Ok(HttpResponse::Created().json(comment))
}

/// Delete a comment: its author, the video's or channel's owner, or an admin.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "comments",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[delete("/videos/{id}/comments/{comment_id}")]
pub async fn delete_comment(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, Error> {
    let (video_id, comment_id) = path.into_inner();
    let not_found = || Error::not_found(format!("comment {comment_id} not found"));
    let comment = ctx
        .store
        .comment_by_id(comment_id)
        .await?
        .filter(|c| c.video_id == video_id)
        .ok_or_else(not_found)?;
    let video = find_visible(&ctx, Some(&caller.viewer()), video_id).await?;
    let channel_owner = match &video.channel_name {
        Some(name) => ctx.store.channel_by_name(name).await?.and_then(|c| c.owner_id),
        None => None,
    };
    let allowed = caller.is_admin
        || comment.user_id == caller.user_id
        || video.owner_id == Some(caller.user_id)
        || channel_owner == Some(caller.user_id);
    if !allowed {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "only the author or the channel's owner may delete a comment",
        ));
    }
    ctx.store.delete_comment(comment.id).await?;
    Ok(HttpResponse::NoContent().finish())
}
