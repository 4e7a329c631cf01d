//! Search over videos and channels (ranked, paginated); see `crate::store::search`.

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{check_text, page_limit, ApiContext, Caller, ErrorBody, MaybeCaller, API_PREFIX};
use crate::error::Error;
use crate::store::{ChannelRecord, Video};

/// Longest query accepted, in characters.
const MAX_QUERY_LEN: usize = 200;
/// Deepest page reachable with offset pagination.
const MAX_OFFSET: i64 = 1000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Words to find (titles, descriptions, tags, channel names); prefix matches, all words.
    pub q: String,
    /// Page size, 1-100 (default 20).
    pub limit: Option<i64>,
    /// Results to skip (at most 1000).
    pub offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub videos: Vec<Video>,
    pub channels: Vec<ChannelRecord>,
}

/// Full-text search, best match first. Private content appears only to its owner.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "search",
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
    let viewer_id = viewer.filter(|v| !v.is_admin).map(|v| v.user_id);
    let (videos, channels) = tokio::try_join!(
        ctx.store.search_videos(&q.q, viewer_id, limit, offset),
        ctx.store.search_channels(&q.q, viewer_id, limit, offset),
    )?;
    Ok(HttpResponse::Ok().json(SearchResults { videos, channels }))
}
