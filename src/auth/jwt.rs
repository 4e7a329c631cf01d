//! API access tokens: JWT (RFC 7519) signed with HS256 and a `kid` header naming the key.
//!
//! Verification pins the algorithm to HS256 (never read from the token), requires a `kid`
//! that is in the key ring, and checks `exp` with no leeway. `alg: none` cannot even be parsed
//! by jsonwebtoken's header type, and an RS/ES-signed token is refused because only HS256 is
//! allowed, so the classic algorithm-confusion attacks have nothing to hold on to. Each token
//! has a random `jti`, so a single token can be revoked (`crate::shared_state`).

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::keys::KeyRing;
use crate::error::{Error, ErrorKind};

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id, as a string (RFC 7519 §4.1.2: `sub` is a string).
    pub sub: String,
    /// Whether the user was an admin when the token was issued.
    #[serde(default)]
    pub adm: bool,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// Random token id, for revocation.
    pub jti: String,
}

impl AccessClaims {
    pub fn user_id(&self) -> crate::Result<i64> {
        self.sub.parse().map_err(|_| unauthenticated())
    }
}

/// Signs and verifies access tokens with a key ring.
pub struct JwtKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    ttl: Duration,
}

fn unauthenticated() -> Error {
    Error::new(ErrorKind::Unauthenticated, "invalid or expired access token")
}

impl JwtKeys {
    pub fn new(ring: &KeyRing, ttl: Duration) -> JwtKeys {
        let current = ring.current();
        let decoding =
            ring.keys().iter().map(|k| (k.kid.clone(), DecodingKey::from_secret(&k.secret))).collect();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        JwtKeys {
            kid: current.kid.clone(),
            encoding: EncodingKey::from_secret(&current.secret),
            decoding,
            validation,
            ttl,
        }
    }

    /// The access token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `user_id`, valid from `now_unix` for the configured lifetime.
    pub fn issue(
        &self,
        user_id: i64,
        is_admin: bool,
        now_unix: u64,
    ) -> crate::Result<(String, AccessClaims)> {
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = AccessClaims {
            sub: user_id.to_string(),
            adm: is_admin,
            iat: now_unix,
            exp: now_unix + self.ttl.as_secs(),
            jti: hex::encode(jti),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| Error::with_source(ErrorKind::Internal, "signing access token", e))?;
        Ok((token, claims))
    }

    /// Verifies a token: HS256 only, a known `kid`, a valid signature, not expired.
    /// Every failure is the same `Unauthenticated` error, which never echoes the token.
    pub fn verify(&self, token: &str) -> crate::Result<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated())?;
        if header.alg != Algorithm::HS256 {
            return Err(unauthenticated());
        }
        let key = header.kid.as_deref().and_then(|kid| self.decoding.get(kid)).ok_or_else(unauthenticated)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|_| unauthenticated())?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    const S1: &str = "k1:0123456789abcdef0123456789abcdef";
    const S2: &str = "k2:fedcba9876543210fedcba9876543210";

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn keys(ring: &str) -> JwtKeys {
        JwtKeys::new(&KeyRing::parse(ring).unwrap(), Duration::from_secs(3600))
    }

    #[test]
    fn issue_then_verify() {
        let k = keys(S1);
        let (token, claims) = k.issue(42, true, now()).unwrap();
        let back = k.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.user_id().unwrap(), 42);
        assert!(back.adm);
    }

    #[test]
    fn expired_token_is_refused() {
        let k = keys(S1);
        let (token, _) = k.issue(1, false, now() - 7200).unwrap();
        assert_eq!(k.verify(&token).unwrap_err().kind, ErrorKind::Unauthenticated);
    }

    #[test]
    fn tampered_token_is_refused() {
        let k = keys(S1);
        let (token, _) = k.issue(1, false, now()).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = "2".into();
        payload["adm"] = true.into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        let forged = parts.join(".");
        let err = k.verify(&forged).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthenticated);
        assert!(!err.to_string().contains(&forged));
        // A flipped signature byte.
        let mut sig = token.clone().into_bytes();
        let last = sig.len() - 2;
        sig[last] = if sig[last] == b'A' { b'B' } else { b'A' };
        assert!(k.verify(std::str::from_utf8(&sig).unwrap()).is_err());
        assert!(k.verify("").is_err());
        assert!(k.verify("a.b.c").is_err());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let k = keys(S1);
        let (token, _) = k.issue(1, false, now()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for header in [
            r#"{"alg":"none","typ":"JWT","kid":"k1"}"#,
            r#"{"alg":"None","typ":"JWT","kid":"k1"}"#,
            r#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#,
            r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#,
        ] {
            let h = URL_SAFE_NO_PAD.encode(header);
            assert!(k.verify(&format!("{h}.{payload}.")).is_err(), "{header}");
            assert!(k.verify(&format!("{h}.{payload}")).is_err(), "{header}");
        }
    }

    #[test]
    fn rotation_by_kid() {
        let old = keys(S1);
        let (old_token, _) = old.issue(1, false, now()).unwrap();
        // New key first, old key still verifying.
        let rotated = keys(&format!("{S2},{S1}"));
        assert!(rotated.verify(&old_token).is_ok());
        let (new_token, _) = rotated.issue(1, false, now()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(), Some("k2"));
        assert!(old.verify(&new_token).is_err(), "unknown kid k2");
        // Old key dropped: its tokens stop working.
        let dropped = keys(S2);
        assert!(dropped.verify(&old_token).is_err());
        assert!(dropped.verify(&new_token).is_ok());
        // A token without kid is refused even if the signature is right.
        let enc = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let claims =
            AccessClaims { sub: "1".into(), adm: false, iat: now(), exp: now() + 60, jti: "x".into() };
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &enc).unwrap();
        assert!(old.verify(&no_kid).is_err());
    }
}
