//! Which methods each route serves, and the HTTP answers that follow from it alone (RFC 9110
//! §9.3.2 HEAD, §9.3.7 OPTIONS, §15.5.6 405 with `Allow`), plus the per-route side of CORS
//! pre-flights (Fetch standard, "CORS-preflight request").
//!
//! Where it sits: [`RouteMethods`] wraps the app outside `actix_cors::Cors`, and [`unrouted`] is
//! the app's default service. The [`RouteTable`] is built once at start from two lists: the
//! site routes in `http::SITE_ROUTES` and the API's, read from its OpenAPI document (which
//! `api_routes!` generates from the same list that registers the handlers). A new route gets
//! HEAD, OPTIONS and 405 without anything else to remember.
//!
//! How, and what it costs:
//! - HEAD: rewritten to GET before routing, so every GET handler (ours, the API's macro routes,
//!   actix-files) answers it with GET's status and headers; actix-http drops the body on the
//!   wire and keeps its `Content-Length` (it remembers the request was HEAD).
//! - OPTIONS, and every method a route does not serve, miss the router and reach [`unrouted`],
//!   which looks the path up: 204 with `Allow` for OPTIONS, 405 with `Allow` and the JSON error
//!   otherwise, 404 for a path no route has. The table is consulted only on such misses.
//! - Pre-flights: refused here when the route does not serve the requested method; otherwise
//!   actix-cors judges origin, method and headers, and its `Access-Control-Allow-Methods` is
//!   narrowed to what the route serves. Its refusals (pre-flight or actual request) become the
//!   JSON error instead of its plain text.
//!
//! A plain GET (the LL-HLS hot path) pays one method comparison and a check that its response
//! carries no CORS error: no allocation, no table lookup.
//!
//! Invariant: the table lists the routes the app registers. `http::tests` checks that every site
//! entry is routed, `tests/api_openapi.rs` that the API's document equals its routes, and
//! `tests/http_methods.rs` walks the whole table over a real socket.

use std::fmt;
use std::future::{ready, Ready};
use std::ops::BitOr;

use actix_cors::CorsError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, ResourceDef, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, Error, HttpRequest, HttpResponse};
use futures_util::future::{Either, FutureExt as _, LocalBoxFuture, Map};

use super::error::{cors_refused, error_response, method_not_allowed};
use crate::error::ErrorKind;

/// The methods a route table knows, in the order `Allow` lists them.
const KNOWN: [Method; 7] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// A set of HTTP methods (a bit per entry of [`KNOWN`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Methods(u8);

impl Methods {
    pub const NONE: Methods = Methods(0);
    pub const GET: Methods = Methods(1);
    pub const HEAD: Methods = Methods(1 << 1);
    pub const POST: Methods = Methods(1 << 2);
    pub const PUT: Methods = Methods(1 << 3);
    pub const PATCH: Methods = Methods(1 << 4);
    pub const DELETE: Methods = Methods(1 << 5);
    pub const OPTIONS: Methods = Methods(1 << 6);

    /// The set holding just `method`; empty for a method outside [`KNOWN`].
    pub fn of(method: &Method) -> Methods {
        KNOWN.iter().position(|m| m == method).map_or(Methods::NONE, |i| Methods(1 << i))
    }

    pub fn contains(self, method: &Method) -> bool {
        let m = Methods::of(method);
        m != Methods::NONE && self.0 & m.0 == m.0
    }

    pub const fn union(self, other: Methods) -> Methods {
        Methods(self.0 | other.0)
    }

    pub const fn intersection(self, other: Methods) -> Methods {
        Methods(self.0 & other.0)
    }

    /// What a route whose handlers take `self` answers: also OPTIONS, and HEAD wherever GET.
    pub fn served(self) -> Methods {
        let head = if self.0 & Methods::GET.0 != 0 { Methods::HEAD } else { Methods::NONE };
        self | head | Methods::OPTIONS
    }

    pub fn iter(self) -> impl Iterator<Item = Method> {
        KNOWN.into_iter().enumerate().filter(move |(i, _)| self.0 & (1 << i) != 0).map(|(_, m)| m)
    }

    /// The `Allow` (or `Access-Control-Allow-Methods`) value: `GET, HEAD, OPTIONS`.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_str(&self.to_string()).expect("method names are valid header text")
    }
}

impl fmt::Display for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

impl BitOr for Methods {
    type Output = Methods;

    fn bitor(self, rhs: Methods) -> Methods {
        self.union(rhs)
    }
}

/// Every route's path pattern (actix syntax) and the methods it serves.
pub struct RouteTable {
    routes: Vec<(ResourceDef, Methods)>,
}

impl RouteTable {
    /// From `(pattern, methods of its handlers)`; HEAD and OPTIONS are added (see
    /// [`Methods::served`]). Patterns may repeat (two resources on one path).
    pub fn new(routes: impl IntoIterator<Item = (String, Methods)>) -> RouteTable {
        RouteTable { routes: routes.into_iter().map(|(p, m)| (ResourceDef::new(p), m.served())).collect() }
    }

    /// The methods served at `path`: those of the most specific patterns matching it, the ones
    /// with the fewest dynamic segments (`/videos/feed` also matches `/videos/{id}`, but it is
    /// the feed: a DELETE there is not the video route's, and gets 405); `None` if no route has
    /// the path.
    pub fn lookup(&self, path: &str) -> Option<Methods> {
        let dynamic = |def: &ResourceDef| def.pattern().map_or(0, |p| p.matches('{').count());
        let matching: Vec<&(ResourceDef, Methods)> =
            self.routes.iter().filter(|(def, _)| def.is_match(path)).collect();
        let least = matching.iter().map(|(def, _)| dynamic(def)).min()?;
        matching.into_iter().filter(|(def, _)| dynamic(def) == least).map(|(_, m)| *m).reduce(|a, b| a | b)
    }

    /// Every pattern with the methods it serves, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Methods)> {
        self.routes.iter().map(|(def, m)| (def.pattern().expect("built from one pattern each"), *m))
    }
}

/// The app's default service: the request matched no route for its method. OPTIONS gets 204
/// with `Allow`; a method the path does not serve gets 405; a path no route has gets 404.
pub async fn unrouted(req: HttpRequest) -> HttpResponse {
    let served =
        req.app_data::<web::Data<RouteTable>>().and_then(|table| table.lookup(req.match_info().as_str()));
    match served {
        Some(served) if req.method() == Method::OPTIONS => {
            HttpResponse::NoContent().insert_header((header::ALLOW, served.header_value())).finish()
        }
        Some(served) if !served.contains(req.method()) => method_not_allowed(req.method(), served),
        // A served method that reached no handler: the table and the registration disagree
        // (the `http::tests` check exists to prevent it). For the client, there is no route.
        Some(_) => {
            tracing::warn!(method = %req.method(), "the route table lists a route the app does not register");
            error_response(ErrorKind::NotFound, "no such route")
        }
        None => error_response(ErrorKind::NotFound, "no such route"),
    }
}

/// The middleware: HEAD to GET, per-route pre-flights, CORS refusals as JSON (module docs).
/// Wrap it outside `actix_cors::Cors`; `cors_methods` are the methods CORS is configured with.
pub struct RouteMethods {
    table: web::Data<RouteTable>,
    cors_methods: Methods,
}

impl RouteMethods {
    pub fn new(table: web::Data<RouteTable>, cors_methods: Methods) -> RouteMethods {
        RouteMethods { table, cors_methods }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RouteMethods
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RouteMethodsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RouteMethodsService { service, table: self.table.clone(), cors_methods: self.cors_methods }))
    }
}

pub struct RouteMethodsService<S> {
    service: S,
    table: web::Data<RouteTable>,
    cors_methods: Methods,
}

type Answer<B> = Result<ServiceResponse<EitherBody<B>>, Error>;

/// The response future: a mapped (not boxed) inner future for every request but pre-flights.
type RouteFuture<F, B> =
    Either<Map<F, fn(Result<ServiceResponse<B>, Error>) -> Answer<B>>, LocalBoxFuture<'static, Answer<B>>>;

impl<S, B> Service<ServiceRequest> for RouteMethodsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = RouteFuture<S::Future, B>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        if req.method() == Method::HEAD {
            req.head_mut().method = Method::GET;
        } else if let Some(wanted) = preflight_method(&req) {
            return Either::Right(self.preflight(req, wanted));
        } else if !matches!(*req.method(), Method::GET | Method::OPTIONS) {
            // A changing method the path's own route does not serve, where a less specific
            // pattern would take it (DELETE `/videos/feed` reaching `/videos/{id}`): 405, as the
            // table says. Only these methods pay the lookup; GET (LL-HLS) never does.
            if let Some(served) = self.table.lookup(req.match_info().as_str()) {
                if !served.contains(req.method()) {
                    let res = method_not_allowed(req.method(), served);
                    return Either::Right(Box::pin(ready(Ok(req.into_response(res).map_into_right_body()))));
                }
            }
        }
        Either::Left(self.service.call(req).map(cors_refusal_as_json::<B> as fn(_) -> _))
    }
}

impl<S, B> RouteMethodsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    /// A pre-flight for `wanted`: refused unless the route serves it; then actix-cors decides,
    /// and may advertise only what the route serves and CORS allows.
    fn preflight(&self, req: ServiceRequest, wanted: Method) -> LocalBoxFuture<'static, Answer<B>> {
        let Some(served) = self.table.lookup(req.match_info().as_str()) else {
            let res = error_response(ErrorKind::NotFound, "no such route");
            return Box::pin(ready(Ok(req.into_response(res).map_into_right_body())));
        };
        if !served.contains(&wanted) {
            let msg = format!("this route does not serve {wanted} (it serves {served})");
            let mut res = error_response(ErrorKind::PermissionDenied, &msg);
            res.headers_mut().insert(header::ALLOW, served.header_value());
            return Box::pin(ready(Ok(req.into_response(res).map_into_right_body())));
        }
        let advertised = served.intersection(self.cors_methods).header_value();
        let fut = self.service.call(req);
        Box::pin(async move {
            let mut res = cors_refusal_as_json(fut.await)?;
            if res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_METHODS) {
                res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_METHODS, advertised);
            }
            Ok(res)
        })
    }
}

/// The method a CORS pre-flight asks about, if `req` is one (the test actix-cors applies:
/// OPTIONS with a valid `Access-Control-Request-Method`).
fn preflight_method(req: &ServiceRequest) -> Option<Method> {
    if req.method() != Method::OPTIONS {
        return None;
    }
    let value = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(value.as_bytes()).ok()
}

/// actix-cors refuses with a plain-text 400; we answer with the JSON error, keeping its `Vary`
/// (the refusal depends on `Origin`, so caches must key on it).
fn cors_refusal_as_json<B>(res: Result<ServiceResponse<B>, Error>) -> Answer<B> {
    let res = res?;
    let refusal = res.response().error().and_then(|e| e.as_error::<CorsError>()).map(cors_refused);
    let Some(mut refusal) = refusal else {
        return Ok(res.map_into_left_body());
    };
    for vary in res.headers().get_all(header::VARY) {
        refusal.headers_mut().append(header::VARY, vary.clone());
    }
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, refusal).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_adds_head_to_get_and_options_to_all() {
        assert_eq!(Methods::GET.served(), Methods::GET | Methods::HEAD | Methods::OPTIONS);
        assert_eq!(Methods::POST.served(), Methods::POST | Methods::OPTIONS);
        assert_eq!(Methods::GET.served().header_value(), "GET, HEAD, OPTIONS");
        assert_eq!((Methods::DELETE | Methods::GET).served().header_value(), "GET, HEAD, DELETE, OPTIONS");
        assert!(!Methods::GET.contains(&Method::TRACE));
        assert!(!Methods::NONE.contains(&Method::from_bytes(b"BREW").unwrap()));
    }

    #[test]
    fn lookup_takes_the_most_specific_matching_patterns() {
        let table = RouteTable::new([
            ("/v/feed".to_owned(), Methods::GET),
            ("/v/{id}".to_owned(), Methods::GET | Methods::PATCH),
            ("/s/{tail}*".to_owned(), Methods::GET),
        ]);
        assert_eq!(
            table.lookup("/v/feed"),
            Some(Methods::GET.served()),
            "the literal route, not /v/{{id}}'s"
        );
        assert_eq!(table.lookup("/v/7"), Some((Methods::GET | Methods::PATCH).served()));
        assert_eq!(table.lookup("/s/a/b.js"), Some(Methods::GET.served()));
        assert_eq!(table.lookup("/v/7/x"), None);
        assert_eq!(table.iter().map(|(p, _)| p).collect::<Vec<_>>(), ["/v/feed", "/v/{id}", "/s/{tail}*"]);
    }
}
