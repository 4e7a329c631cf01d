//! Users, sign-in, tokens and channels through `/api/v1`, on SQLite and PostgreSQL.

mod api_support;

use std::time::Instant;

use actix_web::http::Method;
use actix_web::test::init_service;
use api_support::*;
use serde_json::json;
use tidecast::auth::jwt::JwtKeys;
use tidecast::auth::keys::KeyRing;
use tidecast::http::api::{test_ring, unix_now};
use tidecast::shared_state::SharedState;
use tidecast::store::testing::TestDb;

#[actix_web::test]
async fn register_login_me_logout() {
    for env in Env::both(&test_config()).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let body = json!({"email": "Ada@Example.com", "password": PASSWORD, "username": "ada"});
        let (s, v) = post(&app, "/api/v1/users/register", None, body.clone()).await;
        assert_eq!(s, 201, "{label}: {v}");
        assert_eq!(v["email"], "ada@example.com");
        assert_eq!(v["username"], "ada");
        assert!(v.get("password").is_none() && v.get("password_hash").is_none(), "{v}");
        let (s, v) = post(&app, "/api/v1/users/register", None, body).await;
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("already_exists")), "{label}");

        // Wrong password and unknown user: same status, same body, similar time.
        let t = Instant::now();
        let (s1, wrong) = post(
            &app,
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": "nope-nope"}),
        )
        .await;
        let wrong_time = t.elapsed();
        let t = Instant::now();
        let (s2, unknown) = post(
            &app,
            "/api/v1/auth/login",
            None,
            json!({"email": "bob@example.com", "password": "nope-nope"}),
        )
        .await;
        let unknown_time = t.elapsed();
        assert_eq!((s1, s2), (401, 401), "{label}");
        assert_eq!(wrong, unknown, "{label}");
        assert!(!wrong.to_string().contains("nope-nope"));
        // Both ran one Argon2id verification: neither is an order of magnitude faster.
        assert!(
            unknown_time * 3 > wrong_time && wrong_time * 3 > unknown_time,
            "{wrong_time:?} vs {unknown_time:?}"
        );

        let (s, v) =
            post(&app, "/api/v1/auth/login", None, json!({"email": "ADA@example.com", "password": PASSWORD}))
                .await;
        assert_eq!(s, 200, "{label}: {v}");
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 3600);
        let token = v["access_token"].as_str().unwrap().to_owned();

        let (s, me) = get(&app, "/api/v1/users/me", Some(&token)).await;
        assert_eq!(s, 200, "{label}: {me}");
        assert_eq!((me["username"].as_str(), me["is_admin"].as_bool()), (Some("ada"), Some(false)));
        assert_eq!(get(&app, "/api/v1/users/me", None).await.0, 401);

        // Logout revokes this token.
        assert_eq!(call(&app, Method::POST, "/api/v1/auth/logout", Some(&token), None).await.0, 204);
        assert_eq!(get(&app, "/api/v1/users/me", Some(&token)).await.0, 401, "{label}");
    }
}

#[actix_web::test]
async fn bad_tokens_are_refused() {
    let config = test_config();
    let env = Env::with(TestDb::sqlite().await, &config, test_ring("k1"), SharedState::local()).await;
    let app = init_service(env.app()).await;
    let (uid, good) = env.user("eve", false).await;
    assert_eq!(get(&app, "/api/v1/users/me", Some(&good)).await.0, 200);

    // Expired.
    let (expired, _) = env.ctx.jwt.issue(uid, false, unix_now() - 7200).unwrap();
    // Tampered: another user's id in the payload, signature unchanged.
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["adm"] = true.into();
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);
    // alg: none.
    let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#), parts[1]);
    // Signed by a key the server does not know (kid k9).
    let other = JwtKeys::new(&test_ring("k9"), std::time::Duration::from_secs(60));
    let (unknown_kid, _) = other.issue(uid, true, unix_now()).unwrap();
    for (what, token) in
        [("expired", expired), ("tampered", tampered), ("alg none", none), ("unknown kid", unknown_kid)]
    {
        let (s, v) = get(&app, "/api/v1/users/me", Some(&token)).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_eq!(v["error"]["code"], "unauthenticated");
        assert!(!v.to_string().contains(&token), "{what}: the error echoes the token");
    }
    let mut req = actix_web::test::TestRequest::get().uri("/api/v1/users/me");
    req = req.insert_header(("Authorization", "Basic Zm9vOmJhcg=="));
    assert_eq!(send(&app, req).await.0, 401);
}

#[actix_web::test]
async fn rotated_jwt_key_keeps_old_tokens_until_dropped() {
    let config = test_config();
    let k1 = "k1:".to_owned() + &"a".repeat(32);
    let k2 = "k2:".to_owned() + &"b".repeat(32);
    let old = JwtKeys::new(&KeyRing::parse(&k1).unwrap(), std::time::Duration::from_secs(600));
    // Server rotated: k2 signs, k1 still verifies.
    let env = Env::with(
        TestDb::sqlite().await,
        &config,
        KeyRing::parse(&format!("{k2},{k1}")).unwrap(),
        SharedState::local(),
    )
    .await;
    let app = init_service(env.app()).await;
    let (uid, new_token) = env.user("rot", false).await;
    let (old_token, _) = old.issue(uid, false, unix_now()).unwrap();
    assert_eq!(get(&app, "/api/v1/users/me", Some(&old_token)).await.0, 200);
    assert_eq!(get(&app, "/api/v1/users/me", Some(&new_token)).await.0, 200);
    // k1 dropped.
    let env2 =
        Env::with(TestDb::sqlite().await, &config, KeyRing::parse(&k2).unwrap(), SharedState::local()).await;
    let app2 = init_service(env2.app()).await;
    assert_eq!(get(&app2, "/api/v1/users/me", Some(&old_token)).await.0, 401);
}

#[actix_web::test]
async fn login_is_rate_limited_per_account_and_per_ip() {
    let mut config = test_config();
    config.auth.login_max_failures = 3;
    config.auth.login_max_per_ip = 8;
    for env in Env::both(&config).await {
        let app = init_service(env.app()).await;
        let body = json!({"email": "lim@example.com", "password": PASSWORD, "username": "lim"});
        assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 201);
        let wrong = json!({"email": "lim@example.com", "password": "wrong-password"});
        for _ in 0..3 {
            assert_eq!(post(&app, "/api/v1/auth/login", None, wrong.clone()).await.0, 401);
        }
        // Locked: even the right password gets 429 now, and so does an unknown account at
        // its own limit (the limit does not reveal whether an account exists).
        let right = json!({"email": "lim@example.com", "password": PASSWORD});
        let (s, v) = post(&app, "/api/v1/auth/login", None, right).await;
        assert_eq!((s, v["error"]["code"].as_str()), (429, Some("resource_exhausted")), "{}", env.label);
        // Per IP: 8 attempts in the window from 127.0.0.1, then 429 for any account.
        let (s, _) =
            post(&app, "/api/v1/auth/login", None, json!({"email": "x@example.com", "password": "p"})).await;
        assert_eq!(s, 401);
        let mut last = 0;
        for i in 0..5 {
            last = post(
                &app,
                "/api/v1/auth/login",
                None,
                json!({"email": format!("y{i}@example.com"), "password": "p"}),
            )
            .await
            .0;
        }
        assert_eq!(last, 429, "{}", env.label);
        // Another address is not affected.
        let req = actix_web::test::TestRequest::post()
            .uri("/api/v1/auth/login")
            .peer_addr("10.0.0.2:1".parse().unwrap())
            .set_json(json!({"email": "z@example.com", "password": "p"}));
        assert_eq!(send(&app, req).await.0, 401);
    }
}

#[actix_web::test]
async fn channels_create_get_list_visibility_rotate() {
    for env in Env::both(&test_config()).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (owner_id, owner) = env.user("owner", false).await;
        let (_, other) = env.user("other", false).await;
        let (_, admin) = env.user("admin", true).await;

        assert_eq!(post(&app, "/api/v1/channels", None, json!({"name": "studio"})).await.0, 401);
        let (s, v) =
            post(&app, "/api/v1/channels", Some(&owner), json!({"name": "studio", "title": "Studio"})).await;
        assert_eq!(s, 201, "{label}: {v}");
        let key = v["stream_key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("live_"));
        assert_eq!((v["owner_id"].as_i64(), v["visibility"].as_str()), (Some(owner_id), Some("public")));
        assert!(env.store.authorize_stream_key(&key).await.unwrap().is_some());
        let (s, v) = post(&app, "/api/v1/channels", Some(&owner), json!({"name": "studio"})).await;
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("already_exists")));
        for bad in ["Bad Name", "", "a/b", "é", "x'; DROP TABLE channels; --"] {
            assert_eq!(
                post(&app, "/api/v1/channels", Some(&owner), json!({"name": bad})).await.0,
                400,
                "{bad:?}"
            );
        }

        // The key is never shown again.
        let (s, v) = get(&app, "/api/v1/channels/studio", None).await;
        assert_eq!(s, 200);
        assert!(v.get("stream_key").is_none() && !v.to_string().contains(&key), "{v}");
        assert_eq!(v["playback_url"], "/live/studio/index.m3u8");
        assert!(v.get("playback_token").is_none(), "public: no token needed");
        let (_, list) = get(&app, "/api/v1/channels", None).await;
        assert!(!list.to_string().contains(&key));

        // Private: invisible to others, visible to owner and admin.
        let (s, _) =
            post(&app, "/api/v1/channels", Some(&owner), json!({"name": "secret", "visibility": "private"}))
                .await;
        assert_eq!(s, 201);
        assert_eq!(get(&app, "/api/v1/channels/secret", None).await.0, 404, "{label}");
        assert_eq!(get(&app, "/api/v1/channels/secret", Some(&other)).await.0, 404);
        assert_eq!(get(&app, "/api/v1/channels/secret", Some(&owner)).await.0, 200);
        assert_eq!(get(&app, "/api/v1/channels/secret", Some(&admin)).await.0, 200);
        let names = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(names(&get(&app, "/api/v1/channels", None).await.1), ["studio"]);
        assert_eq!(names(&get(&app, "/api/v1/channels", Some(&owner)).await.1), ["secret", "studio"]);

        // Visibility change: owner only.
        let patch = |token: String, vis: &'static str| {
            let req = actix_web::test::TestRequest::patch()
                .uri("/api/v1/channels/studio")
                .insert_header(("Authorization", format!("Bearer {token}")))
                .set_json(json!({"visibility": vis}));
            send(&app, req)
        };
        assert_eq!(patch(other.clone(), "private").await.0, 403);
        let (s, v) = patch(owner.clone(), "subscribers").await;
        assert_eq!((s, v["visibility"].as_str()), (200, Some("subscribers")), "{label}: {v}");
        assert_eq!(patch(owner.clone(), "everyone").await.0, 400);

        // Rotation: owner or admin; the old key stops working.
        assert_eq!(call(&app, Method::POST, "/api/v1/channels/studio/key", Some(&other), None).await.0, 403);
        let (s, v) = call(&app, Method::POST, "/api/v1/channels/studio/key", Some(&owner), None).await;
        assert_eq!(s, 200);
        let new_key = v["stream_key"].as_str().unwrap();
        assert_ne!(new_key, key);
        assert!(env.store.authorize_stream_key(&key).await.unwrap().is_none());
        assert!(env.store.authorize_stream_key(new_key).await.unwrap().is_some());
        assert_eq!(call(&app, Method::POST, "/api/v1/channels/studio/key", Some(&admin), None).await.0, 200);
        assert_eq!(call(&app, Method::POST, "/api/v1/channels/nope/key", Some(&admin), None).await.0, 404);
    }
}
