//! Comments on videos: create, list newest first with a cursor, delete.
//!
//! Length limits are the API's (`api.comment_max_len`); the store only refuses an empty body.

use serde::Serialize;

use super::{now_ms, Store};
use crate::error::{Error, ErrorKind};

/// A comment with its author's public name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Comment {
    pub id: i64,
    pub video_id: i64,
    pub user_id: i64,
    pub username: String,
    pub body: String,
    pub created_at_ms: i64,
}

const COMMENT_SELECT: &str = "SELECT k.id, k.video_id, k.user_id, u.username, k.body, k.created_at_ms \
     FROM comments k JOIN users u ON u.id = k.user_id";

impl Store {
    pub async fn create_comment(&self, video_id: i64, user_id: i64, body: &str) -> crate::Result<Comment> {
        if body.trim().is_empty() {
            return Err(Error::invalid("comment body must not be empty"));
        }
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO comments (video_id, user_id, body, created_at_ms) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(video_id)
            .bind(user_id)
            .bind(body)
            .bind(now_ms())
            .fetch_one(pool)
            .await
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::with_source(ErrorKind::NotFound, format!("video {video_id} not found"), e)
            }
            _ => Error::from(e),
        })?;
        self.comment_by_id(id).await?.ok_or_else(|| Error::internal("inserted comment vanished"))
    }

    pub async fn comment_by_id(&self, id: i64) -> crate::Result<Option<Comment>> {
        let sql = format!("{COMMENT_SELECT} WHERE k.id = $1");
        let c = with_pool!(self, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(c)
    }

    /// Comments on a video, newest first, with ids below `before_id` (the cursor).
    pub async fn list_comments(
        &self,
        video_id: i64,
        before_id: Option<i64>,
        limit: i64,
    ) -> crate::Result<Vec<Comment>> {
        let sql = format!("{COMMENT_SELECT} WHERE k.video_id = $1 AND k.id < $2 ORDER BY k.id DESC LIMIT $3");
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(video_id)
                .bind(before_id.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    pub async fn delete_comment(&self, id: i64) -> crate::Result<()> {
        let n = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM comments WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })?;
        if n == 0 {
            return Err(Error::not_found(format!("comment {id} not found")));
        }
        Ok(())
    }
}
