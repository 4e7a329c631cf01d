//! The HTTP server itself: actix-server workers, plain HTTP/1 and HTTPS (HTTP/1 and HTTP/2 by
//! ALPN) listeners, one app. Assembled from actix-http's parts rather than by actix-web's
//! `HttpServer` for one reason: plain connections are served through
//! [`SendfileStream`](super::sendfile::SendfileStream), so that recorded media leave by
//! `sendfile` (`sendfile.rs`). The settings are `HttpServer`'s defaults but for the two noted.

use std::any::Any;
use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use actix_http::{HttpService, Protocol, Request, Response};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt as _};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions, Server};
use actix_web::rt::net::TcpStream;
use tracing::info;

use super::sendfile::SendfileStream;
use super::{HttpBound, HttpOptions, HttpsOptions};

/// Players keep connections open between parts and segments; actix's 5 s default closed
/// connections of slow segment downloads under load.
const KEEP_ALIVE: Duration = Duration::from_secs(75);
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const BACKLOG: i32 = 1024;

/// The app as actix-http's service: errors become their responses, the app config says
/// whether the listener is TLS (actix-web's `ConnectionInfo` reads it). `AppConfig::new` is
/// actix-web's own; `__priv_test_new` is the same constructor, exported for its test server.
macro_rules! app_service {
    ($app:expr, $secure:expr, $addr:expr) => {{
        let factory = $app().into_factory().map_err(|err| err.into().error_response());
        let addr: SocketAddr = $addr;
        map_config(factory, move |_| AppConfig::__priv_test_new($secure, addr.to_string(), addr))
    }};
}

/// Bind `opts.listen` (unless empty) and `https` (when given) and start serving `app` on both.
pub(super) fn serve<F, I, S, B, C>(
    opts: HttpOptions,
    https: Option<HttpsOptions>,
    app: F,
    on_connect: C,
) -> std::io::Result<(Server, HttpBound)>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    B: MessageBody + 'static,
    C: Fn(&dyn Any, &mut Extensions) + Send + Clone + 'static,
{
    let mut builder = Server::build().disable_signals().shutdown_timeout(5);
    if opts.workers > 0 {
        builder = builder.workers(opts.workers);
    }
    let mut bound = HttpBound { http: None, https: None };
    for addr in addresses(&opts.listen)? {
        let lst = listener(addr)?;
        let addr = lst.local_addr()?;
        let (app, on_connect) = (app.clone(), on_connect.clone());
        builder = builder.listen(format!("http-{addr}"), lst, move || {
            let on_connect = on_connect.clone();
            let svc = HttpService::build()
                .keep_alive(KEEP_ALIVE)
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .local_addr(addr)
                .on_connect_ext(move |io: &SendfileStream, ext: &mut Extensions| {
                    ext.insert(io.files());
                    on_connect(io as &dyn Any, ext)
                })
                .finish(app_service!(app, false, addr));
            fn_service(|io: TcpStream| async move {
                // actix leaves Nagle's algorithm on. A part body goes out in several writes, and
                // with Nagle a trailing write smaller than the MSS can wait for the player's ACK
                // of the previous one (delayed ACKs: up to 40 ms on Linux).
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok((SendfileStream::new(io), Protocol::Http1, peer))
            })
            .and_then(svc)
        })?;
        info!(protocol = "http", %addr, "listening");
        bound.http = Some(addr);
    }
    if let Some(https) = https {
        for addr in addresses(&https.listen)? {
            let lst = listener(addr)?;
            let addr = lst.local_addr()?;
            let (app, on_connect, tls) = (app.clone(), on_connect.clone(), https.tls.clone());
            builder = builder.listen(format!("https-{addr}"), lst, move || {
                let on_connect = on_connect.clone();
                HttpService::build()
                    .keep_alive(KEEP_ALIVE)
                    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .local_addr(addr)
                    .on_connect_ext(move |io: &_, ext: &mut Extensions| on_connect(io as &dyn Any, ext))
                    .finish(app_service!(app, true, addr))
                    // actix adds the `h2` and `http/1.1` ALPN protocols itself; rustls' config
                    // carries the reloading certificate resolver (`tls::ReloadingCert`).
                    .rustls_0_23((*tls).clone())
            })?;
            info!(protocol = "https", %addr, "listening");
            bound.https = Some(addr);
        }
    }
    Ok((builder.run(), bound))
}

fn addresses(listen: &str) -> std::io::Result<Vec<SocketAddr>> {
    if listen.is_empty() {
        return Ok(Vec::new());
    }
    let addrs: Vec<SocketAddr> = listen.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::other(format!("{listen} resolves to no address")));
    }
    Ok(addrs)
}

/// As actix-web binds: `SO_REUSEADDR`, a backlog of 1,024.
fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from(socket))
}
