//! Shared harness of the `api_*` integration tests: the `/api/v1` app in process over a fresh
//! SQLite and a fresh PostgreSQL database (`tidecast::store::testing`), and JSON helpers.
#![allow(dead_code)]

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use serde_json::{json, Value};
use tidecast::auth::keys::KeyRing;
use tidecast::config::Config;
use tidecast::http::api::{self, test_ring, ApiContext};
use tidecast::shared_state::SharedState;
use tidecast::store::testing::TestDb;
use tidecast::store::{NewUser, NewVideo, Store, Video, VideoSource, VideoStatus, Visibility};

pub const PASSWORD: &str = "correct horse battery staple";

/// One backend with its API context.
pub struct Env {
    pub label: &'static str,
    pub ctx: web::Data<ApiContext>,
    pub store: Store,
    pub db: TestDb,
}

/// A test config: fast flushes, small limits.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.api.watch_flush_interval = std::time::Duration::from_millis(200);
    c.auth.max_concurrent_hashes = 2;
    c
}

impl Env {
    /// Both backends with `config`, in-process shared state, fixed test key rings.
    pub async fn both(config: &Config) -> Vec<Env> {
        let mut out = Vec::new();
        for db in TestDb::both().await {
            out.push(Self::with(db, config, test_ring("k1"), SharedState::local()).await);
        }
        out
    }

    pub async fn with(db: TestDb, config: &Config, jwt: KeyRing, shared: SharedState) -> Env {
        let store = db.store.clone();
        let ctx = ApiContext::with_parts(config, store.clone(), jwt, test_ring("p1"), shared).await.unwrap();
        Env { label: db.label, ctx: web::Data::new(ctx), store, db }
    }

    pub fn app(
        &self,
    ) -> App<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        App::new()
            .app_data(self.ctx.clone())
            .configure(api::configure(self.ctx.api.max_body.as_usize()))
            .default_service(web::to(tidecast::http::error::not_found))
    }

    /// A user straight in the store (fast: no Argon2), and an access token for it.
    pub async fn user(&self, name: &str, is_admin: bool) -> (i64, String) {
        let user = self
            .store
            .create_user(NewUser {
                email: format!("{name}@example.com"),
                username: name.to_owned(),
                password_hash: None,
                is_admin,
            })
            .await
            .unwrap();
        let (token, _) = self.ctx.jwt.issue(user.id, is_admin, api::unix_now()).unwrap();
        (user.id, token)
    }

    pub async fn video(
        &self,
        channel_id: Option<i64>,
        owner: Option<i64>,
        title: &str,
        vis: Visibility,
    ) -> Video {
        self.store
            .create_video(NewVideo {
                channel_id,
                owner_id: owner,
                title: title.to_owned(),
                description: String::new(),
                tags: vec![],
                visibility: vis,
                source: VideoSource::Upload,
                duration_ms: 60_000,
                status: VideoStatus::Ready,
            })
            .await
            .unwrap()
    }
}

/// Sends a request; returns the status and the JSON body (`Null` when empty). Asserts that
/// every 4xx/5xx has the JSON error shape.
pub async fn call<S, B>(
    app: &S,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut req =
        TestRequest::default().method(method).uri(path).peer_addr("127.0.0.1:5000".parse().unwrap());
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    if let Some(b) = body {
        req = req.set_json(b);
    }
    send(app, req).await
}

pub async fn send<S, B>(app: &S, req: TestRequest) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let resp = test::call_service(app, req.to_request()).await;
    let status = resp.status().as_u16();
    let bytes = test::read_body(resp).await;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}))
    };
    if status >= 400 {
        assert!(
            value["error"]["code"].is_string() && value["error"]["message"].is_string(),
            "{status} without a JSON error body: {value}"
        );
    }
    (status, value)
}

pub async fn get<S, B>(app: &S, path: &str, token: Option<&str>) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    call(app, Method::GET, path, token, None).await
}

pub async fn post<S, B>(app: &S, path: &str, token: Option<&str>, body: Value) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    call(app, Method::POST, path, token, Some(body)).await
}
