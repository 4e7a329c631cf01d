//! Accounts: register, sign in (rate-limited, constant-answer), sign out (revocation), the
//! caller's profile and watch history; and the OpenAPI document.
//!
//! Login answers an unknown email and a wrong password with the same 401 and message, after
//! the same work (one Argon2id verification, against a dummy hash when there is no account),
//! so neither the answer nor its timing tells whether an email is registered.
//!
//! Limits, all within `auth.login_window` (shared state: Redis when configured), each a 429
//! with `Retry-After`, as identity services do it (failures counted per account *and* address,
//! so a guesser locks out only themselves):
//! - attempts per client address (`login_max_per_ip`): one address spraying many accounts;
//! - failures per (account, address) pair (`login_max_failures`): past it, that address gets
//!   429 for that account whatever the password, or it could keep guessing;
//! - failures per account from every address (`login_max_account_failures`), the softer one:
//!   past it, addresses that already failed 3 times on the account are refused too, so a
//!   botnet gets 3 guesses per address; a correct password from an address that has not
//!   failed (the account's owner at home) still signs in.
//!
//! A successful login clears its own pair's failures only: the account's count keeps the
//! distributed guessers slowed down.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::{check_text, page_limit, unix_now, ApiContext, Caller, ErrorBody, API_PREFIX};
use crate::error::{Error, ErrorKind};
use crate::metrics::metrics;
use crate::store::{HistoryEntry, NewUser};

/// Longest password accepted: Argon2 hashes any length, but a megabyte password is a DoS.
const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// `name@domain`, stored lowercased and trimmed (so it is not declared `format: email`,
    /// which refuses the spaces a pasted address brings). The schema describes printable ASCII
    /// addresses; internationalized ones are accepted too, up to 254 bytes once lowercased.
    #[schema(max_length = 254, pattern = r"^ *[!-?A-~][ -?A-~]*@[ -~]*[!-~] *$")]
    pub email: String,
    /// `auth.min_password_len` (default 8) to 1024 characters, no NUL.
    #[schema(min_length = 8, max_length = 1024, pattern = r"^[^\u0000]*$")]
    pub password: String,
    /// 1-64 characters once trimmed, no control characters.
    #[schema(
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub is_admin: bool,
    pub created_at_ms: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Create an account.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "users",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserView),
        (status = 400, description = "Invalid email, username or password", body = ErrorBody),
        (status = 409, description = "Email or username taken", body = ErrorBody),
    )
)]
#[post("/users/register")]
pub async fn register(
    ctx: web::Data<ApiContext>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    check_text("username", &body.username, 64, false)?;
    check_text("email", &body.email, 254, false)?;
    let len = body.password.chars().count();
    if len < ctx.auth.min_password_len || len > MAX_PASSWORD_LEN {
        return Err(Error::invalid(format!(
            "password must be {}-{MAX_PASSWORD_LEN} characters",
            ctx.auth.min_password_len
        )));
    }
    if body.password.contains('\0') {
        return Err(Error::invalid("password must not contain NUL"));
    }
    let password_hash = Some(ctx.passwords.hash(body.password).await?);
    let user = ctx
        .store
        .create_user(NewUser { email: body.email, username: body.username, password_hash, is_admin: false })
        .await?;
    tracing::info!(user_id = user.id, "user registered");
    Ok(HttpResponse::Created().json(UserView {
        id: user.id,
        email: user.email,
        username: user.username,
        is_admin: user.is_admin,
        created_at_ms: user.created_at_ms,
    }))
}

/// Failures an address may have on an account once the account as a whole is past
/// `login_max_account_failures` (a user's own typos during an attack stay allowed).
const PAIR_FAILURES_UNDER_ATTACK: u64 = 3;

/// The limits are fixed windows that start at their first hit, so the whole window is the
/// longest wait: a client that retries after it is never refused by the same window.
fn too_many(window: std::time::Duration) -> Error {
    Error::exhausted("too many login attempts; try again later", window)
}

/// A limiter bucket for `parts` that names no email or address in the shared state.
fn bucket(kind: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("login:{kind}:{}", hex::encode(h.finalize()))
}

/// Sign in with email and password; returns a bearer access token.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "users",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Unknown email or wrong password (same answer)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address, or for this account from this address", body = ErrorBody),
    )
)]
#[post("/auth/login")]
pub async fn login(
    ctx: web::Data<ApiContext>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let a = &ctx.auth;
    let window = a.login_window;
    let ip = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
    if ctx.shared.hit(&format!("login:ip:{ip}"), window).await > u64::from(a.login_max_per_ip) {
        return Err(too_many(window));
    }
    // Keyed by the normalized email whether or not the account exists, so the limits
    // themselves do not reveal which emails are registered.
    let email = body.email.trim().to_lowercase();
    let account_bucket = bucket("acct", &[&email]);
    let pair_bucket = bucket("pair", &[&email, &ip]);
    let pair_failures = ctx.shared.count(&pair_bucket).await;
    let under_attack = ctx.shared.count(&account_bucket).await >= u64::from(a.login_max_account_failures);
    let pair_limit = if under_attack {
        PAIR_FAILURES_UNDER_ATTACK.min(u64::from(a.login_max_failures))
    } else {
        u64::from(a.login_max_failures)
    };
    if pair_failures >= pair_limit {
        return Err(too_many(window));
    }
    let user = if email.len() <= 254 { ctx.store.user_by_email(&email).await? } else { None };
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = ctx.passwords.verify(body.password, stored).await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            ctx.shared.hit(&pair_bucket, window).await;
            ctx.shared.hit(&account_bucket, window).await;
            metrics().auth_failures.with_label_values(&["api"]).inc();
            return Err(Error::new(ErrorKind::Unauthenticated, "invalid email or password"));
        }
    };
    ctx.shared.reset(&pair_bucket).await;
    let (token, _) = ctx.jwt.issue(user.id, user.is_admin, unix_now())?;
    Ok(HttpResponse::Ok().json(TokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: ctx.jwt.ttl().as_secs(),
    }))
}

/// Revoke the access token used for this call.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "users",
    security(("bearer" = [])),
    responses((status = 204, description = "Token revoked"), (status = 401, body = ErrorBody))
)]
#[post("/auth/logout")]
pub async fn logout(ctx: web::Data<ApiContext>, caller: Caller) -> Result<HttpResponse, Error> {
    ctx.revocations.revoke(&caller.claims.jti, caller.claims.exp).await;
    Ok(HttpResponse::NoContent().finish())
}

/// The signed-in user.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody))
)]
#[get("/users/me")]
pub async fn me(ctx: web::Data<ApiContext>, caller: Caller) -> Result<HttpResponse, Error> {
    let user = ctx
        .store
        .user_by_id(caller.user_id)
        .await?
        .ok_or_else(|| crate::http::error::invalid_token("the account no longer exists"))?;
    Ok(HttpResponse::Ok().json(UserView {
        id: user.id,
        email: user.email,
        username: user.username,
        is_admin: user.is_admin,
        created_at_ms: user.created_at_ms,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Page size (default 20); clamped to 1-100.
    pub limit: Option<i64>,
    /// Cursor: `next_cursor` of the previous page.
    pub before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    #[serde(flatten)]
    pub entry: HistoryEntry,
    /// Resume position.
    pub position_seconds: f64,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// The caller's watch history, newest first, with resume positions.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "users",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 401, body = ErrorBody))
)]
#[get("/users/me/history")]
pub async fn history(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    q: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Error> {
    let limit = page_limit(q.limit);
    let entries = ctx.store.watch_history(caller.user_id, q.before, limit).await?;
    let next_cursor =
        if entries.len() as i64 == limit { entries.last().map(|e| e.updated_at_ms) } else { None };
    let items = entries
        .into_iter()
        .map(|entry| HistoryItem { position_seconds: entry.position_ms as f64 / 1000.0, entry })
        .collect();
    Ok(HttpResponse::Ok().json(HistoryPage { items, next_cursor }))
}

/// This document.
#[utoipa::path(context_path = API_PREFIX, tag = "meta", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
#[get("/openapi.json")]
pub async fn openapi_json(ctx: web::Data<ApiContext>) -> HttpResponse {
    HttpResponse::Ok().json(super::document(&ctx.api, &ctx.auth))
}
