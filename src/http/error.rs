//! The one mapping from `crate::Error` to an HTTP response: `{"error": {"code", "message"}}`
//! with the status of its `ErrorKind`; plus the refusals that come from HTTP itself, not from a
//! handler: 405 (wrong method), 415 (wrong content type) and CORS.
//!
//! Manners every answer of a kind gets here, so no handler can forget them: a 401 carries a
//! `WWW-Authenticate` challenge (RFC 9110 §11.6.1; the `Bearer` scheme of RFC 6750 §3, with
//! `error="invalid_token"` when a token was sent and refused, none when there was no token);
//! a 429 carries `Retry-After` (RFC 6585 §4; the limit's own delay when the error knows it).

use actix_cors::CorsError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::routes::Methods;
use crate::error::{Error, ErrorKind};

/// The protection space named in every `Bearer` challenge.
const REALM: &str = "tidecast";
/// `Retry-After` of a 429 whose limit did not say how long it lasts.
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// Marks an `Unauthenticated` error as a bearer token that was sent and refused (malformed,
/// badly signed, expired, revoked, or for an account that is gone): RFC 6750 §3.1
/// `invalid_token`, as opposed to a request that carried no credentials at all.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("invalid_token")]
pub struct InvalidToken;

/// An `Unauthenticated` error for a refused bearer token (see [`InvalidToken`]).
pub fn invalid_token(message: impl Into<String>) -> Error {
    Error::with_source(ErrorKind::Unauthenticated, message, InvalidToken)
}

/// The `WWW-Authenticate` value of a 401: the API's one scheme, `Bearer`.
fn bearer_challenge(invalid_token: bool) -> HeaderValue {
    let value = if invalid_token {
        format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
    } else {
        format!("Bearer realm=\"{REALM}\"")
    };
    HeaderValue::from_str(&value).expect("the challenge is plain ASCII")
}

/// The JSON error body for `kind` and `message`, with the headers its status requires: a
/// plain `Bearer` challenge on 401, `Retry-After: 1` on 429 (callers that know better replace
/// them, as [`Error`]'s own response does).
pub fn error_response(kind: ErrorKind, message: &str) -> HttpResponse {
    let status = StatusCode::from_u16(kind.http_status()).expect("every ErrorKind maps to a valid status");
    let mut res =
        HttpResponse::build(status).json(json!({"error": {"code": kind.code(), "message": message}}));
    match kind {
        ErrorKind::Unauthenticated => {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, bearer_challenge(false));
        }
        ErrorKind::ResourceExhausted => {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(DEFAULT_RETRY_AFTER_SECS));
        }
        _ => {}
    }
    res
}

/// `415 Unsupported Media Type` (RFC 9110 §15.5.16) for a body that is not `expected`. HTTP's
/// own refusal, about the representation rather than the request's meaning, so it has its own
/// code, `unsupported_media_type`, and no `ErrorKind` (no other protocol refuses for it).
pub fn unsupported_media_type(expected: &str) -> HttpResponse {
    HttpResponse::UnsupportedMediaType().json(json!({"error": {
        "code": "unsupported_media_type",
        "message": format!("expected Content-Type: {expected}"),
    }}))
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.http_status()).expect("every ErrorKind maps to a valid status")
    }

    fn error_response(&self) -> HttpResponse {
        // Internal details stay in the log; the client gets the kind and our message only.
        if self.kind == ErrorKind::Internal {
            tracing::error!(error = %self, "internal error");
            return error_response(self.kind, "internal error");
        }
        let mut res = error_response(self.kind, &self.msg);
        if let Some(delay) = self.retry_after() {
            // Whole seconds, rounded up: retrying a fraction early would only be refused again.
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        let refused_token = self.source.as_deref().is_some_and(|s| s.is::<InvalidToken>());
        if self.kind == ErrorKind::Unauthenticated && refused_token {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, bearer_challenge(true));
        }
        res
    }
}

/// Malformed JSON bodies become 400 JSON errors instead of actix's plain text; a body that is
/// not JSON at all, 415.
pub fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    if matches!(err, actix_web::error::JsonPayloadError::ContentType) {
        let res = unsupported_media_type("application/json");
        return actix_web::error::InternalError::from_response(err, res).into();
    }
    let msg = format!("invalid JSON body: {err}");
    Error::invalid(msg).into()
}

pub async fn not_found() -> HttpResponse {
    error_response(ErrorKind::NotFound, "no such route")
}

/// `405 Method Not Allowed` with `Allow` (RFC 9110 §15.5.6). HTTP's own refusal, about the
/// request line rather than the application, so it has a code but no `ErrorKind` (no other
/// protocol refuses for it), like the API's `payload_too_large`.
pub fn method_not_allowed(method: &Method, allow: Methods) -> HttpResponse {
    let message = format!("{method} is not allowed here");
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow.header_value()))
        .json(json!({"error": {"code": "method_not_allowed", "message": message}}))
}

/// A CORS refusal by actix-cors (pre-flight or actual request): something the policy does not
/// allow is `permission_denied`; a malformed pre-flight is `invalid_argument`.
pub fn cors_refused(err: &CorsError) -> HttpResponse {
    let kind = match err {
        CorsError::OriginNotAllowed | CorsError::MethodNotAllowed | CorsError::HeadersNotAllowed => {
            ErrorKind::PermissionDenied
        }
        _ => ErrorKind::InvalidArgument,
    };
    error_response(kind, &format!("CORS: {err}"))
}
