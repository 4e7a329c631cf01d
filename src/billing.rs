//! Plans, subscriptions and the payment-provider interface.
//!
//! Two providers sit behind [`Billing`]:
//! - `manual` (self-hosting): an admin grants a plan to a user for one period and can revoke
//!   it; there is no payment.
//! - `stripe`: `POST /subscriptions` creates a pending subscription and a Stripe Checkout
//!   Session, and returns its URL. The subscription becomes active only through the signed
//!   webhook (`checkout.session.completed`), is extended by `invoice.paid` and ended by
//!   `customer.subscription.deleted`. See [`stripe`] for the signature check.
//!
//! Expiry needs no job: a subscription whose period ended is read as expired
//! (`Subscription::effective_status`) and stops entitling at once.

pub mod stripe;

use std::path::Path;
use std::time::Duration;

use crate::config::{BillingConfig, BillingProvider, PlanConfig};
use crate::error::{Error, ErrorKind};
use crate::store::{now_ms, BillingAction, Store, Subscription, SubscriptionStatus};
use stripe::{StripeClient, StripeEvent};

/// What `POST /subscriptions` produced.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub subscription: Subscription,
    /// Where to send the user to pay (Stripe); `None` when nothing is left to do.
    pub checkout_url: Option<String>,
}

/// The configured plans and provider.
pub struct Billing {
    plans: Vec<PlanConfig>,
    provider: Provider,
}

enum Provider {
    Manual,
    Stripe { client: StripeClient, webhook_secret: String, tolerance: Duration },
}

/// Reads a secret from `inline` or else `file` (trimmed). Empty if neither is set.
pub fn read_secret(inline: &str, file: &Path, what: &str) -> crate::Result<String> {
    if !inline.is_empty() {
        return Ok(inline.trim().to_owned());
    }
    if file.as_os_str().is_empty() {
        return Ok(String::new());
    }
    std::fs::read_to_string(file).map(|s| s.trim().to_owned()).map_err(|e| {
        Error::with_source(ErrorKind::FailedPrecondition, format!("{what}: reading {}", file.display()), e)
    })
}

impl Billing {
    pub fn new(cfg: &BillingConfig) -> crate::Result<Billing> {
        let provider = match cfg.provider {
            BillingProvider::Manual => Provider::Manual,
            BillingProvider::Stripe => {
                let key = read_secret(
                    &cfg.stripe_secret_key,
                    &cfg.stripe_secret_key_file,
                    "billing.stripe_secret_key",
                )?;
                let webhook_secret = read_secret(
                    &cfg.stripe_webhook_secret,
                    &cfg.stripe_webhook_secret_file,
                    "billing.stripe_webhook_secret",
                )?;
                if key.is_empty() || webhook_secret.is_empty() {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        "billing.provider = \"stripe\" needs stripe_secret_key and stripe_webhook_secret \
                         (or their *_file)",
                    ));
                }
                Provider::Stripe {
                    client: StripeClient::new(&cfg.stripe_api_base, key, &cfg.success_url, &cfg.cancel_url)?,
                    webhook_secret,
                    tolerance: cfg.webhook_tolerance,
                }
            }
        };
        Ok(Billing { plans: cfg.plans.clone(), provider })
    }

    pub fn provider_name(&self) -> &'static str {
        match self.provider {
            Provider::Manual => "manual",
            Provider::Stripe { .. } => "stripe",
        }
    }

    pub fn plans(&self) -> &[PlanConfig] {
        &self.plans
    }

    pub fn plan(&self, id: &str) -> crate::Result<&PlanConfig> {
        self.plans.iter().find(|p| p.id == id).ok_or_else(|| Error::not_found(format!("no plan '{id}'")))
    }

    /// Whether one of `plan_ids` unlocks `channel`.
    pub fn covers(&self, plan_ids: &[String], channel: &str) -> bool {
        self.plans.iter().any(|p| plan_ids.contains(&p.id) && p.covers(channel))
    }

    /// Channels named by the plans in `plan_ids` (`None` if one covers every channel).
    pub fn covered_channels(&self, plan_ids: &[String]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for p in self.plans.iter().filter(|p| plan_ids.contains(&p.id)) {
            if p.channels.iter().any(|c| c == "*") {
                return None;
            }
            out.extend(p.channels.iter().cloned());
        }
        Some(out)
    }

    /// Manual provider: an admin grants `plan_id` to `user_id` for one period from now.
    pub async fn grant(&self, store: &Store, user_id: i64, plan_id: &str) -> crate::Result<Subscription> {
        let plan = self.plan(plan_id)?;
        let end = now_ms() + plan.period.as_millis() as i64;
        store.create_subscription(user_id, &plan.id, "manual", SubscriptionStatus::Active, end).await
    }

    /// A user asks to subscribe. Manual: refused (an admin grants). Stripe: a pending
    /// subscription and a Checkout Session.
    pub async fn subscribe(&self, store: &Store, user_id: i64, plan_id: &str) -> crate::Result<Checkout> {
        let plan = self.plan(plan_id)?;
        match &self.provider {
            Provider::Manual => Err(Error::new(
                ErrorKind::PermissionDenied,
                "subscriptions on this server are granted by an administrator",
            )),
            Provider::Stripe { client, .. } => {
                let sub = store
                    .create_subscription(user_id, &plan.id, "stripe", SubscriptionStatus::Pending, 0)
                    .await?;
                let session = client.create_checkout_session(plan, sub.id, user_id).await?;
                store.set_subscription_provider_ref(sub.id, &session.id).await?;
                Ok(Checkout { subscription: sub, checkout_url: Some(session.url) })
            }
        }
    }

    /// Handles a webhook delivery: verifies the signature (with the tolerance window), then
    /// applies the event exactly once. Returns whether it was applied now (`false`: a
    /// duplicate delivery, acknowledged without effect).
    pub async fn webhook(
        &self,
        store: &Store,
        signature: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> crate::Result<bool> {
        let Provider::Stripe { webhook_secret, tolerance, .. } = &self.provider else {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                "no payment provider with webhooks is configured",
            ));
        };
        let signature = signature.ok_or_else(|| Error::invalid("missing Stripe-Signature header"))?;
        stripe::verify_signature(webhook_secret, signature, body, now_unix, *tolerance)?;
        let event: StripeEvent =
            serde_json::from_slice(body).map_err(|_| Error::invalid("webhook body is not a Stripe event"))?;
        let action = self.action_for(store, &event).await?;
        store.apply_billing_event(&event.id, &event.kind, &action).await
    }

    async fn action_for(&self, store: &Store, event: &StripeEvent) -> crate::Result<BillingAction> {
        let obj = &event.data.object;
        Ok(match event.kind.as_str() {
            "checkout.session.completed" => {
                let Some(id) =
                    obj.get("client_reference_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok())
                else {
                    return Ok(BillingAction::Ignore);
                };
                let Some(sub) = store.subscription_by_id(id).await? else {
                    return Ok(BillingAction::Ignore);
                };
                let period =
                    self.plan(&sub.plan_id).map(|p| p.period).unwrap_or(Duration::from_secs(30 * 86400));
                BillingAction::Activate {
                    subscription_id: id,
                    provider_subscription: obj
                        .get("subscription")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    period_end_ms: now_ms() + period.as_millis() as i64,
                }
            }
            "invoice.paid" => {
                let sub = obj.get("subscription").and_then(|v| v.as_str());
                let end = obj.pointer("/lines/data/0/period/end").and_then(|v| v.as_i64());
                match (sub, end) {
                    (Some(sub), Some(end)) => BillingAction::Extend {
                        provider_subscription: sub.to_owned(),
                        period_end_ms: end * 1000,
                    },
                    _ => BillingAction::Ignore,
                }
            }
            "customer.subscription.deleted" => match obj.get("id").and_then(|v| v.as_str()) {
                Some(id) => BillingAction::Cancel { provider_subscription: id.to_owned() },
                None => BillingAction::Ignore,
            },
            _ => BillingAction::Ignore,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    const PLANS: &str = r#"
[billing]
provider = "stripe"
stripe_secret_key_file = "SECRET_FILE"
[[billing.plans]]
id = "gold"
name = "Gold"
price_cents = 500
currency = "usd"
period = "30days"
channels = ["*"]
stripe_price_id = "price_gold"
[[billing.plans]]
id = "news"
name = "News only"
price_cents = 100
currency = "usd"
period = "7days"
channels = ["news", "weather"]
stripe_price_id = "price_news"
"#;

    #[test]
    fn plans_and_secrets_load_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("stripe.key");
        std::fs::write(&secret, "sk_test_from_file\n").unwrap();
        let toml = dir.path().join("c.toml");
        std::fs::write(&toml, PLANS.replace("SECRET_FILE", &secret.display().to_string())).unwrap();
        let env = [
            ("TIDECAST__BILLING__STRIPE_WEBHOOK_SECRET".to_owned(), "whsec_env".to_owned()),
            ("TIDECAST__AUTH__JWT_SECRET".to_owned(), format!("k1:{}", "s".repeat(32))),
        ];
        let config = Config::load_with_env(Some(&toml), &env).unwrap();
        assert_eq!(config.billing.plans.len(), 2);
        assert_eq!(config.billing.plans[0].period, Duration::from_secs(30 * 86400));
        // Secrets never show in Debug output.
        let debug = format!("{config:?}");
        assert!(!debug.contains("whsec_env") && !debug.contains(&"s".repeat(32)), "{debug}");
        let key = read_secret(&config.billing.stripe_secret_key, &config.billing.stripe_secret_key_file, "k")
            .unwrap();
        assert_eq!(key, "sk_test_from_file");

        let billing = Billing::new(&config.billing).unwrap();
        assert_eq!(billing.provider_name(), "stripe");
        let gold = vec!["gold".to_owned()];
        let news = vec!["news".to_owned()];
        assert!(billing.covers(&gold, "anything"));
        assert!(billing.covers(&news, "weather") && !billing.covers(&news, "sports"));
        assert_eq!(billing.covered_channels(&gold), None);
        assert_eq!(billing.covered_channels(&news), Some(vec!["news".into(), "weather".into()]));
        assert_eq!(billing.plan("nope").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn stripe_without_secrets_is_refused_and_bad_plans_are_reported() {
        let mut cfg = Config::default();
        cfg.billing.provider = BillingProvider::Stripe;
        assert_eq!(Billing::new(&cfg.billing).err().unwrap().kind, ErrorKind::FailedPrecondition);
        cfg.billing.plans = vec![
            PlanConfig {
                id: "Bad Id".into(),
                name: "x".into(),
                price_cents: -1,
                currency: "usd".into(),
                period: Duration::ZERO,
                channels: vec![],
                stripe_price_id: String::new(),
            };
            2
        ];
        let ConfigError::Invalid(problems) = cfg.validate().unwrap_err() else { panic!("expected Invalid") };
        for key in [
            "plans[0].id",
            "plans[0].price_cents",
            "plans[0].period",
            "plans[0].channels",
            "plans[0].stripe_price_id",
            "plans[1].id",
        ] {
            assert!(problems.iter().any(|p| p.contains(key)), "{key}: {problems:#?}");
        }
        assert!(read_secret("", Path::new("/nonexistent/secret"), "x").is_err());
    }
}
