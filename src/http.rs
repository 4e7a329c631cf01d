//! actix-web: the app factory, routes, and the one `ErrorKind` -> HTTP status mapping.
//!
//! Routes: LL-HLS under `/live`, `/metrics` (Prometheus text format), `/healthz` (the process is
//! up), `/readyz` (the store answers), the watch page, `/static/` (when configured) and the
//! Platform API under `/api/v1`. What each route serves is listed once ([`SITE_ROUTES`] and the
//! API's own list); HEAD, OPTIONS, 405 and CORS pre-flights follow from it (`routes`).

pub mod api;
pub mod error;
pub mod health;
pub mod hls;
pub mod mirror;
pub mod routes;
pub mod watch;

use std::net::SocketAddr;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard, web, App, HttpServer};
use tracing::info;

use crate::actors::hls::{HlsDirectory, HlsSettings};
use crate::metrics::metrics;
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

/// The routes [`configure`] registers, with the methods of their handlers (HEAD and OPTIONS
/// follow, see `routes`). Keep the two in step: `tests::every_site_route_is_routed` checks it.
pub const SITE_ROUTES: &[(&str, Methods)] = &[
    // `hls::configure`.
    ("/live/{channel}/index.m3u8", Methods::GET),
    ("/live/{channel}/{rendition}/index.m3u8", Methods::GET),
    ("/live/{channel}/{rendition}/{session}/{file}", Methods::GET),
    ("/metrics", Methods::GET),
    ("/healthz", Methods::GET),
    ("/readyz", Methods::GET),
    // `watch::configure`.
    ("/watch/{channel}", Methods::GET),
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
        .route("/metrics", web::get().to(health::metrics_text))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .configure(watch::configure);
}

/// What CORS lets other origins do: read (GET, HEAD); a pre-flight advertises these methods
/// only where the route serves them (`routes::RouteMethods`).
const CORS_METHODS: Methods = Methods::GET.union(Methods::HEAD).union(Methods::OPTIONS);

/// CORS for browsers playing from other origins: reads only, no credentials (playback tokens
/// travel in the query string, which players repeat on every request).
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default().allowed_methods(CORS_METHODS.iter()).max_age(3600);
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
    let table = web::Data::new(route_table(!static_dir.is_empty()));
    let mut server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(data.clone())
            .app_data(api_data.clone())
            .app_data(table.clone())
            .configure(configure)
            .configure(api::configure(api_max_body))
            .app_data(web::JsonConfig::default().limit(64 * 1024).error_handler(error::json_error))
            .wrap(cors(&origins))
            .wrap(RouteMethods::new(table.clone(), CORS_METHODS))
            .wrap(from_fn(observe));
        if !static_dir.is_empty() {
            // A routing guard, so that other methods miss and get 405/OPTIONS from the table
            // (actix-files would answer them with its own plain-text 405, without `Allow`).
            let files = actix_files::Files::new("/static", &static_dir).guard(guard::Get());
            app = app.service(files);
        }
        app.default_service(web::to(routes::unrouted))
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
