//! Videos, watch history (batched by the `WatchHistory` actor), search, comments and the feed,
//! on SQLite and PostgreSQL.

mod api_support;

use std::time::Duration;

use actix_web::http::Method;
use actix_web::test::init_service;
use api_support::*;
use futures_util::future::join_all;
use serde_json::json;
use tidecast::store::{NewChannel, NewVideo, VideoSource, VideoStatus, Visibility};

#[actix_web::test]
async fn concurrent_watch_updates_survive_graceful_shutdown() {
    let mut config = test_config();
    // No flush before shutdown: the shutdown flush alone must write everything.
    config.api.watch_flush_interval = Duration::from_secs(3600);
    config.api.watch_flush_batch = 1_000_000;
    config.api.watch_max_pending = 1_000_000;
    for env in Env::both(&config).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let mut users = Vec::new();
        for i in 0..20 {
            users.push(env.user(&format!("u{i}"), false).await);
        }
        let mut videos = Vec::new();
        for i in 0..10 {
            videos.push(env.video(None, None, &format!("v{i}"), Visibility::Public).await.id);
        }
        // Every user plays every video at once; each player reports three positions in turn.
        let mut players = Vec::new();
        for (u, (_, token)) in users.iter().enumerate() {
            for (k, &vid) in videos.iter().enumerate() {
                players.push((token.clone(), vid, u * 100 + k * 10));
            }
        }
        let app = &app;
        let results = join_all(players.iter().map(|(token, vid, base)| async move {
            let path = format!("/api/v1/videos/{vid}/watch");
            let mut statuses = Vec::new();
            for step in 1..=3 {
                let pos = (base + step) as f64 + 0.5;
                statuses.push(post(app, &path, Some(token), json!({"position_seconds": pos})).await.0);
            }
            statuses
        }))
        .await;
        assert!(results.iter().flatten().all(|s| *s == 204), "{label}: {results:?}");
        // Nothing written yet (flush interval is an hour), but the API reads its own writes.
        assert_eq!(env.store.watch_position(users[0].0, videos[0]).await.unwrap(), None, "{label}");
        let (_, v) = get(app, &format!("/api/v1/videos/{}", videos[1]), Some(&users[2].1)).await;
        assert_eq!(v["resume_position_seconds"], 213.5, "{label}: {v}");

        env.ctx.shutdown().await;
        for (u, (uid, _)) in users.iter().enumerate() {
            for (k, &vid) in videos.iter().enumerate() {
                let want = ((u * 100 + k * 10 + 3) as f64 + 0.5) * 1000.0;
                assert_eq!(
                    env.store.watch_position(*uid, vid).await.unwrap(),
                    Some(want as i64),
                    "{label} u{u} v{k}"
                );
            }
        }
    }
}

#[actix_web::test]
async fn history_newest_first_with_resume_positions() {
    for env in Env::both(&test_config()).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (_, token) = env.user("viewer", false).await;
        let a = env.video(None, None, "first", Visibility::Public).await.id;
        let b = env.video(None, None, "second", Visibility::Public).await.id;
        let c = env.video(None, None, "third", Visibility::Public).await.id;
        for (vid, pos) in [(a, 10.0), (b, 20.0), (c, 30.0), (a, 42.25)] {
            let (s, v) = post(
                &app,
                &format!("/api/v1/videos/{vid}/watch"),
                Some(&token),
                json!({"position_seconds": pos}),
            )
            .await;
            assert_eq!(s, 204, "{label}: {v}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The interval flush (200 ms in tests) writes without a shutdown.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (s, v) = get(&app, "/api/v1/users/me/history?limit=2", Some(&token)).await;
        assert_eq!(s, 200, "{label}: {v}");
        let ids: Vec<i64> =
            v["items"].as_array().unwrap().iter().map(|i| i["video"]["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [a, c], "{label}: newest first");
        assert_eq!(v["items"][0]["position_seconds"], 42.25);
        let cursor = v["next_cursor"].as_i64().unwrap();
        let (_, v) =
            get(&app, &format!("/api/v1/users/me/history?limit=2&before={cursor}"), Some(&token)).await;
        let ids: Vec<i64> =
            v["items"].as_array().unwrap().iter().map(|i| i["video"]["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [b], "{label}");
        assert!(v["next_cursor"].is_null());

        let (_, v) = get(&app, &format!("/api/v1/videos/{a}"), Some(&token)).await;
        assert_eq!(v["resume_position_seconds"], 42.25, "{label}: {v}");
        assert_eq!(v["playback_url"], format!("/vod/{a}/index.m3u8"));
        let (_, v) = get(&app, &format!("/api/v1/videos/{a}"), None).await;
        assert!(v.get("resume_position_seconds").is_none());
        assert_eq!(get(&app, "/api/v1/users/me/history", None).await.0, 401);

        for bad in [
            json!({"position_seconds": -1}),
            json!({"position_seconds": "10"}),
            json!({"position_seconds": 1e12}),
            json!({}),
        ] {
            let (s, v) = post(&app, &format!("/api/v1/videos/{a}/watch"), Some(&token), bad.clone()).await;
            assert_eq!(s, 400, "{label} {bad}: {v}");
        }
        assert_eq!(
            post(&app, "/api/v1/videos/999999/watch", Some(&token), json!({"position_seconds": 1})).await.0,
            404
        );
    }
}

#[actix_web::test]
async fn search_ranks_paginates_and_hides_private() {
    for env in Env::both(&test_config()).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (owner_id, owner) = env.user("owner", false).await;
        let (_, other) = env.user("other", false).await;
        let (chan, _) = env
            .store
            .create_channel(NewChannel {
                name: "rustconf".into(),
                title: Some("Rust Conference".into()),
                owner_id: Some(owner_id),
                visibility: Visibility::Public,
            })
            .await
            .unwrap();
        let mk = |title: &str, desc: &str, tags: &[&str], vis: Visibility, channel: Option<i64>| NewVideo {
            channel_id: channel,
            owner_id: Some(owner_id),
            title: title.into(),
            description: desc.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            visibility: vis,
            source: VideoSource::Upload,
            duration_ms: 1000,
            status: VideoStatus::Ready,
        };
        let in_title = env
            .store
            .create_video(mk("Streaming with Rust", "", &[], Visibility::Public, None))
            .await
            .unwrap();
        let in_desc = env
            .store
            .create_video(mk("Cooking", "no rust here, only pans", &[], Visibility::Public, None))
            .await
            .unwrap();
        let in_tags = env
            .store
            .create_video(mk("Gardening", "", &["rustic", "Tomatoes"], Visibility::Public, None))
            .await
            .unwrap();
        let private =
            env.store.create_video(mk("Rust secrets", "", &[], Visibility::Private, None)).await.unwrap();
        let by_channel =
            env.store.create_video(mk("Keynote", "", &[], Visibility::Public, Some(chan.id))).await.unwrap();
        let _processing = env
            .store
            .create_video(NewVideo {
                status: VideoStatus::Processing,
                ..mk("Rust draft", "", &[], Visibility::Public, None)
            })
            .await
            .unwrap();

        let ids = |v: &serde_json::Value| -> Vec<i64> {
            v["videos"].as_array().unwrap().iter().map(|x| x["id"].as_i64().unwrap()).collect()
        };
        let (s, v) = get(&app, "/api/v1/search?q=rust", Some(&other)).await;
        assert_eq!(s, 200, "{label}: {v}");
        let found = ids(&v);
        assert_eq!(found[0], in_title.id, "{label}: title match ranks first: {v}");
        for want in [in_title.id, in_desc.id, in_tags.id, by_channel.id] {
            assert!(found.contains(&want), "{label}: {want} missing from {found:?}");
        }
        assert!(!found.contains(&private.id), "{label}: private video leaked");
        assert_eq!(found.len(), 4, "{label}: processing video must not appear: {v}");
        assert_eq!(v["channels"][0]["name"], "rustconf", "{label}: {v}");
        // The owner and admins find the private one; others do not, even from the cache.
        assert!(ids(&get(&app, "/api/v1/search?q=secrets", Some(&other)).await.1).is_empty(), "{label}");
        let (_, v) = get(&app, "/api/v1/search?q=secrets", Some(&owner)).await;
        assert_eq!(ids(&v), [private.id], "{label}");
        let (_, admin) = env.user("admin", true).await;
        assert_eq!(
            ids(&get(&app, "/api/v1/search?q=secrets", Some(&admin)).await.1),
            [private.id],
            "{label}"
        );
        assert!(ids(&get(&app, "/api/v1/search?q=secrets", None).await.1).is_empty(), "{label}");
        // Pagination.
        let (_, p1) = get(&app, "/api/v1/search?q=rust&limit=2", None).await;
        let (_, p2) = get(&app, "/api/v1/search?q=rust&limit=2&offset=2", None).await;
        let mut all = ids(&p1);
        all.extend(ids(&p2));
        assert_eq!(all, found, "{label}");
        // Several words: all must match; tags case-folded.
        assert_eq!(
            ids(&get(&app, "/api/v1/search?q=tomatoes%20garden", None).await.1),
            [in_tags.id],
            "{label}"
        );
        // Metacharacters and query syntax are just separators.
        for q in [
            "%27%3B%20DROP%20TABLE%20videos%3B--",
            "%22rust%22%20OR%20*",
            "NEAR(rust)",
            "rust%27",
            "%E2%80%AE%F0%9F%A6%80",
        ] {
            let (s, v) = get(&app, &format!("/api/v1/search?q={q}"), None).await;
            assert_eq!(s, 200, "{label} {q}: {v}");
        }
        assert_eq!(get(&app, "/api/v1/search?q=", None).await.0, 400);
        assert_eq!(get(&app, "/api/v1/search", None).await.0, 400);
        assert_eq!(get(&app, &format!("/api/v1/search?q={}", "a".repeat(300)), None).await.0, 400);
        assert_eq!(get(&app, "/api/v1/search?q=a%00b", None).await.0, 400);
        assert_eq!(get(&app, "/api/v1/search?q=rust&limit=abc", None).await.0, 400);
    }
}

#[actix_web::test]
async fn comments_create_list_delete() {
    let mut config = test_config();
    config.api.comment_max_len = 50;
    for env in Env::both(&config).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (owner_id, owner) = env.user("owner", false).await;
        let (_, alice) = env.user("alice", false).await;
        let (_, bob) = env.user("bob", false).await;
        let (chan, _) = env
            .store
            .create_channel(NewChannel {
                name: "c".into(),
                title: None,
                owner_id: Some(owner_id),
                visibility: Visibility::Public,
            })
            .await
            .unwrap();
        let vid = env.video(Some(chan.id), None, "talk", Visibility::Public).await.id;
        let subs_vid = env.video(Some(chan.id), None, "premium", Visibility::Subscribers).await.id;
        let url = format!("/api/v1/videos/{vid}/comments");

        assert_eq!(post(&app, &url, None, json!({"body": "hi"})).await.0, 401);
        let mut ids = Vec::new();
        for i in 0..5 {
            let body = format!("comment {i} ✓ مرحبا 🦀");
            let (s, v) = post(&app, &url, Some(&alice), json!({"body": body})).await;
            assert_eq!(s, 201, "{label}: {v}");
            assert_eq!(v["username"], "alice");
            assert_eq!(v["body"], body);
            ids.push(v["id"].as_i64().unwrap());
        }
        for bad in [
            json!({"body": ""}),
            json!({"body": "   "}),
            json!({"body": "x".repeat(51)}),
            json!({"body": "a\u{0}b"}),
            json!({"body": 5}),
            json!({"text": "hi"}),
        ] {
            let (s, v) = post(&app, &url, Some(&alice), bad.clone()).await;
            assert_eq!(s, 400, "{label} {bad}: {v}");
        }
        // 50 characters of multi-byte text is within the limit (characters, not bytes).
        assert_eq!(post(&app, &url, Some(&bob), json!({"body": "é".repeat(50)})).await.0, 201);
        // Not entitled: no commenting on a subscribers-only video.
        assert_eq!(
            post(&app, &format!("/api/v1/videos/{subs_vid}/comments"), Some(&alice), json!({"body": "x"}))
                .await
                .0,
            403
        );

        // Cursor pagination, newest first.
        let (s, p1) = get(&app, &format!("{url}?limit=3"), None).await;
        assert_eq!(s, 200, "{label}: {p1}");
        let page_ids = |v: &serde_json::Value| -> Vec<i64> {
            v["items"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect()
        };
        assert_eq!(page_ids(&p1).len(), 3);
        let cursor = p1["next_cursor"].as_i64().unwrap();
        let (_, p2) = get(&app, &format!("{url}?limit=3&before={cursor}"), None).await;
        let mut all = page_ids(&p1);
        all.extend(page_ids(&p2));
        assert_eq!(all.len(), 6, "{label}");
        assert!(all.windows(2).all(|w| w[0] > w[1]), "{label}: newest first: {all:?}");
        assert!(p2["next_cursor"].is_null());

        // Delete: not by a stranger; by the author; by the channel owner.
        let app = &app;
        let url = &url;
        let del = |id: i64, token: String| async move {
            let path = format!("{url}/{id}");
            call(app, Method::DELETE, &path, Some(&token), None).await.0
        };
        assert_eq!(del(ids[0], bob.clone()).await, 403, "{label}");
        assert_eq!(del(ids[0], alice.clone()).await, 204);
        assert_eq!(del(ids[0], alice.clone()).await, 404);
        assert_eq!(del(ids[1], owner.clone()).await, 204, "{label}: channel owner");
        let (_, v) = get(app, url, None).await;
        assert_eq!(v["items"].as_array().unwrap().len(), 4);
        assert_eq!(
            call(
                app,
                Method::DELETE,
                &format!("/api/v1/videos/{subs_vid}/comments/{}", ids[2]),
                Some(&owner),
                None
            )
            .await
            .0,
            404
        );
    }
}

#[actix_web::test]
async fn feed_orders_subscriptions_similar_popular_and_hides_unplayable() {
    let mut config = test_config();
    config.billing.plans = vec![tidecast::config::PlanConfig {
        id: "gold".into(),
        name: "Gold".into(),
        price_cents: 100,
        currency: "usd".into(),
        period: Duration::from_secs(86400),
        channels: vec!["premium".into()],
        stripe_price_id: String::new(),
    }];
    for env in Env::both(&config).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (owner_id, _) = env.user("owner", false).await;
        let (me_id, me) = env.user("me", false).await;
        let (_, peer) = env.user("peer", false).await;
        let (_, admin) = env.user("admin", true).await;
        let (premium, _) = env
            .store
            .create_channel(NewChannel {
                name: "premium".into(),
                title: None,
                owner_id: Some(owner_id),
                visibility: Visibility::Subscribers,
            })
            .await
            .unwrap();
        let shared = env.video(None, None, "shared", Visibility::Public).await.id;
        let peer_pick = env.video(None, None, "peer pick", Visibility::Public).await.id;
        let secret = env.video(None, Some(owner_id), "secret", Visibility::Private).await.id;
        let premium_vid =
            env.video(Some(premium.id), Some(owner_id), "premium show", Visibility::Subscribers).await.id;
        let _plain = env.video(None, None, "plain", Visibility::Public).await.id;

        // Watch histories: I watched `shared`; the peer watched `shared` and `peer_pick`.
        let (_, owner_token) =
            (owner_id, env.ctx.jwt.issue(owner_id, false, tidecast::http::api::unix_now()).unwrap().0);
        for (token, vid) in [
            (&me, shared),
            (&peer, shared),
            (&peer, peer_pick),
            (&owner_token, secret),
            (&owner_token, premium_vid),
        ] {
            assert_eq!(
                post(
                    &app,
                    &format!("/api/v1/videos/{vid}/watch"),
                    Some(token),
                    json!({"position_seconds": 1})
                )
                .await
                .0,
                204
            );
        }
        env.ctx.shutdown().await;

        let reasons = |v: &serde_json::Value| -> Vec<(i64, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| (i["video"]["id"].as_i64().unwrap(), i["reason"].as_str().unwrap().to_owned()))
                .collect()
        };
        let (s, v) = get(&app, "/api/v1/videos/feed", Some(&me)).await;
        assert_eq!(s, 200, "{label}: {v}");
        let items = reasons(&v);
        assert_eq!(items[0], (peer_pick, "similar".to_owned()), "{label}: {items:?}");
        assert!(
            !items.iter().any(|(id, _)| *id == secret || *id == premium_vid),
            "{label}: unplayable in feed: {items:?}"
        );

        // Subscribed: the premium channel's video comes first.
        post(&app, "/api/v1/subscriptions", Some(&admin), json!({"plan_id": "gold", "user_id": me_id})).await;
        let (_, v) = get(&app, "/api/v1/videos/feed", Some(&me)).await;
        let items = reasons(&v);
        assert_eq!(items[0], (premium_vid, "subscription".to_owned()), "{label}: {items:?}");
        assert!(!items.iter().any(|(id, _)| *id == secret));
        let n = items.len();
        let unique: std::collections::HashSet<_> = items.iter().map(|i| i.0).collect();
        assert_eq!(unique.len(), n, "{label}: duplicates in feed");

        // Anonymous: popular and recent public videos only.
        let (_, v) = get(&app, "/api/v1/videos/feed?limit=3", None).await;
        let items = reasons(&v);
        assert_eq!(items.len(), 3);
        assert!(
            items
                .iter()
                .all(|(id, r)| *id != secret && *id != premium_vid && (r == "popular" || r == "recent")),
            "{items:?}"
        );
    }
}
