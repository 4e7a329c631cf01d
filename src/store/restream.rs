//! Restream destinations of a channel: list, create, update, delete; and all of them for a
//! channel by name, for `actors::restream` when a channel's list changes or the server starts.
//!
//! The stream key column holds what the API layer gives it: the key sealed with
//! `auth::sealed` (the server must send it, so it cannot be hashed); the API never returns it.

use super::{now_ms, Store};
use crate::error::{Error, ErrorKind};

/// One stored destination.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DestinationRecord {
    pub id: i64,
    pub channel_id: i64,
    pub url: String,
    pub stream_key: String,
    pub enabled: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for DestinationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationRecord")
            .field("id", &self.id)
            .field("channel_id", &self.channel_id)
            .field("url", &self.url)
            .field("stream_key", &"<redacted>")
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// Changes to a destination; `None` keeps the current value.
#[derive(Default)]
pub struct DestinationUpdate {
    pub url: Option<String>,
    pub stream_key: Option<String>,
    pub enabled: Option<bool>,
}

/// A destination with its channel's name, for the start-up load.
#[derive(sqlx::FromRow)]
struct NamedDestination {
    name: String,
    #[sqlx(flatten)]
    record: DestinationRecord,
}

const SELECT: &str =
    "SELECT id, channel_id, url, stream_key, enabled, created_at_ms, updated_at_ms FROM restream_destinations";

impl Store {
    pub async fn list_destinations(&self, channel_id: i64) -> crate::Result<Vec<DestinationRecord>> {
        let sql = format!("{SELECT} WHERE channel_id = $1 ORDER BY id");
        Ok(with_pool!(self, |pool| sqlx::query_as(&sql).bind(channel_id).fetch_all(pool).await)?)
    }

    pub async fn destination(&self, channel_id: i64, id: i64) -> crate::Result<Option<DestinationRecord>> {
        let sql = format!("{SELECT} WHERE channel_id = $1 AND id = $2");
        Ok(with_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(channel_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?)
    }

    /// Every destination with its channel's name (server start).
    pub async fn all_destinations(&self) -> crate::Result<Vec<(String, DestinationRecord)>> {
        let sql = "SELECT c.name, d.id, d.channel_id, d.url, d.stream_key, d.enabled, d.created_at_ms, \
                   d.updated_at_ms FROM restream_destinations d JOIN channels c ON c.id = d.channel_id \
                   ORDER BY d.id";
        let rows: Vec<NamedDestination> = with_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|r| (r.name, r.record)).collect())
    }

    /// Add a destination, refusing more than `max` per channel.
    pub async fn create_destination(
        &self,
        channel_id: i64,
        url: &str,
        stream_key: &str,
        enabled: bool,
        max: usize,
    ) -> crate::Result<DestinationRecord> {
        if self.list_destinations(channel_id).await?.len() >= max {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!("a channel may have at most {max} restream destinations"),
            ));
        }
        let now = now_ms();
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO restream_destinations (channel_id, url, stream_key, enabled, created_at_ms, \
                 updated_at_ms) VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
            )
            .bind(channel_id)
            .bind(url)
            .bind(stream_key)
            .bind(enabled)
            .bind(now)
            .fetch_one(pool)
            .await
        })?;
        self.destination(channel_id, id)
            .await?
            .ok_or_else(|| Error::internal("inserted destination vanished"))
    }

    pub async fn update_destination(
        &self,
        channel_id: i64,
        id: i64,
        change: DestinationUpdate,
    ) -> crate::Result<DestinationRecord> {
        let not_found = || Error::not_found(format!("destination {id} not found"));
        let cur = self.destination(channel_id, id).await?.ok_or_else(not_found)?;
        let url = change.url.unwrap_or(cur.url);
        let key = change.stream_key.unwrap_or(cur.stream_key);
        let enabled = change.enabled.unwrap_or(cur.enabled);
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE restream_destinations SET url = $1, stream_key = $2, enabled = $3, updated_at_ms = $4 \
                 WHERE channel_id = $5 AND id = $6",
            )
            .bind(&url)
            .bind(&key)
            .bind(enabled)
            .bind(now_ms())
            .bind(channel_id)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        self.destination(channel_id, id).await?.ok_or_else(not_found)
    }

    pub async fn delete_destination(&self, channel_id: i64, id: i64) -> crate::Result<()> {
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM restream_destinations WHERE channel_id = $1 AND id = $2")
                .bind(channel_id)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if done == 0 {
            return Err(Error::not_found(format!("destination {id} not found")));
        }
        Ok(())
    }
}
