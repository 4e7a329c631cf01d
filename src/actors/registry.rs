//! `ChannelRegistry`: channel name -> `Addr<Channel>`. Authorizes publishers against the store,
//! resolves channels for viewers, and supervises channel actors. It never sees a frame: callers
//! get the `Channel` address and talk to it directly (two-step lookup).
//!
//! Supervision: the registry itself runs under an actix `Supervisor` (restarted in place if it
//! stops; its directory lives in a shared `DashMap` so a restart loses nothing). A `Channel`
//! whose actor died (a panic unwinds only that actor's task) is noticed on the next lookup by
//! its disconnected mailbox; it is replaced, the restart is counted, and a channel restarted more
//! than `max_restarts` times within `restart_window` is marked degraded and refused for an
//! exponentially growing backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use tracing::{info, warn};

use super::channel::{Channel, ChannelDeps, ChannelSettings, StopChannel};
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::metrics;
use crate::protocols::rtmp::Secret;
use crate::store::{ChannelRecord, Store, Visibility};

/// Backoff after the first restart beyond the limit; doubles with each further restart.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct SupervisionSettings {
    pub max_restarts: u32,
    pub restart_window: Duration,
}

#[derive(Default)]
struct RestartHistory {
    times: Vec<Instant>,
    refused_until: Option<Instant>,
}

pub struct ChannelRegistry {
    store: Store,
    settings: ChannelSettings,
    supervision: SupervisionSettings,
    directory: Arc<DashMap<String, Addr<Channel>>>,
    restarts: HashMap<String, RestartHistory>,
    deps: ChannelDeps,
}

impl ChannelRegistry {
    pub fn new(
        store: Store,
        settings: ChannelSettings,
        supervision: SupervisionSettings,
        directory: Arc<DashMap<String, Addr<Channel>>>,
        deps: ChannelDeps,
    ) -> Self {
        ChannelRegistry { store, settings, supervision, directory, restarts: HashMap::new(), deps }
    }

    /// Names of channels that are degraded now (restarted too often recently).
    fn is_refused(&self, name: &str) -> bool {
        self.restarts.get(name).and_then(|h| h.refused_until).is_some_and(|t| Instant::now() < t)
    }

    /// The live actor for `name`, starting (or restarting) one if needed.
    fn channel_for(&mut self, name: &str) -> Result<Addr<Channel>> {
        if let Some(addr) = self.directory.get(name).map(|a| a.clone()) {
            if addr.connected() {
                return Ok(addr);
            }
            self.record_restart(name);
        }
        if self.is_refused(name) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("channel '{name}' is degraded after repeated failures; retry later"),
            ));
        }
        let addr =
            Channel::new(name.to_string(), self.settings, self.directory.clone(), self.deps.clone()).start();
        self.directory.insert(name.to_string(), addr.clone());
        Ok(addr)
    }

    fn record_restart(&mut self, name: &str) {
        metrics().channel_restarts.inc();
        let sup = self.supervision;
        let h = self.restarts.entry(name.to_string()).or_default();
        let now = Instant::now();
        h.times.retain(|t| now.duration_since(*t) <= sup.restart_window);
        h.times.push(now);
        let over = h.times.len() as i64 - sup.max_restarts as i64;
        if over > 0 {
            let backoff = BASE_BACKOFF.saturating_mul(1 << (over - 1).min(16) as u32).min(MAX_BACKOFF);
            h.refused_until = Some(now + backoff);
            warn!(channel = %name, restarts = h.times.len(), backoff_ms = backoff.as_millis() as u64, "channel degraded");
        } else {
            warn!(channel = %name, "channel actor died; restarting");
        }
    }
}

impl Actor for ChannelRegistry {
    type Context = Context<Self>;
}

impl Supervised for ChannelRegistry {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!("channel registry restarting");
    }
}

/// A publisher presents a stream key; on success it gets the channel record and actor.
#[derive(Message)]
#[rtype(result = "Result<(ChannelRecord, Addr<Channel>)>")]
pub struct AuthorizePublish {
    pub stream_key: Secret,
}

impl Handler<AuthorizePublish> for ChannelRegistry {
    type Result = ResponseActFuture<Self, Result<(ChannelRecord, Addr<Channel>)>>;

    fn handle(&mut self, msg: AuthorizePublish, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move { store.authorize_stream_key(&msg.stream_key.0).await }.into_actor(self).map(
            |res, act, _| {
                let record =
                    res?.ok_or_else(|| Error::new(ErrorKind::Unauthenticated, "stream key rejected"))?;
                let addr = act.channel_for(&record.name)?;
                Ok((record, addr))
            },
        ))
    }
}

/// A viewer asks for a channel by name. Only live, public channels resolve for now; entitled
/// playback of other visibilities arrives with playback tokens.
#[derive(Message)]
#[rtype(result = "Result<Addr<Channel>>")]
pub struct ResolvePlay {
    pub name: String,
}

impl Handler<ResolvePlay> for ChannelRegistry {
    type Result = ResponseActFuture<Self, Result<Addr<Channel>>>;

    fn handle(&mut self, msg: ResolvePlay, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let name = msg.name;
        Box::pin(
            async move {
                let rec = store.channel_by_name(&name).await?;
                Ok::<_, Error>((name, rec))
            }
            .into_actor(self)
            .map(|res, act, _| {
                let (name, rec) = res?;
                let rec = rec.ok_or_else(|| Error::not_found(format!("no channel '{name}'")))?;
                if rec.visibility != Visibility::Public {
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        format!("channel '{name}' is not public"),
                    ));
                }
                match act.directory.get(&name).map(|a| a.clone()) {
                    Some(addr) if addr.connected() => Ok(addr),
                    _ => Err(Error::not_found(format!("channel '{name}' is offline"))),
                }
            }),
        )
    }
}

/// Stop every channel (shutdown). Resolves when each has been told to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

impl Handler<StopAll> for ChannelRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopAll, _: &mut Self::Context) -> Self::Result {
        let addrs: Vec<Addr<Channel>> = self.directory.iter().map(|e| e.value().clone()).collect();
        info!(channels = addrs.len(), "stopping all channels");
        Box::pin(async move {
            for a in addrs {
                let _ = a.send(StopChannel).await;
            }
        })
    }
}
