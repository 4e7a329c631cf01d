//! Videos: the VOD catalog (uploaded files and archived live sessions).
//!
//! Other issues fill the table (upload, archive writer); the Platform API reads it. A video
//! belongs to a channel (optional for uploads) and an owner, and has its own visibility, checked
//! with `crate::auth::entitlements::can_play` like a channel's. Tags are stored as one
//! space-separated lowercase string so both backends can index them for search.

use serde::{Deserialize, Serialize};

use super::{now_ms, Store, Visibility};
use crate::error::{Error, ErrorKind};

/// Longest title, in characters.
pub const MAX_VIDEO_TITLE_LEN: usize = 200;
/// Longest description, in characters.
pub const MAX_VIDEO_DESCRIPTION_LEN: usize = 5000;
/// Most tags on one video, and the longest tag.
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_LEN: usize = 40;

/// Where a video came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VideoSource {
    Upload,
    Live,
}

/// Processing state of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    /// Uploaded or recording; not playable yet.
    Processing,
    /// Playable on demand.
    Ready,
    /// A live session being recorded right now.
    Live,
    Failed,
}

pub(super) fn enum_str<T: Serialize>(v: T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn parse_enum<T: for<'de> Deserialize<'de>>(what: &str, s: &str) -> crate::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|e| Error::with_source(ErrorKind::Internal, format!("invalid stored {what} '{s}'"), e))
}

/// A video as stored, with its channel's name.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Video {
    pub id: i64,
    pub channel_id: Option<i64>,
    pub channel_name: Option<String>,
    pub owner_id: Option<i64>,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub source: VideoSource,
    pub duration_ms: i64,
    pub status: VideoStatus,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What [`Store::create_video`] needs.
#[derive(Debug, Clone)]
pub struct NewVideo {
    pub channel_id: Option<i64>,
    pub owner_id: Option<i64>,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub source: VideoSource,
    pub duration_ms: i64,
    pub status: VideoStatus,
}

#[derive(sqlx::FromRow)]
pub(super) struct VideoRow {
    id: i64,
    channel_id: Option<i64>,
    channel_name: Option<String>,
    owner_id: Option<i64>,
    title: String,
    description: String,
    tags: String,
    visibility: String,
    source: String,
    duration_ms: i64,
    status: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<VideoRow> for Video {
    type Error = Error;
    fn try_from(r: VideoRow) -> crate::Result<Video> {
        Ok(Video {
            id: r.id,
            channel_id: r.channel_id,
            channel_name: r.channel_name,
            owner_id: r.owner_id,
            title: r.title,
            description: r.description,
            tags: r.tags.split_whitespace().map(str::to_owned).collect(),
            visibility: r.visibility.parse()?,
            source: parse_enum("video source", &r.source)?,
            duration_ms: r.duration_ms,
            status: parse_enum("video status", &r.status)?,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

/// The columns of a [`VideoRow`] (video alias `v`, its channel `c`), shared by every query.
macro_rules! video_columns {
    () => {
        "v.id, v.channel_id, c.name AS channel_name, v.owner_id, v.title, v.description, v.tags, \
         v.visibility, v.source, v.duration_ms, v.status, v.created_at_ms, v.updated_at_ms"
    };
}
pub(super) use video_columns;

/// `SELECT` list and `FROM` clause for plain video queries.
pub(super) const VIDEO_SELECT: &str =
    concat!("SELECT ", video_columns!(), " FROM videos v LEFT JOIN channels c ON c.id = v.channel_id");

/// Normalizes tags: lowercase, trimmed, no empties or duplicates, no whitespace inside.
pub fn normalize_tags(tags: &[String]) -> crate::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_lowercase();
        if t.is_empty() {
            continue;
        }
        if t.chars().count() > MAX_TAG_LEN || t.chars().any(char::is_whitespace) {
            return Err(Error::invalid(format!("tags must be 1-{MAX_TAG_LEN} characters without spaces")));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::invalid(format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

impl Store {
    /// Adds a video to the catalog.
    pub async fn create_video(&self, new: NewVideo) -> crate::Result<Video> {
        if new.title.trim().is_empty() || new.title.chars().count() > MAX_VIDEO_TITLE_LEN {
            return Err(Error::invalid(format!("video title must be 1-{MAX_VIDEO_TITLE_LEN} characters")));
        }
        if new.description.chars().count() > MAX_VIDEO_DESCRIPTION_LEN {
            return Err(Error::invalid(format!(
                "video description is longer than {MAX_VIDEO_DESCRIPTION_LEN} characters"
            )));
        }
        let tags = normalize_tags(&new.tags)?.join(" ");
        let now = now_ms();
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO videos (channel_id, owner_id, title, description, tags, visibility, source, \
                   duration_ms, status, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
            )
            .bind(new.channel_id)
            .bind(new.owner_id)
            .bind(new.title.trim())
            .bind(&new.description)
            .bind(&tags)
            .bind(new.visibility.as_str())
            .bind(enum_str(new.source))
            .bind(new.duration_ms.max(0))
            .bind(enum_str(new.status))
            .bind(now)
            .fetch_one(pool)
            .await
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::with_source(
                ErrorKind::FailedPrecondition,
                "the video's channel or owner does not exist",
                e,
            ),
            _ => Error::from(e),
        })?;
        self.video_by_id(id).await?.ok_or_else(|| Error::internal("inserted video vanished"))
    }

    pub async fn video_by_id(&self, id: i64) -> crate::Result<Option<Video>> {
        let sql = format!("{VIDEO_SELECT} WHERE v.id = $1");
        let row: Option<VideoRow> =
            with_pool!(self, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        row.map(Video::try_from).transpose()
    }

    /// Delete a video and everything that hangs off it (its recording row, comments, watch
    /// history); `false` when there was no such video. Its media are the caller's to remove.
    pub async fn delete_video(&self, id: i64) -> crate::Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM videos WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// Sets a video's processing state (archive writer, transcoder).
    pub async fn set_video_status(&self, id: i64, status: VideoStatus) -> crate::Result<()> {
        let affected = with_pool!(self, |pool| {
            sqlx::query("UPDATE videos SET status = $1, updated_at_ms = $2 WHERE id = $3")
                .bind(enum_str(status))
                .bind(now_ms())
                .bind(id)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })?;
        if affected == 0 {
            return Err(Error::not_found(format!("video {id} not found")));
        }
        Ok(())
    }

    /// Newest videos first among those with one of `statuses`, optionally only in `channels`.
    pub async fn recent_videos(
        &self,
        channel_names: Option<&[String]>,
        limit: i64,
    ) -> crate::Result<Vec<Video>> {
        let mut sql = format!("{VIDEO_SELECT} WHERE v.status IN ('ready', 'live')");
        if let Some(names) = channel_names {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            let list: Vec<String> = (0..names.len()).map(|i| format!("${}", i + 2)).collect();
            sql.push_str(&format!(" AND c.name IN ({})", list.join(", ")));
        }
        sql.push_str(" ORDER BY (v.status = 'live') DESC, v.created_at_ms DESC, v.id DESC LIMIT $1");
        let rows: Vec<VideoRow> = with_pool!(self, |pool| {
            let mut q = sqlx::query_as(&sql).bind(limit);
            for n in channel_names.unwrap_or_default() {
                q = q.bind(n);
            }
            q.fetch_all(pool).await
        })?;
        rows.into_iter().map(Video::try_from).collect()
    }
}
