//! The one mapping from `crate::Error` to an HTTP response: `{"error": {"code", "message"}}`
//! with the status of its `ErrorKind`; plus the two refusals that come from HTTP itself, not
//! from a handler: 405 (wrong method) and CORS.

use actix_cors::CorsError;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::routes::Methods;
use crate::error::{Error, ErrorKind};

/// The JSON error body for `kind` and `message`.
pub fn error_response(kind: ErrorKind, message: &str) -> HttpResponse {
    let status = StatusCode::from_u16(kind.http_status()).expect("every ErrorKind maps to a valid status");
    HttpResponse::build(status).json(json!({"error": {"code": kind.code(), "message": message}}))
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
        error_response(self.kind, &self.msg)
    }
}

/// Malformed JSON bodies become 400 JSON errors instead of actix's plain text.
pub fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
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
