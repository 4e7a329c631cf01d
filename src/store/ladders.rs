//! Per-channel transcode ladder settings: the JSON of what a channel's owner changed from the
//! server's `[transcode]` defaults (`actors::transcode::LadderOverride`, validated by the API).
//! Read, set (insert or replace), delete; and all of them with their channel's name, for the
//! `Transcoder` when the server starts.

use super::{now_ms, Store};

impl Store {
    /// The channel's ladder settings (JSON), if its owner set any.
    pub async fn ladder(&self, channel_id: i64) -> crate::Result<Option<String>> {
        let row: Option<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT settings FROM channel_ladders WHERE channel_id = $1")
                .bind(channel_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(|(s,)| s))
    }

    /// Every channel's ladder settings with the channel's name (server start).
    pub async fn all_ladders(&self) -> crate::Result<Vec<(String, String)>> {
        let sql = "SELECT c.name, l.settings FROM channel_ladders l JOIN channels c ON c.id = l.channel_id \
                   ORDER BY c.name";
        Ok(with_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    /// Insert or replace the channel's ladder settings.
    pub async fn set_ladder(&self, channel_id: i64, settings: &str) -> crate::Result<()> {
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO channel_ladders (channel_id, settings, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (channel_id) DO UPDATE SET settings = excluded.settings, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(channel_id)
            .bind(settings)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Back to the server's defaults; `false` when the channel had no settings of its own.
    pub async fn delete_ladder(&self, channel_id: i64) -> crate::Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM channel_ladders WHERE channel_id = $1")
                .bind(channel_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }
}
