//! Secrets the server must send on (restream stream keys, camera credentials) sealed at rest, so
//! a database dump or backup does not hold them in clear. They cannot be hashed like our own
//! stream keys: the server needs them back.
//!
//! AES-256-GCM (ring) under a key ring (`auth.storage_secret`, or `data_dir/secrets/storage.keys`
//! generated on first start): each key's AES key is HMAC-SHA256(secret, "tidecast sealed v1"),
//! each value gets a fresh random 96-bit nonce, and the field name is the additional
//! authenticated data, so a sealed value cannot be moved to another column. Stored form:
//! `sealed:v1:<kid>:<base64url(nonce || ciphertext || tag)>`. The first key seals, every key
//! opens: rotate by prepending a key (values are sealed again with it as they are written).
//! Values stored before sealing existed have no prefix and are read as they are; the server
//! seals them at start (`http::api::destinations::load_all`, `http::api::sources::load_all`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::Sha256;

use super::keys::KeyRing;
use crate::error::Error;

const PREFIX: &str = "sealed:v1:";

/// Seals and opens stored secrets. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    /// (kid, AES key) in ring order; the first seals.
    keys: std::sync::Arc<Vec<(String, LessSafeKey)>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(kid, _)| kid)).finish()
    }
}

impl Sealer {
    pub fn new(ring: &KeyRing) -> Sealer {
        let keys = ring
            .keys()
            .iter()
            .map(|k| {
                let mut mac = Hmac::<Sha256>::new_from_slice(&k.secret).expect("HMAC takes any key length");
                mac.update(b"tidecast sealed v1");
                let aes = mac.finalize().into_bytes();
                let key = UnboundKey::new(&AES_256_GCM, &aes).expect("a 32-byte AES-256 key");
                (k.kid.clone(), LessSafeKey::new(key))
            })
            .collect();
        Sealer { keys: std::sync::Arc::new(keys) }
    }

    /// A sealer with a random key that lives as long as the process (tests, API-only servers).
    pub fn ephemeral() -> Sealer {
        Sealer::new(&KeyRing::generate("ephemeral"))
    }

    /// Whether `stored` is in sealed form.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Seal `plain` for the column `field`. An empty value stays empty (nothing to hide, and
    /// "not set" stays visible).
    pub fn seal(&self, field: &str, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let (kid, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut data = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(field.as_bytes()),
            &mut data,
        )
        .expect("AES-GCM sealing of a short value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{kid}:{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The plain value of `stored` (sealed for `field`, or stored before sealing existed).
    /// The error names the key id, never the value.
    pub fn open(&self, field: &str, stored: &str) -> crate::Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (kid, body) = rest
            .split_once(':')
            .ok_or_else(|| Error::internal(format!("{field}: malformed sealed value")))?;
        let (_, key) = self.keys.iter().find(|(k, _)| k == kid).ok_or_else(|| {
            Error::internal(format!("{field}: sealed with key '{kid}', which is not in auth.storage_secret"))
        })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Error::internal(format!("{field}: malformed sealed value")))?;
        if bytes.len() < NONCE_LEN {
            return Err(Error::internal(format!("{field}: malformed sealed value")));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(field.as_bytes()), &mut sealed)
            .map_err(|_| Error::internal(format!("{field}: sealed value does not open with key '{kid}'")))?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| Error::internal(format!("{field}: sealed value is not text")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn sealed_values_open_only_with_their_key_and_field() {
        let s = Sealer::new(&KeyRing::parse(&format!("k1:{S}")).unwrap());
        let sealed = s.seal("restream.stream_key", "live_secret");
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains("live_secret"), "{sealed}");
        assert_ne!(sealed, s.seal("restream.stream_key", "live_secret"), "a fresh nonce each time");
        assert_eq!(s.open("restream.stream_key", &sealed).unwrap(), "live_secret");
        // Another column, another key, a flipped byte: refused, without the value in the error.
        let e = s.open("source.password", &sealed).unwrap_err();
        assert!(!e.msg.contains("live_secret"));
        let other = Sealer::new(&KeyRing::parse(&format!("k1:{}", S.to_uppercase())).unwrap());
        assert!(other.open("restream.stream_key", &sealed).is_err());
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open("restream.stream_key", &String::from_utf8(flipped).unwrap()).is_err());
        // Legacy (unsealed) values read as they are; empty stays empty.
        assert_eq!(s.open("f", "plain").unwrap(), "plain");
        assert_eq!(s.seal("f", ""), "");
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Sealer::new(&KeyRing::parse(&format!("k1:{S}")).unwrap());
        let sealed = old.seal("f", "v");
        let rotated = Sealer::new(&KeyRing::parse(&format!("k2:{},k1:{S}", S.to_uppercase())).unwrap());
        assert_eq!(rotated.open("f", &sealed).unwrap(), "v");
        assert!(rotated.seal("f", "v").starts_with("sealed:v1:k2:"));
        let e = Sealer::new(&KeyRing::parse(&format!("k3:{S}")).unwrap()).open("f", &sealed).unwrap_err();
        assert!(e.msg.contains("'k1'"), "{}", e.msg);
    }
}
