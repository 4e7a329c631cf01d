//! The Platform API against the real binary: playback tokens on real LL-HLS requests
//! (multivariant, media playlist, part, segment) for a `subscribers` channel published by
//! ffmpeg (a private one answers like an unknown one), and a graceful shutdown (SIGTERM) that keeps every acknowledged watch update.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tidecast::auth::keys::KeyRing;
use tidecast::auth::playback::{PlaybackKeys, PlaybackScope};
use tidecast::store::{NewVideo, Store, VideoSource, VideoStatus, Visibility};

/// URIs in a playlist: plain lines and `URI="..."` attributes.
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if !line.starts_with('#') && !line.trim().is_empty() {
            out.push(line.trim().to_owned());
        }
        let mut rest = line;
        while let Some(i) = rest.find("URI=\"") {
            let tail = &rest[i + 5..];
            let end = tail.find('"').unwrap();
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn subscribers_channel_needs_a_token_on_every_llhls_request() {
    if !require_ffmpeg() {
        return;
    }
    // A plan for the channel, and a password for the admin the CLI creates.
    let conf = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        conf.path(),
        "[[billing.plans]]\nid = \"gold\"\nname = \"Gold\"\nprice_cents = 500\ncurrency = \"usd\"\n\
         period = \"30days\"\nchannels = [\"premium\"]\n",
    )
    .unwrap();
    let conf_path = conf.path().display().to_string();
    let server =
        TestServer::start(&[("TIDECAST_CONFIG", &conf_path), ("TIDECAST_PASSWORD", "admin password 1")]);
    let out = server.cli(&["user", "create", "admin@example.com", "--admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (s, v) = http_json(
        server.http,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"email": "admin@example.com", "password": "admin password 1"})),
    );
    assert_eq!(s, 200, "{v}");
    let admin = v["access_token"].as_str().unwrap().to_owned();
    let owner = signed_in(&server, "owner@example.com");
    let viewer = signed_in(&server, "viewer@example.com");
    let (s, v) = http_json(
        server.http,
        "POST",
        "/api/v1/channels",
        Some(&owner),
        Some(json!({"name": "premium", "visibility": "subscribers"})),
    );
    assert_eq!(s, 201, "{v}");
    let key = v["stream_key"].as_str().unwrap().to_owned();
    let mut ffmpeg = ffmpeg_publish(&server.publish_url(&key), 30);
    server.wait_live(Duration::from_secs(15));

    // The owner is entitled: a token and a playback URL that carries it.
    let (s, v) = http_json(server.http, "GET", "/api/v1/channels/premium", Some(&owner), None);
    assert_eq!(s, 200, "{v}");
    let token = v["playback_token"].as_str().unwrap().to_owned();
    let url = v["playback_url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/live/premium/index.m3u8?token={token}"));
    // A signed-in user without a subscription, and an anonymous caller, get none.
    for caller in [Some(viewer.as_str()), None] {
        let (s, v) = http_json(server.http, "GET", "/api/v1/channels/premium", caller, None);
        assert_eq!((s, v["can_play"].as_bool()), (200, Some(false)), "{v}");
        assert!(v.get("playback_token").is_none());
    }
    // Once the admin grants the plan, the viewer is a subscriber and gets a token too.
    let (_, me) = http_json(server.http, "GET", "/api/v1/users/me", Some(&viewer), None);
    let (s, v) = http_json(
        server.http,
        "POST",
        "/api/v1/subscriptions",
        Some(&admin),
        Some(json!({"plan_id": "gold", "user_id": me["id"]})),
    );
    assert_eq!(s, 201, "{v}");
    let grant = v["subscription"]["id"].as_i64().unwrap();
    let (_, v) = http_json(server.http, "GET", "/api/v1/channels/premium", Some(&viewer), None);
    let subscriber_url = v["playback_url"].as_str().expect("a subscriber gets a playback URL").to_owned();

    // Tokens the server must refuse: expired, for another channel, signed with another key.
    let ring = std::fs::read_to_string(server.data_dir().join("secrets/playback.keys")).unwrap();
    let keys = PlaybackKeys::new(KeyRing::parse(&ring).unwrap());
    let now = tidecast::http::api::unix_now();
    let expired = keys.sign(&PlaybackScope::Channel("premium".into()), now - 1);
    let other_channel = keys.sign(&PlaybackScope::Channel("main".into()), now + 600);
    let foreign = PlaybackKeys::new(KeyRing::parse(&format!("p1:{}", "z".repeat(32))).unwrap())
        .sign(&PlaybackScope::Channel("premium".into()), now + 600);
    let refused = |path: &str| {
        for bad in [
            "",
            "?token=",
            "?token=garbage",
            &format!("?token={expired}"),
            &format!("?token={other_channel}"),
            &format!("?token={foreign}"),
        ] {
            let r = server.get(&format!("{path}{bad}"));
            assert_eq!(r.status, 403, "{path}{bad}: {}", r.body);
            assert!(r.body.contains("permission_denied"), "{}", r.body);
        }
    };

    // Multivariant playlist (waits for the first part), then the media playlist, a part and a
    // segment: each refused without a valid token and served with it; every URI in each
    // playlist carries the token.
    let mut multivariant = server.get(&url);
    assert!(
        wait_until(Duration::from_secs(20), || {
            multivariant = server.get(&url);
            multivariant.status == 200
        }),
        "multivariant: {} {}",
        multivariant.status,
        multivariant.body
    );
    refused("/live/premium/index.m3u8");
    // The feed opens with channels on air that the caller may play.
    let (_, feed) = http_json(server.http, "GET", "/api/v1/videos/feed", Some(&owner), None);
    assert_eq!(
        (feed[0]["reason"].as_str(), feed[0]["channel"]["name"].as_str()),
        (Some("live"), Some("premium")),
        "{feed}"
    );
    let (_, feed) = http_json(server.http, "GET", "/api/v1/videos/feed", None, None);
    assert!(!feed.to_string().contains("premium"), "anonymous feed lists a subscribers channel: {feed}");
    let r = server.get(&subscriber_url);
    assert_eq!(r.status, 200, "subscriber's token: {}", r.body);
    // Revoking the subscription stops playback with the token already handed out.
    let (s, v) =
        http_json(server.http, "DELETE", &format!("/api/v1/subscriptions/{grant}"), Some(&admin), None);
    assert_eq!(s, 200, "{v}");
    let r = server.get(&subscriber_url);
    assert_eq!(r.status, 403, "revoked subscriber's token: {}", r.body);
    let variant_uris = uris(&multivariant.body);
    assert!(!variant_uris.is_empty(), "{}", multivariant.body);
    assert!(variant_uris.iter().all(|u| u.contains(&format!("token={token}"))), "{}", multivariant.body);
    let media_path = format!("/live/premium/{}", variant_uris[0]);
    let rendition = variant_uris[0].split('/').next().unwrap().to_owned();
    let mut media = server.get(&media_path);
    assert!(
        wait_until(Duration::from_secs(20), || {
            media = server.get(&media_path);
            media.status == 200 && media.body.contains("#EXTINF")
        }),
        "media playlist: {} {}",
        media.status,
        media.body
    );
    refused(&format!("/live/premium/{rendition}/index.m3u8"));
    let media_uris = uris(&media.body);
    assert!(media_uris.iter().all(|u| u.contains(&format!("token={token}"))), "{}", media.body);
    let base = format!("/live/premium/{rendition}/");
    // URIs are `<session>/p<msn>.<part>.m4s`, `<session>/s<msn>.m4s` and `<session>/init.mp4`.
    let file_name = |u: &str| u.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned();
    let part = media_uris.iter().find(|u| file_name(u).starts_with('p')).cloned().expect("a part URI");
    let segment = media_uris.iter().find(|u| file_name(u).starts_with('s')).cloned().expect("a segment URI");
    let init = media_uris.iter().find(|u| file_name(u).starts_with("init")).cloned().expect("an init URI");
    for file in [part, segment, init] {
        let with = format!("{base}{file}");
        let r = server.get(&with);
        assert_eq!(r.status, 200, "{with}: {}", r.body);
        let bare = with.split('?').next().unwrap().to_owned();
        refused(&bare);
    }

    // Visibility changes take effect mid-session: public needs no token, and back again.
    let set = |vis: &str| {
        let (s, v) = http_json(
            server.http,
            "PATCH",
            "/api/v1/channels/premium",
            Some(&owner),
            Some(json!({"visibility": vis})),
        );
        assert_eq!(s, 200, "{v}");
    };
    set("public");
    let r = server.get("/live/premium/index.m3u8");
    assert_eq!(r.status, 200, "public now: {}", r.body);
    assert!(!r.body.contains("token="), "{}", r.body);
    set("subscribers");
    assert_eq!(server.get("/live/premium/index.m3u8").status, 403);
    // Private: the owner's token still plays; the channel is hidden from everyone else, on
    // LL-HLS as on the API: without a token, with a bad one, or with a former subscriber's, the
    // answer is the one an unknown channel gets (a 403 would say it exists and is on air).
    set("private");
    assert_eq!(server.get(&url).status, 200, "owner's token on a private channel");
    let unknown = server.get("/live/nosuchchannel/index.m3u8");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let rendition_path = format!("/live/premium/{rendition}/index.m3u8");
    for path in [
        "/live/premium/index.m3u8".to_owned(),
        "/live/premium/index.m3u8?token=garbage".to_owned(),
        subscriber_url.clone(),
        rendition_path,
        "/live/premium/nosuchrendition/index.m3u8".to_owned(),
    ] {
        let r = server.get(&path);
        assert_eq!((r.status, &r.body), (unknown.status, &unknown.body), "{path}");
    }
    assert_eq!(http_json(server.http, "GET", "/api/v1/channels/premium", Some(&viewer), None).0, 404);
    // The watch page is the same page for any well-formed name: it tells nothing either.
    let (page, unknown_page) = (server.get("/watch/premium"), server.get("/watch/nosuchchannel"));
    assert_eq!((page.status, unknown_page.status), (200, 200));
    assert_eq!(page.body.replace("premium", "nosuchchannel"), unknown_page.body);
    ffmpeg.kill();
}

#[test]
fn graceful_shutdown_keeps_every_acknowledged_watch_update() {
    // An hour between flushes: only the shutdown flush can write these.
    let mut server = TestServer::start(&[("TIDECAST__API__WATCH_FLUSH_INTERVAL", "1h")]);
    let db_url = format!("sqlite://{}/tidecast.db", server.data_dir().display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(Store::connect(&db_url, 1)).unwrap();
    let video = rt
        .block_on(store.create_video(NewVideo {
            channel_id: None,
            owner_id: None,
            title: "film".into(),
            description: String::new(),
            tags: vec![],
            visibility: Visibility::Public,
            source: VideoSource::Upload,
            duration_ms: 3_600_000,
            status: VideoStatus::Ready,
        }))
        .unwrap();
    let token = signed_in(&server, "watcher@example.com");
    let (_, me) = http_json(server.http, "GET", "/api/v1/users/me", Some(&token), None);
    let user_id = me["id"].as_i64().unwrap();
    for pos in 1..=50 {
        let (s, v) = http_json(
            server.http,
            "POST",
            &format!("/api/v1/videos/{}/watch", video.id),
            Some(&token),
            Some(json!({"position_seconds": pos})),
        );
        assert_eq!(s, 204, "{v}");
    }
    assert_eq!(rt.block_on(store.watch_position(user_id, video.id)).unwrap(), None, "flushed early");
    let status = server.stop();
    assert!(status.is_some_and(|s| s.success()), "graceful stop failed: {status:?}\n{}", server.logs());
    assert_eq!(
        rt.block_on(store.watch_position(user_id, video.id)).unwrap(),
        Some(50_000),
        "{}",
        server.logs()
    );
    assert!(server.logs().contains("watch history flushed"), "{}", server.logs());
}
