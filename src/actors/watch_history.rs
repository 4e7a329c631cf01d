//! `WatchHistory`: buffers watch-progress updates and writes them in batches.
//!
//! Players report their position every few seconds; one row written per report would make the
//! database the bottleneck (ARCHITECTURE.md, backpressure rule 5). The actor keeps the newest
//! position per (user, video) in memory and writes them all in one multi-row upsert every
//! `api.watch_flush_interval`, or as soon as `api.watch_flush_batch` distinct pairs wait.
//!
//! Durability: an update is acknowledged (HTTP 204) once it is in the buffer. A crash loses the
//! updates acknowledged since the last successful flush: at most one flush interval (plus a
//! flush in flight). A graceful shutdown sends [`Flush`] and loses nothing. A failed flush keeps
//! its batch (newer positions win on merge) and retries on the next tick.
//!
//! Flushes run as tasks, not inside the actor, so accepting updates never waits for the
//! database; a `tokio::sync::Mutex` (FIFO) serializes them, so batches land in order and a
//! final [`Flush`] waits for every earlier one. Beyond `api.watch_max_pending` buffered pairs,
//! [`Record`] is refused with `Unavailable` (503) until the database catches up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;

use crate::error::{Error, Result};
use crate::metrics::metrics;
use crate::store::{Store, WatchUpdate};

/// Tuning, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct WatchHistorySettings {
    pub flush_interval: Duration,
    pub flush_batch: usize,
    pub max_pending: usize,
}

type Pending = HashMap<(i64, i64), (i64, i64)>;

pub struct WatchHistory {
    store: Store,
    settings: WatchHistorySettings,
    /// (user, video) -> (position_ms, at_ms): the newest update of each pair.
    pending: Pending,
    /// Serializes flushes, in submission order.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl WatchHistory {
    pub fn new(store: Store, settings: WatchHistorySettings) -> Self {
        WatchHistory {
            store,
            settings,
            pending: HashMap::new(),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn merge(pending: &mut Pending, batch: Pending) {
        for (k, v) in batch {
            let e = pending.entry(k).or_insert(v);
            if v.1 > e.1 {
                *e = v;
            }
        }
    }

    /// Takes the buffer and returns a future that writes it (after earlier flushes). On
    /// failure the batch is handed back to the actor.
    fn take_flush(&mut self, ctx: &mut Context<Self>) -> impl std::future::Future<Output = Result<usize>> {
        let batch = std::mem::take(&mut self.pending);
        metrics().watch_pending.set(0);
        let store = self.store.clone();
        let writer = self.writer.clone();
        let me = ctx.address();
        async move {
            if batch.is_empty() {
                // Still wait for flushes in flight: the caller wants everything written.
                let _turn = writer.lock().await;
                return Ok(0);
            }
            let _turn = writer.lock().await;
            let updates: Vec<WatchUpdate> = batch
                .iter()
                .map(|(&(user_id, video_id), &(position_ms, at_ms))| WatchUpdate {
                    user_id,
                    video_id,
                    position_ms,
                    at_ms,
                })
                .collect();
            match store.upsert_watch_batch(&updates).await {
                Ok(dropped) => {
                    if dropped > 0 {
                        tracing::info!(dropped, "watch updates for deleted videos or users dropped");
                    }
                    metrics().watch_rows_written.inc_by((updates.len() - dropped) as u64);
                    Ok(updates.len() - dropped)
                }
                Err(e) => {
                    tracing::warn!(error = %e, rows = updates.len(), "watch history flush failed; will retry");
                    metrics().watch_flush_failures.inc();
                    me.do_send(Requeue(batch));
                    Err(e)
                }
            }
        }
    }
}

impl Actor for WatchHistory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Many HTTP workers report at once; the default mailbox of 16 would make them queue.
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(self.settings.flush_interval, |act, ctx| {
            if !act.pending.is_empty() {
                let fut = act.take_flush(ctx);
                ctx.spawn(fut.map(|_| ()).into_actor(act));
            }
        });
    }
}

/// Record one progress update. `Unavailable` when too many updates wait.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<()>")]
pub struct Record(pub WatchUpdate);

impl Handler<Record> for WatchHistory {
    type Result = Result<()>;

    fn handle(&mut self, Record(u): Record, ctx: &mut Context<Self>) -> Result<()> {
        let key = (u.user_id, u.video_id);
        if self.pending.len() >= self.settings.max_pending && !self.pending.contains_key(&key) {
            return Err(Error::unavailable("watch history is behind; retry shortly"));
        }
        let e = self.pending.entry(key).or_insert((u.position_ms, u.at_ms));
        if u.at_ms >= e.1 {
            *e = (u.position_ms, u.at_ms);
        }
        metrics().watch_updates.inc();
        metrics().watch_pending.set(self.pending.len() as i64);
        if self.pending.len() >= self.settings.flush_batch {
            let fut = self.take_flush(ctx);
            ctx.spawn(fut.map(|_| ()).into_actor(self));
        }
        Ok(())
    }
}

/// Write everything buffered now and wait until it and every earlier flush are done.
/// Returns the rows written by this flush. Sent on graceful shutdown and by tests.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<usize>")]
pub struct Flush;

impl Handler<Flush> for WatchHistory {
    type Result = ResponseFuture<Result<usize>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.take_flush(ctx))
    }
}

/// The buffered (not yet written) position of one (user, video), if any: lets
/// `GET /videos/{id}` read its own writes before the next flush.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<i64>")]
pub struct Peek {
    pub user_id: i64,
    pub video_id: i64,
}

impl Handler<Peek> for WatchHistory {
    type Result = Option<i64>;
    fn handle(&mut self, p: Peek, _: &mut Context<Self>) -> Option<i64> {
        self.pending.get(&(p.user_id, p.video_id)).map(|&(position_ms, _)| position_ms)
    }
}

/// A failed batch handed back for the next flush.
#[derive(Message)]
#[rtype(result = "()")]
struct Requeue(Pending);

impl Handler<Requeue> for WatchHistory {
    type Result = ();
    fn handle(&mut self, Requeue(batch): Requeue, _: &mut Context<Self>) {
        Self::merge(&mut self.pending, batch);
        metrics().watch_pending.set(self.pending.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;
    use crate::store::{NewUser, NewVideo, VideoSource, VideoStatus, Visibility};

    fn settings(max_pending: usize) -> WatchHistorySettings {
        WatchHistorySettings { flush_interval: Duration::from_secs(3600), flush_batch: 1000, max_pending }
    }

    #[actix_web::test]
    async fn full_buffer_refuses_and_failed_flush_keeps_the_batch() {
        let db = TestDb::sqlite().await;
        let store = db.store.clone();
        let user = store
            .create_user(NewUser {
                email: "w@example.com".into(),
                username: "w".into(),
                password_hash: None,
                is_admin: false,
            })
            .await
            .unwrap();
        let video = store
            .create_video(NewVideo {
                channel_id: None,
                owner_id: None,
                title: "v".into(),
                description: String::new(),
                tags: vec![],
                visibility: Visibility::Public,
                source: VideoSource::Upload,
                duration_ms: 0,
                status: VideoStatus::Ready,
            })
            .await
            .unwrap();
        let addr = WatchHistory::new(store.clone(), settings(2)).start();
        let up = |video_id, position_ms, at_ms| {
            Record(WatchUpdate { user_id: user.id, video_id, position_ms, at_ms })
        };
        addr.send(up(video.id, 1000, 1)).await.unwrap().unwrap();
        addr.send(up(video.id + 100, 1000, 1)).await.unwrap().unwrap();
        // Full: a new pair is refused, an update of a buffered pair is not.
        let err = addr.send(up(video.id + 200, 1000, 1)).await.unwrap().unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Unavailable);
        addr.send(up(video.id, 2000, 2)).await.unwrap().unwrap();
        // An older update (a late retry) does not overwrite a newer one.
        addr.send(up(video.id, 500, 0)).await.unwrap().unwrap();
        // The update for a video that does not exist is dropped at flush; the other is written.
        assert_eq!(addr.send(Flush).await.unwrap().unwrap(), 1);
        assert_eq!(store.watch_position(user.id, video.id).await.unwrap(), Some(2000));

        // A failing database: the batch is kept for the next flush.
        addr.send(up(video.id, 3000, 3)).await.unwrap().unwrap();
        store.close().await;
        assert!(addr.send(Flush).await.unwrap().is_err());
        // Requeued: the buffer is not empty, so a new pair is refused at max_pending = 2 only
        // after a second one.
        addr.send(up(video.id + 300, 1, 4)).await.unwrap().unwrap();
        assert!(addr.send(up(video.id + 400, 1, 4)).await.unwrap().is_err());
    }
}
