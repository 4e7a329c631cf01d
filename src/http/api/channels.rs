//! Channels: list, create (the stream key is in this response only), get (with a playback
//! token for entitled callers), change visibility, rotate the stream key, list who is on it
//! (the owner's view of its publisher and viewers, every protocol).
//!
//! Private channels are invisible (404) to everyone but their owner and admins; a
//! `subscribers` channel is visible to all, playable (token) only by subscribers.

use std::collections::BTreeMap;

use actix_web::{get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{check_text, page_limit, ApiContext, Caller, ErrorBody, MaybeCaller, API_PREFIX};
use crate::actors::roster::{self, Role, RosterEntry};
use crate::auth::playback::PlaybackScope;
use crate::error::{Error, ErrorKind};
use crate::store::{validate_channel_name, ChannelRecord, NewChannel, Visibility};

#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    pub name: String,
    pub title: String,
    pub owner_id: Option<i64>,
    pub visibility: Visibility,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Viewers right now: across nodes where the shared state counts them, and at least this
    /// server's (its LL-HLS clients and RTMP, SRT and WHEP sessions).
    pub viewers: i64,
    /// Whether the caller may play it (single-channel reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_play: Option<bool>,
    /// LL-HLS multivariant playlist, with the token in the query when one is needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_url: Option<String>,
    /// Signed playback token for non-public channels (query parameter `token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_token: Option<String>,
    /// Expiry of `playback_token`, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_token_expires: Option<u64>,
    /// The transcode ladder of the live session on this server (single-channel reads of a
    /// channel that is live with the ladder on): its renditions, or why it runs passthrough.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ladder: Option<crate::actors::transcode::LadderStatus>,
}

impl ChannelView {
    pub(super) fn new(c: ChannelRecord, viewers: i64) -> Self {
        let viewers = viewers.max(crate::actors::roster::viewer_count(&c.name));
        ChannelView {
            name: c.name,
            title: c.title,
            owner_id: c.owner_id,
            visibility: c.visibility,
            created_at_ms: c.created_at_ms,
            updated_at_ms: c.updated_at_ms,
            viewers,
            can_play: None,
            playback_url: None,
            playback_token: None,
            playback_token_expires: None,
            ladder: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedChannel {
    #[serde(flatten)]
    pub channel: ChannelView,
    /// The secret stream key: shown in this response only, never again.
    pub stream_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct StreamKeyResponse {
    /// The new stream key: shown once. The old key stopped working.
    pub stream_key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannelRequest {
    /// 1-64 characters of a-z, 0-9, `_`, `-`, starting with a letter or digit.
    #[schema(max_length = 64, pattern = r"^[a-z0-9][a-z0-9_-]*$")]
    pub name: String,
    /// At most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannelRequest {
    pub visibility: Visibility,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (default 20); clamped to 1-100.
    pub limit: Option<i64>,
    /// Channels to skip (negative: none).
    pub offset: Option<i64>,
}

pub(super) async fn find_visible(
    ctx: &ApiContext,
    caller: Option<&Caller>,
    name: &str,
) -> Result<ChannelRecord, Error> {
    let not_found = || Error::not_found(format!("channel '{name}' not found"));
    if validate_channel_name(name).is_err() {
        return Err(not_found());
    }
    let c = ctx.store.channel_by_name(name).await?.ok_or_else(not_found)?;
    let viewer = caller.map(Caller::viewer);
    if !ApiContext::can_list(viewer.as_ref(), c.owner_id, c.visibility) {
        return Err(not_found());
    }
    Ok(c)
}

pub(super) fn require_owner(caller: &Caller, owner_id: Option<i64>) -> Result<(), Error> {
    if caller.is_admin || owner_id == Some(caller.user_id) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::PermissionDenied, "only the channel's owner may do this"))
    }
}

/// A channel the caller may manage (its owner, or an admin): for the routes under
/// `/channels/{name}/` that change how it is fed or pushed.
pub(super) async fn find_owned(
    ctx: &ApiContext,
    caller: &Caller,
    name: &str,
) -> Result<ChannelRecord, Error> {
    let c = find_visible(ctx, Some(caller), name).await?;
    require_owner(caller, c.owner_id)?;
    Ok(c)
}

/// Channels the caller may see, by name.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "channels",
    security((), ("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = Vec<ChannelView>))
)]
#[get("/channels")]
pub async fn list_channels(
    ctx: web::Data<ApiContext>,
    caller: MaybeCaller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let viewer = caller.0.as_ref().map(Caller::viewer);
    let limit = page_limit(q.limit) as usize;
    let offset = q.offset.unwrap_or(0).max(0) as usize;
    let page: Vec<ChannelRecord> = ctx
        .store
        .list_channels()
        .await?
        .into_iter()
        .filter(|c| ApiContext::can_list(viewer.as_ref(), c.owner_id, c.visibility))
        .skip(offset)
        .take(limit)
        .collect();
    let names: Vec<&str> = page.iter().map(|c| c.name.as_str()).collect();
    let counts = ctx.shared.viewers_many(&names).await;
    let out: Vec<ChannelView> = page.into_iter().zip(counts).map(|(c, n)| ChannelView::new(c, n)).collect();
    Ok(HttpResponse::Ok().json(out))
}

/// Create a channel owned by the caller. The response carries the stream key, once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "channels",
    security(("bearer" = [])),
    request_body = CreateChannelRequest,
    responses(
        (status = 201, body = CreatedChannel),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
#[post("/channels")]
pub async fn create_channel(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    body: web::Json<CreateChannelRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    if let Some(t) = &body.title {
        check_text("title", t, crate::store::MAX_CHANNEL_TITLE_LEN, false)?;
    }
    let (channel, key) = ctx
        .store
        .create_channel(NewChannel {
            name: body.name,
            title: body.title,
            owner_id: Some(caller.user_id),
            visibility: body.visibility.unwrap_or_default(),
        })
        .await?;
    tracing::info!(channel = %channel.name, owner = caller.user_id, "channel created");
    Ok(HttpResponse::Created()
        .json(CreatedChannel { channel: ChannelView::new(channel, 0), stream_key: key.expose().to_owned() }))
}

/// A channel; entitled callers also get a playback URL (with a token if it is not public).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "channels",
    security((), ("bearer" = [])),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody))
)]
#[get("/channels/{name}")]
pub async fn get_channel(
    ctx: web::Data<ApiContext>,
    caller: MaybeCaller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_visible(&ctx, caller.0.as_ref(), &name).await?;
    let viewer = caller.0.as_ref().map(Caller::viewer);
    let playable = ctx.can_play_channel(viewer.as_ref(), &c).await?;
    let viewers = ctx.shared.viewers(&c.name).await;
    let mut view = ChannelView::new(c, viewers);
    view.can_play = Some(playable);
    view.ladder = ctx.transcoder.status(&view.name);
    if playable {
        let url = format!("/live/{}/index.m3u8", view.name);
        if view.visibility == Visibility::Public {
            view.playback_url = Some(url);
        } else {
            let (token, expires) =
                ctx.playback_token(&PlaybackScope::Channel(view.name.clone()), viewer.as_ref());
            view.playback_url = Some(format!("{url}?token={token}"));
            view.playback_token = Some(token);
            view.playback_token_expires = Some(expires);
        }
    }
    Ok(HttpResponse::Ok().json(view))
}

/// Change who may watch the channel (owner or admin).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "channels",
    security(("bearer" = [])),
    request_body = UpdateChannelRequest,
    responses(
        (status = 200, body = ChannelView),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[patch("/channels/{name}")]
pub async fn update_channel(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<UpdateChannelRequest>,
) -> Result<HttpResponse, Error> {
    let c = find_visible(&ctx, Some(&caller), &name).await?;
    require_owner(&caller, c.owner_id)?;
    ctx.store.set_visibility(&c.name, body.visibility).await?;
    ctx.invalidate_visibility(&c.name);
    let c = ctx.store.channel_by_name(&c.name).await?.ok_or_else(|| Error::not_found("channel vanished"))?;
    let viewers = ctx.shared.viewers(&c.name).await;
    Ok(HttpResponse::Ok().json(ChannelView::new(c, viewers)))
}

/// Replace the stream key (owner or admin); the new key is in this response only.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "channels",
    security(("bearer" = [])),
    responses(
        (status = 200, body = StreamKeyResponse),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[post("/channels/{name}/key")]
pub async fn rotate_key(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_visible(&ctx, Some(&caller), &name).await?;
    require_owner(&caller, c.owner_id)?;
    let key = ctx.store.rotate_stream_key(&c.name).await?;
    tracing::info!(channel = %c.name, "stream key rotated");
    Ok(HttpResponse::Ok().json(StreamKeyResponse { stream_key: key.expose().to_owned() }))
}

/// Who is on a channel on this server right now.
#[derive(Serialize, ToSchema)]
pub struct SessionsView {
    /// The live publisher (none while the channel is offline or in its reconnect grace).
    pub publisher: Option<RosterEntry>,
    /// Viewers with a session of their own (RTMP, SRT and WHEP play), oldest first.
    pub viewers: Vec<RosterEntry>,
    /// LL-HLS viewers: clients that reloaded a playlist in the last 10 s.
    pub hls_viewers: i64,
    /// Viewers by protocol, LL-HLS included (`hls`).
    pub viewers_by_protocol: BTreeMap<String, i64>,
}

/// The channel's publisher and viewers on this server, every protocol (owner or admin).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "channels",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SessionsView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[get("/channels/{name}/sessions")]
pub async fn list_sessions(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let (sessions, hls_viewers) = roster::list(&c.name);
    let mut view = SessionsView {
        publisher: None,
        viewers: Vec::new(),
        hls_viewers,
        viewers_by_protocol: BTreeMap::new(),
    };
    if hls_viewers > 0 {
        view.viewers_by_protocol.insert("hls".to_owned(), hls_viewers);
    }
    for s in sessions {
        match s.role {
            // Oldest first: a newer publisher is the one that holds the channel now.
            Role::Publisher => view.publisher = Some(s),
            Role::Viewer => {
                *view.viewers_by_protocol.entry(s.protocol.to_owned()).or_default() += 1;
                view.viewers.push(s);
            }
        }
    }
    Ok(HttpResponse::Ok().json(view))
}
