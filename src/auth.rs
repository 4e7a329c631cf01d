//! Authentication: password hashing (here), access tokens ([`jwt`]), playback tokens
//! ([`playback`]), their key rings ([`keys`]), durable logouts ([`revocations`]) and the
//! entitlement rule ([`entitlements`]).
//!
//! Password hashing: Argon2id with the OWASP Password Storage Cheat Sheet's minimum parameters
//! (m = 19456 KiB, t = 2, p = 1), stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$...`).
//!
//! Hashing costs tens of milliseconds of CPU and 19 MiB of memory by design, so both functions
//! run on tokio's blocking pool, never on an async worker or actix arbiter thread
//! (ARCHITECTURE.md, "Blocking work"). Verification reads the parameters from the stored PHC
//! string, so hashes made with older parameters keep verifying after these change.
//!
//! Errors never contain the password or the hash. `password_hash::Error` implements
//! `std::error::Error` only with argon2's `std` feature, which we do not enable, so its `Display`
//! text (which never includes inputs) is folded into the message instead of kept as a source.

pub mod entitlements;
pub mod jwt;
pub mod keys;
pub mod playback;
pub mod revocations;
pub mod sealed;

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

use crate::error::{Error, ErrorKind};

/// Who may play a live channel, for listeners that take playback tokens outside HTTP (SRT play):
/// public channels for everyone; other visibilities with a playback token for the channel whose
/// holder is still entitled (the same rule as LL-HLS). A private channel is refused exactly as an
/// unknown one (`NotFound`), so a refusal does not tell that it exists. Implemented by the API's
/// context, which holds the keys and the caches; the trait keeps the actors from depending on the
/// HTTP layer.
pub trait PlayAccess: Send + Sync + 'static {
    fn authorize<'a>(
        &'a self,
        channel: &'a str,
        token: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, crate::Result<()>>;
}

/// OWASP minimum for Argon2id: memory cost in KiB.
const ARGON2_M_COST_KIB: u32 = 19_456;
/// OWASP minimum for Argon2id: iterations.
const ARGON2_T_COST: u32 = 2;
/// OWASP minimum for Argon2id: lanes.
const ARGON2_P_COST: u32 = 1;

fn argon2id() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .expect("OWASP Argon2id parameters are within argon2's limits");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with Argon2id and a fresh random salt; returns the PHC string to store.
pub async fn hash_password(password: String) -> crate::Result<String> {
    run_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2id()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("hashing password: {e}")))
    })
    .await
}

/// Whether `password` matches the stored PHC string `phc`. A wrong password is `Ok(false)`; a
/// malformed or unsupported stored hash is an `Internal` error.
pub async fn verify_password(password: String, phc: String) -> crate::Result<bool> {
    run_blocking(move || {
        let parsed = PasswordHash::new(&phc)
            .map_err(|e| Error::internal(format!("stored password hash is malformed: {e}")))?;
        match argon2id().verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(Error::internal(format!("verifying password hash: {e}"))),
        }
    })
    .await
}

/// Bounds concurrent Argon2 work and makes an unknown account cost the same as a wrong
/// password: both run one full verification.
#[derive(Clone)]
pub struct PasswordGate {
    permits: Arc<tokio::sync::Semaphore>,
    /// A hash of a random password, verified when the account does not exist (or has no
    /// password), so the response time does not tell whether an email is registered.
    dummy_phc: Arc<String>,
}

impl PasswordGate {
    /// `max_concurrent` hashes at once (each takes 19 MiB); more callers wait in line.
    pub async fn new(max_concurrent: usize) -> crate::Result<PasswordGate> {
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut OsRng, &mut random);
        let dummy_phc = hash_password(hex::encode(random)).await?;
        Ok(PasswordGate {
            permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            dummy_phc: Arc::new(dummy_phc),
        })
    }

    /// Hashes a new password, waiting for a permit.
    pub async fn hash(&self, password: String) -> crate::Result<String> {
        let _permit =
            self.permits.acquire().await.map_err(|_| Error::unavailable("password hashing closed"))?;
        hash_password(password).await
    }

    /// Whether `password` matches `stored`; with `None` (no such account, or no password) a
    /// dummy hash is verified and the answer is `false`, in the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> crate::Result<bool> {
        let _permit =
            self.permits.acquire().await.map_err(|_| Error::unavailable("password hashing closed"))?;
        match stored {
            Some(phc) => verify_password(password, phc).await,
            None => {
                let _ = verify_password(password, self.dummy_phc.as_ref().clone()).await?;
                Ok(false)
            }
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "password hashing task failed", e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let phc = hash_password("correct horse battery staple".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse battery staple".into(), phc.clone()).await.unwrap());
        assert!(!verify_password("Correct horse battery staple".into(), phc.clone()).await.unwrap());
        assert!(!verify_password(String::new(), phc).await.unwrap());
    }

    #[tokio::test]
    async fn same_password_gets_a_fresh_salt() {
        let a = hash_password("hunter2".into()).await.unwrap();
        let b = hash_password("hunter2".into()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn malformed_stored_hash_is_internal_and_does_not_echo_it() {
        let err = verify_password("pw".into(), "not-a-phc-string-secret".into()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(!err.to_string().contains("not-a-phc-string-secret"), "{err}");
    }
}
