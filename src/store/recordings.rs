//! Recordings: the live sessions the archive writer (`actors::archive`) turns into videos.
//!
//! A recording is a `videos` row (source `live`, status `live` while it records, then `ready`
//! or `failed`) plus a `recordings` row: where its media is, when it started and ended, its size,
//! the gaps it could not record, and why it failed. Both are created in one transaction, so a
//! video of a live session always knows where its media is. At start the server finishes the
//! rows a crash left in `recording` (`unfinished_recordings`).

use serde::Serialize;

use super::videos::{enum_str, VideoStatus};
use super::{now_ms, Store, Visibility};
use crate::error::{Error, ErrorKind};

/// A recording's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    /// The live session is on and being written.
    Recording,
    /// Finished and playable on demand.
    Ready,
    /// Nothing playable was recorded (see `failure_reason`).
    Failed,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Ready => "ready",
            RecordingState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "recording" => Ok(RecordingState::Recording),
            "ready" => Ok(RecordingState::Ready),
            "failed" => Ok(RecordingState::Failed),
            other => Err(Error::internal(format!("invalid stored recording state '{other}'"))),
        }
    }
}

/// A recording as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Recording {
    pub video_id: i64,
    #[serde(skip)]
    pub channel_id: Option<i64>,
    pub state: RecordingState,
    /// `local` or `s3`.
    pub backend: String,
    /// The recording's directory under the archive root (or key prefix in a bucket).
    #[serde(skip)]
    pub location: String,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub size_bytes: i64,
    pub gaps: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RecordingRow {
    video_id: i64,
    channel_id: Option<i64>,
    state: String,
    backend: String,
    location: String,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    size_bytes: i64,
    gaps: i64,
    failure_reason: Option<String>,
}

impl TryFrom<RecordingRow> for Recording {
    type Error = Error;
    fn try_from(r: RecordingRow) -> crate::Result<Recording> {
        Ok(Recording {
            video_id: r.video_id,
            channel_id: r.channel_id,
            state: RecordingState::parse(&r.state)?,
            backend: r.backend,
            location: r.location,
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            size_bytes: r.size_bytes,
            gaps: r.gaps,
            failure_reason: r.failure_reason,
        })
    }
}

const RECORDING_COLUMNS: &str =
    "video_id, channel_id, state, backend, location, started_at_ms, ended_at_ms, \
                                 size_bytes, gaps, failure_reason";

/// What [`Store::create_recording`] needs.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub channel_id: i64,
    pub owner_id: Option<i64>,
    pub title: String,
    pub visibility: Visibility,
    /// `local` or `s3`.
    pub backend: String,
}

/// How a recording went, for [`Store::update_recording`] and [`Store::finish_recording`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordingProgress {
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub gaps: i64,
}

/// A channel owner's recording settings (`channel_recording`); `None` fields take the server's
/// `[archive]` defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordingSettings {
    pub record: bool,
    /// Keep recordings this many days (0: forever).
    pub keep_days: Option<i64>,
    /// Keep the channel's newest recordings up to this many bytes in all (0: no limit).
    pub keep_bytes: Option<i64>,
}

impl Store {
    /// Every channel's own recording settings, with the channel's name (server start).
    pub async fn all_recording_settings(&self) -> crate::Result<Vec<(String, RecordingSettings)>> {
        let sql = "SELECT c.name, r.record, r.keep_days, r.keep_bytes FROM channel_recording r \
                   JOIN channels c ON c.id = r.channel_id ORDER BY c.name";
        let rows: Vec<(String, bool, Option<i64>, Option<i64>)> =
            with_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(name, record, keep_days, keep_bytes)| {
                (name, RecordingSettings { record, keep_days, keep_bytes })
            })
            .collect())
    }

    /// Insert or replace a channel's recording settings.
    pub async fn set_recording_settings(&self, channel_id: i64, s: &RecordingSettings) -> crate::Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO channel_recording (channel_id, record, keep_days, keep_bytes, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel_id) DO UPDATE SET record = excluded.record, \
                 keep_days = excluded.keep_days, keep_bytes = excluded.keep_bytes, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(channel_id)
            .bind(s.record)
            .bind(s.keep_days)
            .bind(s.keep_bytes)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Back to the server's defaults; `false` when the channel had no settings of its own.
    pub async fn delete_recording_settings(&self, channel_id: i64) -> crate::Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM channel_recording WHERE channel_id = $1")
                .bind(channel_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// A channel's finished recordings (ready or failed), newest first (retention).
    pub async fn finished_recordings(&self, channel_id: i64) -> crate::Result<Vec<Recording>> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE channel_id = $1 AND state <> 'recording' \
             ORDER BY started_at_ms DESC, video_id DESC"
        );
        let rows: Vec<RecordingRow> =
            with_pool!(self, |pool| sqlx::query_as(&sql).bind(channel_id).fetch_all(pool).await)?;
        rows.into_iter().map(Recording::try_from).collect()
    }

    /// Ready recordings still on `backend` (the ones to move to object storage), oldest first.
    pub async fn recordings_on(&self, backend: &str) -> crate::Result<Vec<Recording>> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE state = 'ready' AND backend = $1 \
             ORDER BY started_at_ms, video_id"
        );
        let rows: Vec<RecordingRow> =
            with_pool!(self, |pool| sqlx::query_as(&sql).bind(backend).fetch_all(pool).await)?;
        rows.into_iter().map(Recording::try_from).collect()
    }

    /// The recording's media moved to `backend`.
    pub async fn set_recording_backend(&self, video_id: i64, backend: &str) -> crate::Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE recordings SET backend = $1, updated_at_ms = $2 WHERE video_id = $3")
                .bind(backend)
                .bind(now_ms())
                .bind(video_id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Channels (id, name) that have finished recordings (retention).
    pub async fn channels_with_recordings(&self) -> crate::Result<Vec<(i64, String)>> {
        let sql = "SELECT DISTINCT c.id, c.name FROM recordings r JOIN channels c ON c.id = r.channel_id \
                   WHERE r.state <> 'recording' ORDER BY c.id";
        Ok(with_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    /// A new video (source `live`, status `live`) and its recording (`recording`, located in a
    /// directory named after the video's id), in one transaction. Returns the recording.
    pub async fn create_recording(&self, new: NewRecording) -> crate::Result<Recording> {
        let now = now_ms();
        let title: String = new.title.trim().chars().take(super::videos::MAX_VIDEO_TITLE_LEN).collect();
        let title = if title.is_empty() { "Live".to_owned() } else { title };
        let id: i64 = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO videos (channel_id, owner_id, title, description, tags, visibility, source, \
                   duration_ms, status, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, '', '', $4, 'live', 0, $5, $6, $6) RETURNING id",
            )
            .bind(new.channel_id)
            .bind(new.owner_id)
            .bind(&title)
            .bind(new.visibility.as_str())
            .bind(enum_str(VideoStatus::Live))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO recordings (video_id, channel_id, state, backend, location, started_at_ms, \
                   updated_at_ms) VALUES ($1, $2, 'recording', $3, $4, $5, $5)",
            )
            .bind(id)
            .bind(new.channel_id)
            .bind(&new.backend)
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<i64, sqlx::Error>(id)
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::with_source(ErrorKind::FailedPrecondition, "the recording's channel does not exist", e)
            }
            _ => Error::from(e),
        })?;
        self.recording(id).await?.ok_or_else(|| Error::internal("inserted recording vanished"))
    }

    pub async fn recording(&self, video_id: i64) -> crate::Result<Option<Recording>> {
        let sql = format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE video_id = $1");
        let row: Option<RecordingRow> =
            with_pool!(self, |pool| sqlx::query_as(&sql).bind(video_id).fetch_optional(pool).await)?;
        row.map(Recording::try_from).transpose()
    }

    /// Recordings still marked `recording`: at start, those a crash (or a lost store) left
    /// unfinished; oldest first.
    pub async fn unfinished_recordings(&self) -> crate::Result<Vec<Recording>> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE state = 'recording' ORDER BY started_at_ms, video_id"
        );
        let rows: Vec<RecordingRow> = with_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(Recording::try_from).collect()
    }

    /// A recording's figures so far (its video's duration too), while it records.
    pub async fn update_recording(&self, video_id: i64, p: &RecordingProgress) -> crate::Result<()> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE recordings SET size_bytes = $1, gaps = $2, updated_at_ms = $3 WHERE video_id = $4",
            )
            .bind(p.size_bytes)
            .bind(p.gaps)
            .bind(now)
            .bind(video_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE videos SET duration_ms = $1, updated_at_ms = $2 WHERE id = $3")
                .bind(p.duration_ms)
                .bind(now)
                .bind(video_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// End a recording: `ready` (its video `ready`) with its final figures, or `failed` with a
    /// reason (its video `failed`). `ended_at_ms` is when the last media was recorded.
    pub async fn finish_recording(
        &self,
        video_id: i64,
        state: RecordingState,
        p: &RecordingProgress,
        ended_at_ms: i64,
        failure_reason: Option<&str>,
    ) -> crate::Result<()> {
        let video_status = match state {
            RecordingState::Ready => VideoStatus::Ready,
            RecordingState::Failed => VideoStatus::Failed,
            RecordingState::Recording => {
                return Err(Error::internal("a recording cannot finish as 'recording'"))
            }
        };
        let now = now_ms();
        let n = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE recordings SET state = $1, size_bytes = $2, gaps = $3, ended_at_ms = $4, \
                 failure_reason = $5, updated_at_ms = $6 WHERE video_id = $7",
            )
            .bind(state.as_str())
            .bind(p.size_bytes)
            .bind(p.gaps)
            .bind(ended_at_ms)
            .bind(failure_reason)
            .bind(now)
            .bind(video_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE videos SET status = $1, duration_ms = $2, updated_at_ms = $3 WHERE id = $4")
                .bind(enum_str(video_status))
                .bind(p.duration_ms)
                .bind(now)
                .bind(video_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(n)
        })?;
        if n == 0 {
            return Err(Error::not_found(format!("recording {video_id} not found")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;
    use crate::store::{NewChannel, VideoSource};

    #[tokio::test]
    async fn a_recording_is_a_live_video_until_it_finishes_on_both_backends() {
        for db in TestDb::both().await {
            let store = &db.store;
            let (channel, _key) = store
                .create_channel(NewChannel {
                    name: "rec".into(),
                    title: Some("Evening show".into()),
                    owner_id: None,
                    visibility: Visibility::Subscribers,
                })
                .await
                .unwrap();
            let new = NewRecording {
                channel_id: channel.id,
                owner_id: None,
                title: channel.title.clone(),
                visibility: channel.visibility,
                backend: "local".into(),
            };
            let rec = store.create_recording(new.clone()).await.unwrap();
            assert_eq!(rec.state, RecordingState::Recording);
            assert_eq!(rec.location, rec.video_id.to_string());
            let video = store.video_by_id(rec.video_id).await.unwrap().unwrap();
            assert_eq!(
                (video.source, video.status, video.title.as_str(), video.visibility),
                (VideoSource::Live, VideoStatus::Live, "Evening show", Visibility::Subscribers)
            );
            let second = store.create_recording(new).await.unwrap();
            let open: Vec<i64> =
                store.unfinished_recordings().await.unwrap().iter().map(|r| r.video_id).collect();
            assert_eq!(open, vec![rec.video_id, second.video_id], "{}", db.label);

            let p = RecordingProgress { duration_ms: 4_000, size_bytes: 1_000, gaps: 0 };
            store.update_recording(rec.video_id, &p).await.unwrap();
            assert_eq!(store.video_by_id(rec.video_id).await.unwrap().unwrap().duration_ms, 4_000);
            let p = RecordingProgress { duration_ms: 20_000, size_bytes: 5_000, gaps: 1 };
            store.finish_recording(rec.video_id, RecordingState::Ready, &p, 1234, None).await.unwrap();
            let done = store.recording(rec.video_id).await.unwrap().unwrap();
            assert_eq!(
                (done.state, done.size_bytes, done.gaps, done.ended_at_ms),
                (RecordingState::Ready, 5_000, 1, Some(1234))
            );
            let video = store.video_by_id(rec.video_id).await.unwrap().unwrap();
            assert_eq!((video.status, video.duration_ms), (VideoStatus::Ready, 20_000));

            store
                .finish_recording(
                    second.video_id,
                    RecordingState::Failed,
                    &RecordingProgress::default(),
                    1,
                    Some("no media"),
                )
                .await
                .unwrap();
            let failed = store.recording(second.video_id).await.unwrap().unwrap();
            assert_eq!(failed.failure_reason.as_deref(), Some("no media"));
            assert_eq!(
                store.video_by_id(second.video_id).await.unwrap().unwrap().status,
                VideoStatus::Failed
            );
            assert!(store.unfinished_recordings().await.unwrap().is_empty());
            let err = store
                .finish_recording(999_999, RecordingState::Ready, &RecordingProgress::default(), 1, None)
                .await
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::NotFound);

            // Retention sees finished recordings newest first; deleting the video takes the row.
            let newest: Vec<i64> =
                store.finished_recordings(channel.id).await.unwrap().iter().map(|r| r.video_id).collect();
            assert_eq!(newest, vec![second.video_id, rec.video_id]);
            assert_eq!(store.channels_with_recordings().await.unwrap(), vec![(channel.id, "rec".to_owned())]);
            assert!(store.delete_video(rec.video_id).await.unwrap());
            assert!(store.recording(rec.video_id).await.unwrap().is_none(), "the recording row goes with it");
            assert!(!store.delete_video(rec.video_id).await.unwrap());

            // Per-channel settings: set, replace, list, delete.
            let s = RecordingSettings { record: false, keep_days: Some(7), keep_bytes: None };
            store.set_recording_settings(channel.id, &s).await.unwrap();
            let s2 = RecordingSettings { record: true, keep_days: None, keep_bytes: Some(1 << 30) };
            store.set_recording_settings(channel.id, &s2).await.unwrap();
            assert_eq!(store.all_recording_settings().await.unwrap(), vec![("rec".to_owned(), s2)]);
            assert!(store.delete_recording_settings(channel.id).await.unwrap());
            let on_local: Vec<i64> =
                store.recordings_on("local").await.unwrap().iter().map(|r| r.video_id).collect();
            assert!(on_local.is_empty(), "the failed one is not moved: {on_local:?}");
            assert!(store.all_recording_settings().await.unwrap().is_empty());
        }
    }
}
