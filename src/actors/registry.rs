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
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use super::channel::{Channel, ChannelDeps, ChannelDirectory, ChannelSettings, StopChannel};
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
    directory: ChannelDirectory,
    restarts: HashMap<String, RestartHistory>,
    deps: ChannelDeps,
}

impl ChannelRegistry {
    pub fn new(
        store: Store,
        settings: ChannelSettings,
        supervision: SupervisionSettings,
        directory: ChannelDirectory,
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
            // Count each death once: forget the dead address as we record it.
            self.directory.remove(name);
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

/// The server pulls a source for a channel it names (RTSP pull): no key, the channel must exist.
#[derive(Message)]
#[rtype(result = "Result<(ChannelRecord, Addr<Channel>)>")]
pub struct AuthorizePull {
    pub name: String,
}

impl Handler<AuthorizePull> for ChannelRegistry {
    type Result = ResponseActFuture<Self, Result<(ChannelRecord, Addr<Channel>)>>;

    fn handle(&mut self, msg: AuthorizePull, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let name = msg.name;
        Box::pin(async move { (store.channel_by_name(&name).await, name) }.into_actor(self).map(
            |(res, name), act, _| {
                let record = res?.ok_or_else(|| Error::not_found(format!("no channel '{name}'")))?;
                let addr = act.channel_for(&record.name)?;
                Ok((record, addr))
            },
        ))
    }
}

/// A viewer asks for a channel by name. Live public channels resolve; others only when the caller
/// has checked the viewer's playback token (`entitled`, SRT play through `auth::PlayAccess`).
#[derive(Message)]
#[rtype(result = "Result<Addr<Channel>>")]
pub struct ResolvePlay {
    pub name: String,
    /// The caller checked the viewer's entitlement already (`auth::PlayAccess`, a playback
    /// token); otherwise only public channels resolve.
    pub entitled: bool,
}

impl Handler<ResolvePlay> for ChannelRegistry {
    type Result = ResponseActFuture<Self, Result<Addr<Channel>>>;

    fn handle(&mut self, msg: ResolvePlay, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let (name, entitled) = (msg.name, msg.entitled);
        Box::pin(
            async move {
                let rec = store.channel_by_name(&name).await?;
                Ok::<_, Error>((name, rec))
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let (name, rec) = res?;
                let rec = rec.ok_or_else(|| Error::not_found(format!("no channel '{name}'")))?;
                if rec.visibility != Visibility::Public && !entitled {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::channel::Crash;
    use crate::actors::hls::HlsSettings;
    use crate::media::ring::RingLimits;
    use crate::store::NewChannel;
    use dashmap::DashMap;
    use std::sync::Arc;

    async fn registry(max_restarts: u32) -> (Addr<ChannelRegistry>, String) {
        let store = Store::connect("sqlite::memory:", 1).await.unwrap();
        store.migrate().await.unwrap();
        let (_, key) = store
            .create_channel(NewChannel {
                name: "studio".into(),
                title: None,
                owner_id: None,
                visibility: Visibility::Public,
            })
            .await
            .unwrap();
        let settings = ChannelSettings {
            reconnect_grace: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            ring: RingLimits { max_duration: Duration::from_secs(2), max_bytes: 1 << 20 },
            hls: HlsSettings {
                part_target: Duration::from_millis(200),
                segment_target: Duration::from_secs(1),
                window: Duration::from_secs(6),
                block_timeout: Duration::from_secs(1),
            },
        };
        let deps = ChannelDeps::current();
        let sup = SupervisionSettings { max_restarts, restart_window: Duration::from_secs(60) };
        let addr = ChannelRegistry::new(store, settings, sup, Arc::new(DashMap::new()), deps).start();
        (addr, key.expose().to_string())
    }

    #[actix::test]
    async fn wrong_key_is_unauthenticated_and_says_nothing_of_the_key() {
        let (reg, _) = registry(3).await;
        let err =
            reg.send(AuthorizePublish { stream_key: Secret("live_nope".into()) }).await.unwrap().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthenticated);
        assert!(!err.msg.contains("live_nope"));
    }

    #[actix::test]
    async fn dead_channels_are_restarted_then_marked_degraded() {
        let (reg, key) = registry(2).await;
        let restarts_before = metrics().channel_restarts.get();
        let (_, first) =
            reg.send(AuthorizePublish { stream_key: Secret(key.clone()) }).await.unwrap().unwrap();
        let mut current = first;
        for round in 0..2 {
            let _ = current.send(Crash).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!current.connected(), "round {round}: the actor died");
            let (_, next) =
                reg.send(AuthorizePublish { stream_key: Secret(key.clone()) }).await.unwrap().unwrap();
            assert!(
                next != current && next.connected(),
                "round {round}: a fresh actor replaces the dead one"
            );
            current = next;
        }
        assert!(metrics().channel_restarts.get() >= restarts_before + 2);
        // A third death within the window exceeds max_restarts = 2: refused for a backoff.
        let _ = current.send(Crash).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = reg.send(AuthorizePublish { stream_key: Secret(key.clone()) }).await.unwrap().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        assert!(err.msg.contains("degraded"));
        // After the backoff it is tried again.
        tokio::time::sleep(BASE_BACKOFF + Duration::from_millis(100)).await;
        assert!(reg.send(AuthorizePublish { stream_key: Secret(key) }).await.unwrap().is_ok());
    }
}
