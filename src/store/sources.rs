//! RTSP pull sources: at most one per channel; read, set (insert or replace), delete; and all of
//! them with their channel's name, for `actors::pull` when the server starts.
//!
//! The credential columns hold what the API layer gives them: sealed with `auth::sealed` (the
//! server must send them, so they cannot be hashed). The API never returns them; `Debug` redacts
//! both.

use super::{now_ms, Store};

/// One stored source.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SourceRecord {
    pub channel_id: i64,
    /// rtsp:// URL without credentials.
    pub url: String,
    pub username: String,
    pub password: String,
    /// `tcp` or `udp`.
    pub transport: String,
    pub on_demand: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for SourceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRecord")
            .field("channel_id", &self.channel_id)
            .field("url", &self.url)
            .field("credentials", &if self.username.is_empty() { "" } else { "<redacted>" })
            .field("transport", &self.transport)
            .field("on_demand", &self.on_demand)
            .finish()
    }
}

/// A source with its channel's name, for the start-up load.
#[derive(sqlx::FromRow)]
struct NamedSource {
    name: String,
    #[sqlx(flatten)]
    record: SourceRecord,
}

const COLUMNS: &str =
    "channel_id, url, username, password, transport, on_demand, created_at_ms, updated_at_ms";

impl Store {
    pub async fn source(&self, channel_id: i64) -> crate::Result<Option<SourceRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM channel_sources WHERE channel_id = $1");
        Ok(with_pool!(self, |pool| sqlx::query_as(&sql).bind(channel_id).fetch_optional(pool).await)?)
    }

    /// Every source with its channel's name (server start).
    pub async fn all_sources(&self) -> crate::Result<Vec<(String, SourceRecord)>> {
        let sql = "SELECT c.name, s.channel_id, s.url, s.username, s.password, s.transport, s.on_demand, \
                   s.created_at_ms, s.updated_at_ms FROM channel_sources s JOIN channels c ON c.id = s.channel_id \
                   ORDER BY c.name";
        let rows: Vec<NamedSource> = with_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|r| (r.name, r.record)).collect())
    }

    /// Insert or replace the channel's source (`channel_id`, `url`, credentials, `transport`,
    /// `on_demand` from `source`; the times are set here).
    pub async fn set_source(&self, source: &SourceRecord) -> crate::Result<SourceRecord> {
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO channel_sources (channel_id, url, username, password, transport, on_demand, \
                 created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (channel_id) DO UPDATE SET url = excluded.url, username = excluded.username, \
                 password = excluded.password, transport = excluded.transport, on_demand = excluded.on_demand, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(source.channel_id)
            .bind(&source.url)
            .bind(&source.username)
            .bind(&source.password)
            .bind(&source.transport)
            .bind(source.on_demand)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        self.source(source.channel_id)
            .await?
            .ok_or_else(|| crate::error::Error::internal("the stored source vanished"))
    }

    /// Remove the channel's source; `false` when it had none.
    pub async fn delete_source(&self, channel_id: i64) -> crate::Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM channel_sources WHERE channel_id = $1")
                .bind(channel_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }
}
