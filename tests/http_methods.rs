//! HTTP methods on every route of the app, over a real socket: the server `http::start` builds,
//! in process on 127.0.0.1:0, with a SQLite store, `/static/` served and one allowed CORS origin.
//!
//! For each route of `http::route_table` (the table the server answers from): HEAD gives GET's
//! status and headers and no body (RFC 9110 §9.3.2; actix-http drops the body on the wire, so
//! only a socket shows it); OPTIONS gives 204 with `Allow`; every other method gives 405 with
//! `Allow` and the JSON error; a pre-flight advertises only methods the route serves, and a
//! refused one (method, origin) is the JSON error, not actix-cors's plain text.

mod api_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use api_support::{test_config, Env};
use serde_json::{json, Value};
use tidecast::actors::hls::HlsSettings;
use tidecast::http::api::test_ring;
use tidecast::http::routes::Methods;
use tidecast::http::{route_table, AppState, HttpOptions};
use tidecast::shared_state::SharedState;
use tidecast::store::testing::TestDb;
use tidecast::store::Visibility;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALLOWED: &str = "https://player.example";
const REFUSED: &str = "https://elsewhere.example";
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// An HTTP/1.1 response as read off the socket (body de-chunked).
struct Resp {
    status: u16,
    /// Lower-cased names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A comma-separated header as a set (`Allow`, `Access-Control-Allow-Methods`).
    fn list(&self, name: &str) -> BTreeSet<String> {
        self.header(name)
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{} body is not JSON ({e}): {:?}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// The `error.code` of the house JSON error body (asserting its shape).
    fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "no error.message in {v}");
        v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {v}")).to_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if len == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + len]);
        b = &b[i + 2 + len + 2..];
    }
    out
}

/// One request on a fresh connection (Connection: close); the whole exchange within 10 s.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !matches!(method, "GET" | "HEAD" | "OPTIONS") {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete response within 10 s"));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP header terminator");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked && method != "HEAD" {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

/// The running server and what its routes need to answer 200.
struct Site {
    addr: SocketAddr,
    token: String,
    channel: String,
    video: i64,
    _env: Env,
    _static: tempfile::TempDir,
}

async fn start() -> (Site, actix_web::dev::ServerHandle) {
    let env = Env::with(TestDb::sqlite().await, &test_config(), test_ring("k1"), SharedState::local()).await;
    let (user_id, token) = env.user("alice", false).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    let state = AppState {
        store: env.store.clone(),
        hls: Default::default(),
        hls_settings: HlsSettings {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            window: Duration::from_secs(30),
            block_timeout: Duration::from_secs(2),
        },
        hlsjs_url: "/static/hls.min.js".to_owned(),
        api: env.ctx.clone(),
        pulls: tidecast::actors::pull::Pulls::none(),
        archive: tidecast::actors::archive::Archive::disabled(),
        webrtc: None,
    };
    let opts = HttpOptions {
        listen: "127.0.0.1:0".to_owned(),
        workers: 1,
        cors_origins: vec![ALLOWED.to_owned()],
        static_dir: dir.path().to_str().unwrap().to_owned(),
    };
    let (server, addr) = tidecast::http::start(opts, state).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    // A channel and a public video of it, so that their GET routes answer 200 with a body.
    let auth = format!("Bearer {token}");
    let body = json!({"name": "alpha", "visibility": "public"}).to_string();
    let created = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /api/v1/channels HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await
    .unwrap();
    assert!(created.starts_with("HTTP/1.1 201"), "creating a channel: {created}");
    let channel_id = env.store.channel_by_name("alpha").await.unwrap().expect("created above").id;
    let video = env.video(Some(channel_id), Some(user_id), "first", Visibility::Public).await.id;
    let site = Site { addr, token, channel: "alpha".to_owned(), video, _env: env, _static: dir };
    (site, handle)
}

/// A path for `pattern` whose GET finds something where the route can (channel, video,
/// static file); LL-HLS routes find the channel offline.
fn concrete(site: &Site, pattern: &str) -> String {
    pattern
        .replace("{file}*", "hello.txt")
        .replace("{name}", &site.channel)
        .replace("{channel}", &site.channel)
        .replace("{id}", &site.video.to_string())
        .replace("{comment_id}", "1")
        .replace("{rendition}", "source")
        .replace("{session}", "s1")
        .replace("{file}", "part-0-0.m4s")
}

fn names(methods: Methods) -> BTreeSet<String> {
    methods.iter().map(|m| m.to_string()).collect()
}

/// HEAD answers as GET does, without a body.
async fn head_is_get_without_body(site: &Site, path: &str) {
    let auth = format!("Bearer {}", site.token);
    let get = request(site.addr, "GET", path, &[("Authorization", &auth)]).await;
    let head = request(site.addr, "HEAD", path, &[("Authorization", &auth)]).await;
    assert_eq!(head.status, get.status, "HEAD {path}: status differs from GET's");
    assert!(head.body.is_empty(), "HEAD {path}: {} body bytes", head.body.len());
    // `/metrics` counts these very requests, so its length may change between the two.
    let varies = |k: &str| k == "date" || (path == "/metrics" && k == "content-length");
    let of = |r: &Resp| -> Vec<(String, String)> {
        r.headers
            .iter()
            .map(|(k, v)| (k.clone(), if varies(k) { String::new() } else { v.clone() }))
            .collect()
    };
    assert_eq!(of(&head), of(&get), "HEAD {path}: headers differ from GET's");
    if let Some(len) = get.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), get.body.len(), "GET {path}: Content-Length");
    }
}

#[actix_web::test]
async fn every_route_answers_head_options_and_wrong_methods() {
    let (site, handle) = start().await;
    let table = route_table(true);
    let mut with_200 = BTreeSet::new();
    for (pattern, _) in table.iter() {
        let path = concrete(&site, pattern);
        // What the server serves at this path: its most specific patterns (`/videos/feed` also
        // matches `/videos/{id}`, whose DELETE is not the feed's: 405 there).
        let served = table.lookup(&path).expect("the path of a pattern matches it");
        assert!(served.contains(&actix_web::http::Method::OPTIONS), "{pattern}");

        if served.contains(&actix_web::http::Method::GET) {
            head_is_get_without_body(&site, &path).await;
            let get =
                request(site.addr, "GET", &path, &[("Authorization", &format!("Bearer {}", site.token))])
                    .await;
            if get.status == 200 {
                with_200.insert(pattern.to_owned());
            }
        }

        let options = request(site.addr, "OPTIONS", &path, &[]).await;
        assert_eq!(options.status, 204, "OPTIONS {path}");
        assert_eq!(options.list("allow"), names(served), "OPTIONS {path}: Allow");
        assert!(options.body.is_empty(), "OPTIONS {path}: a 204 has no body");

        for method in METHODS.iter().filter(|m| !names(served).contains(**m)) {
            let res = request(site.addr, method, &path, &[]).await;
            assert_eq!(res.status, 405, "{method} {path}");
            assert_eq!(res.list("allow"), names(served), "{method} {path}: Allow");
            if *method != "HEAD" {
                assert_eq!(res.error_code(), "method_not_allowed", "{method} {path}");
            }
        }
    }
    // The walk met real answers, not only errors: HEAD was compared with 200s that have bodies.
    for pattern in ["/healthz", "/metrics", "/watch/{channel}", "/static/{file}*", "/api/v1/channels/{name}"]
    {
        assert!(with_200.contains(pattern), "GET {pattern} was not 200; the walk saw 200 on {with_200:?}");
    }

    // A path no route has stays 404, whatever the method.
    for method in ["GET", "HEAD", "OPTIONS", "DELETE"] {
        let res = request(site.addr, method, "/nope", &[]).await;
        assert_eq!(res.status, 404, "{method} /nope");
    }
    handle.stop(true).await;
}

#[actix_web::test]
async fn preflights_advertise_only_the_routes_methods_and_refuse_as_json() {
    let (site, handle) = start().await;
    let table = route_table(true);
    for (pattern, _) in table.iter() {
        let path = concrete(&site, pattern);
        let served = table.lookup(&path).expect("the path of a pattern matches it");
        for method in METHODS.iter().filter(|m| **m != "OPTIONS") {
            let res = request(
                site.addr,
                "OPTIONS",
                &path,
                &[
                    ("Origin", ALLOWED),
                    ("Access-Control-Request-Method", method),
                    ("Access-Control-Request-Headers", "authorization"),
                ],
            )
            .await;
            let advertised = res.list("access-control-allow-methods");
            assert!(
                advertised.is_subset(&names(served)),
                "pre-flight {method} {path}: advertises {advertised:?}, the route serves {served}"
            );
            // CORS lets other origins do what the route serves (players, WHIP/WHEP pages, a
            // front-end calling the API).
            let allowed = names(served).contains(*method);
            if allowed {
                assert_eq!(res.status, 200, "pre-flight {method} {path}");
                assert!(advertised.contains(*method), "pre-flight {method} {path}: {advertised:?}");
                assert_eq!(res.header("access-control-allow-origin"), Some(ALLOWED));
            } else {
                assert!((400..500).contains(&res.status), "pre-flight {method} {path}: {}", res.status);
                assert_eq!(res.error_code(), "permission_denied", "pre-flight {method} {path}");
                assert!(res.header("access-control-allow-origin").is_none());
            }
        }
    }

    // A refused origin: its pre-flight gets the JSON error; an actual request is answered
    // without `Access-Control-Allow-Origin`, so its browser keeps the body from the page.
    let preflight = request(
        site.addr,
        "OPTIONS",
        "/healthz",
        &[("Origin", REFUSED), ("Access-Control-Request-Method", "GET")],
    )
    .await;
    assert_eq!((preflight.status, preflight.error_code().as_str()), (403, "permission_denied"));
    let actual = request(site.addr, "GET", "/healthz", &[("Origin", REFUSED)]).await;
    assert_eq!((actual.status, actual.header("access-control-allow-origin")), (200, None));

    // An allowed origin's actual requests, OPTIONS included, pass with CORS headers.
    let options = request(site.addr, "OPTIONS", "/healthz", &[("Origin", ALLOWED)]).await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("access-control-allow-origin"), Some(ALLOWED));
    let head = request(site.addr, "HEAD", "/healthz", &[("Origin", ALLOWED)]).await;
    assert_eq!((head.status, head.header("access-control-allow-origin")), (200, Some(ALLOWED)));

    // A pre-flight for a path no route has is refused.
    let res = request(
        site.addr,
        "OPTIONS",
        "/nope",
        &[("Origin", ALLOWED), ("Access-Control-Request-Method", "GET")],
    )
    .await;
    assert_eq!((res.status, res.error_code().as_str()), (404, "not_found"));
    handle.stop(true).await;
}
