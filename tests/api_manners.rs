//! Protocol manners of the API (issue 10, defects 6 and 8): every 401 carries a `Bearer`
//! challenge (RFC 9110 §11.6.1, RFC 6750 §3), every 429 a `Retry-After`, a 415 its own error
//! code; the login limiter counts failures per (account, address) so that a guesser cannot lock
//! the owner out; and the OpenAPI document declares the answers and limits the handlers have.

mod api_support;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{self, init_service, TestRequest};
use api_support::*;
use serde_json::{json, Value};
use tidecast::config::Config;
use tidecast::shared_state::SharedState;
use tidecast::store::testing::TestDb;

/// Status, one response header and the JSON body.
async fn answer<S, B>(app: &S, req: TestRequest, header: &str) -> (u16, Option<String>, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let resp = test::call_service(app, req.to_request()).await;
    let status = resp.status().as_u16();
    let value = resp.headers().get(header).map(|v| v.to_str().unwrap().to_owned());
    let body = test::read_body(resp).await;
    (status, value, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn login_from(ip: &str, email: &str, password: &str) -> TestRequest {
    TestRequest::post()
        .uri("/api/v1/auth/login")
        .peer_addr(format!("{ip}:40000").parse().unwrap())
        .set_json(json!({"email": email, "password": password}))
}

async fn env(config: &Config) -> Env {
    Env::with(TestDb::sqlite().await, config, tidecast::http::api::test_ring("k1"), SharedState::local())
        .await
}

#[actix_web::test]
async fn every_401_carries_a_bearer_challenge() {
    let env = env(&test_config()).await;
    let app = init_service(env.app()).await;
    let (_, token) = env.user("u", false).await;
    let challenge = "www-authenticate";

    // No credentials: a plain challenge (RFC 6750 §3.1: no error code).
    let (s, h, _) = answer(&app, TestRequest::get().uri("/api/v1/users/me"), challenge).await;
    assert_eq!((s, h.as_deref()), (401, Some(r#"Bearer realm="tidecast""#)));
    // Another scheme is no bearer credential either.
    let req = TestRequest::get().uri("/api/v1/users/me").insert_header(("Authorization", "Basic dTpw"));
    let (s, h, _) = answer(&app, req, challenge).await;
    assert_eq!((s, h.as_deref()), (401, Some(r#"Bearer realm="tidecast""#)));
    // A token that is refused: invalid_token, on required and on optional authentication.
    for uri in ["/api/v1/users/me", "/api/v1/channels"] {
        let req = TestRequest::get().uri(uri).insert_header(("Authorization", "Bearer not.a.token"));
        let (s, h, v) = answer(&app, req, challenge).await;
        assert_eq!((s, v["error"]["code"].as_str()), (401, Some("unauthenticated")), "{uri}");
        assert_eq!(h.as_deref(), Some(r#"Bearer realm="tidecast", error="invalid_token""#), "{uri}");
    }
    // A wrong password is a 401 too, and challenges like every other.
    let body = json!({"email": "p@example.com", "password": PASSWORD, "username": "p"});
    assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 201);
    let (s, h, _) = answer(&app, login_from("10.0.0.1", "p@example.com", "wrong password"), challenge).await;
    assert_eq!((s, h.as_deref()), (401, Some(r#"Bearer realm="tidecast""#)));
    // And a good token is accepted.
    let req = TestRequest::get()
        .uri("/api/v1/users/me")
        .insert_header(("Authorization", format!("Bearer {token}")));
    assert_eq!(answer(&app, req, challenge).await.0, 200);
}

#[actix_web::test]
async fn a_429_says_when_to_retry() {
    let mut config = test_config();
    config.auth.login_max_failures = 1;
    config.auth.login_window = std::time::Duration::from_secs(120);
    let env = env(&config).await;
    let app = init_service(env.app()).await;
    let (s, _, _) = answer(&app, login_from("10.0.0.9", "r@example.com", "x"), "retry-after").await;
    assert_eq!(s, 401);
    let (s, h, v) = answer(&app, login_from("10.0.0.9", "r@example.com", "x"), "retry-after").await;
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("resource_exhausted")));
    // A fixed window that started at the first failure: its length is the longest wait.
    assert_eq!(h.as_deref(), Some("120"));
}

#[actix_web::test]
async fn a_415_has_its_own_code() {
    let env = env(&test_config()).await;
    let app = init_service(env.app()).await;
    let (_, token) = env.user("m", false).await;
    for (uri, auth) in [("/api/v1/auth/login", None), ("/api/v1/channels", Some(token))] {
        let mut req =
            TestRequest::post().uri(uri).insert_header(("Content-Type", "text/plain")).set_payload("{}");
        if let Some(t) = auth {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let (s, v) = send(&app, req).await;
        assert_eq!((s, v["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{uri}: {v}");
    }
}

#[actix_web::test]
async fn a_guesser_cannot_lock_the_owner_out() {
    let mut config = test_config();
    config.auth.login_max_failures = 5;
    config.auth.login_max_account_failures = 8;
    config.auth.login_max_per_ip = 1000;
    let env = env(&config).await;
    let app = init_service(env.app()).await;
    let email = "owner@example.com";
    let body = json!({"email": email, "password": PASSWORD, "username": "owner"});
    assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 201);
    let status = |req: TestRequest| {
        let app = &app;
        async move { answer(app, req, "retry-after").await.0 }
    };

    // One address guesses until its pair is locked: from there, even the right password is
    // refused (or the guesser would learn it), but only for that address.
    for _ in 0..5 {
        assert_eq!(status(login_from("10.0.0.66", email, "guess")).await, 401);
    }
    assert_eq!(status(login_from("10.0.0.66", email, PASSWORD)).await, 429);
    assert_eq!(status(login_from("10.0.0.1", email, PASSWORD)).await, 200, "the owner is not locked out");

    // A second address takes the account past its own (softer) limit: 8 failures in all.
    for _ in 0..3 {
        assert_eq!(status(login_from("10.0.0.67", email, "guess")).await, 401);
    }
    // Now addresses with 3 failures on the account are refused...
    assert_eq!(status(login_from("10.0.0.67", email, PASSWORD)).await, 429);
    // ...one that mistyped once still gets in with the right password...
    assert_eq!(status(login_from("10.0.0.2", email, "typo")).await, 401);
    assert_eq!(status(login_from("10.0.0.2", email, PASSWORD)).await, 200);
    // ...and so does the owner from an address that never failed.
    assert_eq!(status(login_from("10.0.0.3", email, PASSWORD)).await, 200);
    // A fresh address that guesses wrong gets a 401, then is held to 3 failures in all.
    for _ in 0..3 {
        assert_eq!(status(login_from("10.0.0.68", email, "guess")).await, 401);
    }
    assert_eq!(status(login_from("10.0.0.68", email, "guess")).await, 429);
}

/// Walks `v`, calling `f` on every object with its JSON pointer.
fn objects<'a>(v: &'a Value, at: &str, f: &mut impl FnMut(&str, &'a serde_json::Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(at, m);
            m.iter().for_each(|(k, x)| objects(x, &format!("{at}/{k}"), f));
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| objects(x, &format!("{at}/{i}"), f)),
        _ => {}
    }
}

#[actix_web::test]
async fn the_document_declares_what_the_handlers_enforce() {
    let env = env(&test_config()).await;
    let app = init_service(env.app()).await;
    let (s, doc) = get(&app, "/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let mut need = |status: &str, why: &str| {
                if !responses.contains_key(status) {
                    missing.push(format!("{method} {path}: {status} ({why})"));
                }
            };
            if op.get("requestBody").is_some() {
                need("400", "body");
                need("413", "body");
                need("415", "body");
            }
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                need("400", "parameters");
            }
            let bearer =
                op["security"].as_array().is_some_and(|r| r.iter().any(|r| r.get("bearer").is_some()));
            if bearer {
                need("401", "bearer token");
            }
            if let Some(r) = responses.get("401") {
                if r.pointer("/headers/WWW-Authenticate").is_none() {
                    missing.push(format!("{method} {path}: 401 without WWW-Authenticate"));
                }
            }
            if let Some(r) = responses.get("429") {
                if r.pointer("/headers/Retry-After").is_none() {
                    missing.push(format!("{method} {path}: 429 without Retry-After"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented answers:\n{}", missing.join("\n"));
    // Operations that read a token when one is sent say so (optional bearer security).
    let search = &doc["paths"]["/api/v1/search"]["get"];
    assert_eq!(search["security"], json!([{}, {"bearer": []}]));

    // Constraints: the examples of the issue, and every int64 bounded.
    let q = search["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "q").unwrap();
    assert_eq!(q["schema"]["maxLength"], json!(200), "{q}");
    assert!(q["schema"]["pattern"].is_string(), "{q}");
    let watch = &doc["components"]["schemas"]["WatchRequest"]["properties"]["position_seconds"];
    assert_eq!((&watch["minimum"], &watch["maximum"]), (&json!(0), &json!(864000)), "{watch}");
    let password = &doc["components"]["schemas"]["RegisterRequest"]["properties"]["password"];
    assert_eq!(password["minLength"], json!(test_config().auth.min_password_len), "{password}");
    let mut unbounded = Vec::new();
    objects(&doc, "", &mut |at, m| {
        if m.get("format") == Some(&json!("int64"))
            && !(m.contains_key("minimum") && m.contains_key("maximum"))
        {
            unbounded.push(at.to_owned());
        }
    });
    assert!(unbounded.is_empty(), "int64 without bounds: {unbounded:?}");

    // And what the schema allows is accepted: an integral float for an integer field.
    let (admin_id, admin) = env.user("admin", true).await;
    let body = json!({"plan_id": "none", "user_id": admin_id as f64});
    let (s, v) = post(&app, "/api/v1/subscriptions", Some(&admin), body).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
}
