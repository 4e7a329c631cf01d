//! The OpenAPI document and bad input: the document is well formed, every route it lists
//! exists and every API route is in it; malformed requests get 4xx JSON errors.

mod api_support;

use std::collections::BTreeSet;

use actix_web::http::Method;
use actix_web::test::{init_service, TestRequest};
use api_support::*;
use serde_json::{json, Value};

/// Every API route, as (method, path template). Kept by hand on purpose: it is the reverse
/// check (a route added without documentation, or documented without a route, fails here).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/users/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/users/me"),
    ("get", "/api/v1/users/me/history"),
    ("get", "/api/v1/channels"),
    ("post", "/api/v1/channels"),
    ("get", "/api/v1/channels/{name}"),
    ("patch", "/api/v1/channels/{name}"),
    ("post", "/api/v1/channels/{name}/key"),
    ("get", "/api/v1/channels/{name}/sessions"),
    ("get", "/api/v1/channels/{name}/destinations"),
    ("post", "/api/v1/channels/{name}/destinations"),
    ("get", "/api/v1/channels/{name}/destinations/{id}"),
    ("patch", "/api/v1/channels/{name}/destinations/{id}"),
    ("delete", "/api/v1/channels/{name}/destinations/{id}"),
    ("get", "/api/v1/channels/{name}/source"),
    ("put", "/api/v1/channels/{name}/source"),
    ("delete", "/api/v1/channels/{name}/source"),
    ("get", "/api/v1/channels/{name}/ladder"),
    ("put", "/api/v1/channels/{name}/ladder"),
    ("delete", "/api/v1/channels/{name}/ladder"),
    ("get", "/api/v1/channels/{name}/recording"),
    ("put", "/api/v1/channels/{name}/recording"),
    ("delete", "/api/v1/channels/{name}/recording"),
    ("get", "/api/v1/videos/feed"),
    ("get", "/api/v1/videos/{id}"),
    ("delete", "/api/v1/videos/{id}"),
    ("post", "/api/v1/videos/{id}/watch"),
    ("get", "/api/v1/videos/{id}/comments"),
    ("post", "/api/v1/videos/{id}/comments"),
    ("delete", "/api/v1/videos/{id}/comments/{comment_id}"),
    ("get", "/api/v1/plans"),
    ("get", "/api/v1/subscriptions"),
    ("post", "/api/v1/subscriptions"),
    ("delete", "/api/v1/subscriptions/{id}"),
    ("post", "/api/v1/billing/webhook"),
    ("get", "/api/v1/search"),
    ("get", "/api/v1/openapi.json"),
];

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` anywhere in `v` resolves inside `doc`.
fn check_refs(doc: &Value, v: &Value, bad: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if resolve(doc, r).is_none() {
                    bad.push(r.clone());
                }
            }
            m.values().for_each(|x| check_refs(doc, x, bad));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x, bad)),
        _ => {}
    }
}

#[actix_web::test]
async fn openapi_document_matches_the_routes() {
    let env = Env::with(
        tidecast::store::testing::TestDb::sqlite().await,
        &test_config(),
        tidecast::http::api::test_ring("k1"),
        tidecast::shared_state::SharedState::local(),
    )
    .await;
    let app = init_service(env.app()).await;
    let (s, doc) = get(&app, "/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);

    // It parses as a typed OpenAPI 3.1 document, and every operation's parameters, request
    // body and responses resolve.
    let spec = oas3::from_json(doc.to_string()).expect("a valid OpenAPI 3.1 document");
    let version = spec.validate_version().expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    let mut operations = 0;
    for (path, method, op) in spec.operations() {
        op.parameters(&spec).unwrap_or_else(|e| panic!("{method} {path}: parameters: {e}"));
        op.request_body(&spec).unwrap_or_else(|e| panic!("{method} {path}: request body: {e}"));
        assert!(!op.responses(&spec).is_empty(), "{method} {path}: no resolvable responses");
        operations += 1;
    }
    assert_eq!(operations, ROUTES.len());

    // Well formed: OpenAPI 3.1 with info, every operation has responses and a unique id,
    // path parameters are declared, and every $ref resolves.
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut documented = BTreeSet::new();
    let mut op_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            assert!(
                op_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{method} {path}: duplicate id"
            );
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
                });
                assert!(declared, "{method} {path}: path parameter {name} not declared");
            }
        }
    }
    let mut bad = Vec::new();
    check_refs(&doc, &doc, &mut bad);
    assert!(bad.is_empty(), "unresolved $refs: {bad:?}");
    assert!(doc.pointer("/components/securitySchemes/bearer").is_some());

    // The reverse check: documented == routed.
    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, expected);

    // Every documented route exists: a request never falls through to "no such route".
    for (method, path) in &documented {
        let concrete = path.replace("{name}", "nochannel").replace("{id}", "1").replace("{comment_id}", "1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let req = TestRequest::default().method(method.clone()).uri(&concrete).set_json(json!({}));
        let (s, v) = send(&app, req).await;
        assert!(
            !(s == 404 && v["error"]["message"] == "no such route"),
            "{method} {concrete} is documented but not routed"
        );
    }
    // And an undocumented one does fall through, as JSON.
    let (s, v) = get(&app, "/api/v1/nope", None).await;
    assert_eq!((s, v["error"]["message"].as_str()), (404, Some("no such route")));
}

#[actix_web::test]
async fn bad_input_gets_4xx_json() {
    let mut config = test_config();
    config.api.max_body = tidecast::config::Size::kib(4);
    for env in Env::both(&config).await {
        let label = env.label;
        let app = init_service(env.app()).await;
        let (_, token) = env.user("u", false).await;
        let vid = env.video(None, None, "v", tidecast::store::Visibility::Public).await.id;

        // Oversized body.
        let big = json!({"email": "a@b.c", "password": "x".repeat(10_000), "username": "big"});
        let (s, v) = post(&app, "/api/v1/users/register", None, big).await;
        assert_eq!((s, v["error"]["code"].as_str()), (413, Some("payload_too_large")), "{label}: {v}");
        // Not JSON, wrong content type, wrong types, unknown and missing fields.
        let req = TestRequest::post()
            .uri("/api/v1/auth/login")
            .insert_header(("Content-Type", "application/json"))
            .set_payload("{\"email\": ");
        assert_eq!(send(&app, req).await.0, 400);
        let req = TestRequest::post()
            .uri("/api/v1/auth/login")
            .insert_header(("Content-Type", "text/plain"))
            .set_payload("hi");
        assert_eq!(send(&app, req).await.0, 415);
        for body in [
            json!({"email": 5, "password": "x"}),
            json!({"email": "a@b.c"}),
            json!({"email": "a@b.c", "password": "x", "extra": 1}),
            json!([1, 2]),
            json!(null),
        ] {
            let (s, v) = post(&app, "/api/v1/auth/login", None, body.clone()).await;
            assert_eq!(s, 400, "{label} {body}: {v}");
        }
        // Path and query types.
        assert_eq!(get(&app, "/api/v1/videos/abc", None).await.0, 400);
        assert_eq!(get(&app, "/api/v1/videos/99999999999999999999999", None).await.0, 400);
        assert_eq!(get(&app, "/api/v1/videos/-1", None).await.0, 404);
        assert_eq!(get(&app, "/api/v1/users/me/history?limit=many", Some(&token)).await.0, 400);
        assert_eq!(get(&app, &format!("/api/v1/videos/{vid}/comments?before=x"), None).await.0, 400);
        // SQL metacharacters are data.
        for name in ["x' OR '1'='1", "x\"; DROP TABLE users; --", "%", "_"] {
            let path = format!("/api/v1/channels/{}", urlencode(name));
            assert_eq!(get(&app, &path, None).await.0, 404, "{label} {name}");
        }
        let body = json!({"email": "o'reilly+test@example.com", "password": PASSWORD, "username": "Robert'); DROP TABLE users;--"});
        let (s, v) = post(&app, "/api/v1/users/register", None, body).await;
        assert_eq!(s, 201, "{label}: {v}");
        assert_eq!(v["username"], "Robert'); DROP TABLE users;--");
        // Unicode edge cases: NUL and control characters refused; RTL, emoji, combining marks
        // and astral planes stored as sent.
        for (i, bad) in ["nul\u{0}name", "bell\u{7}", "line\nbreak"].iter().enumerate() {
            let body = json!({"email": format!("c{i}@example.com"), "password": PASSWORD, "username": bad});
            assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 400, "{label} {bad:?}");
        }
        for (i, good) in ["שלום", "🦀🦀", "e\u{301}", "\u{10348}"].iter().enumerate() {
            let body = json!({"email": format!("u{i}@example.com"), "password": PASSWORD, "username": good});
            let (s, v) = post(&app, "/api/v1/users/register", None, body).await;
            assert_eq!((s, v["username"].as_str()), (201, Some(*good)), "{label}: {v}");
        }
        let body = json!({"email": "nul\u{0}@example.com", "password": PASSWORD, "username": "nul"});
        assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 400);
        let body = json!({"email": "p@example.com", "password": "pass\u{0}word1", "username": "p"});
        assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 400);
        let body = json!({"email": "q@example.com", "password": "short", "username": "q"});
        assert_eq!(post(&app, "/api/v1/users/register", None, body).await.0, 400);
        let (s, _) =
            post(&app, "/api/v1/channels", Some(&token), json!({"name": "ok", "title": "t\u{0}"})).await;
        assert_eq!(s, 400);
        // Wrong method on a known path is JSON too.
        let (s, _) = call(&app, Method::PUT, "/api/v1/users/me", Some(&token), None).await;
        assert!((400..500).contains(&s));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
