//! Channels: a named live stream, owned by a user, published with its secret stream key.
//!
//! The stream key is generated here (32 bytes from the OS RNG, `live_` + 64 lowercase hex
//! characters: URL-safe and easy to paste into OBS), shown once to the caller as a [`StreamKey`],
//! and stored only as its SHA-256 hash. A random 256-bit key needs no slow hash or salt: there is
//! nothing to brute-force, and the plain hash lets the publisher lookup use a unique index.
//!
//! [`ChannelRecord`] never carries the key or its hash, so it can be logged and serialized freely.

use std::fmt;
use std::str::FromStr;

use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{now_ms, unique_violation_column, Store};
use crate::error::{Error, ErrorKind};

/// Longest channel name, in characters (names appear in URLs, playlists and metric labels).
pub const MAX_CHANNEL_NAME_LEN: usize = 64;
/// Longest channel title, in characters.
pub const MAX_CHANNEL_TITLE_LEN: usize = 200;
/// Prefix of every generated stream key; lets secret scanners and humans recognise one.
const STREAM_KEY_PREFIX: &str = "live_";
/// Random bytes in a stream key.
const STREAM_KEY_BYTES: usize = 32;
/// Keys longer than this are not ours; refused before hashing or touching the database.
const MAX_STREAM_KEY_LEN: usize = 256;

/// Columns of a [`ChannelRecord`], in one place so every query selects the same set.
const CHANNEL_COLUMNS: &str = "id, name, title, owner_id, visibility, created_at_ms, updated_at_ms";

/// Who may watch a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone, signed in or not.
    #[default]
    Public,
    /// Signed-in users subscribed to the channel (and its owner and admins).
    Subscribers,
    /// Only the owner and admins.
    Private,
}

impl Visibility {
    /// The value stored in the `visibility` column and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Subscribers => "subscribers",
            Visibility::Private => "private",
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Visibility {
    type Err = Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "public" => Ok(Visibility::Public),
            "subscribers" => Ok(Visibility::Subscribers),
            "private" => Ok(Visibility::Private),
            other => Err(Error::invalid(format!(
                "unknown visibility '{other}': expected public, subscribers or private"
            ))),
        }
    }
}

/// A channel as stored, without its stream key or the key's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelRecord {
    pub id: i64,
    pub name: String,
    pub title: String,
    pub owner_id: Option<i64>,
    pub visibility: Visibility,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What [`Store::create_channel`] needs.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// Unique; see [`validate_channel_name`].
    pub name: String,
    /// Human title; defaults to the name.
    pub title: Option<String>,
    pub owner_id: Option<i64>,
    pub visibility: Visibility,
}

/// A freshly generated stream key: shown once, never stored in clear. `Debug` redacts it and
/// there is deliberately no `Display`, `Clone` or `Serialize`: reading the key takes a call to
/// [`StreamKey::expose`] that reviewers can grep for.
pub struct StreamKey(String);

impl StreamKey {
    pub(super) fn generate() -> StreamKey {
        let mut bytes = [0u8; STREAM_KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        StreamKey(format!("{STREAM_KEY_PREFIX}{}", hex::encode(bytes)))
    }

    /// The key in clear, to show to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> [u8; 32] {
        hash_stream_key(&self.0)
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// SHA-256 of a stream key: what the `stream_key_hash` column holds.
pub fn hash_stream_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A channel name is 1 to 64 characters of `[a-z0-9_-]` and starts with a letter or digit, so
/// it is safe in URLs, file names, RTMP stream names and SRT stream ids without escaping.
///
/// The message does not echo the name: a confused publisher may send its stream key where a
/// channel name was expected.
pub fn validate_channel_name(name: &str) -> crate::Result<()> {
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let starts_alnum = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if starts_alnum && name.len() <= MAX_CHANNEL_NAME_LEN && name.chars().all(valid_char) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "channel name must be 1-{MAX_CHANNEL_NAME_LEN} characters of a-z, 0-9, '_' or '-', \
             starting with a letter or digit"
        )))
    }
}

/// Row shape shared by both backends; `visibility` is TEXT in the database.
#[derive(sqlx::FromRow)]
pub(super) struct ChannelRow {
    id: i64,
    name: String,
    title: String,
    owner_id: Option<i64>,
    visibility: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<ChannelRow> for ChannelRecord {
    type Error = Error;

    fn try_from(row: ChannelRow) -> crate::Result<ChannelRecord> {
        // The CHECK constraint makes a bad value a corrupted or newer-schema database.
        let visibility = row.visibility.parse::<Visibility>().map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                format!("channel '{}' has an invalid stored visibility", row.name),
                e,
            )
        })?;
        Ok(ChannelRecord {
            id: row.id,
            name: row.name,
            title: row.title,
            owner_id: row.owner_id,
            visibility,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }
}

/// A channel row plus its key hash, for [`Store::authorize_stream_key`] only.
#[derive(sqlx::FromRow)]
struct ChannelKeyRow {
    #[sqlx(flatten)]
    channel: ChannelRow,
    stream_key_hash: Vec<u8>,
}

impl Store {
    /// Creates a channel with a fresh stream key. The key is returned once and only its hash is
    /// stored. A duplicate name is `AlreadyExists`.
    pub async fn create_channel(&self, new: NewChannel) -> crate::Result<(ChannelRecord, StreamKey)> {
        validate_channel_name(&new.name)?;
        let title = new.title.unwrap_or_else(|| new.name.clone());
        if title.chars().count() > MAX_CHANNEL_TITLE_LEN {
            return Err(Error::invalid(format!(
                "channel title is longer than {MAX_CHANNEL_TITLE_LEN} characters"
            )));
        }
        let key = StreamKey::generate();
        let hash = key.hash();
        let now = now_ms();
        let sql = format!(
            "INSERT INTO channels \
               (name, title, owner_id, visibility, stream_key_hash, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             RETURNING {CHANNEL_COLUMNS}"
        );
        let row: ChannelRow = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(&new.name)
                .bind(&title)
                .bind(new.owner_id)
                .bind(new.visibility.as_str())
                .bind(&hash[..])
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| create_channel_error(&new.name, new.owner_id, e))?;
        Ok((row.try_into()?, key))
    }

    pub async fn channel_by_name(&self, name: &str) -> crate::Result<Option<ChannelRecord>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE name = $1");
        let row: Option<ChannelRow> =
            with_pool!(self, |pool| { sqlx::query_as(&sql).bind(name).fetch_optional(pool).await })?;
        row.map(ChannelRecord::try_from).transpose()
    }

    /// Every channel, ordered by name.
    pub async fn list_channels(&self) -> crate::Result<Vec<ChannelRecord>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY name");
        let rows: Vec<ChannelRow> = with_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(ChannelRecord::try_from).collect()
    }

    pub async fn count_channels(&self) -> crate::Result<i64> {
        let n: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM channels").fetch_one(pool).await
        })?;
        Ok(n)
    }

    /// Replaces the channel's stream key with a fresh one; the old key stops working at once
    /// (a publisher already connected with it is not kicked here: that is the registry's call).
    /// `NotFound` if there is no such channel.
    pub async fn rotate_stream_key(&self, name: &str) -> crate::Result<StreamKey> {
        let key = StreamKey::generate();
        let hash = key.hash();
        let now = now_ms();
        let affected = with_pool!(self, |pool| {
            sqlx::query("UPDATE channels SET stream_key_hash = $1, updated_at_ms = $2 WHERE name = $3")
                .bind(&hash[..])
                .bind(now)
                .bind(name)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(|e| {
            if unique_violation_column(&e, &[]).is_some() {
                // Two equal 256-bit random keys: the OS RNG is broken. Say so, not "exists".
                Error::with_source(ErrorKind::Internal, "generated stream key collided", e)
            } else {
                Error::from(e)
            }
        })?;
        if affected == 0 {
            return Err(Error::not_found(format!("channel '{name}' not found")));
        }
        Ok(key)
    }

    /// The channel this stream key publishes to, or `None` if the key is not valid.
    ///
    /// The key is hashed and looked up by hash through the unique index, so response time depends
    /// only on the hash, which tells an attacker nothing about keys. The stored hash is then
    /// compared to the computed one in constant time anyway (defence in depth, should the lookup
    /// ever become a prefix or collation-sensitive match).
    pub async fn authorize_stream_key(&self, key: &str) -> crate::Result<Option<ChannelRecord>> {
        if key.is_empty() || key.len() > MAX_STREAM_KEY_LEN {
            return Ok(None);
        }
        let hash = hash_stream_key(key);
        let sql =
            format!("SELECT {CHANNEL_COLUMNS}, stream_key_hash FROM channels WHERE stream_key_hash = $1");
        let row: Option<ChannelKeyRow> =
            with_pool!(self, |pool| { sqlx::query_as(&sql).bind(&hash[..]).fetch_optional(pool).await })?;
        match row {
            Some(row) if bool::from(row.stream_key_hash.as_slice().ct_eq(&hash[..])) => {
                Ok(Some(row.channel.try_into()?))
            }
            _ => Ok(None),
        }
    }

    /// Sets who may watch the channel. `NotFound` if there is no such channel.
    pub async fn set_visibility(&self, name: &str, visibility: Visibility) -> crate::Result<()> {
        let now = now_ms();
        let affected = with_pool!(self, |pool| {
            sqlx::query("UPDATE channels SET visibility = $1, updated_at_ms = $2 WHERE name = $3")
                .bind(visibility.as_str())
                .bind(now)
                .bind(name)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        if affected == 0 {
            return Err(Error::not_found(format!("channel '{name}' not found")));
        }
        Ok(())
    }
}

/// Maps an INSERT failure to a message that says which constraint failed, without any secret.
fn create_channel_error(name: &str, owner_id: Option<i64>, e: sqlx::Error) -> Error {
    match unique_violation_column(&e, &["stream_key_hash", "name"]) {
        Some("stream_key_hash") => {
            Error::with_source(ErrorKind::Internal, "generated stream key collided", e)
        }
        Some(_) => {
            Error::with_source(ErrorKind::AlreadyExists, format!("channel '{name}' already exists"), e)
        }
        None if is_foreign_key_violation(&e) => Error::with_source(
            ErrorKind::FailedPrecondition,
            format!("owner user {} does not exist", owner_id.unwrap_or_default()),
            e,
        ),
        None => Error::from(e),
    }
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
