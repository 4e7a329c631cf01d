//! Application error type: `Error { kind, msg, source }` with a gRPC-style [`ErrorKind`].
//!
//! Protocol modules have their own `thiserror` enums that locate a fault (offset, chunk stream,
//! track); they are converted into this type at the actor/HTTP boundary. Each `ErrorKind` maps to
//! exactly one HTTP status (in `http::error`) and one RTMP reject status ([`ErrorKind::rtmp_status`]).
//!
//! Messages never contain secrets (stream keys, passwords, tokens): callers describe *which*
//! secret failed ("stream key rejected"), never its value.

use std::fmt;
use std::time::Duration;

/// The gRPC-style error classes. Chosen so each maps to one HTTP status and one protocol reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    /// The resource is busy in a way that conflicts with the request (a video still being
    /// recorded cannot be deleted): HTTP 409.
    Conflict,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl ErrorKind {
    /// The snake_case code used in JSON errors (`{"error": {"code": ...}}`).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status for this kind: the one mapping the HTTP layer uses.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists => 409,
            ErrorKind::Conflict => 409,
            ErrorKind::FailedPrecondition => 412,
            ErrorKind::ResourceExhausted => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The RTMP `onStatus` code sent when a request is refused for this kind. Flash Media Server
    /// used `NetStream.Publish.BadName` for a name already in use and `NetConnection.Connect.Rejected`
    /// for authorization and admission failures; OBS and ffmpeg print the code to the user.
    pub fn rtmp_status(self) -> &'static str {
        match self {
            ErrorKind::AlreadyExists => "NetStream.Publish.BadName",
            ErrorKind::NotFound => "NetStream.Play.StreamNotFound",
            ErrorKind::InvalidArgument => "NetStream.Publish.BadName",
            _ => "NetConnection.Connect.Rejected",
        }
    }
}

/// The application error: a kind, a human message (never a secret), and an optional cause.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error { kind, msg: msg.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        msg: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error { kind, msg: msg.into(), source: Some(Box::new(source)) }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, msg)
    }

    /// A `ResourceExhausted` refusal that lifts by itself after `retry_after` (a rate limit):
    /// HTTP sends it as `Retry-After` (RFC 9110 §10.2.3) so clients back off as long as needed.
    pub fn exhausted(msg: impl Into<String>, retry_after: Duration) -> Self {
        Self::with_source(ErrorKind::ResourceExhausted, msg, RetryAfter(retry_after))
    }

    /// How long until retrying may succeed, when the refusal knows it (see [`Error::exhausted`]).
    pub fn retry_after(&self) -> Option<Duration> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<RetryAfter>()).map(|r| r.0)
    }
}

/// The cause of a refusal that lifts by itself: retrying after this long may succeed. Carried
/// as an [`Error`]'s source rather than as a field, so every protocol can read it and none has
/// to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("retry after {}s", .0.as_secs())]
pub struct RetryAfter(pub Duration);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.msg)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Error::with_source(ErrorKind::NotFound, "row not found", e),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::with_source(ErrorKind::AlreadyExists, "already exists", e)
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Error::with_source(ErrorKind::Unavailable, "database unavailable", e)
            }
            _ => Error::with_source(ErrorKind::Internal, "database error", e),
        }
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::with_source(ErrorKind::Unavailable, "actor mailbox closed", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_kind_message_and_source() {
        let io = std::io::Error::other("disk gone");
        let e = Error::with_source(ErrorKind::Unavailable, "archive write", io);
        assert_eq!(e.to_string(), "unavailable: archive write: disk gone");
        assert_eq!(e.kind.http_status(), 503);
    }

    #[test]
    fn retry_after_travels_as_the_source() {
        let e = Error::exhausted("slow down", Duration::from_secs(90));
        assert_eq!((e.kind, e.retry_after()), (ErrorKind::ResourceExhausted, Some(Duration::from_secs(90))));
        assert_eq!(Error::invalid("x").retry_after(), None);
    }
}
