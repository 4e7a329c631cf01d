//! The one mapping from `crate::Error` to an HTTP response: `{"error": {"code", "message"}}`
//! with the status of its `ErrorKind`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

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
