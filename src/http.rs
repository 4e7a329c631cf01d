//! actix-web: the app factory, routes, and the one `ErrorKind` -> HTTP status mapping.
//!
//! Today: `/metrics` (Prometheus text format), `/healthz` (the process is up), `/readyz` (the
//! store answers). LL-HLS, WHIP/WHEP and the `/api/v1` routes mount here as they land.

pub mod api;
pub mod error;
pub mod health;
pub mod hls;
pub mod mirror;
pub mod watch;

use std::net::SocketAddr;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use tracing::info;

use crate::actors::hls::{HlsDirectory, HlsSettings};
use crate::metrics::metrics;
use crate::store::Store;

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

/// Register every route on an actix `ServiceConfig` (also used by in-process tests).
pub fn configure(cfg: &mut web::ServiceConfig) {
    // LL-HLS first: it carries almost all requests (see `hls::configure`).
    cfg.configure(hls::configure)
        .route("/metrics", web::get().to(health::metrics_text))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .configure(watch::configure);
}

/// CORS for browsers playing from other origins: GET only, no credentials (playback tokens
/// travel in the query string, which players repeat on every request).
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default().allowed_methods(vec!["GET", "HEAD", "OPTIONS"]).max_age(3600);
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

/// Bind and start the HTTP server; logs the bound address (port 0 picks a free one).
pub fn start(opts: HttpOptions, state: AppState) -> std::io::Result<(Server, SocketAddr)> {
    let api_data = state.api.clone();
    let api_max_body = state.api.api.max_body.as_usize();
    let data = web::Data::new(state);
    let (origins, static_dir) = (opts.cors_origins.clone(), opts.static_dir.clone());
    let mut server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(data.clone())
            .app_data(api_data.clone())
            .configure(configure)
            .configure(api::configure(api_max_body))
            .app_data(web::JsonConfig::default().limit(64 * 1024).error_handler(error::json_error))
            .wrap(cors(&origins))
            .wrap(from_fn(observe));
        if !static_dir.is_empty() {
            app = app.service(actix_files::Files::new("/static", &static_dir));
        }
        app.default_service(web::to(error::not_found))
    })
    .disable_signals()
    // Players keep connections open between parts and segments; actix's 5 s default closed
    // connections of slow segment downloads under load.
    .keep_alive(std::time::Duration::from_secs(75))
    // actix leaves Nagle's algorithm on. A part body goes out in several writes, and with
    // Nagle a trailing write smaller than the MSS can wait for the player's ACK of the previous
    // one (delayed ACKs: up to 40 ms on Linux), a fifth of a 200 ms part. (No change measured
    // on loopback; it matters on real links.)
    .tcp_nodelay(true)
    .shutdown_timeout(5);
    if opts.workers > 0 {
        server = server.workers(opts.workers);
    }
    let server = server.bind(&opts.listen)?;
    let addr = *server.addrs().first().expect("bind succeeded, so there is an address");
    info!(protocol = "http", %addr, "listening");
    Ok((server.run(), addr))
}
