//! Shared state in Redis (127.0.0.1:6379, a unique key prefix per test) and without it: login
//! rate limits and token revocation are shared between two nodes through Redis, keys carry
//! TTLs, and with Redis unreachable the API keeps working on in-process state.
//!
//! Redis is required: if it is not reachable these tests fail, they never skip. Override the
//! URL with `TIDECAST_TEST_REDIS_URL`.

mod api_support;

use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::test::init_service;
use api_support::*;
use serde_json::json;
use tidecast::config::RedisConfig;
use tidecast::http::api::test_ring;
use tidecast::shared_state::SharedState;
use tidecast::store::testing::TestDb;

fn redis_url() -> String {
    std::env::var("TIDECAST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    format!("tidecast-test:{}:{}:", std::process::id(), hex::encode(rand::random::<[u8; 6]>()))
}

async fn node(prefix: &str) -> SharedState {
    let s = SharedState::connect(&RedisConfig { url: redis_url(), key_prefix: prefix.into() }).await.unwrap();
    assert!(s.redis_connected(), "Redis at {} is required for this test and did not answer", redis_url());
    s
}

#[actix_web::test]
async fn two_nodes_share_counters_revocations_and_viewers() {
    let prefix = unique_prefix();
    let (a, b) = (node(&prefix).await, node(&prefix).await);
    assert_eq!(a.hit("bucket", Duration::from_secs(60)).await, 1);
    assert_eq!(b.hit("bucket", Duration::from_secs(60)).await, 2);
    assert_eq!(a.count("bucket").await, 2);
    b.reset("bucket").await;
    assert_eq!(a.count("bucket").await, 0);

    a.revoke("jti-1", Duration::from_secs(30)).await;
    assert!(b.is_revoked("jti-1").await);
    assert!(!b.is_revoked("jti-2").await);

    assert_eq!(a.add_viewers("studio", 1).await, 1);
    assert_eq!(b.add_viewers("studio", 1).await, 2);
    assert_eq!(a.viewers("studio").await, 2);
    assert_eq!(b.viewers_many(&["studio", "empty"]).await, [2, 0]);

    // Every key has a TTL.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    a.hit("ttl", Duration::from_secs(60)).await;
    for key in ["rl:ttl", "revoked:jti-1", "viewers:studio"] {
        let ttl: i64 = redis::cmd("PTTL").arg(format!("{prefix}{key}")).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    // Windows expire.
    assert_eq!(a.hit("short", Duration::from_millis(100)).await, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.hit("short", Duration::from_millis(100)).await, 1);
}

#[actix_web::test]
async fn login_limit_and_logout_apply_across_nodes() {
    let mut config = test_config();
    config.auth.login_max_failures = 3;
    let prefix = unique_prefix();
    // Two nodes on one PostgreSQL database, each with its own Redis connection.
    let env_a = Env::with(TestDb::postgres().await, &config, test_ring("k1"), node(&prefix).await).await;
    let app_a = init_service(env_a.app()).await;
    let ctx_b = tidecast::http::api::ApiContext::with_parts(
        &config,
        env_a.store.clone(),
        test_ring("k1"),
        test_ring("p1"),
        node(&prefix).await,
    )
    .await
    .unwrap();
    let app_b = init_service(
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(ctx_b))
            .configure(tidecast::http::api::configure(64 * 1024))
            .default_service(actix_web::web::to(tidecast::http::error::not_found)),
    )
    .await;

    let body = json!({"email": "n@example.com", "password": PASSWORD, "username": "n"});
    assert_eq!(post(&app_a, "/api/v1/users/register", None, body).await.0, 201);
    let wrong = json!({"email": "n@example.com", "password": "wrong-password"});
    assert_eq!(post(&app_a, "/api/v1/auth/login", None, wrong.clone()).await.0, 401);
    assert_eq!(post(&app_b, "/api/v1/auth/login", None, wrong.clone()).await.0, 401);
    assert_eq!(post(&app_a, "/api/v1/auth/login", None, wrong.clone()).await.0, 401);
    let right = json!({"email": "n@example.com", "password": PASSWORD});
    assert_eq!(post(&app_b, "/api/v1/auth/login", None, right).await.0, 429, "node B sees node A's failures");

    // Revocation on A is honoured by B.
    let (_, token) = env_a.user("m", false).await;
    assert_eq!(get(&app_b, "/api/v1/users/me", Some(&token)).await.0, 200);
    assert_eq!(call(&app_a, Method::POST, "/api/v1/auth/logout", Some(&token), None).await.0, 204);
    assert_eq!(get(&app_b, "/api/v1/users/me", Some(&token)).await.0, 401);
}

#[actix_web::test]
async fn redis_down_degrades_to_in_process_state() {
    // Nothing listens on port 1: the server must start and the API must work without Redis.
    let t = Instant::now();
    let shared =
        SharedState::connect(&RedisConfig { url: "redis://127.0.0.1:1".into(), key_prefix: unique_prefix() })
            .await
            .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "start-up must not wait long for Redis");
    assert!(!shared.redis_connected());

    let mut config = test_config();
    config.auth.login_max_failures = 2;
    let env = Env::with(TestDb::sqlite().await, &config, test_ring("k1"), shared).await;
    let app = init_service(env.app()).await;
    let body = json!({"email": "d@example.com", "password": PASSWORD, "username": "d"});
    assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 201);
    let right = json!({"email": "d@example.com", "password": PASSWORD});
    let (s, v) = post(&app, "/api/v1/auth/login", None, right.clone()).await;
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    // Limits still hold, per node.
    let wrong = json!({"email": "d@example.com", "password": "wrong-password"});
    post(&app, "/api/v1/auth/login", None, wrong.clone()).await;
    post(&app, "/api/v1/auth/login", None, wrong).await;
    assert_eq!(post(&app, "/api/v1/auth/login", None, right).await.0, 429);
    // Revocation still works on this node.
    assert_eq!(get(&app, "/api/v1/users/me", Some(&token)).await.0, 200);
    assert_eq!(call(&app, Method::POST, "/api/v1/auth/logout", Some(&token), None).await.0, 204);
    assert_eq!(get(&app, "/api/v1/users/me", Some(&token)).await.0, 401);
}

/// A TCP proxy to Redis that the test can cut, to play "Redis died while we were using it".
struct RedisProxy {
    url: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl RedisProxy {
    async fn start() -> RedisProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = redis_url().trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks2.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        RedisProxy { url: format!("redis://127.0.0.1:{port}"), tasks }
    }

    /// Closes the listener and every proxied connection.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[actix_web::test]
async fn redis_dying_mid_way_falls_back_to_in_process_state() {
    let proxy = RedisProxy::start().await;
    let shared = SharedState::connect(&RedisConfig { url: proxy.url.clone(), key_prefix: unique_prefix() })
        .await
        .unwrap();
    assert!(shared.redis_connected(), "Redis at {} is required for this test", redis_url());
    assert_eq!(shared.hit("b", Duration::from_secs(60)).await, 1);
    assert_eq!(shared.hit("b", Duration::from_secs(60)).await, 2);

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = tidecast::metrics::metrics().shared_state_fallbacks.get();
    let t = Instant::now();
    // Served in process now: a fresh local window.
    assert_eq!(shared.hit("b", Duration::from_secs(60)).await, 1);
    assert!(!shared.is_revoked("j").await);
    shared.revoke("j", Duration::from_secs(60)).await;
    assert!(shared.is_revoked("j").await, "a revocation made during the outage is kept in process");
    assert!(t.elapsed() < Duration::from_secs(3), "fallbacks must be quick: {:?}", t.elapsed());
    assert!(tidecast::metrics::metrics().shared_state_fallbacks.get() > before, "fallbacks are counted");
}
