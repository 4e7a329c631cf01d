//! Full-text search over videos (title, description, tags, channel name and title) and
//! channels (name, title): SQLite FTS5 ranked by bm25, PostgreSQL `tsvector` ranked by
//! `ts_rank`, both paginated by limit and offset.
//!
//! User input never reaches either query language as syntax: [`search_terms`] keeps only runs of
//! letters and digits, and each becomes a prefix term (`"term"*` in FTS5, `term:*` in a
//! tsquery), all of which must match. SQL metacharacters, quotes and operators are separators.

use super::channels::ChannelRecord;
use super::videos::{video_columns, Video, VideoRow};
use super::{Backend, Store};

/// Most terms taken from one query; more would only slow the match down.
const MAX_TERMS: usize = 8;
/// Longest single term, in characters.
const MAX_TERM_LEN: usize = 40;

/// The searchable terms of a query: lowercase runs of alphanumeric characters.
pub fn search_terms(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| t.chars().take(MAX_TERM_LEN).collect::<String>().to_lowercase())
        .take(MAX_TERMS)
        .collect()
}

fn fts5_query(terms: &[String]) -> String {
    terms.iter().map(|t| format!("\"{t}\"*")).collect::<Vec<_>>().join(" ")
}

fn tsquery(terms: &[String]) -> String {
    terms.iter().map(|t| format!("{t}:*")).collect::<Vec<_>>().join(" & ")
}

impl Store {
    /// Whether the user owns any private video or channel (search results then differ for
    /// them, so they cannot share cached results).
    pub async fn owns_private_content(&self, user_id: i64) -> crate::Result<bool> {
        let yes: bool = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM videos WHERE owner_id = $1 AND visibility = 'private') \
                     OR EXISTS (SELECT 1 FROM channels WHERE owner_id = $1 AND visibility = 'private')",
            )
            .bind(user_id)
            .fetch_one(pool)
            .await
        })?;
        Ok(yes)
    }

    /// Videos matching `q` that `viewer_id` may see listed (not private, or their own; every
    /// one with `include_private`, for admins), playable or live, best match first.
    pub async fn search_videos(
        &self,
        q: &str,
        viewer_id: Option<i64>,
        include_private: bool,
        limit: i64,
        offset: i64,
    ) -> crate::Result<Vec<Video>> {
        let terms = search_terms(q);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let viewer = viewer_id.unwrap_or(-1);
        let rows: Vec<VideoRow> = match self.backend() {
            Backend::Sqlite => {
                let sql = concat!(
                    "SELECT ",
                    video_columns!(),
                    " FROM videos_fts f JOIN videos v ON v.id = f.rowid LEFT JOIN channels c ON c.id = v.channel_id \
                     WHERE videos_fts MATCH $1 AND v.status IN ('ready', 'live') \
                       AND (v.visibility <> 'private' OR v.owner_id = $2 OR $5) \
                     ORDER BY bm25(videos_fts, 10.0, 2.0, 5.0, 3.0), v.id DESC LIMIT $3 OFFSET $4"
                );
                with_pool!(self, |pool| {
                    sqlx::query_as(sql)
                        .bind(fts5_query(&terms))
                        .bind(viewer)
                        .bind(limit)
                        .bind(offset)
                        .bind(include_private)
                        .fetch_all(pool)
                        .await
                })?
            }
            Backend::Postgres => {
                let sql = concat!(
                    "SELECT ",
                    video_columns!(),
                    " FROM videos v LEFT JOIN channels c ON c.id = v.channel_id, to_tsquery('simple', $1) q \
                     WHERE (v.search_doc || setweight(COALESCE(c.search_doc, ''::tsvector), 'D')) @@ q \
                       AND v.status IN ('ready', 'live') AND (v.visibility <> 'private' OR v.owner_id = $2 OR $5) \
                     ORDER BY ts_rank(v.search_doc || setweight(COALESCE(c.search_doc, ''::tsvector), 'D'), q) DESC, v.id DESC \
                     LIMIT $3 OFFSET $4"
                );
                with_pool!(self, |pool| {
                    sqlx::query_as(sql)
                        .bind(tsquery(&terms))
                        .bind(viewer)
                        .bind(limit)
                        .bind(offset)
                        .bind(include_private)
                        .fetch_all(pool)
                        .await
                })?
            }
        };
        rows.into_iter().map(Video::try_from).collect()
    }

    /// Channels matching `q` that `viewer_id` may see listed, best match first.
    pub async fn search_channels(
        &self,
        q: &str,
        viewer_id: Option<i64>,
        include_private: bool,
        limit: i64,
        offset: i64,
    ) -> crate::Result<Vec<ChannelRecord>> {
        let terms = search_terms(q);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let viewer = viewer_id.unwrap_or(-1);
        let cols = "c.id, c.name, c.title, c.owner_id, c.visibility, c.created_at_ms, c.updated_at_ms";
        let (sql, query) = match self.backend() {
            Backend::Sqlite => (
                format!(
                    "SELECT {cols} FROM channels_fts f JOIN channels c ON c.id = f.rowid \
                     WHERE channels_fts MATCH $1 AND (c.visibility <> 'private' OR c.owner_id = $2 OR $5) \
                     ORDER BY bm25(channels_fts, 10.0, 3.0), c.id LIMIT $3 OFFSET $4"
                ),
                fts5_query(&terms),
            ),
            Backend::Postgres => (
                format!(
                    "SELECT {cols} FROM channels c, to_tsquery('simple', $1) q \
                     WHERE c.search_doc @@ q AND (c.visibility <> 'private' OR c.owner_id = $2 OR $5) \
                     ORDER BY ts_rank(c.search_doc, q) DESC, c.id LIMIT $3 OFFSET $4"
                ),
                tsquery(&terms),
            ),
        };
        let rows: Vec<super::channels::ChannelRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(&query)
                .bind(viewer)
                .bind(limit)
                .bind(offset)
                .bind(include_private)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(ChannelRecord::try_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_syntax_and_metacharacters() {
        assert_eq!(search_terms("Rust  streaming"), vec!["rust", "streaming"]);
        assert_eq!(search_terms("'; DROP TABLE videos; --"), vec!["drop", "table", "videos"]);
        assert_eq!(search_terms("\"a\" OR b* NEAR(c)"), vec!["a", "or", "b", "near", "c"]);
        assert_eq!(search_terms("Été à Zürich"), vec!["été", "à", "zürich"]);
        assert!(search_terms("  --- ''' ").is_empty());
        assert_eq!(search_terms(&"x ".repeat(100)).len(), MAX_TERMS);
        assert_eq!(fts5_query(&search_terms("a b")), "\"a\"* \"b\"*");
        assert_eq!(tsquery(&search_terms("a b")), "a:* & b:*");
    }
}
