//! Per-worker mirrors of a rendition's progress `watch`, so that releasing the requests held on
//! it is a local wake-up in each HTTP worker.
//!
//! actix-web runs every worker as a tokio `LocalSet`, and a held request's handler is polled by
//! its connection's task. A `watch` published from another thread (the packager's) wakes those
//! tasks *remotely*: into the `LocalSet`'s shared queue, which it serves only when its local
//! queue is empty or on every 31st task. When a part completes, the first answers to the
//! blocked reloads bring the players' next requests in at once, their socket readiness is a
//! local wake-up, and the rest of the blocked reloads wait behind them.
//!
//! A mirror is one local task per worker and rendition (and per kind of progress: playlists or
//! parts): it alone is woken remotely, and it republishes the value into a `watch` of its own
//! thread that the held requests wait on. Their wake-ups are then local and first in line, ahead
//! of the input that their answers cause. The task ends when nobody on its thread waits on the
//! mirror at a publication, or when the rendition is gone (its waiters then see the `watch`
//! closed, as they would on the rendition's own).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tokio::sync::watch;

use crate::actors::hls::{HlsRendition, Progress};

/// What the held request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `HlsRendition::subscribe`: blocking playlist reloads.
    Playlist,
    /// `HlsRendition::subscribe_media`: held part requests.
    Media,
}

type Key = (u64, Kind);

thread_local! {
    static MIRRORS: RefCell<HashMap<Key, Rc<watch::Sender<Progress>>>> = RefCell::default();
}

/// A receiver of `rendition`'s progress of `kind` whose wake-ups are local to this thread. Its
/// first value is at least as new as the rendition's at the time of the call. Must be called
/// inside a `LocalSet` (every actix worker is one).
pub fn subscribe(rendition: &HlsRendition, kind: Kind) -> watch::Receiver<Progress> {
    let key = (rendition.id(), kind);
    let existing = MIRRORS.with(|m| m.borrow().get(&key).cloned());
    let tx = match existing {
        Some(tx) => {
            let now = match kind {
                Kind::Playlist => rendition.progress(),
                Kind::Media => rendition.media_progress(),
            };
            advance(&tx, now);
            tx
        }
        None => {
            let source = match kind {
                Kind::Playlist => rendition.subscribe(),
                Kind::Media => rendition.subscribe_media(),
            };
            let tx = Rc::new(watch::channel(*source.borrow()).0);
            MIRRORS.with(|m| m.borrow_mut().insert(key, tx.clone()));
            tokio::task::spawn_local(forward(key, source, tx.clone()));
            tx
        }
    };
    tx.subscribe()
}

/// Publish `p` unless the mirror already holds it or something newer.
fn advance(tx: &watch::Sender<Progress>, p: Progress) {
    tx.send_if_modified(|cur| {
        let newer = p.seq > cur.seq || (p.seq == cur.seq && p != *cur && cur.at.is_none());
        if newer {
            *cur = p;
        }
        newer
    });
}

async fn forward(key: Key, mut source: watch::Receiver<Progress>, tx: Rc<watch::Sender<Progress>>) {
    while source.changed().await.is_ok() {
        let p = *source.borrow_and_update();
        advance(&tx, p);
        if tx.receiver_count() == 0 {
            break;
        }
    }
    // No `.await` between the check above and this removal: a `subscribe` on this thread
    // either found the mirror before it (and was counted) or creates a new one after.
    MIRRORS.with(|m| {
        let mut m = m.borrow_mut();
        if m.get(&key).is_some_and(|t| Rc::ptr_eq(t, &tx)) {
            m.remove(&key);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actors::hls::HlsSettings;

    fn rendition() -> std::sync::Arc<HlsRendition> {
        let settings = HlsSettings {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            window: Duration::from_secs(30),
            block_timeout: Duration::from_secs(6),
        };
        std::sync::Arc::new(HlsRendition::new("source", &settings))
    }

    fn mirrors() -> usize {
        MIRRORS.with(|m| m.borrow().len())
    }

    #[actix_web::test]
    async fn mirrors_follow_the_rendition_and_end_with_their_waiters() {
        let r = rendition();
        let mut a = subscribe(&r, Kind::Playlist);
        let mut b = subscribe(&r, Kind::Playlist);
        let _m = subscribe(&r, Kind::Media);
        assert_eq!(mirrors(), 2, "one mirror per rendition and kind, shared by its waiters");
        let seq0 = a.borrow_and_update().seq;
        b.borrow_and_update();

        // Published from another thread, as the packager does.
        let r2 = r.clone();
        std::thread::spawn(move || r2.publish_for_test()).join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), a.changed()).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.changed()).await.unwrap().unwrap();
        assert!(a.borrow().seq > seq0);
        assert_eq!(*a.borrow(), r.progress(), "the mirror carries the rendition's progress");

        // A late subscriber starts from the rendition's newest value even before the mirror's
        // task has forwarded it.
        r.publish_for_test();
        let c = subscribe(&r, Kind::Playlist);
        assert_eq!(*c.borrow(), r.progress());

        // Nobody waits any more: the mirror ends at the next publication.
        drop((a, b, c));
        r.publish_for_test();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(mirrors(), 1, "the playlist mirror ended; the media one still has a waiter");
    }

    #[actix_web::test]
    async fn waiters_see_the_mirror_close_when_the_rendition_is_gone() {
        let r = rendition();
        let mut a = subscribe(&r, Kind::Playlist);
        drop(r);
        let res = tokio::time::timeout(Duration::from_secs(5), a.changed()).await.unwrap();
        assert!(res.is_err(), "a waiter learns that the rendition is gone");
        assert_eq!(mirrors(), 0);
    }
}
