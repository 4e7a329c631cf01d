//! A channel's transcode ladder (owner or admin only): which renditions ffmpeg makes from its
//! live sessions, with which codec and x264 settings. Read, set (replace the owner's changes to
//! the server's `[transcode]` defaults), delete (back to the defaults).
//!
//! Changes are stored and handed to the `Transcoder`; they apply from the channel's next live
//! session (a running ladder's renditions are already in players' playlists). The machine-wide
//! parts (the encoder, the cap on channels transcoded at once) stay the operator's.

use actix_web::{delete, get, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::channels::find_owned;
use super::{ApiContext, Caller, ErrorBody, API_PREFIX};
use crate::actors::transcode::{Codec, LadderOverride, LadderStatus, RungSpec, Transcoder};
use crate::error::Error;
use crate::store::Store;

/// Rungs a channel may ask for.
const MAX_RUNGS: usize = 8;

#[derive(Serialize, ToSchema)]
pub struct RungView {
    /// The rendition's name in URLs: `/live/<channel>/<name>/index.m3u8`.
    pub name: String,
    pub height: u32,
    pub video_kbps: u32,
}

#[derive(Serialize, ToSchema)]
pub struct LadderView {
    /// The channel's live sessions get a ladder (it is on, and the server has ffmpeg).
    pub enabled: bool,
    /// The server can transcode (ffmpeg was found at start).
    pub available: bool,
    /// The rungs asked for; a session makes those below its source's height, at most
    /// `max_rungs`, each at most at the source's bitrate.
    pub rungs: Vec<RungView>,
    pub max_rungs: usize,
    pub codec: Codec,
    /// x264/x265 preset.
    pub preset: String,
    /// x264/x265 tune.
    pub tune: String,
    /// The owner changed the server's defaults (DELETE restores them).
    pub custom: bool,
    /// The live session's ladder, when the channel is live on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<LadderStatus>,
}

/// x264/x265 presets, fastest first.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
    Slow,
    Slower,
    Veryslow,
}

/// x264 tunes (x265 takes zerolatency, fastdecode, animation and grain; the others are
/// ignored for H.265 rungs).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tune {
    Zerolatency,
    Film,
    Animation,
    Grain,
    Stillimage,
    Fastdecode,
}

fn word<T: Serialize>(v: T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RungRequest {
    /// Picture height (even); the rendition is named after it (`480p`).
    #[serde(deserialize_with = "super::integral")]
    #[schema(value_type = i64, required = true, minimum = 72, maximum = 4320, multiple_of = 2)]
    pub height: Option<i64>,
    /// Video bitrate, kbit/s (capped at the source's).
    #[serde(deserialize_with = "super::integral")]
    #[schema(value_type = i64, required = true, minimum = 50, maximum = 100000)]
    pub video_kbps: Option<i64>,
}

/// Every field is optional: what is left out takes the server's default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLadderRequest {
    /// false: the channel is served passthrough (the source only).
    pub enabled: Option<bool>,
    /// The rungs; two of the same height count once.
    #[schema(min_items = 1, max_items = 8)]
    pub rungs: Option<Vec<RungRequest>>,
    /// Encoded rungs at most.
    #[serde(default, deserialize_with = "super::integral")]
    #[schema(minimum = 1, maximum = 8)]
    pub max_rungs: Option<i64>,
    pub codec: Option<Codec>,
    pub preset: Option<Preset>,
    pub tune: Option<Tune>,
}

fn view(t: &Transcoder, channel: &str) -> LadderView {
    let e = t.effective(channel);
    LadderView {
        enabled: e.enabled && t.available(),
        available: t.available(),
        rungs: e
            .rungs
            .into_iter()
            .map(|r| RungView { name: r.name, height: r.height, video_kbps: r.video_kbps })
            .collect(),
        max_rungs: e.max_rungs,
        codec: e.codec,
        preset: e.preset,
        tune: e.tune,
        custom: t.override_of(channel).is_some(),
        status: t.status(channel),
    }
}

/// Hand every stored ladder setting to the transcoder (server start).
pub async fn load_all(store: &Store, t: &Transcoder) -> crate::Result<()> {
    for (name, json) in store.all_ladders().await? {
        match serde_json::from_str::<LadderOverride>(&json) {
            Ok(o) => t.set_override(&name, Some(o)),
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "stored ladder settings do not parse; using the defaults")
            }
        }
    }
    Ok(())
}

/// The channel's ladder as its next live session will run it, and the current one's status.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "ladder",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LadderView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[get("/channels/{name}/ladder")]
pub async fn get_ladder(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    Ok(HttpResponse::Ok().json(view(&ctx.transcoder, &c.name)))
}

/// Replace the owner's changes to the server's ladder defaults (from the next live session).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "ladder",
    security(("bearer" = [])),
    request_body = SetLadderRequest,
    responses(
        (status = 200, body = LadderView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[put("/channels/{name}/ladder")]
pub async fn set_ladder(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let body: SetLadderRequest = super::object_body(body.into_inner())?;
    let rungs = match body.rungs {
        None => None,
        Some(list) => {
            if list.is_empty() || list.len() > MAX_RUNGS {
                return Err(Error::invalid(format!("rungs: 1 to {MAX_RUNGS} of them")));
            }
            let mut out: Vec<RungSpec> = Vec::new();
            for r in list {
                let height = r.height.unwrap_or_default();
                let kbps = r.video_kbps.unwrap_or_default();
                if !(72..=4320).contains(&height) || height % 2 != 0 {
                    return Err(Error::invalid("rungs[].height: an even number from 72 to 4320"));
                }
                if !(50..=100_000).contains(&kbps) {
                    return Err(Error::invalid("rungs[].video_kbps: 50 to 100000"));
                }
                let (height, video_kbps) = (height as u32, kbps as u32);
                if !out.iter().any(|o| o.height == height) {
                    out.push(RungSpec { name: format!("{height}p"), height, video_kbps });
                }
            }
            Some(out)
        }
    };
    if let Some(n) = body.max_rungs {
        if !(1..=MAX_RUNGS as i64).contains(&n) {
            return Err(Error::invalid(format!("max_rungs: 1 to {MAX_RUNGS}")));
        }
    }
    let o = LadderOverride {
        enabled: body.enabled,
        rungs,
        max_rungs: body.max_rungs.map(|n| n as usize),
        codec: body.codec,
        preset: body.preset.map(word),
        tune: body.tune.map(word),
    };
    let json = serde_json::to_string(&o).map_err(|e| Error::internal(format!("ladder settings: {e}")))?;
    ctx.store.set_ladder(c.id, &json).await?;
    tracing::info!(channel = %c.name, settings = %json, "ladder settings changed; they apply from the next live session");
    ctx.transcoder.set_override(&c.name, Some(o));
    Ok(HttpResponse::Ok().json(view(&ctx.transcoder, &c.name)))
}

/// Back to the server's ladder defaults (from the next live session).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "ladder",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LadderView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[delete("/channels/{name}/ladder")]
pub async fn delete_ladder(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    ctx.store.delete_ladder(c.id).await?;
    ctx.transcoder.set_override(&c.name, None);
    Ok(HttpResponse::Ok().json(view(&ctx.transcoder, &c.name)))
}
