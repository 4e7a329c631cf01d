//! `[billing]`: the plans users subscribe to and the payment provider behind them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration_str;

/// Which payment provider `POST /subscriptions` goes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BillingProvider {
    /// An admin grants and revokes subscriptions (self-hosting, no payment).
    #[default]
    Manual,
    /// Stripe Checkout; subscriptions activate through the signed webhook.
    Stripe,
}

/// One plan users can subscribe to (`[[billing.plans]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Stable identifier used in the API (`[a-z0-9_-]`).
    pub id: String,
    /// Name shown to users.
    pub name: String,
    /// Price per period in the currency's minor unit (cents).
    pub price_cents: i64,
    /// ISO 4217 currency code, lowercase (`"usd"`).
    pub currency: String,
    /// Billing period: how long a grant or a payment lasts.
    #[serde(with = "duration_str")]
    pub period: Duration,
    /// Channels the plan unlocks; `["*"]` means every channel.
    pub channels: Vec<String>,
    /// Stripe Price id (`price_...`) for the `stripe` provider.
    #[serde(default)]
    pub stripe_price_id: String,
}

impl PlanConfig {
    /// Whether this plan unlocks `channel`.
    pub fn covers(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == "*" || c == channel)
    }
}

/// `[billing]`: plans and the payment provider.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// `manual` or `stripe`.
    pub provider: BillingProvider,
    /// Stripe API base URL (tests point it at a local mock).
    pub stripe_api_base: String,
    /// Stripe secret API key (`sk_...`); prefer the env or the file.
    pub stripe_secret_key: String,
    /// File holding the Stripe secret API key.
    pub stripe_secret_key_file: PathBuf,
    /// Stripe webhook signing secret (`whsec_...`); prefer the env or the file.
    pub stripe_webhook_secret: String,
    /// File holding the webhook signing secret.
    pub stripe_webhook_secret_file: PathBuf,
    /// Webhook timestamps older (or newer) than this are refused, against replays.
    #[serde(with = "duration_str")]
    pub webhook_tolerance: Duration,
    /// Where Stripe Checkout sends the user after paying.
    pub success_url: String,
    /// Where Stripe Checkout sends the user who gave up.
    pub cancel_url: String,
    /// The plans on offer.
    pub plans: Vec<PlanConfig>,
}

impl fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("BillingConfig")
            .field("provider", &self.provider)
            .field("stripe_api_base", &self.stripe_api_base)
            .field("stripe_secret_key", &redact(&self.stripe_secret_key))
            .field("stripe_secret_key_file", &self.stripe_secret_key_file)
            .field("stripe_webhook_secret", &redact(&self.stripe_webhook_secret))
            .field("stripe_webhook_secret_file", &self.stripe_webhook_secret_file)
            .field("webhook_tolerance", &self.webhook_tolerance)
            .field("success_url", &self.success_url)
            .field("cancel_url", &self.cancel_url)
            .field("plans", &self.plans)
            .finish()
    }
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            provider: BillingProvider::Manual,
            stripe_api_base: "https://api.stripe.com".to_owned(),
            stripe_secret_key: String::new(),
            stripe_secret_key_file: PathBuf::new(),
            stripe_webhook_secret: String::new(),
            stripe_webhook_secret_file: PathBuf::new(),
            webhook_tolerance: Duration::from_secs(300),
            success_url: "http://localhost:8080/".to_owned(),
            cancel_url: "http://localhost:8080/".to_owned(),
            plans: Vec::new(),
        }
    }
}
