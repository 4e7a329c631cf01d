//! Playback tokens: short, signed, expiring capabilities for one channel or one video.
//!
//! The API hands one to an entitled viewer (`GET /api/v1/channels/{name}`, `GET
//! /api/v1/videos/{id}`); LL-HLS and VOD routes accept it as the `token` query parameter and
//! write it into every URI of the playlists they serve, because players (hls.js, AVPlayer) do
//! not resend headers for parts and segments.
//!
//! Format: `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, with payload
//! `v1|<kid>|<scope>|<expires unix seconds>` and scope `c:<channel name>` or `v:<video id>`.
//! URL-safe base64 without padding, so the token needs no escaping in a query string. The MAC
//! is compared in constant time (`hmac`'s `verify_slice`).
//!
//! # For the LL-HLS and VOD routes
//!
//! ```ignore
//! // `token` from the `token` query parameter; `state.api.playback` is a `PlaybackKeys`.
//! let scope = PlaybackScope::Channel(channel_name.to_owned()); // or PlaybackScope::Video(id)
//! match state.api.playback.verify(token, &scope, unix_now_secs) {
//!     Ok(claims) => { /* serve; append `?token=` + token to every URI in a playlist */ }
//!     Err(e) => return Err(e), // PermissionDenied: 403, JSON error body
//! }
//! ```
//! Public content needs no token: check the channel's or video's visibility first.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::KeyRing;
use crate::error::{Error, ErrorKind};

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted before any decoding work.
const MAX_TOKEN_LEN: usize = 512;

/// What a playback token unlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybackScope {
    /// A live channel, by name: its playlists, parts and segments.
    Channel(String),
    /// A video, by id.
    Video(i64),
}

impl PlaybackScope {
    fn encode(&self) -> String {
        match self {
            PlaybackScope::Channel(name) => format!("c:{name}"),
            PlaybackScope::Video(id) => format!("v:{id}"),
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackClaims {
    pub scope: PlaybackScope,
    /// Expiry, unix seconds.
    pub expires: u64,
    pub kid: String,
}

/// Signs and verifies playback tokens with a key ring (the first key signs).
#[derive(Debug, Clone)]
pub struct PlaybackKeys {
    ring: KeyRing,
}

fn denied() -> Error {
    Error::new(ErrorKind::PermissionDenied, "invalid or expired playback token")
}

impl PlaybackKeys {
    pub fn new(ring: KeyRing) -> Self {
        PlaybackKeys { ring }
    }

    fn mac(secret: &[u8], payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(payload);
        mac
    }

    /// A token for `scope` that expires at `expires` (unix seconds).
    pub fn sign(&self, scope: &PlaybackScope, expires: u64) -> String {
        let key = self.ring.current();
        let payload = format!("v1|{}|{}|{expires}", key.kid, scope.encode());
        let tag = Self::mac(&key.secret, payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks that `token` is well formed, signed by a key of the ring, for exactly `scope`,
    /// and not expired at `now` (unix seconds). Every failure is `PermissionDenied` (HTTP 403)
    /// with the same message, which never echoes the token.
    pub fn verify(&self, token: &str, scope: &PlaybackScope, now: u64) -> crate::Result<PlaybackClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(denied());
        }
        let (payload_b64, tag_b64) = token.split_once('.').ok_or_else(denied)?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| denied())?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).map_err(|_| denied())?;
        let text = std::str::from_utf8(&payload).map_err(|_| denied())?;
        let mut fields = text.splitn(4, '|');
        let (Some("v1"), Some(kid), Some(token_scope), Some(expires)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(denied());
        };
        let key = self.ring.get(kid).ok_or_else(denied)?;
        // Signature first, so nothing below depends on unauthenticated input.
        Self::mac(&key.secret, &payload).verify_slice(&tag).map_err(|_| denied())?;
        if token_scope != scope.encode() {
            return Err(denied());
        }
        let expires: u64 = expires.parse().map_err(|_| denied())?;
        if expires <= now {
            return Err(denied());
        }
        Ok(PlaybackClaims { scope: scope.clone(), expires, kid: kid.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ring: &str) -> PlaybackKeys {
        PlaybackKeys::new(KeyRing::parse(ring).unwrap())
    }
    const R1: &str = "p1:0123456789abcdef0123456789abcdef";
    const R2: &str = "p2:fedcba9876543210fedcba9876543210";

    #[test]
    fn sign_verify_scope_expiry() {
        let k = keys(R1);
        let scope = PlaybackScope::Channel("studio".into());
        let t = k.sign(&scope, 1000);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'), "{t}");
        let c = k.verify(&t, &scope, 999).unwrap();
        assert_eq!((c.expires, c.kid.as_str()), (1000, "p1"));
        assert_eq!(k.verify(&t, &scope, 1000).unwrap_err().kind, ErrorKind::PermissionDenied);
        assert!(k.verify(&t, &PlaybackScope::Channel("studio2".into()), 1).is_err());
        assert!(k.verify(&t, &PlaybackScope::Video(1), 1).is_err());
        let v = k.sign(&PlaybackScope::Video(7), 50);
        assert!(k.verify(&v, &PlaybackScope::Video(7), 10).is_ok());
        assert!(k.verify(&v, &PlaybackScope::Video(70), 10).is_err());
    }

    #[test]
    fn tampering_and_garbage_are_denied() {
        let k = keys(R1);
        let scope = PlaybackScope::Channel("a".into());
        let t = k.sign(&scope, 1000);
        let (p, s) = t.split_once('.').unwrap();
        // Same MAC, payload with a later expiry.
        let forged = format!("{}.{s}", URL_SAFE_NO_PAD.encode("v1|p1|c:a|99999"));
        assert!(k.verify(&forged, &scope, 1).is_err());
        let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
        sig[0] ^= 1;
        assert!(k.verify(&format!("{p}.{}", URL_SAFE_NO_PAD.encode(sig)), &scope, 1).is_err());
        for junk in ["", ".", "abc", "a.b", &format!("{p}."), &"x".repeat(600), "é.é"] {
            assert!(k.verify(junk, &scope, 1).is_err(), "{junk}");
        }
    }

    #[test]
    fn rotation_by_kid() {
        let old = keys(R1);
        let scope = PlaybackScope::Video(1);
        let t_old = old.sign(&scope, 100);
        let both = keys(&format!("{R2},{R1}"));
        assert!(both.verify(&t_old, &scope, 1).is_ok());
        let t_new = both.sign(&scope, 100);
        assert_eq!(both.verify(&t_new, &scope, 1).unwrap().kid, "p2");
        assert!(old.verify(&t_new, &scope, 1).is_err());
        assert!(keys(R2).verify(&t_old, &scope, 1).is_err());
    }
}
