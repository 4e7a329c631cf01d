//! Subscriptions and billing events.
//!
//! A subscription entitles its user to the channels of its plan (plans live in config) while
//! `status = 'active'` and `current_period_end_ms` is in the future: expiry needs no job, it is
//! read as such ([`Subscription::effective_status`]). Provider events are applied through
//! [`Store::apply_billing_event`], which records the event id in `billing_events` in the same
//! transaction as its effect, so a redelivered event changes nothing (exactly once).

use serde::Serialize;

use super::{now_ms, Store};
use crate::error::{Error, ErrorKind};

/// Lifecycle of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    /// Checkout started, not paid yet.
    Pending,
    Active,
    Canceled,
    Expired,
}

impl SubscriptionStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }

    fn parse(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "active" => Self::Active,
            "canceled" => Self::Canceled,
            "expired" => Self::Expired,
            other => return Err(Error::internal(format!("invalid stored subscription status '{other}'"))),
        })
    }
}

/// A subscription as stored (the provider's references stay inside the store).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: i64,
    pub user_id: i64,
    pub plan_id: String,
    /// `manual` or `stripe`.
    pub provider: String,
    pub status: SubscriptionStatus,
    pub current_period_end_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Subscription {
    /// The status as of `now_ms`: an active subscription past its period end is expired.
    pub fn effective_status(&self, now_ms: i64) -> SubscriptionStatus {
        if self.status == SubscriptionStatus::Active && self.current_period_end_ms <= now_ms {
            SubscriptionStatus::Expired
        } else {
            self.status
        }
    }
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: i64,
    user_id: i64,
    plan_id: String,
    provider: String,
    status: String,
    current_period_end_ms: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = Error;
    fn try_from(r: SubscriptionRow) -> crate::Result<Self> {
        Ok(Subscription {
            id: r.id,
            user_id: r.user_id,
            plan_id: r.plan_id,
            provider: r.provider,
            status: SubscriptionStatus::parse(&r.status)?,
            current_period_end_ms: r.current_period_end_ms,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

const SUB_COLUMNS: &str =
    "id, user_id, plan_id, provider, status, current_period_end_ms, created_at_ms, updated_at_ms";

/// What a verified provider event does to our subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingAction {
    /// Checkout completed: activate our subscription `subscription_id` until `period_end_ms`
    /// and remember the provider's subscription id for later events.
    Activate { subscription_id: i64, provider_subscription: Option<String>, period_end_ms: i64 },
    /// A renewal was paid: extend to `period_end_ms`.
    Extend { provider_subscription: String, period_end_ms: i64 },
    /// The provider ended the subscription.
    Cancel { provider_subscription: String },
    /// An event we do not act on (still recorded, so it is acknowledged once).
    Ignore,
}

impl Store {
    /// Creates a subscription row.
    pub async fn create_subscription(
        &self,
        user_id: i64,
        plan_id: &str,
        provider: &str,
        status: SubscriptionStatus,
        period_end_ms: i64,
    ) -> crate::Result<Subscription> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO subscriptions (user_id, plan_id, provider, status, current_period_end_ms, \
               created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {SUB_COLUMNS}"
        );
        let row: SubscriptionRow = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(user_id)
                .bind(plan_id)
                .bind(provider)
                .bind(status.as_str())
                .bind(period_end_ms)
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::with_source(ErrorKind::NotFound, format!("user {user_id} not found"), e)
            }
            _ => Error::from(e),
        })?;
        row.try_into()
    }

    /// Records the provider's reference (e.g. a Checkout Session id) on a pending subscription.
    pub async fn set_subscription_provider_ref(&self, id: i64, provider_ref: &str) -> crate::Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE subscriptions SET provider_ref = $1, updated_at_ms = $2 WHERE id = $3")
                .bind(provider_ref)
                .bind(now_ms())
                .bind(id)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })?;
        Ok(())
    }

    pub async fn subscription_by_id(&self, id: i64) -> crate::Result<Option<Subscription>> {
        let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1");
        let row: Option<SubscriptionRow> =
            with_pool!(self, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        row.map(Subscription::try_from).transpose()
    }

    /// A user's subscriptions, newest first.
    pub async fn list_subscriptions(&self, user_id: i64) -> crate::Result<Vec<Subscription>> {
        let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE user_id = $1 ORDER BY id DESC");
        let rows: Vec<SubscriptionRow> =
            with_pool!(self, |pool| sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await)?;
        rows.into_iter().map(Subscription::try_from).collect()
    }

    /// Plan ids of the user's subscriptions that are active at `now_ms`.
    pub async fn active_plan_ids(&self, user_id: i64, now_ms: i64) -> crate::Result<Vec<String>> {
        let ids: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT DISTINCT plan_id FROM subscriptions \
                 WHERE user_id = $1 AND status = 'active' AND current_period_end_ms > $2",
            )
            .bind(user_id)
            .bind(now_ms)
            .fetch_all(pool)
            .await
        })?;
        Ok(ids)
    }

    /// Sets a subscription's status (and period end, if given). `NotFound` if it does not exist.
    pub async fn set_subscription_status(
        &self,
        id: i64,
        status: SubscriptionStatus,
        period_end_ms: Option<i64>,
    ) -> crate::Result<Subscription> {
        let sql = format!(
            "UPDATE subscriptions SET status = $1, current_period_end_ms = COALESCE($2, current_period_end_ms), \
             updated_at_ms = $3 WHERE id = $4 RETURNING {SUB_COLUMNS}"
        );
        let row: Option<SubscriptionRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(status.as_str())
                .bind(period_end_ms)
                .bind(now_ms())
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        row.ok_or_else(|| Error::not_found(format!("subscription {id} not found")))?.try_into()
    }

    /// Applies a verified provider event exactly once. Returns `false` (and changes nothing) if
    /// `event_id` was applied before.
    pub async fn apply_billing_event(
        &self,
        event_id: &str,
        event_type: &str,
        action: &BillingAction,
    ) -> crate::Result<bool> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO billing_events (event_id, event_type, received_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(event_type)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            match action {
                BillingAction::Activate { subscription_id, provider_subscription, period_end_ms } => {
                    sqlx::query(
                        "UPDATE subscriptions SET status = 'active', current_period_end_ms = $1, \
                         provider_subscription = COALESCE($2, provider_subscription), updated_at_ms = $3 \
                         WHERE id = $4 AND status IN ('pending', 'active')",
                    )
                    .bind(period_end_ms)
                    .bind(provider_subscription.as_deref())
                    .bind(now)
                    .bind(subscription_id)
                    .execute(&mut *tx)
                    .await?;
                }
                BillingAction::Extend { provider_subscription, period_end_ms } => {
                    sqlx::query(
                        "UPDATE subscriptions SET status = 'active', \
                         current_period_end_ms = CASE WHEN current_period_end_ms > $1 THEN current_period_end_ms ELSE $1 END, \
                         updated_at_ms = $2 WHERE provider_subscription = $3 AND status <> 'canceled'",
                    )
                    .bind(period_end_ms)
                    .bind(now)
                    .bind(provider_subscription)
                    .execute(&mut *tx)
                    .await?;
                }
                BillingAction::Cancel { provider_subscription } => {
                    sqlx::query(
                        "UPDATE subscriptions SET status = 'canceled', updated_at_ms = $1 \
                         WHERE provider_subscription = $2",
                    )
                    .bind(now)
                    .bind(provider_subscription)
                    .execute(&mut *tx)
                    .await?;
                }
                BillingAction::Ignore => {}
            }
            tx.commit().await?;
            Ok(true)
        })
    }
}
