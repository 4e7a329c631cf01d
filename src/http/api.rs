//! The Platform API under `/api/v1` (PRODUCT.md, "HTTP API"): users and sign-in, channels,
//! videos and watch history, plans and subscriptions, search, feed, comments, and the OpenAPI
//! document generated from these handlers (`/api/v1/openapi.json`).
//!
//! Where it sits: HTTP handlers over [`ApiContext`] (store, token keys, shared state, the
//! `WatchHistory` actor, billing). SQL stays in `crate::store`; the entitlement rule is
//! `crate::auth::entitlements::can_play`; errors go through the one `ErrorKind` -> status
//! mapping (`http::error`), so every failure is `{"error": {"code", "message"}}`.
//!
//! Route table and OpenAPI document come from the same list (`api_routes!`): a handler is
//! either in both or in neither.
//!
//! Caches: a video's metadata and a user's active plan ids are cached for [`CACHE_TTL`] so the
//! hot paths (`POST /videos/{id}/watch`, `GET /videos/{id}`) do not hit the database every
//! time. Changes made through this node invalidate them at once; changes made elsewhere (another
//! node, a webhook on another node) are seen within `CACHE_TTL`.

pub mod billing;
pub mod channels;
mod context;
pub mod destinations;
mod document;
pub mod ladder;
pub mod recordings;
pub mod search;
pub mod sources;
pub mod users;
pub mod videos;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use context::{test_ring, ApiContext, CACHE_TTL};
pub use document::document;

use super::routes::Methods;
use crate::auth::entitlements::Viewer;
use crate::auth::jwt::AccessClaims;
use crate::error::{Error, ErrorKind};

/// Prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

/// The error body of every failed API call.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `unauthenticated`, `permission_denied`, `not_found`,
    /// `already_exists`, `conflict` (409), `failed_precondition`, `resource_exhausted`, `unavailable`,
    /// `internal`, `payload_too_large`, `unsupported_media_type` (415), or
    /// `method_not_allowed` (405, with an `Allow` header).
    pub code: String,
    pub message: String,
}

/// The signed-in caller: a verified, unrevoked access token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub is_admin: bool,
    pub claims: AccessClaims,
}

impl Caller {
    pub fn viewer(&self) -> Viewer {
        Viewer { user_id: self.user_id, is_admin: self.is_admin }
    }
}

/// The caller if a bearer token was sent. A token that is sent but invalid is an error (401),
/// never silently treated as anonymous.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

/// The token of `Authorization: Bearer <token>`; another scheme or a malformed header is 401.
pub(crate) fn bearer(req: &HttpRequest) -> crate::Result<Option<String>> {
    let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::new(ErrorKind::Unauthenticated, "malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::new(ErrorKind::Unauthenticated, "expected 'Authorization: Bearer <token>'"));
    }
    Ok(Some(token.trim().to_owned()))
}

async fn authenticate(req: HttpRequest) -> crate::Result<Option<Caller>> {
    let Some(token) = bearer(&req)? else {
        return Ok(None);
    };
    let ctx =
        req.app_data::<web::Data<ApiContext>>().ok_or_else(|| Error::internal("API context missing"))?;
    let claims = match ctx.jwt.verify(&token) {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::metrics().auth_failures.with_label_values(&["api"]).inc();
            return Err(super::error::invalid_token(e.msg));
        }
    };
    if ctx.shared.is_revoked(&claims.jti).await {
        return Err(super::error::invalid_token("invalid or expired access token"));
    }
    Ok(Some(Caller { user_id: claims.user_id()?, is_admin: claims.adm, claims }))
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            authenticate(req).await?.ok_or_else(|| {
                Error::new(ErrorKind::Unauthenticated, "sign in first: Authorization: Bearer <token>").into()
            })
        })
    }
}

impl FromRequest for MaybeCaller {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(MaybeCaller(authenticate(req).await?)) })
    }
}

/// Refuses text that would break storage or display: NUL and other control characters (tab
/// and line breaks are allowed where `multiline`), and more than `max` characters.
///
/// The schemas of the fields it checks say the same with `maxLength` and a `pattern` that
/// excludes `\u0000-\u001f\u007f-\u009f` (`char::is_control`), written in Python and ECMA
/// regex syntax alike; where a field must not be blank, the pattern also asks for one
/// character outside `\s`, which is the set `char::is_whitespace` trims once control
/// characters are excluded.
pub fn check_text(field: &str, value: &str, max: usize, multiline: bool) -> crate::Result<()> {
    if value.chars().count() > max {
        return Err(Error::invalid(format!("{field} is longer than {max} characters")));
    }
    let bad = |c: char| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t'));
    if value.chars().any(bad) {
        return Err(Error::invalid(format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// JSON Schema counts `5.0` as an integer, so an integer field accepts it too (serde alone
/// would refuse a schema-valid request); a fraction, or a value outside `i64`, stays an error.
pub fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error as _;
    use serde::Deserialize as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    // i64::MIN is exactly representable; i64::MAX + 1 is the first f64 past the range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!("expected an integer within i64, got {n}"))),
    }
}

/// A JSON body that must be an object, as `T`. serde's derived `Deserialize` also takes a
/// struct from a JSON array of its fields in order (`[true, 30, null]`), which no schema of
/// ours describes: a body other than an object is refused (400) before it is read as `T`.
pub fn object_body<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, Error> {
    if !body.is_object() {
        return Err(Error::invalid("invalid JSON body: expected an object"));
    }
    serde_json::from_value(body).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

/// Clamps a page size: default 20, at most 100.
pub fn page_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(20).clamp(1, 100)
}

/// Now in unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn json_error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": {"code": code, "message": message}}))
}

/// JSON body problems as JSON errors: 413 for an oversized body, 415 for a wrong content
/// type, 400 for malformed JSON or wrong types. The message names the problem, not the body.
fn json_config_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let resp = match &err {
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            json_error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("request body is larger than {limit} bytes"),
            )
        }
        JsonPayloadError::ContentType => super::error::unsupported_media_type("application/json"),
        JsonPayloadError::Deserialize(e) => json_error_response(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidArgument.code(),
            &format!("invalid JSON body: {e}"),
        ),
        _ => json_error_response(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidArgument.code(),
            "invalid JSON body",
        ),
    };
    actix_web::error::InternalError::from_response(err, resp).into()
}

fn path_config_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    let resp = json_error_response(
        StatusCode::BAD_REQUEST,
        ErrorKind::InvalidArgument.code(),
        "invalid path parameter",
    );
    actix_web::error::InternalError::from_response(err, resp).into()
}

fn query_config_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let resp = json_error_response(
        StatusCode::BAD_REQUEST,
        ErrorKind::InvalidArgument.code(),
        &format!("invalid query string: {err}"),
    );
    actix_web::error::InternalError::from_response(err, resp).into()
}

/// Adds the bearer scheme to the document.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// Declares the route list once: it becomes both the OpenAPI document ([`ApiDoc`]) and the
/// actix registration ([`register`]). Order matters for actix: `/videos/feed` before
/// `/videos/{id}`.
macro_rules! api_routes {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// The OpenAPI 3.1 document of the Platform API.
        #[derive(OpenApi)]
        #[openapi(
            info(title = "tidecast Platform API", description = "Users, channels, videos, subscriptions, watch history, search, comments, restream destinations, pulled (RTSP) sources and transcode ladders."),
            paths($($module::$handler),*),
            modifiers(&BearerAuth),
        )]
        pub struct ApiDoc;

        fn register(cfg: &mut web::ServiceConfig) {
            $(cfg.service($module::$handler);)*
        }
    };
}

api_routes!(
    users::register,
    users::login,
    users::logout,
    users::me,
    users::history,
    channels::list_channels,
    channels::create_channel,
    channels::get_channel,
    channels::update_channel,
    channels::rotate_key,
    channels::list_sessions,
    destinations::list_destinations,
    destinations::create_destination,
    destinations::get_destination,
    destinations::update_destination,
    destinations::delete_destination,
    sources::get_source,
    sources::set_source,
    sources::delete_source,
    ladder::get_ladder,
    ladder::set_ladder,
    ladder::delete_ladder,
    recordings::get_recording,
    recordings::set_recording,
    recordings::delete_recording,
    videos::feed,
    videos::get_video,
    videos::delete_video,
    videos::record_watch,
    videos::list_comments,
    videos::create_comment,
    videos::delete_comment,
    billing::list_plans,
    billing::list_subscriptions,
    billing::create_subscription,
    billing::revoke_subscription,
    billing::webhook,
    search::search,
    users::openapi_json,
);

/// Every API path pattern (`/api/v1/...`, actix syntax) with the methods its handlers take,
/// read from [`ApiDoc`]: `api_routes!` registers and documents the same handlers, and utoipa
/// takes each one's path and method from its actix attribute. Feeds `http::routes::RouteTable`.
pub fn route_methods() -> Vec<(String, Methods)> {
    ApiDoc::openapi()
        .paths
        .paths
        .into_iter()
        .map(|(path, item)| {
            let methods = [
                (item.get.is_some(), Methods::GET),
                (item.head.is_some(), Methods::HEAD),
                (item.post.is_some(), Methods::POST),
                (item.put.is_some(), Methods::PUT),
                (item.patch.is_some(), Methods::PATCH),
                (item.delete.is_some(), Methods::DELETE),
                (item.options.is_some(), Methods::OPTIONS),
            ]
            .into_iter()
            .filter(|(has, _)| *has)
            .fold(Methods::NONE, |all, (_, m)| all | m);
            (path, methods)
        })
        .collect()
}

/// Mounts `/api/v1` with its JSON body limit (`api.max_body`, in bytes) and error handlers.
/// Needs `web::Data<ApiContext>` in the app (see `http::start`).
pub fn configure(max_body: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(
            web::scope(API_PREFIX)
                .app_data(web::JsonConfig::default().limit(max_body).error_handler(json_config_error))
                .app_data(web::PathConfig::default().error_handler(path_config_error))
                .app_data(web::QueryConfig::default().error_handler(query_config_error))
                .app_data(web::PayloadConfig::default().limit(max_body.max(256 * 1024)))
                .configure(register),
        );
    }
}
