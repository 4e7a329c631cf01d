//! Store tests. Every test body runs against both backends: a fresh SQLite file in a temp dir and
//! a fresh PostgreSQL database created for the test and dropped afterwards.
//!
//! PostgreSQL is required, not optional: if it is unreachable the tests fail (CI runs it). The
//! admin URL is `TIDECAST_TEST_PG_URL`, or else `postgres://postgres@127.0.0.1:5432/postgres`,
//! then the same as user `root`.

use super::testing::{with_database, TestDb};
use super::*;

fn new_channel(name: &str) -> NewChannel {
    NewChannel { name: name.to_string(), title: None, owner_id: None, visibility: Visibility::Public }
}

#[tokio::test]
async fn migrate_twice_is_idempotent_and_ping_works() {
    for db in TestDb::both().await {
        let store = &db.store;
        store.migrate().await.unwrap_or_else(|e| panic!("{}: {e}", db.label));
        store.ping().await.unwrap();
        assert_eq!(store.count_channels().await.unwrap(), 0, "{}", db.label);
        store.close().await;
    }
}

#[tokio::test]
async fn create_list_get_channel() {
    for db in TestDb::both().await {
        let store = &db.store;
        let label = db.label;
        let (beta, key) = store
            .create_channel(NewChannel {
                name: "beta".into(),
                title: Some("Beta stream".into()),
                owner_id: None,
                visibility: Visibility::Subscribers,
            })
            .await
            .unwrap();
        assert_eq!(beta.name, "beta");
        assert_eq!(beta.title, "Beta stream");
        assert_eq!(beta.visibility, Visibility::Subscribers);
        assert!(beta.created_at_ms > 0 && beta.created_at_ms == beta.updated_at_ms);
        assert!(key.expose().starts_with("live_"), "{label}");
        assert_eq!(key.expose().len(), "live_".len() + 64);
        assert!(key.expose()["live_".len()..].chars().all(|c| c.is_ascii_hexdigit()));

        let (alpha, _) = store.create_channel(new_channel("alpha")).await.unwrap();
        assert_eq!(alpha.title, "alpha", "title defaults to the name");
        assert_ne!(alpha.id, beta.id);

        let list = store.list_channels().await.unwrap();
        let names: Vec<_> = list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta"], "{label}");
        assert_eq!(store.count_channels().await.unwrap(), 2);
        assert_eq!(store.channel_by_name("beta").await.unwrap(), Some(beta));
        assert_eq!(store.channel_by_name("gamma").await.unwrap(), None);

        store.set_visibility("alpha", Visibility::Private).await.unwrap();
        let alpha = store.channel_by_name("alpha").await.unwrap().unwrap();
        assert_eq!(alpha.visibility, Visibility::Private, "{label}");
        let err = store.set_visibility("gamma", Visibility::Private).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);

        let err = store.create_channel(new_channel("Not Valid")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }
}

#[tokio::test]
async fn duplicate_channel_name_is_already_exists() {
    for db in TestDb::both().await {
        let store = &db.store;
        store.create_channel(new_channel("dup")).await.unwrap();
        let err = store.create_channel(new_channel("dup")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists, "{}: {err}", db.label);
        assert_eq!(err.msg, "channel 'dup' already exists");
        assert_eq!(store.count_channels().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn channel_owner_must_exist() {
    for db in TestDb::both().await {
        let mut new = new_channel("orphan");
        new.owner_id = Some(4242);
        let err = db.store.create_channel(new).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{}: {err}", db.label);
    }
}

#[tokio::test]
async fn authorize_stream_key_accepts_only_the_right_key() {
    for db in TestDb::both().await {
        let store = &db.store;
        let (chan, key) = store.create_channel(new_channel("studio")).await.unwrap();
        let (_other, other_key) = store.create_channel(new_channel("other")).await.unwrap();

        let found = store.authorize_stream_key(key.expose()).await.unwrap();
        assert_eq!(found, Some(chan), "{}", db.label);
        let found = store.authorize_stream_key(other_key.expose()).await.unwrap().unwrap();
        assert_eq!(found.name, "other");

        // Change the last character to a different one (a fixed replacement would equal the
        // key one time in sixteen).
        let k = key.expose();
        let last = if k.ends_with('0') { '1' } else { '0' };
        let wrong = format!("{}{last}", &k[..k.len() - 1]);
        assert_eq!(store.authorize_stream_key(&wrong).await.unwrap(), None);
        assert_eq!(store.authorize_stream_key("").await.unwrap(), None);
        assert_eq!(store.authorize_stream_key("studio").await.unwrap(), None);
        assert_eq!(store.authorize_stream_key(&"x".repeat(10_000)).await.unwrap(), None);
    }
}

#[tokio::test]
async fn rotate_stream_key_invalidates_the_old_key() {
    for db in TestDb::both().await {
        let store = &db.store;
        let (_, old) = store.create_channel(new_channel("rotating")).await.unwrap();
        let new = store.rotate_stream_key("rotating").await.unwrap();
        assert_ne!(old.expose(), new.expose());
        assert_eq!(store.authorize_stream_key(old.expose()).await.unwrap(), None, "{}", db.label);
        let found = store.authorize_stream_key(new.expose()).await.unwrap().unwrap();
        assert_eq!(found.name, "rotating");
        assert!(found.updated_at_ms >= found.created_at_ms);

        let err = store.rotate_stream_key("missing").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    for db in TestDb::both().await {
        let (chan, key) = db.store.create_channel(new_channel("durable")).await.unwrap();
        db.store.close().await;
        assert!(db.store.ping().await.is_err(), "closed pool must not answer");

        let reopened = Store::connect(&db.url, 2).await.unwrap();
        reopened.migrate().await.unwrap();
        assert_eq!(reopened.channel_by_name("durable").await.unwrap(), Some(chan), "{}", db.label);
        assert!(reopened.authorize_stream_key(key.expose()).await.unwrap().is_some());
        reopened.close().await;
    }
}

#[tokio::test]
async fn users_are_found_by_email_ignoring_case() {
    for db in TestDb::both().await {
        let store = &db.store;
        let label = db.label;
        let user = store
            .create_user(NewUser {
                email: "Ada@Example.COM".into(),
                username: "ada".into(),
                password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
                is_admin: true,
            })
            .await
            .unwrap();
        assert_eq!(user.email, "ada@example.com", "{label}");
        assert!(user.is_admin);
        assert!(!format!("{user:?}").contains("argon2id"), "Debug must redact the hash");

        let by_email = store.user_by_email("ADA@example.com").await.unwrap();
        assert_eq!(by_email.as_ref(), Some(&user), "{label}");
        assert_eq!(store.user_by_id(user.id).await.unwrap(), Some(user.clone()));
        assert_eq!(store.user_by_id(user.id + 1000).await.unwrap(), None);
        assert_eq!(store.user_by_email("nobody@example.com").await.unwrap(), None);

        let dup_email = NewUser {
            email: "ADA@example.com".into(),
            username: "ada2".into(),
            password_hash: None,
            is_admin: false,
        };
        let err = store.create_user(dup_email).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists, "{label}: {err}");
        assert!(err.msg.contains("email"), "{label}: {err}");

        let dup_name = NewUser {
            email: "other@example.com".into(),
            username: "ada".into(),
            password_hash: None,
            is_admin: false,
        };
        let err = store.create_user(dup_name).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists, "{label}: {err}");
        assert!(err.msg.contains("named 'ada'"), "{label}: {err}");

        let bad = NewUser {
            email: "no-at-sign".into(),
            username: "x".into(),
            password_hash: None,
            is_admin: false,
        };
        assert_eq!(store.create_user(bad).await.unwrap_err().kind, ErrorKind::InvalidArgument);

        // A channel owned by the user keeps the link.
        let mut new = new_channel("adas-channel");
        new.owner_id = Some(user.id);
        let (chan, _) = store.create_channel(new).await.unwrap();
        assert_eq!(chan.owner_id, Some(user.id));
    }
}

#[test]
fn channel_name_validation() {
    for ok in ["a", "0", "abc", "my-channel_2", "9lives", &"a".repeat(64)] {
        assert!(validate_channel_name(ok).is_ok(), "{ok:?} should be valid");
    }
    let too_long = "a".repeat(65);
    for bad in ["", "-lead", "_lead", "Upper", "with space", "dot.name", "é", "a/b", &too_long] {
        let err = validate_channel_name(bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn stream_key_debug_is_redacted() {
    let key = StreamKey::generate();
    let debug = format!("{key:?}");
    assert!(!debug.contains(key.expose()), "{debug}");
    assert!(!debug.contains(&key.expose()["live_".len()..]), "{debug}");
    assert_eq!(debug, "StreamKey(<redacted>)");
}

#[test]
fn stream_key_hash_is_sha256() {
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    assert_eq!(
        hex::encode(hash_stream_key("abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn visibility_round_trips() {
    for v in [Visibility::Public, Visibility::Subscribers, Visibility::Private] {
        assert_eq!(v.as_str().parse::<Visibility>().unwrap(), v);
        assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{}\"", v.as_str()));
        assert_eq!(serde_json::from_str::<Visibility>(&format!("\"{v}\"")).unwrap(), v);
    }
    assert_eq!("Public".parse::<Visibility>().unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[test]
fn database_url_rewrite() {
    assert_eq!(with_database("postgres://u@h:5432/postgres", "t"), "postgres://u@h:5432/t");
    assert_eq!(
        with_database("postgres://u@h/postgres?sslmode=disable", "t"),
        "postgres://u@h/t?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "t"), "postgres://u@h/t");
}

#[tokio::test]
async fn connect_rejects_unknown_scheme_without_echoing_url() {
    let err = Store::connect("mysql://user:s3cret@host/db", 1).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(!err.to_string().contains("s3cret"));
}

#[tokio::test]
async fn in_memory_sqlite_works_across_pooled_connections() {
    let store = Store::connect("sqlite::memory:", 4).await.unwrap();
    store.migrate().await.unwrap();
    store.create_channel(new_channel("mem")).await.unwrap();
    // Several concurrent reads force several connections; all must see the same database.
    let (a, b, c) = tokio::join!(store.count_channels(), store.channel_by_name("mem"), store.list_channels());
    assert_eq!(a.unwrap(), 1);
    assert!(b.unwrap().is_some());
    assert_eq!(c.unwrap().len(), 1);
}

#[tokio::test]
async fn revocations_are_durable_incremental_and_purged() {
    for db in TestDb::both().await {
        let store = &db.store;
        let label = db.label;
        store.revoke_token("old", 5_000, 1_000).await.unwrap();
        store.revoke_token("live", 90_000, 2_000).await.unwrap();
        store.revoke_token("live", 90_000, 3_000).await.unwrap();
        assert_eq!(store.revocations_since(0, 4_000).await.unwrap().len(), 2, "{label}");
        let all = store.revocations_since(0, 6_000).await.unwrap();
        let jtis: Vec<_> = all.iter().map(|r| r.jti.as_str()).collect();
        assert_eq!(jtis, ["live"], "{label}: expired ones are not loaded; a second revoke is a no-op");
        assert_eq!(all[0].revoked_at_ms, 2_000);
        assert!(store.revocations_since(2_001, 6_000).await.unwrap().is_empty());
        assert_eq!(store.purge_expired_revocations(6_000).await.unwrap(), 1, "{label}");
        assert_eq!(store.revocations_since(0, 6_000).await.unwrap().len(), 1);
    }
}

/// A database that does not answer: calls fail with `Unavailable` within the acquire timeout,
/// and once the circuit is open, at once; `ping` never takes longer than a second.
#[tokio::test]
async fn an_unreachable_database_fails_fast() {
    // A port that was just free: nothing listens, so every connection attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = StoreSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(300),
        breaker: BreakerSettings { failures: 2, cooldown: Duration::from_secs(60) },
    };
    let url = format!("postgres://nobody@127.0.0.1:{port}/nothing");
    // Connecting acquires a first connection, so it gives up after the acquire timeout, not 10 s.
    let started = std::time::Instant::now();
    let err = Store::connect_with(&url, settings).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    for _ in 0..BreakerSettings::default().failures {
        assert!(!store.circuit_open());
        store.breaker.failure();
    }
    assert!(store.circuit_open());
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let e = store.channel_by_name("x").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
    }
    assert_eq!(store.ping().await.unwrap_err().kind, ErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
}

#[tokio::test]
async fn restream_destinations_round_trip_with_a_limit_and_cascade() {
    for db in TestDb::both().await {
        let store = &db.store;
        let label = db.label;
        let (c, _) = store.create_channel(new_channel("studio")).await.unwrap();
        let a = store.create_destination(c.id, "rtmp://a:1935/live", "k1", true, 2).await.unwrap();
        let b = store.create_destination(c.id, "srt://b:9000", "k2", false, 2).await.unwrap();
        assert!((a.enabled, b.enabled) == (true, false), "{label}");
        let e = store.create_destination(c.id, "rtmp://c:1935/live", "k3", true, 2).await.unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::ResourceExhausted, "{label}");
        let b = store
            .update_destination(c.id, b.id, DestinationUpdate { enabled: Some(true), ..Default::default() })
            .await
            .unwrap();
        assert!(b.enabled && b.stream_key == "k2", "{label}");
        let all = store.all_destinations().await.unwrap();
        assert_eq!(
            all.iter().map(|(n, r)| (n.as_str(), r.id)).collect::<Vec<_>>(),
            [("studio", a.id), ("studio", b.id)]
        );
        assert!(!format!("{a:?}").contains("k1"), "{label}: Debug shows the key");
        store.delete_destination(c.id, a.id).await.unwrap();
        assert_eq!(store.delete_destination(c.id, a.id).await.unwrap_err().kind, crate::ErrorKind::NotFound);
        assert_eq!(store.list_destinations(c.id).await.unwrap().len(), 1, "{label}");
        store.close().await;
    }
}
