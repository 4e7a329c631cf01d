//! Operational endpoints: Prometheus metrics, liveness, readiness.

use actix_web::{web, HttpResponse};

use super::error::error_response;
use super::AppState;
use crate::error::ErrorKind;
use crate::metrics::metrics;

pub async fn metrics_text() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(metrics().render())
}

/// Liveness: the process answers HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answers a query. Answers within a second either way (`Store::ping`):
/// 503 while the database is unreachable, at once while the store's circuit is open, and 200
/// again within about `database.breaker_cooldown` of the database coming back.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            error_response(ErrorKind::Unavailable, "store unavailable")
        }
    }
}
