//! Who may play recordings and DVR, against the real binary: the visibility x caller matrix of
//! the live routes, repeated on `/vod/<id>/...` (HLS, DASH, poster) and on
//! `/live/<channel>/dvr.m3u8`; tokens scoped to one video or channel; deleting a video (its
//! media and row); and a channel owner turning recording off.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// URIs in a playlist: plain lines and `URI="..."` attributes.
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if !line.starts_with('#') && !line.trim().is_empty() {
            out.push(line.trim().to_owned());
        }
        if let Some(i) = line.find("URI=\"") {
            let tail = &line[i + 5..];
            out.push(tail[..tail.find('"').unwrap()].to_owned());
        }
    }
    out
}

fn wait_video(server: &TestServer, token: &str, id: i64, status: &str) -> serde_json::Value {
    let mut last = json!(null);
    let ok = wait_until(Duration::from_secs(30), || {
        let (s, v) = http_json(server.http, "GET", &format!("/api/v1/videos/{id}"), Some(token), None);
        last = v;
        s == 200 && last["status"] == status
    });
    assert!(ok, "video {id} not {status}: {last}\n{}", log_tail(server, 30));
    last
}

/// Publish `seconds` to the channel with `key`, waiting for its recording's video `id` to exist.
fn publish(server: &TestServer, key: &str, seconds: u32) -> Proc {
    ffmpeg_publish_pattern(&server.publish_url(key), seconds, "640x360", 30, &[])
}

#[test]
fn recordings_and_dvr_answer_exactly_who_may_play_the_live_channel() {
    if !require_ffmpeg() {
        return;
    }
    let conf = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        conf.path(),
        "[[billing.plans]]\nid = \"gold\"\nname = \"Gold\"\nprice_cents = 500\ncurrency = \"usd\"\n\
         period = \"30days\"\nchannels = [\"premium\"]\n",
    )
    .unwrap();
    let conf_path = conf.path().display().to_string();
    let server =
        TestServer::start(&[("TIDECAST_CONFIG", &conf_path), ("TIDECAST__CHANNEL__RECONNECT_GRACE", "1s")]);
    let owner = signed_in(&server, "owner@example.com");
    let viewer = signed_in(&server, "viewer@example.com");
    let mut keys = Vec::new();
    for (name, vis) in [("premium", "subscribers"), ("secret", "private")] {
        let (s, v) = http_json(
            server.http,
            "POST",
            "/api/v1/channels",
            Some(&owner),
            Some(json!({"name": name, "visibility": vis})),
        );
        assert_eq!(s, 201, "{v}");
        keys.push(v["stream_key"].as_str().unwrap().to_owned());
    }

    // premium's session: video 1. While it is live, its DVR answers like its LL-HLS.
    let mut ffmpeg = publish(&server, &keys[0], 12);
    wait_video(&server, &owner, 1, "live");
    let (_, ch) = http_json(server.http, "GET", "/api/v1/channels/premium", Some(&owner), None);
    let channel_token = ch["playback_token"].as_str().expect("the owner's channel token").to_owned();
    let mut dvr = server.get(&format!("/live/premium/dvr.m3u8?token={channel_token}"));
    assert!(
        wait_until(Duration::from_secs(20), || {
            dvr = server.get(&format!("/live/premium/dvr.m3u8?token={channel_token}"));
            dvr.status == 200 && dvr.body.contains("dvr.m3u8")
        }),
        "DVR multivariant: {} {}",
        dvr.status,
        dvr.body
    );
    assert!(uris(&dvr.body).iter().all(|u| u.ends_with(&format!("token={channel_token}"))), "{}", dvr.body);
    let media_path = format!("/live/premium/{}", uris(&dvr.body)[0]);
    let mut media = server.get(&media_path);
    assert!(
        wait_until(Duration::from_secs(20), || {
            media = server.get(&media_path);
            media.body.contains("#EXTINF")
        }),
        "{}",
        media.body
    );
    assert!(media.body.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{}", media.body);
    let seg = uris(&media.body).into_iter().find(|u| u.starts_with("dvr/seg-")).expect("a DVR segment");
    assert!(seg.ends_with(&format!("token={channel_token}")), "{seg}");
    let seg_path = format!("/live/premium/source/{seg}");
    assert_eq!(server.get(&seg_path).status, 200, "{seg_path}");
    let bare = seg_path.split('?').next().unwrap();
    assert_eq!(server.get(bare).status, 403, "a DVR segment without the token");
    assert_eq!(server.get("/live/premium/dvr.m3u8").status, 403, "DVR without a token");
    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some());
    let v1 = wait_video(&server, &owner, 1, "ready");
    assert_eq!(v1["recording"]["state"], "ready", "{v1}");

    // secret's session: video 2.
    let mut ffmpeg = publish(&server, &keys[1], 4);
    wait_video(&server, &owner, 2, "live");
    assert_eq!(
        server.get("/live/secret/dvr.m3u8").status,
        404,
        "a private channel's DVR is unknown to strangers"
    );
    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some());
    let v2 = wait_video(&server, &owner, 2, "ready");

    // Strangers: the subscribers-only recording is refused (403), the private one unknown (404),
    // on every route: multivariant, media playlist, segment, DASH, poster.
    for (id, status) in [(1, 403), (2, 404)] {
        for path in ["index.m3u8", "source/index.m3u8", "source/init-0.mp4", "manifest.mpd", "poster.jpg"] {
            let r = server.get(&format!("/vod/{id}/{path}"));
            assert_eq!(r.status, status, "anonymous /vod/{id}/{path}: {}", r.body);
        }
    }
    let (s, v) = http_json(server.http, "GET", "/api/v1/videos/1", Some(&viewer), None);
    assert_eq!((s, v["can_play"].as_bool()), (200, Some(false)), "{v}");
    assert!(v.get("playback_url").is_none() && v.get("dash_url").is_none(), "{v}");
    let (s, _) = http_json(server.http, "GET", "/api/v1/videos/2", Some(&viewer), None);
    assert_eq!(s, 404, "a private video is hidden from other users");

    // The owner: tokens on every URI, every file served with them, refused without.
    for v in [&v1, &v2] {
        let id = v["id"].as_i64().unwrap();
        let token = v["playback_token"].as_str().expect("the owner gets a token").to_owned();
        let multivariant = server.get(v["playback_url"].as_str().unwrap());
        assert_eq!(multivariant.status, 200, "{}", multivariant.body);
        assert!(uris(&multivariant.body).iter().all(|u| u.ends_with(&format!("token={token}"))));
        let media = server.get(&format!("/vod/{id}/{}", uris(&multivariant.body)[0]));
        assert!(media.body.contains("#EXT-X-ENDLIST"), "{}", media.body);
        let files = uris(&media.body);
        assert!(files.iter().all(|u| u.ends_with(&format!("token={token}"))), "{}", media.body);
        for f in files.iter().take(3) {
            let r = server.get(&format!("/vod/{id}/source/{f}"));
            assert_eq!(r.status, 200, "/vod/{id}/source/{f}");
            let bare = format!("/vod/{id}/source/{}", f.split('?').next().unwrap());
            assert!(matches!(server.get(&bare).status, 403 | 404), "{bare} without the token");
        }
        let dash = server.get(v["dash_url"].as_str().expect("a DASH URL"));
        assert_eq!(dash.status, 200, "{}", dash.body);
        assert!(dash.body.contains("<MPD") && dash.body.contains(&format!("token={token}")), "{}", dash.body);
        let poster = v["poster_url"].as_str().expect("a poster (ffmpeg is here)");
        let r = server.get(poster);
        assert_eq!(r.status, 200);
        assert!(r.headers.to_ascii_lowercase().contains("content-type: image/jpeg"), "{}", r.headers);
        // A token is for one video: video 1's does not open video 2, nor the channel's.
        let other = if id == 1 { 2 } else { 1 };
        let r = server.get(&format!("/vod/{other}/index.m3u8?token={token}"));
        assert!(matches!(r.status, 403 | 404), "video {id}'s token on video {other}: {}", r.status);
    }
    let r = server.get(&format!("/vod/1/index.m3u8?token={channel_token}"));
    assert_eq!(r.status, 403, "a channel token does not open a video");

    // Deleting: not by another user; by the owner, with the media.
    let (s, _) = http_json(server.http, "DELETE", "/api/v1/videos/1", Some(&viewer), None);
    assert_eq!(s, 403, "another user cannot delete it");
    let dir = server.data_dir().join("archive/1");
    assert!(dir.join("source/journal").is_file());
    let (s, v) = http_json(server.http, "DELETE", "/api/v1/videos/1", Some(&owner), None);
    assert_eq!(s, 204, "{v}");
    assert!(!dir.exists(), "the recording's files are gone");
    let (s, _) = http_json(server.http, "GET", "/api/v1/videos/1", Some(&owner), None);
    assert_eq!(s, 404);
    assert_eq!(
        server.get(&format!("/vod/1/index.m3u8?token={}", v1["playback_token"].as_str().unwrap())).status,
        404
    );

    // The owner turns recording off for premium: its next session makes no video.
    let (s, v) = http_json(
        server.http,
        "PUT",
        "/api/v1/channels/premium/recording",
        Some(&owner),
        Some(json!({"record": false, "keep_days": 30})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["record"].as_bool(), v["keep_days"].as_u64(), v["custom"].as_bool()),
        (Some(false), Some(30), Some(true))
    );
    let (s, _) = http_json(server.http, "GET", "/api/v1/channels/premium/recording", Some(&viewer), None);
    assert_eq!(s, 403, "only the owner sees the settings");
    let (s, _) = http_json(
        server.http,
        "PUT",
        "/api/v1/channels/premium/recording",
        Some(&owner),
        Some(json!({"keep_days": -1})),
    );
    assert_eq!(s, 400);
    let mut ffmpeg = publish(&server, &keys[0], 3);
    server.wait_live(Duration::from_secs(15));
    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some());
    std::thread::sleep(Duration::from_secs(2));
    let (s, _) = http_json(server.http, "GET", "/api/v1/videos/3", Some(&owner), None);
    assert_eq!(s, 404, "no recording while the owner turned it off");
    assert_eq!(v2["recording"]["state"], "ready");
}
