//! Watch history: one row per (user, video) with the last position, written in batches by the
//! `WatchHistory` actor (`crate::actors::watch_history`), never one row per heartbeat.
//!
//! Also the two feed queries that read it: "people who watched what you watched also watched"
//! and "popular".

use serde::Serialize;

use super::videos::{video_columns, Video, VideoRow};
use super::Store;
use crate::error::Error;

/// Rows per multi-row upsert: 4 parameters each stays far below SQLite's 32766 and
/// PostgreSQL's 65535 bind limits.
const UPSERT_CHUNK: usize = 1000;

/// One buffered progress update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchUpdate {
    pub user_id: i64,
    pub video_id: i64,
    pub position_ms: i64,
    pub at_ms: i64,
}

/// A history entry: the video and where the user stopped.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub video: Video,
    pub position_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    #[sqlx(flatten)]
    video: VideoRow,
    position_ms: i64,
    watched_at_ms: i64,
}

fn upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| format!("(${}, ${}, ${}, ${})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4))
        .collect();
    // The WHERE keeps an older update (a retried batch) from overwriting a newer one.
    format!(
        "INSERT INTO watch_history (user_id, video_id, position_ms, updated_at_ms) VALUES {} \
         ON CONFLICT (user_id, video_id) DO UPDATE SET position_ms = excluded.position_ms, \
         updated_at_ms = excluded.updated_at_ms WHERE excluded.updated_at_ms >= watch_history.updated_at_ms",
        values.join(", ")
    )
}

impl Store {
    /// Writes a batch of updates (distinct (user, video) pairs) in one transaction per chunk.
    /// If a chunk fails on a foreign key (a video or user deleted since the update was
    /// accepted), its rows are written one by one and the orphans dropped; returns how many
    /// rows were dropped.
    pub async fn upsert_watch_batch(&self, updates: &[WatchUpdate]) -> crate::Result<usize> {
        let mut dropped = 0;
        for chunk in updates.chunks(UPSERT_CHUNK) {
            let sql = upsert_sql(chunk.len());
            let result = with_pool!(self, |pool| {
                let mut q = sqlx::query(&sql);
                for u in chunk {
                    q = q.bind(u.user_id).bind(u.video_id).bind(u.position_ms).bind(u.at_ms);
                }
                q.execute(pool).await.map(|d| d.rows_affected())
            });
            match result {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                    let one = upsert_sql(1);
                    for u in chunk {
                        let r = with_pool!(self, |pool| {
                            sqlx::query(&one)
                                .bind(u.user_id)
                                .bind(u.video_id)
                                .bind(u.position_ms)
                                .bind(u.at_ms)
                                .execute(pool)
                                .await
                                .map(|d| d.rows_affected())
                        });
                        match r {
                            Ok(_) => {}
                            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => dropped += 1,
                            Err(e) => return Err(Error::from(e)),
                        }
                    }
                }
                Err(e) => return Err(Error::from(e)),
            }
        }
        Ok(dropped)
    }

    /// Where `user_id` stopped in `video_id`, in milliseconds.
    pub async fn watch_position(&self, user_id: i64, video_id: i64) -> crate::Result<Option<i64>> {
        let pos = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT position_ms FROM watch_history WHERE user_id = $1 AND video_id = $2")
                .bind(user_id)
                .bind(video_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(pos)
    }

    /// The user's history, newest first; `before_ms` is the cursor (exclusive).
    pub async fn watch_history(
        &self,
        user_id: i64,
        before_ms: Option<i64>,
        limit: i64,
    ) -> crate::Result<Vec<HistoryEntry>> {
        let sql = concat!(
            "SELECT ",
            video_columns!(),
            ", h.position_ms, h.updated_at_ms AS watched_at_ms FROM watch_history h \
             JOIN videos v ON v.id = h.video_id LEFT JOIN channels c ON c.id = v.channel_id \
             WHERE h.user_id = $1 AND h.updated_at_ms < $2 \
             ORDER BY h.updated_at_ms DESC, h.video_id DESC LIMIT $3"
        );
        let rows: Vec<HistoryRow> = with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(user_id)
                .bind(before_ms.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(HistoryEntry {
                    video: r.video.try_into()?,
                    position_ms: r.position_ms,
                    updated_at_ms: r.watched_at_ms,
                })
            })
            .collect()
    }

    /// Videos watched by people who watched what `user_id` recently watched, which the user has
    /// not watched, most shared first.
    pub async fn similar_videos(&self, user_id: i64, limit: i64) -> crate::Result<Vec<Video>> {
        let sql = concat!(
            "WITH mine AS (SELECT video_id FROM watch_history WHERE user_id = $1 \
                           ORDER BY updated_at_ms DESC LIMIT 50), \
                  peers AS (SELECT DISTINCT h.user_id FROM watch_history h JOIN mine m ON m.video_id = h.video_id \
                            WHERE h.user_id <> $1 LIMIT 500), \
                  scores AS (SELECT h.video_id, COUNT(*) AS score FROM watch_history h JOIN peers p ON p.user_id = h.user_id \
                             WHERE h.video_id NOT IN (SELECT video_id FROM watch_history WHERE user_id = $1) \
                             GROUP BY h.video_id) \
             SELECT ",
            video_columns!(),
            " FROM scores s JOIN videos v ON v.id = s.video_id LEFT JOIN channels c ON c.id = v.channel_id \
             WHERE v.status IN ('ready', 'live') ORDER BY s.score DESC, v.id DESC LIMIT $2"
        );
        let rows: Vec<VideoRow> =
            with_pool!(self, |pool| sqlx::query_as(sql).bind(user_id).bind(limit).fetch_all(pool).await)?;
        rows.into_iter().map(Video::try_from).collect()
    }

    /// Most-watched videos (distinct viewers).
    pub async fn popular_videos(&self, limit: i64) -> crate::Result<Vec<Video>> {
        let sql = concat!(
            "WITH p AS (SELECT video_id, COUNT(*) AS n FROM watch_history GROUP BY video_id) SELECT ",
            video_columns!(),
            " FROM p JOIN videos v ON v.id = p.video_id LEFT JOIN channels c ON c.id = v.channel_id \
             WHERE v.status IN ('ready', 'live') ORDER BY p.n DESC, v.id DESC LIMIT $1"
        );
        let rows: Vec<VideoRow> =
            with_pool!(self, |pool| sqlx::query_as(sql).bind(limit).fetch_all(pool).await)?;
        rows.into_iter().map(Video::try_from).collect()
    }
}
