//! actix-web: the app factory, routes, and the one `ErrorKind` -> HTTP status mapping.
//!
//! Routes: LL-HLS under `/live`, `/metrics` (Prometheus text format), `/healthz` (the process is
//! up), `/readyz` (the store answers), the watch page, `/static/` (when configured) and the
//! Platform API under `/api/v1`. What each route serves is listed once ([`SITE_ROUTES`] and the
//! API's own list); HEAD, OPTIONS, 405 and CORS pre-flights follow from it (`routes`).
//!
//! Before any of that, [`admit`] refuses what HTTP itself refuses: a connection over its
//! address's limit (`http.max_connections_per_address`, counted at accept by [`start_with_limits`]'s
//! `on_connect` hook) gets 429 and is closed, a header line over `http.max_header_line` gets 431
//! and a request line over it 414, like nginx's `large_client_header_buffers`. (actix-http only
//! refuses a request head over 128 KiB, with 431, and at most 96 headers.)

pub mod api;
pub mod dvr;
pub mod error;
pub mod health;
pub mod hls;
pub mod mirror;
pub mod routes;
mod sendfile;
mod server;
pub mod vod;
pub mod watch;
pub mod webrtc;

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, Server, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard, web, App, HttpResponse};
use serde_json::json;
use tracing::info;

use crate::actors::hls::{HlsDirectory, HlsSettings};
use crate::admission::{AddressSlot, PerAddressLimit};
use crate::logging::LogBudget;
use crate::metrics::{metrics, REJECT_PER_ADDRESS};
use crate::store::Store;
use routes::{Methods, RouteMethods, RouteTable};

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Live channels' LL-HLS windows.
    pub hls: HlsDirectory,
    pub hls_settings: HlsSettings,
    /// Where the watch page loads hls.js from.
    pub hlsjs_url: String,
    /// The Platform API's shared context (also holds the playback-token verifier the LL-HLS
    /// routes use: `state.api.playback`, see `crate::auth::playback`).
    pub api: web::Data<api::ApiContext>,
    /// Pulled sources: LL-HLS requests keep on-demand cameras pulled, and start them.
    pub pulls: crate::actors::pull::Pulls,
    /// Recordings: the VOD routes serve them (`vod.rs`).
    pub archive: crate::actors::archive::Archive,
    /// WHIP and WHEP (`webrtc.rs`); `None` when `[webrtc]` is off.
    pub webrtc: Option<webrtc::WebRtcService>,
}

/// HTTP settings that shape the app rather than a handler.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    pub listen: String,
    pub workers: usize,
    pub cors_origins: Vec<String>,
    /// Served at `/static/` when non-empty.
    pub static_dir: String,
}

/// Limits HTTP enforces before routing.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// `http.max_connections_per_address` and its exempt networks.
    pub per_address: Arc<PerAddressLimit>,
    /// `http.max_header_line`, in bytes; the request head may hold four times this.
    pub max_header_line: usize,
}

impl Default for HttpLimits {
    /// No per-address limit; nginx's 8 KiB lines.
    fn default() -> Self {
        HttpLimits { per_address: PerAddressLimit::new(0, Vec::new()), max_header_line: 8 * 1024 }
    }
}

/// Connection data (`HttpRequest::conn_data`) of a connection its address had no room for.
#[derive(Clone, Copy, Debug)]
struct OverAddressLimit;

/// Log budget of per-address refusals: a few lines a minute, whatever the flood.
static REFUSALS: LogBudget = LogBudget::new(10, std::time::Duration::from_secs(60));

/// How long a client refused for its address's limit is asked to wait (`Retry-After`).
const RETRY_AFTER_SECS: u32 = 5;

/// `on_connect`: take the connection's slot of its address's limit (held in the connection's
/// data, so given back when actix drops the connection), or mark it refused.
fn count_connection(limit: &Arc<PerAddressLimit>, conn: &dyn Any, data: &mut Extensions) {
    type Tcp = actix_web::rt::net::TcpStream;
    // Plain HTTP hands us the socket; HTTPS the TLS stream around it (the same limit applies).
    let tcp = conn.downcast_ref::<sendfile::SendfileStream>().map(|s| (s.get_ref(), "http")).or_else(|| {
        let tls = conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<Tcp>>()?;
        Some((tls.get_ref().0, "https"))
    });
    let Some((peer, protocol)) = tcp.and_then(|(s, p)| Some((s.peer_addr().ok()?, p))) else {
        return;
    };
    match limit.try_acquire(peer.ip()) {
        Ok(slot) => {
            data.insert::<AddressSlot>(slot);
        }
        Err(_) => {
            metrics().connections_rejected.with_label_values(&[protocol, REJECT_PER_ADDRESS]).inc();
            if let Some(suppressed) = REFUSALS.admit() {
                info!(peer = %peer.ip(), suppressed, "HTTP connection limit per address reached; refusing");
            }
            data.insert(OverAddressLimit);
        }
    }
}

/// HTTP's own refusals, before any route or middleware runs (see the module doc).
async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refusal = if req.conn_data::<OverAddressLimit>().is_some() {
        let mut res = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "resource_exhausted",
            "too many connections from your address",
        );
        res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(RETRY_AFTER_SECS));
        res.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
        Some(res)
    } else {
        let max_line = req.app_data::<web::Data<HttpLimits>>().map_or(8 * 1024, |l| l.max_header_line);
        head_refusal(&req, max_line)
    };
    match refusal {
        Some(res) => Ok(req.into_response(res).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// 414 for a request line over `max_line`, 431 for a header line over it or a head over four
/// times it (header lines are `name: value`, counted with their CRLF).
fn head_refusal(req: &ServiceRequest, max_line: usize) -> Option<HttpResponse> {
    // "GET " + target + " HTTP/1.1"; the target as sent (actix keeps it as received).
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let request_line = req.method().as_str().len() + 1 + target + " HTTP/1.1".len();
    if request_line > max_line {
        return Some(refusal(StatusCode::URI_TOO_LONG, "uri_too_long", "the request line is too long"));
    }
    let mut head = request_line + 2;
    for (name, value) in req.headers().iter() {
        let line = name.as_str().len() + 2 + value.len();
        if line > max_line {
            let msg = format!("header {name} is {line} bytes long (limit {max_line})");
            return Some(refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "header_too_large", &msg));
        }
        head += line + 2;
    }
    (head > 4 * max_line).then(|| {
        let msg = format!("the request head is {head} bytes long (limit {})", 4 * max_line);
        refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "header_too_large", &msg)
    })
}

/// A refusal in the API's error shape; HTTP's own, so a code without an `ErrorKind`, like 405.
fn refusal(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

/// Count requests by route pattern (never the raw path: it may hold names or tokens) and status.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let res = next.call(req).await?;
    let m = metrics();
    // LL-HLS traffic is counted by `tidecast_hls_requests_total`; matching its route pattern
    // again here (actix re-runs the router for `match_pattern`) was measurable at 10k req/s.
    if res.request().path().starts_with("/live/") {
        m.http_duration_seconds.observe(start.elapsed().as_secs_f64());
        return Ok(res);
    }
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_string());
    m.http_requests.with_label_values(&[&route, res.status().as_str()]).inc();
    m.http_duration_seconds.observe(start.elapsed().as_secs_f64());
    Ok(res)
}

/// The routes [`configure`] registers, with the methods of their handlers (HEAD and OPTIONS
/// follow, see `routes`). Keep the two in step: `tests::every_site_route_is_routed` checks it.
pub const SITE_ROUTES: &[(&str, Methods)] = &[
    // `hls::configure`.
    ("/live/{channel}/index.m3u8", Methods::GET),
    ("/live/{channel}/{rendition}/index.m3u8", Methods::GET),
    ("/live/{channel}/{rendition}/{session}/{file}", Methods::GET),
    // `dvr` (in the `/live` scope of `hls::configure`).
    ("/live/{channel}/dvr.m3u8", Methods::GET),
    ("/live/{channel}/{rendition}/dvr.m3u8", Methods::GET),
    ("/live/{channel}/{rendition}/dvr/{file}", Methods::GET),
    // `vod::configure`.
    ("/vod/{video}/index.m3u8", Methods::GET),
    ("/vod/{video}/manifest.mpd", Methods::GET),
    ("/vod/{video}/poster.jpg", Methods::GET),
    ("/vod/{video}/{rendition}/index.m3u8", Methods::GET),
    ("/vod/{video}/{rendition}/{file}", Methods::GET),
    ("/metrics", Methods::GET),
    ("/healthz", Methods::GET),
    ("/readyz", Methods::GET),
    // `watch::configure`.
    ("/watch/v/{video}", Methods::GET),
    ("/watch/{channel}", Methods::GET),
    // `webrtc::configure` (WHIP, WHEP).
    ("/whip/{channel}", Methods::POST),
    ("/whep/{channel}", Methods::POST),
    ("/whip/{channel}/{session}", Methods::PATCH.union(Methods::DELETE)),
    ("/whep/{channel}/{session}", Methods::PATCH.union(Methods::DELETE)),
];

/// Where `/static/` serves files, when `static_dir` is set.
const STATIC_ROUTE: &str = "/static/{file}*";

/// Every route of the app: [`SITE_ROUTES`], the API's, and `/static/` if `static_files`.
pub fn route_table(static_files: bool) -> RouteTable {
    let site = SITE_ROUTES.iter().map(|(p, m)| (p.to_string(), *m));
    let files = static_files.then(|| (STATIC_ROUTE.to_owned(), Methods::GET));
    RouteTable::new(site.chain(files).chain(api::route_methods()))
}

/// Register every route on an actix `ServiceConfig` (also used by in-process tests).
pub fn configure(cfg: &mut web::ServiceConfig) {
    // LL-HLS first: it carries almost all requests (see `hls::configure`).
    cfg.configure(hls::configure)
        .configure(vod::configure)
        .route("/metrics", web::get().to(health::metrics_text))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .configure(watch::configure)
        .configure(webrtc::configure);
}

/// What CORS lets other origins do: whatever the route serves (a pre-flight advertises only
/// those, `routes::RouteMethods`): players read, WHIP/WHEP pages publish and play, and a
/// front-end on another origin calls the API. Credentials are Bearer tokens, never cookies, so
/// no cross-site request can act with a user's ambient authority.
const CORS_METHODS: Methods = Methods::GET
    .union(Methods::HEAD)
    .union(Methods::POST)
    .union(Methods::PUT)
    .union(Methods::PATCH)
    .union(Methods::DELETE)
    .union(Methods::OPTIONS);

/// CORS for browsers on other origins, without credentials (playback tokens travel in the query
/// string or a Bearer header). WHIP/WHEP's `Location`, `Link` and `ETag` are exposed so such a
/// page can end, patch and configure its session (RFC 9725 §4.2).
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default()
        .allowed_methods(CORS_METHODS.iter())
        .expose_headers([
            header::LOCATION,
            header::LINK,
            header::ETAG,
            header::HeaderName::from_static("x-tidecast-audio"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        c = c.allow_any_origin().allow_any_header();
    } else {
        for o in origins {
            c = c.allowed_origin(o);
        }
        c = c.allow_any_header();
    }
    c
}

/// Bind and start the HTTP server with default [`HttpLimits`] (no per-address limit).
pub fn start(opts: HttpOptions, state: AppState) -> std::io::Result<(Server, SocketAddr)> {
    start_with_limits(opts, HttpLimits::default(), state)
}

/// Bind and start the HTTP server; logs the bound address (port 0 picks a free one).
pub fn start_with_limits(
    opts: HttpOptions,
    limits: HttpLimits,
    state: AppState,
) -> std::io::Result<(Server, SocketAddr)> {
    let (server, bound) = start_with_tls(opts, limits, state, None)?;
    Ok((server, bound.http.expect("a plain listen address was given")))
}

/// The HTTPS listener: its address and the rustls config (with the reloading certificate).
pub struct HttpsOptions {
    pub listen: String,
    pub tls: Arc<rustls::ServerConfig>,
}

/// What [`start_with_tls`] bound.
#[derive(Clone, Copy, Debug)]
pub struct HttpBound {
    /// Plain HTTP, unless `HttpOptions::listen` was empty.
    pub http: Option<SocketAddr>,
    /// HTTPS, when asked for.
    pub https: Option<SocketAddr>,
}

/// Bind and start HTTP on `opts.listen` (unless empty) and HTTPS on `https` (when given): one
/// server, the same app and limits on both. Logs each bound address.
pub fn start_with_tls(
    opts: HttpOptions,
    limits: HttpLimits,
    state: AppState,
    https: Option<HttpsOptions>,
) -> std::io::Result<(Server, HttpBound)> {
    let api_data = state.api.clone();
    let api_max_body = state.api.api.max_body.as_usize();
    let data = web::Data::new(state);
    let (origins, static_dir) = (opts.cors_origins.clone(), opts.static_dir.clone());
    let table = web::Data::new(route_table(!static_dir.is_empty()));
    let per_address = limits.per_address.clone();
    let limits = web::Data::new(limits);
    let app = move || {
        let mut app = App::new()
            .app_data(data.clone())
            .app_data(api_data.clone())
            .app_data(table.clone())
            .app_data(limits.clone())
            .configure(configure)
            .configure(api::configure(api_max_body))
            .app_data(web::JsonConfig::default().limit(64 * 1024).error_handler(error::json_error))
            .wrap(cors(&origins))
            .wrap(RouteMethods::new(table.clone(), CORS_METHODS))
            .wrap(from_fn(observe))
            // Last, so outermost: refused requests cost no routing, CORS or counting.
            .wrap(from_fn(admit));
        if !static_dir.is_empty() {
            // A routing guard, so that other methods miss and get 405/OPTIONS from the table
            // (actix-files would answer them with its own plain-text 405, without `Allow`).
            let files = actix_files::Files::new("/static", &static_dir).guard(guard::Get());
            app = app.service(files);
        }
        app.default_service(web::to(routes::unrouted))
    };
    let on_connect = move |conn: &dyn Any, data: &mut Extensions| count_connection(&per_address, conn, data);
    server::serve(opts, https, app, on_connect)
}

#[cfg(test)]
mod tests {
    use actix_web::test::{call_service, init_service, TestRequest};

    use super::*;

    /// `{name}` segments filled in.
    fn concrete(pattern: &str) -> String {
        pattern.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
    }

    #[actix_web::test]
    async fn every_site_route_is_routed() {
        let app = init_service(
            App::new()
                .app_data(web::Data::new(route_table(false)))
                .configure(configure)
                .default_service(web::to(routes::unrouted)),
        )
        .await;
        for (pattern, methods) in SITE_ROUTES {
            for method in methods.iter() {
                let req = TestRequest::default().method(method.clone()).uri(&concrete(pattern)).to_request();
                let res = call_service(&app, req).await;
                assert_eq!(
                    res.request().match_pattern().as_deref(),
                    Some(*pattern),
                    "{method} {pattern} is in SITE_ROUTES but not routed to it ({})",
                    res.status()
                );
            }
        }
    }

    #[test]
    fn the_table_has_the_api_and_static_files_only_when_served() {
        let with = route_table(true);
        let without = route_table(false);
        assert_eq!(with.lookup("/static/hls.min.js"), Some(Methods::GET.served()));
        assert_eq!(without.lookup("/static/hls.min.js"), None);
        let channel = (Methods::GET | Methods::PATCH).served();
        assert_eq!(with.lookup("/api/v1/channels/main"), Some(channel));
        assert_eq!(with.lookup("/api/v1/users/register"), Some(Methods::POST.served()));
        assert_eq!(with.lookup("/live/main/index.m3u8"), Some(Methods::GET.served()));
    }
}
