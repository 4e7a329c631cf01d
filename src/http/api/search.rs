//! Search over videos and channels (ranked, paginated); see `crate::store::search`.

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{check_text, page_limit, ApiContext, Caller, ErrorBody, MaybeCaller, API_PREFIX};
use crate::error::Error;
use crate::store::{search_terms, ChannelRecord, Video};

/// Longest query accepted, in characters.
const MAX_QUERY_LEN: usize = 200;
/// Deepest page reachable with offset pagination.
const MAX_OFFSET: i64 = 1000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Words to find (titles, descriptions, tags, channel names); prefix matches, all words.
    /// At most 200 characters, not blank, no control characters.
    #[param(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub q: String,
    /// Page size (default 20); clamped to 1-100.
    pub limit: Option<i64>,
    /// Results to skip; clamped to 0-1000.
    pub offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub videos: Vec<Video>,
    pub channels: Vec<ChannelRecord>,
}

/// Full-text search, best match first. Private content appears only to its owner (and
/// admins). Results are cached for a few seconds, so a new video shows up within that time.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "search",
    security((), ("bearer" = [])),
    params(SearchQuery),
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorBody))
)]
#[get("/search")]
pub async fn search(
    ctx: web::Data<ApiContext>,
    caller: MaybeCaller,
    q: web::Query<SearchQuery>,
) -> Result<HttpResponse, Error> {
    check_text("q", &q.q, MAX_QUERY_LEN, false)?;
    if q.q.trim().is_empty() {
        return Err(Error::invalid("q must not be empty"));
    }
    let limit = page_limit(q.limit);
    let offset = q.offset.unwrap_or(0).clamp(0, MAX_OFFSET);
    let viewer = caller.0.as_ref().map(Caller::viewer);
    // Who sees what: admins everything; owners of private content also their own; everyone
    // else the same public listing, so they share cached results.
    let (viewer_id, include_private, scope) = match viewer {
        Some(v) if v.is_admin => (None, true, "all".to_owned()),
        Some(v) if ctx.owns_private(v.user_id).await? => (Some(v.user_id), false, format!("u{}", v.user_id)),
        _ => (None, false, "pub".to_owned()),
    };
    let key = format!("{scope}|{limit}|{offset}|{}", search_terms(&q.q).join(" "));
    if let Some(body) = ctx.cached_search(&key) {
        return Ok(HttpResponse::Ok().content_type("application/json").body(body));
    }
    let (videos, channels) = tokio::try_join!(
        ctx.store.search_videos(&q.q, viewer_id, include_private, limit, offset),
        ctx.store.search_channels(&q.q, viewer_id, include_private, limit, offset),
    )?;
    let body = bytes::Bytes::from(
        serde_json::to_vec(&SearchResults { videos, channels })
            .map_err(|e| Error::with_source(crate::ErrorKind::Internal, "serializing search results", e))?,
    );
    ctx.cache_search(key, body.clone());
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}
