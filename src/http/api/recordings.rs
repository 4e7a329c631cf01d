//! Recording settings of a channel (owner or admin): whether its live sessions are recorded as
//! videos, and how long those are kept. Read, set (replace the owner's changes to the server's
//! `[archive]` defaults), delete (back to the defaults). Recording applies from the channel's
//! next live session, retention from its next run.

use actix_web::{delete, get, put, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::channels::find_owned;
use super::{ApiContext, Caller, ErrorBody, API_PREFIX};
use crate::actors::archive::retention::EffectiveRecording;
use crate::error::Error;
use crate::store::RecordingSettings;

/// Longest retention a channel may ask for, in days (100 years).
const MAX_KEEP_DAYS: i64 = 36_500;

/// Every field is optional: what is left out takes the server's default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRecordingRequest {
    /// false: live sessions are not recorded.
    pub record: Option<bool>,
    /// Keep recordings this many days; 0: forever.
    #[serde(default, deserialize_with = "super::integral")]
    #[schema(minimum = 0, maximum = 36500)]
    pub keep_days: Option<i64>,
    /// Keep the channel's newest recordings up to this many bytes in all; 0: no limit.
    #[serde(default, deserialize_with = "super::integral")]
    #[schema(minimum = 0)]
    pub keep_bytes: Option<i64>,
}

/// The channel's recording settings in force.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "recording",
    security(("bearer" = [])),
    responses(
        (status = 200, body = EffectiveRecording),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[get("/channels/{name}/recording")]
pub async fn get_recording(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    Ok(HttpResponse::Ok().json(ctx.archive.channel_settings(&c.name)))
}

/// Replace the owner's changes to the server's recording defaults.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "recording",
    security(("bearer" = [])),
    request_body = SetRecordingRequest,
    responses(
        (status = 200, body = EffectiveRecording),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[put("/channels/{name}/recording")]
pub async fn set_recording(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let body: SetRecordingRequest = super::object_body(body.into_inner())?;
    if body.keep_days.is_some_and(|d| !(0..=MAX_KEEP_DAYS).contains(&d)) {
        return Err(Error::invalid(format!("keep_days: 0 (forever) to {MAX_KEEP_DAYS}")));
    }
    if body.keep_bytes.is_some_and(|b| b < 0) {
        return Err(Error::invalid("keep_bytes: 0 (no limit) or more"));
    }
    let s = RecordingSettings {
        record: body.record.unwrap_or(true),
        keep_days: body.keep_days,
        keep_bytes: body.keep_bytes,
    };
    ctx.store.set_recording_settings(c.id, &s).await?;
    tracing::info!(channel = %c.name, record = s.record, keep_days = ?s.keep_days, keep_bytes = ?s.keep_bytes, "recording settings changed");
    ctx.archive.set_channel(&c.name, Some(s));
    Ok(HttpResponse::Ok().json(ctx.archive.channel_settings(&c.name)))
}

/// Back to the server's recording defaults.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "recording",
    security(("bearer" = [])),
    responses(
        (status = 200, body = EffectiveRecording),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[delete("/channels/{name}/recording")]
pub async fn delete_recording(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    ctx.store.delete_recording_settings(c.id).await?;
    ctx.archive.set_channel(&c.name, None);
    Ok(HttpResponse::Ok().json(ctx.archive.channel_settings(&c.name)))
}
