//! `ApiContext`: everything the API handlers share, built once at start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use dashmap::DashMap;

use crate::actors::watch_history::{Flush, WatchHistory, WatchHistorySettings};
use crate::auth::entitlements::{can_play, Viewer};
use crate::auth::jwt::JwtKeys;
use crate::auth::keys::KeyRing;
use crate::auth::playback::{PlaybackKeys, PlaybackScope};
use crate::auth::revocations::Revocations;
use crate::auth::PasswordGate;
use crate::billing::Billing;
use crate::config::{ApiConfig, AuthConfig, Config};
use crate::error::{Error, ErrorKind};
use crate::shared_state::SharedState;
use crate::store::cache::StaleCache;
use crate::store::{now_ms, ChannelRecord, Store, Video, Visibility};

/// How long cached video metadata, channel records, active plan ids and search results are
/// trusted without asking the store again. Videos, channels, plans and admin flags are then
/// refreshed in the background and, while the store is unreachable, keep serving for
/// `database.cache_max_stale` (`crate::store::cache`).
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached search result pages; past this the cache starts over.
const SEARCH_CACHE_MAX: usize = 10_000;

/// What every API handler needs.
pub struct ApiContext {
    pub store: Store,
    pub jwt: JwtKeys,
    pub playback: PlaybackKeys,
    pub passwords: PasswordGate,
    pub shared: SharedState,
    /// Logouts: durable in the store, cached in `shared`.
    pub revocations: Arc<Revocations>,
    pub history: Addr<WatchHistory>,
    pub billing: Billing,
    pub auth: AuthConfig,
    pub api: ApiConfig,
    /// Restream destinations as the live channels see them (set by `app::serve`), and the
    /// per-channel limit from `[restream]`.
    pub restream: crate::actors::restream::Restream,
    pub max_destinations: usize,
    /// Live channels' transcode ladders (set by `app::serve`), for their status.
    pub transcoder: crate::actors::transcode::Transcoder,
    /// Recordings: per-channel settings, deleting a video's media.
    pub archive: crate::actors::archive::Archive,
    /// Pulled sources (RTSP cameras), set by `app::serve`; `None` (API-only test servers): the
    /// source routes answer 503.
    pub pulls: Option<crate::actors::pull::Pulls>,
    /// Seals restream keys and camera credentials at rest (`auth.storage_secret`); a random
    /// per-process key unless `build` loaded the configured ring.
    pub sealer: crate::auth::sealed::Sealer,
    videos: StaleCache<i64, Arc<Video>>,
    plans: StaleCache<i64, Arc<Vec<String>>>,
    /// user -> owns private content (their search results differ from everyone's).
    private_owners: DashMap<i64, (bool, Instant)>,
    /// channel name -> record, for the LL-HLS checks (visibility, owner).
    channels: StaleCache<String, Arc<ChannelRecord>>,
    /// user -> is admin, for re-checking playback tokens.
    admins: StaleCache<i64, bool>,
    /// (scope, page, terms) -> serialized results.
    search: DashMap<String, (bytes::Bytes, Instant)>,
}

impl ApiContext {
    /// Loads the key rings (generating them under `data_dir/secrets/` if nothing is
    /// configured), connects the shared state and starts the `WatchHistory` actor. Must run
    /// inside an actix `System`.
    pub async fn build(config: &Config, store: Store) -> crate::Result<ApiContext> {
        let secrets = config.server.data_dir.join("secrets");
        let a = &config.auth;
        let jwt_ring =
            KeyRing::load(&a.jwt_secret, &a.jwt_secret_file, &secrets.join("jwt.keys"), "auth.jwt_secret")?;
        let playback_ring = KeyRing::load(
            &a.playback_secret,
            &a.playback_secret_file,
            &secrets.join("playback.keys"),
            "auth.playback_secret",
        )?;
        let storage_ring = KeyRing::load(
            &a.storage_secret,
            &a.storage_secret_file,
            &secrets.join("storage.keys"),
            "auth.storage_secret",
        )?;
        let shared = SharedState::connect(&config.redis).await?;
        let mut ctx = Self::with_parts(config, store, jwt_ring, playback_ring, shared).await?;
        ctx.sealer = crate::auth::sealed::Sealer::new(&storage_ring);
        Ok(ctx)
    }

    /// Like [`ApiContext::build`] with explicit key rings and shared state (tests).
    pub async fn with_parts(
        config: &Config,
        store: Store,
        jwt_ring: KeyRing,
        playback_ring: KeyRing,
        shared: SharedState,
    ) -> crate::Result<ApiContext> {
        let history = WatchHistory::new(
            store.clone(),
            WatchHistorySettings {
                flush_interval: config.api.watch_flush_interval,
                flush_batch: config.api.watch_flush_batch,
                max_pending: config.api.watch_max_pending,
            },
        )
        .start();
        let max_stale = config.database.cache_max_stale;
        let revocations =
            Revocations::start(store.clone(), shared.clone(), config.database.revocation_sync_interval).await;
        Ok(ApiContext {
            restream: crate::actors::restream::Restream::default(),
            transcoder: crate::actors::transcode::Transcoder::disabled(),
            archive: crate::actors::archive::Archive::disabled(),
            max_destinations: config.restream.max_destinations_per_channel,
            pulls: None,
            sealer: crate::auth::sealed::Sealer::ephemeral(),
            revocations,
            jwt: JwtKeys::new(&jwt_ring, config.auth.access_token_ttl),
            playback: PlaybackKeys::new(playback_ring),
            passwords: PasswordGate::new(config.auth.max_concurrent_hashes).await?,
            shared,
            history,
            billing: Billing::new(&config.billing)?,
            auth: config.auth.clone(),
            api: config.api.clone(),
            store,
            videos: StaleCache::new(CACHE_TTL, max_stale),
            plans: StaleCache::new(CACHE_TTL, max_stale),
            private_owners: DashMap::new(),
            channels: StaleCache::new(CACHE_TTL, max_stale),
            admins: StaleCache::new(CACHE_TTL, max_stale),
            search: DashMap::new(),
        })
    }

    /// Writes every buffered watch update; call on graceful shutdown after HTTP has stopped.
    pub async fn shutdown(&self) {
        match self.history.send(Flush).await {
            Ok(Ok(rows)) => tracing::info!(rows, "watch history flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "final watch history flush failed"),
            Err(e) => tracing::error!(error = %e, "watch history actor is gone"),
        }
    }

    /// A video, from the cache (so watch progress keeps being accepted while the store is
    /// briefly unreachable).
    pub async fn video(&self, id: i64) -> crate::Result<Option<Video>> {
        let v = self
            .videos
            .get(&id, || {
                let store = self.store.clone();
                async move { Ok(store.video_by_id(id).await?.map(Arc::new)) }
            })
            .await?;
        // A recording's video changes by itself when its session ends (another part of the
        // server writes it): while it says `live`, ask the store, whose answer is current.
        if v.as_ref().is_some_and(|v| v.status == crate::store::VideoStatus::Live) {
            if let Ok(fresh) = self.store.video_by_id(id).await {
                if fresh.as_ref().is_none_or(|f| f.status != crate::store::VideoStatus::Live) {
                    self.videos.invalidate(&id);
                }
                return Ok(fresh);
            }
        }
        Ok(v.map(Arc::unwrap_or_clone))
    }

    /// Plan ids of the user's active subscriptions, from the cache.
    pub async fn active_plans(&self, user_id: i64) -> crate::Result<Arc<Vec<String>>> {
        let plans = self
            .plans
            .get(&user_id, || {
                let store = self.store.clone();
                async move { Ok(Some(Arc::new(store.active_plan_ids(user_id, now_ms()).await?))) }
            })
            .await?;
        Ok(plans.unwrap_or_default())
    }

    /// A channel's current visibility, from the cache if fresh (`None` if it does not exist or
    /// the store cannot tell right now).
    pub async fn channel_visibility(&self, name: &str) -> Option<Visibility> {
        match self.channel_arc(name).await {
            Ok(c) => c.map(|c| c.visibility),
            Err(e) => {
                tracing::warn!(error = %e, "channel lookup failed");
                None
            }
        }
    }

    /// Forget a video's cached record (after a change on this node).
    pub fn invalidate_video(&self, id: i64) {
        self.videos.invalidate(&id);
    }

    /// Forget a channel's cached record (after a change on this node).
    pub fn invalidate_visibility(&self, name: &str) {
        self.channels.invalidate(name);
    }

    /// Whether the user owns private videos or channels, from the cache if fresh.
    pub async fn owns_private(&self, user_id: i64) -> crate::Result<bool> {
        if let Some(e) = self.private_owners.get(&user_id) {
            if e.1.elapsed() < CACHE_TTL {
                return Ok(e.0);
            }
        }
        let yes = self.store.owns_private_content(user_id).await?;
        bounded(&self.private_owners).insert(user_id, (yes, Instant::now()));
        Ok(yes)
    }

    /// A cached search result page, if fresh.
    pub fn cached_search(&self, key: &str) -> Option<bytes::Bytes> {
        self.search.get(key).filter(|e| e.1.elapsed() < CACHE_TTL).map(|e| e.0.clone())
    }

    pub fn cache_search(&self, key: String, body: bytes::Bytes) {
        if self.search.len() >= SEARCH_CACHE_MAX {
            self.search.clear();
        }
        self.search.insert(key, (body, Instant::now()));
    }

    /// Forget a user's cached plans (after a grant, revoke or webhook on this node).
    pub fn invalidate_plans(&self, user_id: Option<i64>) {
        match user_id {
            Some(id) => self.plans.invalidate(&id),
            None => self.plans.clear(),
        }
    }

    /// Whether `viewer` has an active subscription covering `channel`.
    pub async fn subscribed(&self, viewer: Option<&Viewer>, channel: Option<&str>) -> crate::Result<bool> {
        let (Some(v), Some(channel)) = (viewer, channel) else {
            return Ok(false);
        };
        let plans = self.active_plans(v.user_id).await?;
        Ok(self.billing.covers(&plans, channel))
    }

    /// Entitlement for a channel (database touched only for `subscribers` content).
    pub async fn can_play_channel(&self, viewer: Option<&Viewer>, c: &ChannelRecord) -> crate::Result<bool> {
        if can_play(viewer, c.owner_id, c.visibility, false) {
            return Ok(true);
        }
        if c.visibility != Visibility::Subscribers {
            return Ok(false);
        }
        Ok(can_play(viewer, c.owner_id, c.visibility, self.subscribed(viewer, Some(&c.name)).await?))
    }

    /// Entitlement for a video: its own visibility, subscription through its channel.
    pub async fn can_play_video(&self, viewer: Option<&Viewer>, v: &Video) -> crate::Result<bool> {
        if can_play(viewer, v.owner_id, v.visibility, false) {
            return Ok(true);
        }
        if v.visibility != Visibility::Subscribers {
            return Ok(false);
        }
        let sub = self.subscribed(viewer, v.channel_name.as_deref()).await?;
        Ok(can_play(viewer, v.owner_id, v.visibility, sub))
    }

    /// Whether the caller may see that the content exists (private content is hidden from
    /// everyone but its owner and admins: 404, not 403).
    pub fn can_list(viewer: Option<&Viewer>, owner_id: Option<i64>, visibility: Visibility) -> bool {
        visibility != Visibility::Private || viewer.is_some_and(|v| v.is_admin || Some(v.user_id) == owner_id)
    }

    /// A playback token for `scope` issued to `viewer`, valid for `auth.playback_token_ttl`,
    /// and its expiry.
    pub fn playback_token(&self, scope: &PlaybackScope, viewer: Option<&Viewer>) -> (String, u64) {
        let expires = super::unix_now() + self.auth.playback_token_ttl.as_secs();
        (self.playback.sign_for(scope, expires, viewer.map(|v| v.user_id)), expires)
    }

    /// Who may play a live channel: public channels for everyone; other visibilities need a
    /// playback token for this channel (handed out by `GET /api/v1/channels/{name}` to entitled
    /// callers; see `crate::auth::playback`) whose holder is still entitled. Returns whether a
    /// token was needed (and checked). Used by LL-HLS and, through `auth::PlayAccess`, SRT play.
    ///
    /// The visibility is the store's (cached for a few seconds), not the one captured when the
    /// session started, so making a live channel non-public takes effect mid-session;
    /// `fallback` answers when the store cannot (a database outage past the caches). Neither
    /// lookup waits for the database once a channel and user have been seen: the caches answer
    /// from their last copy, refreshed in the background, and keep answering through a database
    /// outage for up to `database.cache_max_stale` (`crate::store::cache`).
    ///
    /// Refusals: a `subscribers` channel is `PermissionDenied` (HTTP 403), since its existence is
    /// public (the API lists it to everyone) and the player should offer a subscription. A
    /// `private` channel is refused exactly as an unknown or offline one (`NotFound`, same text),
    /// or a 403 would tell anyone that it exists and is on air; its owner and admins are the only
    /// ones entitled to know, and their tokens play it.
    pub async fn authorize_play(
        &self,
        channel: &str,
        token: Option<&str>,
        fallback: Option<Visibility>,
    ) -> crate::Result<bool> {
        let Some(visibility) = self.channel_visibility(channel).await.or(fallback) else {
            return Err(crate::http::hls::offline());
        };
        if visibility == Visibility::Public {
            return Ok(false);
        }
        let hide = |e: Error| {
            if visibility == Visibility::Private && e.kind == ErrorKind::PermissionDenied {
                crate::http::hls::offline()
            } else {
                e
            }
        };
        let token = token.ok_or_else(|| {
            hide(Error::new(ErrorKind::PermissionDenied, "a playback token is required for this channel"))
        })?;
        let now = crate::http::api::unix_now();
        let claims =
            self.playback.verify(token, &PlaybackScope::Channel(channel.to_owned()), now).map_err(hide)?;
        if !self.still_entitled(claims.user_id, channel).await? {
            return Err(hide(Error::new(
                ErrorKind::PermissionDenied,
                "the playback token's holder is no longer entitled",
            )));
        }
        Ok(true)
    }

    /// Whether a player may play video `id` (the VOD routes), by the rules of `authorize_play`:
    /// a public video needs nothing; others a playback token for the video (`PlaybackScope::Video`,
    /// which `GET /api/v1/videos/{id}` hands to entitled callers), whose holder must still be
    /// entitled (owner, admin, or an active subscription to its channel for `subscribers`). A
    /// private video is refused as an unknown one. Returns the video and whether the token must
    /// ride on every URI.
    pub async fn authorize_video_play(&self, id: i64, token: Option<&str>) -> crate::Result<(Video, bool)> {
        let unknown = || Error::not_found(format!("video {id} not found"));
        let video = self.video(id).await?.ok_or_else(unknown)?;
        if video.visibility == Visibility::Public {
            return Ok((video, false));
        }
        let hide = |e: Error| {
            if video.visibility == Visibility::Private && e.kind == ErrorKind::PermissionDenied {
                unknown()
            } else {
                e
            }
        };
        let token = token.ok_or_else(|| {
            hide(Error::new(ErrorKind::PermissionDenied, "a playback token is required for this video"))
        })?;
        let claims = self
            .playback
            .verify(token, &PlaybackScope::Video(id), crate::http::api::unix_now())
            .map_err(hide)?;
        if let Some(user_id) = claims.user_id {
            let viewer = Viewer { user_id, is_admin: self.is_admin(user_id).await? };
            if !self.can_play_video(Some(&viewer), &video).await? {
                return Err(hide(Error::new(
                    ErrorKind::PermissionDenied,
                    "the playback token's holder is no longer entitled",
                )));
            }
        }
        Ok((video, true))
    }

    /// Whether the holder of a valid playback token for channel `name` is still entitled:
    /// tokens naming a user are re-checked against the channel's current owner and visibility,
    /// the user's admin flag and their active plans (all cached for `CACHE_TTL`), so a revoked,
    /// canceled or expired subscription stops playback within seconds. While the store is
    /// unreachable the cached answers stand for up to `database.cache_max_stale`, so players
    /// already entitled keep playing. Tokens that name no user (signed elsewhere with the same
    /// key) stand on their signature and expiry alone.
    pub async fn still_entitled(&self, user_id: Option<i64>, name: &str) -> crate::Result<bool> {
        let Some(user_id) = user_id else {
            return Ok(true);
        };
        let Some(channel) = self.channel_arc(name).await? else {
            return Ok(false);
        };
        let viewer = Viewer { user_id, is_admin: self.is_admin(user_id).await? };
        self.can_play_channel(Some(&viewer), &channel).await
    }

    /// A channel record, from the cache.
    pub async fn channel_cached(&self, name: &str) -> crate::Result<Option<ChannelRecord>> {
        Ok(self.channel_arc(name).await?.map(Arc::unwrap_or_clone))
    }

    /// A channel record, from the cache, without copying it (the LL-HLS path).
    async fn channel_arc(&self, name: &str) -> crate::Result<Option<Arc<ChannelRecord>>> {
        self.channels
            .get(name, || {
                let store = self.store.clone();
                let name = name.to_owned();
                async move { Ok(store.channel_by_name(&name).await?.map(Arc::new)) }
            })
            .await
    }

    async fn is_admin(&self, user_id: i64) -> crate::Result<bool> {
        let yes = self
            .admins
            .get(&user_id, || {
                let store = self.store.clone();
                async move { Ok(Some(store.user_by_id(user_id).await?.is_some_and(|u| u.is_admin))) }
            })
            .await?;
        Ok(yes.unwrap_or(false))
    }
}

/// Entries one cache may hold; past this it starts over, so memory stays bounded however many
/// users and videos pass through (a cleared cache only costs a database read per entry).
const CACHE_MAX: usize = 100_000;

fn bounded<K: Eq + std::hash::Hash, V>(map: &DashMap<K, V>) -> &DashMap<K, V> {
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map
}

/// For tests: a key ring from a fixed secret.
pub fn test_ring(kid: &str) -> KeyRing {
    KeyRing::parse(&format!("{kid}:{}", "t".repeat(32))).expect("fixed test key ring is valid")
}

impl crate::auth::PlayAccess for ApiContext {
    fn authorize<'a>(
        &'a self,
        channel: &'a str,
        token: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, crate::Result<()>> {
        Box::pin(async move { self.authorize_play(channel, token, None).await.map(|_| ()) })
    }
}
