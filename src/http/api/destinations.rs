//! Restream destinations of a channel (owner or admin only): list, add, read, change, delete.
//!
//! Every change is written to the store and then handed to `actors::restream::Restream`, so a
//! live channel starts, stops or reconnects its pushes at once, without a restart. The stream
//! key is write-only: responses say `stream_key_set` and never carry it; `last_error` is built
//! without it; the store holds it sealed (`auth::sealed`).

use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::channels::find_owned;
use super::{ApiContext, Caller, ErrorBody, API_PREFIX};
use crate::actors::restream::{Destination, PushState, PushUrl, Restream};
use crate::auth::sealed::Sealer;
use crate::error::Error;
use crate::store::{ChannelRecord, DestinationRecord, DestinationUpdate, Store};

/// Longest stream key accepted (YouTube's and Twitch's are well under 100 characters).
const MAX_KEY_LEN: usize = 512;

#[derive(Serialize, ToSchema)]
pub struct DestinationView {
    pub id: i64,
    /// rtmp://, rtmps:// or srt:// URL, without the stream key.
    pub url: String,
    /// A stream key is stored (it is never returned).
    pub stream_key_set: bool,
    pub enabled: bool,
    /// idle (channel offline or disabled), connecting, live, retrying or error.
    #[schema(value_type = String)]
    pub state: PushState,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
    /// Failed attempts so far (since the server started).
    pub retries: u64,
    /// Media bytes pushed so far (since the server started).
    pub bytes: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDestinationRequest {
    /// rtmp://host[:port]/app, rtmps://host[:port]/app or srt://host:port[/app].
    #[schema(
        max_length = 1024,
        pattern = r"^(rtmps?://[A-Za-z0-9._-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[^?#@\s/][^?#@\s]*|srt://[A-Za-z0-9._-]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/[^?#@\s]*)?)$"
    )]
    pub url: String,
    /// The key the destination gave the owner (for SRT: the key, or a full `#!::` stream id).
    #[schema(min_length = 1, max_length = 512, pattern = r"^[^\s\u0000-\u001f\u007f-\u009f]+$")]
    pub stream_key: String,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDestinationRequest {
    #[schema(
        max_length = 1024,
        pattern = r"^(rtmps?://[A-Za-z0-9._-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[^?#@\s/][^?#@\s]*|srt://[A-Za-z0-9._-]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/[^?#@\s]*)?)$"
    )]
    pub url: Option<String>,
    #[schema(min_length = 1, max_length = 512, pattern = r"^[^\s\u0000-\u001f\u007f-\u009f]+$")]
    pub stream_key: Option<String>,
    pub enabled: Option<bool>,
}

fn view(r: DestinationRecord, restream: &Restream) -> DestinationView {
    let s = restream.status(r.id);
    DestinationView {
        id: r.id,
        url: r.url,
        stream_key_set: !r.stream_key.is_empty(),
        enabled: r.enabled,
        state: if r.enabled { s.state } else { PushState::Idle },
        last_error: s.last_error,
        retries: s.retries,
        bytes: s.bytes,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

fn check_url(url: &str) -> Result<String, Error> {
    if url.chars().count() > 1024 {
        return Err(Error::invalid("url is longer than 1024 characters"));
    }
    PushUrl::parse(url).map(|u| u.masked()).map_err(|e| Error::invalid(format!("url: {e}")))
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty()
        || key.chars().count() > MAX_KEY_LEN
        || key.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::invalid(format!(
            "stream_key must be 1-{MAX_KEY_LEN} characters without spaces or control characters"
        )));
    }
    Ok(())
}

/// The column a destination's key is sealed for (`auth::sealed`).
const KEY_FIELD: &str = "restream.stream_key";

/// What the push tasks need from a stored row; `None` (logged) for a row that no longer
/// validates or whose key does not open.
fn to_destination(r: &DestinationRecord, sealer: &Sealer) -> Option<Destination> {
    let stream_key = match sealer.open(KEY_FIELD, &r.stream_key) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(destination = r.id, error = %e.msg, "restream destination skipped");
            return None;
        }
    };
    Some(Destination { id: r.id, url: PushUrl::parse(&r.url).ok()?, stream_key, enabled: r.enabled })
}

/// Hand the channel's current list to the live pushes.
async fn publish(ctx: &ApiContext, c: &ChannelRecord) -> Result<(), Error> {
    let list = ctx.store.list_destinations(c.id).await?;
    ctx.restream
        .set_destinations(&c.name, list.iter().filter_map(|r| to_destination(r, &ctx.sealer)).collect());
    Ok(())
}

/// Load every channel's destinations at start-up, sealing keys stored before sealing existed.
pub async fn load_all(store: &Store, restream: &Restream, sealer: &Sealer) -> crate::Result<()> {
    let mut by_channel: std::collections::HashMap<String, Vec<Destination>> = Default::default();
    for (name, r) in store.all_destinations().await? {
        if !r.stream_key.is_empty() && !Sealer::is_sealed(&r.stream_key) {
            let sealed = sealer.seal(KEY_FIELD, &r.stream_key);
            let change = DestinationUpdate { stream_key: Some(sealed), ..Default::default() };
            store.update_destination(r.channel_id, r.id, change).await?;
            tracing::info!(destination = r.id, "restream key sealed at rest");
        }
        by_channel.entry(name).or_default().extend(to_destination(&r, sealer));
    }
    for (name, list) in by_channel {
        restream.set_destinations(&name, list);
    }
    Ok(())
}

/// The channel's restream destinations with their push state.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "restream",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<DestinationView>),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[get("/channels/{name}/destinations")]
pub async fn list_destinations(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let list = ctx.store.list_destinations(c.id).await?;
    Ok(HttpResponse::Ok().json(list.into_iter().map(|r| view(r, &ctx.restream)).collect::<Vec<_>>()))
}

/// Add a destination; a live channel starts pushing to it at once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "restream",
    security(("bearer" = [])),
    request_body = CreateDestinationRequest,
    responses(
        (status = 201, body = DestinationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
#[post("/channels/{name}/destinations")]
pub async fn create_destination(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<CreateDestinationRequest>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let url = check_url(&body.url)?;
    check_key(&body.stream_key)?;
    let sealed = ctx.sealer.seal(KEY_FIELD, &body.stream_key);
    let r = ctx
        .store
        .create_destination(c.id, &url, &sealed, body.enabled.unwrap_or(true), ctx.max_destinations)
        .await?;
    tracing::info!(channel = %c.name, destination = r.id, %url, "restream destination added");
    publish(&ctx, &c).await?;
    Ok(HttpResponse::Created().json(view(r, &ctx.restream)))
}

/// One destination with its push state.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "restream",
    security(("bearer" = [])),
    responses(
        (status = 200, body = DestinationView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[get("/channels/{name}/destinations/{id}")]
pub async fn get_destination(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, Error> {
    let (name, id) = path.into_inner();
    let c = find_owned(&ctx, &caller, &name).await?;
    let r = ctx
        .store
        .destination(c.id, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("destination {id} not found")))?;
    Ok(HttpResponse::Ok().json(view(r, &ctx.restream)))
}

/// Change a destination's URL, key or enabled flag; a live push reconnects or stops at once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "restream",
    security(("bearer" = [])),
    request_body = UpdateDestinationRequest,
    responses(
        (status = 200, body = DestinationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[patch("/channels/{name}/destinations/{id}")]
pub async fn update_destination(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    path: web::Path<(String, i64)>,
    body: web::Json<UpdateDestinationRequest>,
) -> Result<HttpResponse, Error> {
    let (name, id) = path.into_inner();
    let c = find_owned(&ctx, &caller, &name).await?;
    let body = body.into_inner();
    let url = body.url.as_deref().map(check_url).transpose()?;
    if let Some(k) = &body.stream_key {
        check_key(k)?;
    }
    let r = ctx
        .store
        .update_destination(
            c.id,
            id,
            DestinationUpdate {
                url,
                stream_key: body.stream_key.map(|k| ctx.sealer.seal(KEY_FIELD, &k)),
                enabled: body.enabled,
            },
        )
        .await?;
    tracing::info!(channel = %c.name, destination = id, enabled = r.enabled, "restream destination changed");
    publish(&ctx, &c).await?;
    Ok(HttpResponse::Ok().json(view(r, &ctx.restream)))
}

/// Remove a destination; a live push to it stops at once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "restream",
    security(("bearer" = [])),
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[delete("/channels/{name}/destinations/{id}")]
pub async fn delete_destination(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, Error> {
    let (name, id) = path.into_inner();
    let c = find_owned(&ctx, &caller, &name).await?;
    ctx.store.delete_destination(c.id, id).await?;
    tracing::info!(channel = %c.name, destination = id, "restream destination removed");
    publish(&ctx, &c).await?;
    Ok(HttpResponse::NoContent().finish())
}
