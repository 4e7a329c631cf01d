//! Plans, subscriptions (manual and Stripe), the webhook, and the entitlement matrix on the
//! API, on SQLite and PostgreSQL. Stripe is a tiny mock HTTP server on 127.0.0.1:0.

mod api_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::Method;
use actix_web::test::{init_service, TestRequest};
use api_support::*;
use serde_json::{json, Value};
use tidecast::auth::playback::PlaybackScope;
use tidecast::billing::stripe;
use tidecast::config::{BillingProvider, Config, PlanConfig};
use tidecast::http::api::unix_now;
use tidecast::store::{now_ms, NewChannel, SubscriptionStatus, Visibility};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

fn plan(id: &str, channels: &[&str]) -> PlanConfig {
    PlanConfig {
        id: id.into(),
        name: format!("Plan {id}"),
        price_cents: 500,
        currency: "usd".into(),
        period: Duration::from_secs(30 * 86400),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        stripe_price_id: format!("price_{id}"),
    }
}

/// Expected (GET status, can_play, watch status).
type Expect = (u16, bool, u16);

/// The matrix: anonymous / user / subscriber / owner × public / subscribers / private.
#[actix_web::test]
async fn entitlement_matrix_on_channels_videos_and_watch() {
    let mut config = test_config();
    config.billing.plans = vec![plan("gold", &["subs"])];
    for env in Env::both(&config).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (owner_id, owner) = env.user("owner", false).await;
        let (_, user) = env.user("user", false).await;
        let (sub_id, subscriber) = env.user("subscriber", false).await;
        let (_, admin) = env.user("admin", true).await;
        let mut videos = Vec::new();
        for (name, vis) in
            [("pub", Visibility::Public), ("subs", Visibility::Subscribers), ("priv", Visibility::Private)]
        {
            let (c, _) = env
                .store
                .create_channel(NewChannel {
                    name: name.into(),
                    title: None,
                    owner_id: Some(owner_id),
                    visibility: vis,
                })
                .await
                .unwrap();
            videos.push(env.video(Some(c.id), Some(owner_id), &format!("{name} video"), vis).await.id);
        }

        // Manual provider: users cannot subscribe themselves; an admin grants.
        let (s, _) = post(&app, "/api/v1/subscriptions", Some(&user), json!({"plan_id": "gold"})).await;
        assert_eq!(s, 403, "{label}");
        let (s, v) =
            post(&app, "/api/v1/subscriptions", Some(&admin), json!({"plan_id": "gold", "user_id": sub_id}))
                .await;
        assert_eq!(s, 201, "{label}: {v}");
        assert_eq!(v["subscription"]["status"], "active");
        let grant_id = v["subscription"]["id"].as_i64().unwrap();
        let (s, _) =
            post(&app, "/api/v1/subscriptions", Some(&admin), json!({"plan_id": "nope", "user_id": sub_id}))
                .await;
        assert_eq!(s, 404);
        let (_, subs) = get(&app, "/api/v1/subscriptions", Some(&subscriber)).await;
        assert_eq!(subs[0]["plan_id"], "gold");
        let (_, plans) = get(&app, "/api/v1/plans", None).await;
        assert_eq!(plans[0]["id"], "gold");

        // (viewer, token) -> expected (channel GET status, can_play) per visibility, and the
        // watch status.
        let viewers: [(&str, Option<&str>, [Expect; 3]); 4] = [
            ("anonymous", None, [(200, true, 401), (200, false, 401), (404, false, 401)]),
            ("user", Some(&user), [(200, true, 204), (200, false, 403), (404, false, 404)]),
            ("subscriber", Some(&subscriber), [(200, true, 204), (200, true, 204), (404, false, 404)]),
            ("owner", Some(&owner), [(200, true, 204), (200, true, 204), (200, true, 204)]),
        ];
        for (who, token, expect) in viewers {
            for (i, name) in ["pub", "subs", "priv"].into_iter().enumerate() {
                let (want_status, want_play, want_watch) = expect[i];
                let ctx = format!("{label} {who} {name}");
                let (s, v) = get(&app, &format!("/api/v1/channels/{name}"), token).await;
                assert_eq!(s, want_status, "{ctx}: {v}");
                let (vs, vv) = get(&app, &format!("/api/v1/videos/{}", videos[i]), token).await;
                assert_eq!(vs, want_status, "{ctx}: {vv}");
                if s == 200 {
                    assert_eq!(v["can_play"], want_play, "{ctx}: {v}");
                    assert_eq!(vv["can_play"], want_play, "{ctx}: {vv}");
                    let needs_token = want_play && name != "pub";
                    assert_eq!(v["playback_token"].is_string(), needs_token, "{ctx}: {v}");
                    assert_eq!(vv["playback_token"].is_string(), needs_token, "{ctx}: {vv}");
                    if needs_token {
                        let t = v["playback_token"].as_str().unwrap();
                        let scope = PlaybackScope::Channel(name.into());
                        env.ctx.playback.verify(t, &scope, unix_now()).unwrap();
                        assert!(v["playback_url"].as_str().unwrap().ends_with(&format!("?token={t}")));
                        assert!(env
                            .ctx
                            .playback
                            .verify(t, &PlaybackScope::Channel("pub".into()), unix_now())
                            .is_err());
                        let vt = vv["playback_token"].as_str().unwrap();
                        env.ctx.playback.verify(vt, &PlaybackScope::Video(videos[i]), unix_now()).unwrap();
                    }
                    if !want_play {
                        assert!(v.get("playback_url").is_none() && vv.get("playback_url").is_none(), "{ctx}");
                    }
                }
                let (ws, wv) = post(
                    &app,
                    &format!("/api/v1/videos/{}/watch", videos[i]),
                    token,
                    json!({"position_seconds": 5}),
                )
                .await;
                assert_eq!(ws, want_watch, "{ctx} watch: {wv}");
            }
        }

        // Revocation ends the entitlement at once.
        let (s, v) =
            call(&app, Method::DELETE, &format!("/api/v1/subscriptions/{grant_id}"), Some(&user), None).await;
        assert_eq!(s, 403, "{v}");
        let (s, v) =
            call(&app, Method::DELETE, &format!("/api/v1/subscriptions/{grant_id}"), Some(&admin), None)
                .await;
        assert_eq!((s, v["status"].as_str()), (200, Some("canceled")), "{label}: {v}");
        let (_, v) = get(&app, "/api/v1/channels/subs", Some(&subscriber)).await;
        assert_eq!(v["can_play"], false, "{label}");

        // Expiry: an active subscription past its period end entitles nothing and reads expired.
        env.store
            .create_subscription(sub_id, "gold", "manual", SubscriptionStatus::Active, now_ms() - 1)
            .await
            .unwrap();
        env.ctx.invalidate_plans(None);
        let (_, v) = get(&app, "/api/v1/channels/subs", Some(&subscriber)).await;
        assert_eq!(v["can_play"], false, "{label}");
        let (_, subs) = get(&app, "/api/v1/subscriptions", Some(&subscriber)).await;
        assert_eq!(subs[0]["status"], "expired", "{label}: {subs}");
    }
}

/// A mock Stripe: answers every request with a Checkout Session and keeps the requests.
async fn mock_stripe() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            n += 1;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            loop {
                let k = sock.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen2.lock().unwrap().push(String::from_utf8_lossy(&buf).to_string());
            let body = format!(r#"{{"id":"cs_test_{n}","url":"https://checkout.stripe.test/cs_test_{n}"}}"#);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    (format!("http://{addr}"), seen)
}

fn stripe_config(base: &str) -> Config {
    let mut config = test_config();
    config.billing.provider = BillingProvider::Stripe;
    config.billing.stripe_api_base = base.to_owned();
    config.billing.stripe_secret_key = "sk_test_abc".into();
    config.billing.stripe_webhook_secret = WEBHOOK_SECRET.into();
    config.billing.plans = vec![plan("gold", &["*"])];
    config
}

fn webhook_req(body: &Value, t: i64, secret: &str) -> TestRequest {
    let raw = body.to_string();
    let sig = stripe::sign(secret, t, raw.as_bytes());
    TestRequest::post()
        .uri("/api/v1/billing/webhook")
        .insert_header(("Stripe-Signature", format!("t={t},v1={sig}")))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(raw)
}

#[actix_web::test]
async fn stripe_checkout_and_webhook() {
    let (base, seen) = mock_stripe().await;
    let config = stripe_config(&base);
    for env in Env::both(&config).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (owner_id, _) = env.user("owner", false).await;
        let (_, buyer) = env.user("buyer", false).await;
        env.store
            .create_channel(NewChannel {
                name: "subs".into(),
                title: None,
                owner_id: Some(owner_id),
                visibility: Visibility::Subscribers,
            })
            .await
            .unwrap();

        let (s, v) = post(&app, "/api/v1/subscriptions", Some(&buyer), json!({"plan_id": "gold"})).await;
        assert_eq!(s, 201, "{label}: {v}");
        assert_eq!(v["subscription"]["status"], "pending");
        assert!(v["checkout_url"].as_str().unwrap().starts_with("https://checkout.stripe.test/"));
        let sub_id = v["subscription"]["id"].as_i64().unwrap();
        let request = seen.lock().unwrap().last().unwrap().clone();
        assert!(request.starts_with("POST /v1/checkout/sessions"), "{request}");
        assert!(
            request.contains("authorization: Bearer sk_test_abc")
                || request.contains("Authorization: Bearer sk_test_abc")
        );
        assert!(request.contains("line_items%5B0%5D%5Bprice%5D=price_gold"), "{request}");
        assert!(request.contains(&format!("client_reference_id={sub_id}")), "{request}");

        // Pending: not entitled yet.
        assert_eq!(get(&app, "/api/v1/channels/subs", Some(&buyer)).await.1["can_play"], false);

        let now = unix_now() as i64;
        let completed = json!({
            "id": format!("evt_done_{label}"), "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_test_1", "client_reference_id": sub_id.to_string(), "subscription": format!("sub_{label}")}}
        });
        // Tampered: signed, then changed.
        let mut req = webhook_req(&completed, now, WEBHOOK_SECRET);
        let mut evil = completed.clone();
        evil["data"]["object"]["client_reference_id"] = "999".into();
        req = req.set_payload(evil.to_string());
        let (s, v) = send(&app, req).await;
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_argument")), "{label}: {v}");
        // Wrong secret, too old, missing header.
        assert_eq!(send(&app, webhook_req(&completed, now, "whsec_wrong")).await.0, 400);
        assert_eq!(send(&app, webhook_req(&completed, now - 3600, WEBHOOK_SECRET)).await.0, 400);
        let bare = TestRequest::post().uri("/api/v1/billing/webhook").set_payload(completed.to_string());
        assert_eq!(send(&app, bare).await.0, 400);
        assert_eq!(get(&app, "/api/v1/channels/subs", Some(&buyer)).await.1["can_play"], false, "{label}");

        // Valid: applied once; the same delivery replayed is acknowledged as a duplicate.
        let (s, v) = send(&app, webhook_req(&completed, now, WEBHOOK_SECRET)).await;
        assert_eq!((s, v["duplicate"].as_bool()), (200, Some(false)), "{label}: {v}");
        let (s, v) = send(&app, webhook_req(&completed, now, WEBHOOK_SECRET)).await;
        assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "{label}: {v}");
        let (_, v) = get(&app, "/api/v1/channels/subs", Some(&buyer)).await;
        assert_eq!(v["can_play"], true, "{label}: {v}");
        assert!(v["playback_token"].is_string());

        // Renewal extends; the same event id again (even re-signed later) changes nothing.
        let end = now + 90 * 86400;
        let paid = json!({"id": format!("evt_paid_{label}"), "type": "invoice.paid",
            "data": {"object": {"subscription": format!("sub_{label}"), "lines": {"data": [{"period": {"end": end}}]}}}});
        assert_eq!(send(&app, webhook_req(&paid, now, WEBHOOK_SECRET)).await.1["duplicate"], false);
        let sub = env.store.subscription_by_id(sub_id).await.unwrap().unwrap();
        assert_eq!(sub.current_period_end_ms, end * 1000, "{label}");
        assert_eq!(send(&app, webhook_req(&paid, now + 1, WEBHOOK_SECRET)).await.1["duplicate"], true);

        // Cancellation ends it.
        let deleted = json!({"id": format!("evt_del_{label}"), "type": "customer.subscription.deleted",
            "data": {"object": {"id": format!("sub_{label}")}}});
        assert_eq!(send(&app, webhook_req(&deleted, now, WEBHOOK_SECRET)).await.0, 200);
        let (_, v) = get(&app, "/api/v1/channels/subs", Some(&buyer)).await;
        assert_eq!(v["can_play"], false, "{label}: {v}");
        let (_, subs) = get(&app, "/api/v1/subscriptions", Some(&buyer)).await;
        assert_eq!(subs[0]["status"], "canceled");

        // Unknown event types are acknowledged (once) without effect.
        let other =
            json!({"id": format!("evt_other_{label}"), "type": "customer.created", "data": {"object": {}}});
        assert_eq!(send(&app, webhook_req(&other, now, WEBHOOK_SECRET)).await.0, 200);
        // Signed garbage is a 400, not a 500.
        let raw = "not json";
        let sig = stripe::sign(WEBHOOK_SECRET, now, raw.as_bytes());
        let req = TestRequest::post()
            .uri("/api/v1/billing/webhook")
            .insert_header(("Stripe-Signature", format!("t={now},v1={sig}")))
            .set_payload(raw);
        assert_eq!(send(&app, req).await.0, 400);
    }
}

#[actix_web::test]
async fn webhook_without_stripe_is_refused() {
    for env in Env::both(&test_config()).await {
        let app = init_service(env.app()).await;
        let body = json!({"id": "evt_1", "type": "x", "data": {"object": {}}});
        let (s, v) = send(&app, webhook_req(&body, unix_now() as i64, WEBHOOK_SECRET)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (412, Some("failed_precondition")));
    }
}
