//! `Channel`: one live channel. Owns the channel's `FrameRing` and the publisher slot.
//!
//! Lifecycle: a publisher is granted the ring's writer (`AddPublisher`); when it leaves
//! (`PublisherLeft`) the channel waits `reconnect_grace` for it to come back, during which
//! viewers stay attached and a returning publisher continues the same live session (the ring
//! rebases timestamps and marks a discontinuity). When grace expires the ring is closed, which
//! ends every viewer politely. A channel with no publisher and no readers stops after
//! `idle_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::hls::{run_packager, HlsChannel, HlsDirectory, HlsRendition, HlsSettings, SOURCE};
use crate::error::{Error, ErrorKind, Result};
use crate::media::ring::{FrameRing, RingLimits, RingReader, RingWriter};
use crate::metrics::metrics;
use crate::store::Visibility;

/// How often the channel checks its idle state.
const IDLE_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Settings every channel shares (from `[channel]` in the config).
#[derive(Clone, Copy, Debug)]
pub struct ChannelSettings {
    pub reconnect_grace: Duration,
    pub idle_timeout: Duration,
    pub ring: RingLimits,
    pub hls: HlsSettings,
}

/// Handles every channel needs to start its outputs.
#[derive(Clone)]
pub struct ChannelDeps {
    /// Where packagers publish their LL-HLS windows for the HTTP layer.
    pub hls: HlsDirectory,
    /// The multi-threaded runtime that runs media tasks (packagers, sessions).
    pub media: tokio::runtime::Handle,
}

enum Publisher {
    /// No publisher; the ring (if any frames were ever written) is closed.
    Offline,
    Live {
        session_id: u64,
        cancel: CancellationToken,
    },
    /// The publisher dropped; the live session continues if it comes back before the timer.
    Grace {
        timer: SpawnHandle,
    },
}

pub struct Channel {
    name: String,
    settings: ChannelSettings,
    ring: FrameRing,
    publisher: Publisher,
    /// When the channel last had neither publisher nor readers.
    idle_since: Option<Instant>,
    /// The registry's map, so a stopping channel can remove itself.
    directory: Arc<DashMap<String, Addr<Channel>>>,
    /// Counted in `tidecast_channels_live` (live or in grace).
    counted_live: bool,
    deps: ChannelDeps,
}

impl Channel {
    pub fn new(
        name: String,
        settings: ChannelSettings,
        directory: Arc<DashMap<String, Addr<Channel>>>,
        deps: ChannelDeps,
    ) -> Self {
        Channel {
            name,
            settings,
            ring: FrameRing::new(settings.ring),
            publisher: Publisher::Offline,
            idle_since: Some(Instant::now()),
            directory,
            counted_live: false,
            deps,
        }
    }

    /// Start the outputs of a new live session: the LL-HLS packager of the source rendition.
    /// It reads the ring like any viewer and ends when the ring closes.
    fn start_outputs(&mut self, visibility: Visibility) {
        let settings = self.settings.hls;
        let rendition = Arc::new(HlsRendition::new(SOURCE, &settings));
        let entry = Arc::new(HlsChannel { visibility, renditions: vec![rendition.clone()] });
        self.deps.hls.insert(self.name.clone(), entry.clone());
        let reader = self.ring.reader();
        let (name, hls) = (self.name.clone(), self.deps.hls.clone());
        self.deps.media.spawn(async move {
            run_packager(name.clone(), rendition, reader, settings).await;
            // Keep the ended playlist around for a while so players see EXT-X-ENDLIST, then
            // free it unless a new session has replaced it.
            tokio::time::sleep(settings.window.min(Duration::from_secs(60))).await;
            hls.remove_if(&name, |_, e| Arc::ptr_eq(e, &entry));
        });
    }

    fn set_live(&mut self, live: bool) {
        if live != self.counted_live {
            self.counted_live = live;
            if live {
                metrics().channels_live.inc();
            } else {
                metrics().channels_live.dec();
            }
        }
    }

    /// End the live session: close the ring so viewers drain and finish, and start a fresh ring
    /// for whoever publishes next.
    fn end_session(&mut self) {
        self.ring.close();
        self.ring = FrameRing::new(self.settings.ring);
        self.publisher = Publisher::Offline;
        self.set_live(false);
        info!(channel = %self.name, "live session ended");
    }
}

impl Actor for Channel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_CHECK_EVERY, |act, ctx| {
            let busy = !matches!(act.publisher, Publisher::Offline) || act.ring.reader_count() > 0;
            if busy {
                act.idle_since = None;
            } else {
                let since = *act.idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= act.settings.idle_timeout {
                    info!(channel = %act.name, "idle, stopping");
                    ctx.stop();
                }
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Publisher::Live { cancel, .. } = &self.publisher {
            cancel.cancel();
        }
        self.ring.close();
        self.set_live(false);
        let me = ctx.address();
        self.directory.remove_if(&self.name, |_, addr| *addr == me);
    }
}

/// Ask for the channel's writer. Refused while another publisher is live; granted with
/// `resumed = true` during the reconnect grace period.
#[derive(Message)]
#[rtype(result = "Result<PublishGrant>")]
pub struct AddPublisher {
    pub session_id: u64,
    /// Cancelled by the channel to cut the publisher off (channel stop, shutdown).
    pub cancel: CancellationToken,
    /// The channel's visibility, for the outputs' access checks.
    pub visibility: Visibility,
}

pub struct PublishGrant {
    pub writer: RingWriter,
    /// This publisher continues a session whose previous publisher dropped within grace.
    pub resumed: bool,
}

impl Handler<AddPublisher> for Channel {
    type Result = Result<PublishGrant>;

    fn handle(&mut self, msg: AddPublisher, ctx: &mut Self::Context) -> Self::Result {
        let resumed = match std::mem::replace(&mut self.publisher, Publisher::Offline) {
            live @ Publisher::Live { .. } => {
                self.publisher = live;
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("channel '{}' is already being published", self.name),
                ));
            }
            Publisher::Grace { timer } => {
                ctx.cancel_future(timer);
                true
            }
            Publisher::Offline => false,
        };
        self.publisher = Publisher::Live { session_id: msg.session_id, cancel: msg.cancel };
        self.set_live(true);
        if !resumed {
            self.start_outputs(msg.visibility);
        }
        info!(channel = %self.name, session = msg.session_id, resumed, "publisher attached");
        Ok(PublishGrant { writer: self.ring.writer(resumed), resumed })
    }
}

/// The publisher's connection ended (cleanly or not).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublisherLeft {
    pub session_id: u64,
}

impl Handler<PublisherLeft> for Channel {
    type Result = ();

    fn handle(&mut self, msg: PublisherLeft, ctx: &mut Self::Context) {
        let is_current =
            matches!(&self.publisher, Publisher::Live { session_id, .. } if *session_id == msg.session_id);
        if !is_current {
            return;
        }
        let grace = self.settings.reconnect_grace;
        info!(channel = %self.name, session = msg.session_id, grace_ms = grace.as_millis() as u64, "publisher left; waiting for reconnect");
        let timer = ctx.run_later(grace, |act, _| {
            if matches!(act.publisher, Publisher::Grace { .. }) {
                act.end_session();
            }
        });
        self.publisher = Publisher::Grace { timer };
    }
}

/// Attach a consumer. Refused when nothing is being published (and not in grace).
#[derive(Message)]
#[rtype(result = "Result<RingReader>")]
pub struct AddReader;

impl Handler<AddReader> for Channel {
    type Result = Result<RingReader>;

    fn handle(&mut self, _: AddReader, _: &mut Self::Context) -> Self::Result {
        if matches!(self.publisher, Publisher::Offline) {
            return Err(Error::not_found(format!("channel '{}' is offline", self.name)));
        }
        self.idle_since = None;
        Ok(self.ring.reader())
    }
}

/// Stop the channel: cut the publisher off, end viewers, remove it from the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChannel;

impl Handler<StopChannel> for Channel {
    type Result = ();

    fn handle(&mut self, _: StopChannel, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// What the API and tests can see of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelStatus {
    pub live: bool,
    pub in_grace: bool,
    pub readers: usize,
}

#[derive(Message)]
#[rtype(result = "ChannelStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for Channel {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(ChannelStatus {
            live: matches!(self.publisher, Publisher::Live { .. }),
            in_grace: matches!(self.publisher, Publisher::Grace { .. }),
            readers: self.ring.reader_count(),
        })
    }
}
