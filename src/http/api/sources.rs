//! A channel's pulled source (owner or admin only): an RTSP camera the server connects to
//! instead of waiting for a publisher. Read, set (create or replace), delete.
//!
//! Every change is written to the store and then handed to `actors::pull::Pulls`, which starts,
//! restarts or stops the pull at once. The password is write-only: answers say
//! `credentials_set` and show the URL without user or password; `last_error` never holds them.

use actix_web::{delete, get, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::channels::find_owned;
use super::{ApiContext, Caller, ErrorBody, API_PREFIX};
use crate::actors::pull::{PullSource, PullState, Pulls};
use crate::auth::sealed::Sealer;
use crate::error::Error;
use crate::protocols::rtsp::{RtspTransport, SourceUrl};
use crate::store::{SourceRecord, Store};

/// The source URL's pattern, as the OpenAPI schema of `url` declares it (a test holds the two
/// equal): what passes it, `SourceUrl::parse` takes; no space, control character or fragment,
/// no percent sign in the credentials, an ASCII host name or address, a port from 1 to 65535.
/// Spaces and controls are spelled out rather than `\s`, whose meaning differs between the
/// regex engines that read the schema (Rust's counts U+0085, ECMAScript's does not).
const URL_PATTERN: &str = r"^rtsp://([^\u0000-\u0020\u007f-\u009f#/@:%?\[\]]+(:[^\u0000-\u0020\u007f-\u009f#/@%?\[\]]*)?@)?[A-Za-z0-9._-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[^\u0000-\u0020\u007f-\u009f#]*)?$";

/// Longest user name or password accepted.
const MAX_CREDENTIAL_LEN: usize = 256;

#[derive(Serialize, ToSchema)]
pub struct SourceView {
    /// The rtsp:// URL, without credentials.
    pub url: String,
    /// A user name (and password) are stored; they are never returned.
    pub credentials_set: bool,
    /// tcp (interleaved) or udp.
    #[schema(value_type = String)]
    pub transport: RtspTransport,
    /// Pulled only while someone watches.
    pub on_demand: bool,
    /// waiting (on demand, nobody watching), connecting, live or retrying.
    #[schema(value_type = String)]
    pub state: PullState,
    /// The last failure, without credentials.
    pub last_error: Option<String>,
    /// Pulls started again after a failure or a drop (since the server started).
    pub reconnects: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSourceRequest {
    /// `rtsp://[user:pass@]host[:port]/path`. Credentials may come in the URL or apart.
    #[schema(
        max_length = 2048,
        pattern = r"^rtsp://([^\u0000-\u0020\u007f-\u009f#/@:%?\[\]]+(:[^\u0000-\u0020\u007f-\u009f#/@%?\[\]]*)?@)?[A-Za-z0-9._-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[^\u0000-\u0020\u007f-\u009f#]*)?$"
    )]
    pub url: String,
    /// Overrides a user name in the URL.
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub username: Option<String>,
    /// Overrides a password in the URL.
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub password: Option<String>,
    /// tcp (default) or udp.
    #[schema(value_type = Option<String>, pattern = "^(tcp|udp)$")]
    pub transport: Option<String>,
    /// Default false: pull always.
    pub on_demand: Option<bool>,
}

fn view(r: SourceRecord, channel: &str, pulls: &Pulls) -> SourceView {
    let status = pulls.status(channel);
    SourceView {
        url: r.url,
        credentials_set: !r.username.is_empty(),
        transport: RtspTransport::parse(&r.transport).unwrap_or_default(),
        on_demand: r.on_demand,
        state: status.as_ref().map_or(PullState::Retrying, |s| s.state),
        last_error: status.as_ref().and_then(|s| s.last_error.clone()),
        reconnects: status.map_or(0, |s| s.reconnects),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

/// The columns the camera's credentials are sealed for (`auth::sealed`).
const USER_FIELD: &str = "source.username";
const PASSWORD_FIELD: &str = "source.password";

/// What the pull task needs from a stored source; `None` for a row that no longer validates or
/// whose credentials do not open.
pub fn to_source(r: &SourceRecord, sealer: &Sealer) -> Option<PullSource> {
    let username = sealer.open(USER_FIELD, &r.username).ok()?;
    let password = sealer.open(PASSWORD_FIELD, &r.password).ok()?;
    let url = SourceUrl::parse(&r.url).ok()?.with_credentials(Some(username), Some(password));
    Some(PullSource { url, transport: RtspTransport::parse(&r.transport).ok()?, on_demand: r.on_demand })
}

/// Start every stored source (server start), sealing credentials stored before sealing existed.
pub async fn load_all(store: &Store, pulls: &Pulls, sealer: &Sealer) -> crate::Result<()> {
    for (name, mut r) in store.all_sources().await? {
        let legacy = |v: &str| !v.is_empty() && !Sealer::is_sealed(v);
        if legacy(&r.username) || legacy(&r.password) {
            let mut sealed = r.clone();
            if legacy(&r.username) {
                sealed.username = sealer.seal(USER_FIELD, &r.username);
            }
            if legacy(&r.password) {
                sealed.password = sealer.seal(PASSWORD_FIELD, &r.password);
            }
            r = store.set_source(&sealed).await?;
            tracing::info!(channel = %name, "pull source credentials sealed at rest");
        }
        match to_source(&r, sealer) {
            Some(s) => pulls.set(&name, Some(s)),
            None => {
                tracing::warn!(channel = %name, "stored pull source no longer validates or opens; not started")
            }
        }
    }
    Ok(())
}

fn pulls(ctx: &ApiContext) -> Result<&Pulls, Error> {
    ctx.pulls.as_ref().ok_or_else(|| Error::unavailable("pulled sources are not available on this server"))
}

fn check_credential(field: &str, v: &Option<String>) -> Result<(), Error> {
    match v {
        Some(v) if v.chars().count() > MAX_CREDENTIAL_LEN || v.chars().any(char::is_control) => {
            Err(Error::invalid(format!(
                "{field} must be at most {MAX_CREDENTIAL_LEN} characters without control characters"
            )))
        }
        _ => Ok(()),
    }
}

/// The channel's pulled source with its state.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "sources",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SourceView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[get("/channels/{name}/source")]
pub async fn get_source(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let pulls = pulls(&ctx)?;
    let r =
        ctx.store.source(c.id).await?.ok_or_else(|| Error::not_found("the channel has no pulled source"))?;
    Ok(HttpResponse::Ok().json(view(r, &c.name, pulls)))
}

/// Set the channel's source (replacing any); the pull starts or restarts at once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "sources",
    security(("bearer" = [])),
    request_body = SetSourceRequest,
    responses(
        (status = 200, body = SourceView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[put("/channels/{name}/source")]
pub async fn set_source(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<SetSourceRequest>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let pulls = pulls(&ctx)?;
    let body = body.into_inner();
    check_credential("username", &body.username)?;
    check_credential("password", &body.password)?;
    static URL_RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let url_re = URL_RE.get_or_init(|| regex::Regex::new(URL_PATTERN).expect("a valid pattern"));
    if body.url.len() > 2048 || !url_re.is_match(&body.url) {
        return Err(Error::invalid(
            "url must be rtsp://[user[:password]@]host[:port][/path] with an ASCII host and no spaces",
        ));
    }
    let url = SourceUrl::parse(&body.url)
        .map_err(|e| Error::invalid(format!("url: {e}")))?
        .with_credentials(body.username, body.password);
    let transport = match body.transport.as_deref() {
        None => RtspTransport::Tcp,
        Some(t) => RtspTransport::parse(t).map_err(Error::invalid)?,
    };
    let on_demand = body.on_demand.unwrap_or(false);
    let r = ctx
        .store
        .set_source(&SourceRecord {
            channel_id: c.id,
            url: url.masked().to_owned(),
            username: ctx.sealer.seal(USER_FIELD, url.username()),
            password: ctx.sealer.seal(PASSWORD_FIELD, url.password()),
            transport: transport.label().to_owned(),
            on_demand,
            created_at_ms: 0,
            updated_at_ms: 0,
        })
        .await?;
    tracing::info!(channel = %c.name, source = %url, transport = transport.label(), on_demand, "pull source set");
    pulls.set(&c.name, Some(PullSource { url, transport, on_demand }));
    Ok(HttpResponse::Ok().json(view(r, &c.name, pulls)))
}

/// Remove the channel's source; a running pull stops at once.
#[utoipa::path(
    context_path = API_PREFIX,
    tag = "sources",
    security(("bearer" = [])),
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[delete("/channels/{name}/source")]
pub async fn delete_source(
    ctx: web::Data<ApiContext>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let c = find_owned(&ctx, &caller, &name).await?;
    let pulls = pulls(&ctx)?;
    if !ctx.store.delete_source(c.id).await? {
        return Err(Error::not_found("the channel has no pulled source"));
    }
    tracing::info!(channel = %c.name, "pull source removed");
    pulls.set(&c.name, None);
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn the_schema_declares_the_pattern_the_handler_checks() {
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap();
        let declared = &doc["components"]["schemas"]["SetSourceRequest"]["properties"]["url"]["pattern"];
        assert_eq!(declared.as_str(), Some(URL_PATTERN));
        let re = regex::Regex::new(URL_PATTERN).unwrap();
        for ok in ["rtsp://cam", "rtsp://u:p@10.0.0.5:554/s1?ch=2", "rtsp://u@h:65535/", "rtsp://u:@h"] {
            assert!(re.is_match(ok), "{ok}");
            assert!(SourceUrl::parse(ok).is_ok(), "what the pattern takes parses: {ok}");
        }
        for bad in [
            "rtsp://h:0",
            "rtsp://h:65536",
            "rtsp://[::1]/",
            "rtsp://u%zz@h",
            "rtsp://h/a b",
            "http://h",
            "rtsp://h#f",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
