//! Plans, subscriptions and the payment provider's webhook.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{unix_now, ApiContext, Caller, ErrorBody, API_PREFIX};
use crate::error::{Error, ErrorKind};
use crate::store::{now_ms, Subscription, SubscriptionStatus};

#[derive(Serialize, ToSchema)]
pub struct PlanView {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub period_seconds: u64,
    /// Channel names, or `*` for every channel.
    pub channels: Vec<String>,
}

/// The plans on offer.
#[utoipa::path(context_path = API_PREFIX, tag = "billing", responses((status = 200, body = Vec<PlanView>)))]
#[get("/plans")]
pub async fn list_plans(ctx: web::Data<ApiContext>) -> HttpResponse {
    let plans: Vec<PlanView> = ctx
        .billing
        .plans()
        .iter()
        .map(|p| PlanView {
            id: p.id.clone(),
            name: p.name.clone(),
            price_cents: p.price_cents,
            currency: p.currency.clone(),
            period_seconds: p.period.as_secs(),
            channels: p.channels.clone(),
        })
        .collect();
    HttpResponse::Ok().json(plans)
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub subscription: Subscription,
}

fn view(mut s: Subscription) -> SubscriptionView {
    s.status = s.effective_status(now_ms());
    SubscriptionView { subscription: s }
}

/// The caller's subscriptions, newest first (`status` accounts for expiry).
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "billing",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<SubscriptionView>), (status = 401, body = ErrorBody))
)]
#[get("/subscriptions")]
pub async fn list_subscriptions(ctx: web::Data<ApiContext>, caller: Caller) -> Result<HttpResponse, Error> {
    let subs: Vec<SubscriptionView> =
        ctx.store.list_subscriptions(caller.user_id).await?.into_iter().map(view).collect();
    Ok(HttpResponse::Ok().json(subs))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    pub plan_id: String,
    /// Admins with the `manual` provider: grant the plan to this user.
    #[serde(default, deserialize_with = "super::integral")]
    pub user_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscribeResponse {
    pub subscription: SubscriptionView,
    /// Stripe: send the user here to pay; the subscription activates through the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

/// Subscribe to a plan. `manual`: an admin grants (`user_id`); `stripe`: a pending
/// subscription and a Checkout URL.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "billing",
    security(("bearer" = [])),
    request_body = SubscribeRequest,
    responses(
        (status = 201, body = SubscribeResponse),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "Payment provider unavailable", body = ErrorBody),
    )
)]
#[post("/subscriptions")]
pub async fn create_subscription(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    body: web::Json<SubscribeRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    if ctx.billing.provider_name() == "manual" {
        if !caller.is_admin {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "subscriptions on this server are granted by an administrator",
            ));
        }
        let user_id = body.user_id.unwrap_or(caller.user_id);
        let sub = ctx.billing.grant(&ctx.store, user_id, &body.plan_id).await?;
        ctx.invalidate_plans(Some(user_id));
        tracing::info!(user_id, plan = %sub.plan_id, by = caller.user_id, "subscription granted");
        return Ok(
            HttpResponse::Created().json(SubscribeResponse { subscription: view(sub), checkout_url: None })
        );
    }
    if body.user_id.is_some_and(|u| u != caller.user_id) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "with a payment provider, users subscribe themselves",
        ));
    }
    let checkout = ctx.billing.subscribe(&ctx.store, caller.user_id, &body.plan_id).await?;
    Ok(HttpResponse::Created().json(SubscribeResponse {
        subscription: view(checkout.subscription),
        checkout_url: checkout.checkout_url,
    }))
}

/// Revoke (cancel) a subscription now: admins.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "billing",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[delete("/subscriptions/{id}")]
pub async fn revoke_subscription(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse, Error> {
    if !caller.is_admin {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "only an administrator may revoke a subscription",
        ));
    }
    let sub = ctx.store.set_subscription_status(*id, SubscriptionStatus::Canceled, None).await?;
    ctx.invalidate_plans(Some(sub.user_id));
    tracing::info!(subscription = sub.id, by = caller.user_id, "subscription revoked");
    Ok(HttpResponse::Ok().json(view(sub)))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// The event was applied before; this delivery changed nothing.
    pub duplicate: bool,
}

/// Payment provider events (Stripe). The `Stripe-Signature` header is verified over the raw
/// body with a tolerance window; each event id is applied exactly once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "The provider's signature over the raw body")),
    request_body(content = String, description = "The provider's raw JSON event", content_type = "application/json"),
    responses(
        (status = 200, body = WebhookAck),
        (status = 400, description = "Bad signature, stale timestamp or malformed event", body = ErrorBody),
        (status = 412, description = "No webhook provider configured", body = ErrorBody),
    )
)]
#[post("/billing/webhook")]
pub async fn webhook(
    ctx: web::Data<ApiContext>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let signature = req.headers().get("Stripe-Signature").and_then(|v| v.to_str().ok());
    let applied = ctx.billing.webhook(&ctx.store, signature, &body, unix_now() as i64).await?;
    // Which user changed is not known here without another query; drop every cached plan.
    ctx.invalidate_plans(None);
    Ok(HttpResponse::Ok().json(WebhookAck { received: true, duplicate: !applied }))
}
