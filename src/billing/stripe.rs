//! The Stripe provider: Checkout Session creation and webhook signature verification.
//!
//! Signature scheme (Stripe docs, "Verify webhook signatures manually"): the
//! `Stripe-Signature` header is `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...][,v0=...]`; the
//! signed payload is `"{t}.{raw body}"` with the endpoint's `whsec_` secret as the key. We
//! accept any `v1` that matches (Stripe sends several while a secret is being rolled), compare
//! in constant time, and refuse a timestamp further than the tolerance from now (replays).
//! Exactly-once application is the store's job (`billing_events`).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::PlanConfig;
use crate::error::{Error, ErrorKind};

type HmacSha256 = Hmac<Sha256>;

/// Longest header we parse.
const MAX_HEADER_LEN: usize = 4096;

/// The parts of an event we read.
#[derive(Debug, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: StripeEventData,
}

#[derive(Debug, Deserialize)]
pub struct StripeEventData {
    pub object: serde_json::Value,
}

/// What we need from a created Checkout Session.
#[derive(Debug, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// Computes the `v1` signature of `body` at `timestamp` (also used by tests to sign events).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a `Stripe-Signature` header. Errors are `InvalidArgument` (HTTP 400, which makes
/// Stripe retry later) and never echo the header.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance: Duration,
) -> crate::Result<()> {
    if header.len() > MAX_HEADER_LEN {
        return Err(Error::invalid("Stripe-Signature header is too long"));
    }
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => {
                if let Ok(bytes) = hex::decode(sig) {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| Error::invalid("Stripe-Signature header has no timestamp"))?;
    if candidates.is_empty() {
        return Err(Error::invalid("Stripe-Signature header has no v1 signature"));
    }
    let matched = candidates.iter().any(|sig| {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(sig).is_ok()
    });
    if !matched {
        return Err(Error::invalid("webhook signature does not match"));
    }
    if now_unix.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(Error::invalid("webhook timestamp is outside the tolerance window"));
    }
    Ok(())
}

/// A minimal Stripe API client: only what Checkout needs.
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
    success_url: String,
    cancel_url: String,
}

impl StripeClient {
    pub fn new(base: &str, secret_key: String, success_url: &str, cancel_url: &str) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Internal, "building the Stripe HTTP client", e))?;
        Ok(StripeClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret_key,
            success_url: success_url.to_owned(),
            cancel_url: cancel_url.to_owned(),
        })
    }

    /// `POST /v1/checkout/sessions` in subscription mode for `plan`; our subscription id rides
    /// in `client_reference_id` and comes back in `checkout.session.completed`.
    pub async fn create_checkout_session(
        &self,
        plan: &PlanConfig,
        subscription_id: i64,
        user_id: i64,
    ) -> crate::Result<CheckoutSession> {
        let form = [
            ("mode", "subscription".to_owned()),
            ("line_items[0][price]", plan.stripe_price_id.clone()),
            ("line_items[0][quantity]", "1".to_owned()),
            ("success_url", self.success_url.clone()),
            ("cancel_url", self.cancel_url.clone()),
            ("client_reference_id", subscription_id.to_string()),
            ("metadata[tidecast_user_id]", user_id.to_string()),
        ];
        let resp = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", format!("tidecast-checkout-{subscription_id}"))
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Unavailable, "contacting Stripe", e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::unavailable(format!(
                "Stripe refused the checkout session (HTTP {})",
                status.as_u16()
            )));
        }
        resp.json::<CheckoutSession>()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Unavailable, "unexpected answer from Stripe", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn valid_tampered_old_and_rolled_signatures() {
        let body = br#"{"id":"evt_1"}"#;
        let t = 1_700_000_000;
        let tol = Duration::from_secs(300);
        let good = sign(SECRET, t, body);
        verify_signature(SECRET, &format!("t={t},v1={good}"), body, t + 10, tol).unwrap();
        // Several v1 (secret roll) and a v0 are fine if one v1 matches.
        verify_signature(SECRET, &format!("t={t},v1={},v1={good},v0=abc", "00".repeat(32)), body, t, tol)
            .unwrap();
        // Tampered body.
        assert!(verify_signature(SECRET, &format!("t={t},v1={good}"), br#"{"id":"evt_2"}"#, t, tol).is_err());
        // Tampered timestamp.
        assert!(verify_signature(SECRET, &format!("t={},v1={good}", t + 1), body, t, tol).is_err());
        // Too old, and too far in the future.
        let err = verify_signature(SECRET, &format!("t={t},v1={good}"), body, t + 301, tol).unwrap_err();
        assert!(err.msg.contains("tolerance"), "{err}");
        assert!(verify_signature(SECRET, &format!("t={t},v1={good}"), body, t - 301, tol).is_err());
        // Wrong secret, garbage.
        assert!(verify_signature("whsec_other", &format!("t={t},v1={good}"), body, t, tol).is_err());
        for junk in ["", "t=", "v1=zz", &format!("t={t}"), &format!("v1={good}")] {
            assert_eq!(
                verify_signature(SECRET, junk, body, t, tol).unwrap_err().kind,
                ErrorKind::InvalidArgument
            );
        }
    }
}
