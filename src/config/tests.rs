//! Configuration tests: `conf/default.toml` against the built-in defaults, layering and
//! precedence, rejection of unknown keys and bad values by name, validation, the unit types'
//! parsing and round trips, and the example files in `conf/examples/`.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const DEFAULT_TOML: &str = include_str!("../../conf/default.toml");

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn write_toml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().expect("create temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write temp file");
    f
}

#[test]
fn default_toml_equals_default() {
    let parsed: Config = toml::from_str(DEFAULT_TOML).expect("conf/default.toml parses");
    assert_eq!(parsed, Config::default());

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/default.toml");
    let loaded = Config::load_with_env(Some(&path), &[]).expect("load default.toml");
    assert_eq!(loaded, Config::default());
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().expect("defaults validate");
    let loaded = Config::load_with_env(None, &[]).expect("load with no file");
    assert_eq!(loaded, Config::default());
}

/// Collects the dotted paths of all leaves of a TOML table.
fn leaf_keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => leaf_keys(&path, t, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn default_toml_names_every_field_and_nothing_else() {
    let from_struct = toml::Table::try_from(Config::default()).expect("serialize defaults");
    let from_file: toml::Table = toml::from_str(DEFAULT_TOML).expect("parse default.toml");
    let (mut want, mut have) = (BTreeSet::new(), BTreeSet::new());
    leaf_keys("", &from_struct, &mut want);
    leaf_keys("", &from_file, &mut have);
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(missing.is_empty(), "missing from conf/default.toml: {missing:?}");
    assert!(extra.is_empty(), "unknown keys in conf/default.toml: {extra:?}");
    // Sections too, so an empty section table would also be noticed.
    let sections = |t: &toml::Table| t.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(sections(&from_struct), sections(&from_file));
}

#[test]
fn default_toml_documents_every_key() {
    // Every key line must be preceded by a comment line.
    let mut prev_comment = false;
    for line in DEFAULT_TOML.lines().map(str::trim) {
        if line.starts_with('#') {
            prev_comment = true;
            continue;
        }
        if line.contains('=') {
            assert!(prev_comment, "key without a comment above it: {line}");
        }
        if !line.is_empty() {
            prev_comment = false;
        }
    }
}

#[test]
fn unknown_key_in_file_is_rejected_by_name() {
    let f = write_toml("[http]\nlistn = \"127.0.0.1:1\"\n");
    let err = Config::load_with_env(Some(f.path()), &[]).expect_err("unknown key");
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
    assert!(msg.contains("listn"), "{msg}");

    let err = toml::from_str::<Config>("[nope]\nx = 1\n").expect_err("unknown section");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn unknown_key_in_env_is_rejected_by_name() {
    let err = Config::load_with_env(None, &env(&[("TIDECAST__RTMP__MAX_CONECTIONS", "5")]))
        .expect_err("unknown env key");
    let msg = err.to_string();
    assert!(msg.contains("max_conections"), "{msg}");
    assert!(msg.contains("TIDECAST__RTMP__MAX_CONECTIONS"), "{msg}");
}

#[test]
fn missing_file_is_an_error() {
    let err =
        Config::load_with_env(Some(Path::new("/nonexistent/tidecast.toml")), &[]).expect_err("missing file");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn env_beats_file_beats_default() {
    let f = write_toml(
        r#"
        [http]
        listen = "127.0.0.1:9000"
        workers = 3
        [channel]
        reconnect_grace = "4s"
        "#,
    );
    let cfg = Config::load_with_env(
        Some(f.path()),
        &env(&[
            ("TIDECAST__HTTP__LISTEN", "127.0.0.1:0"),
            ("TIDECAST__CHANNEL__RECONNECT_GRACE", "2s"),
            ("TIDECAST__RTMP__MAX_CONNECTIONS", "5"),
            ("TIDECAST__RTMP__MAX_CHUNK_SIZE", "4096"),
            ("TIDECAST__CHANNEL__RING_MAX_BYTES", "2MiB"),
            ("TIDECAST__METRICS__PER_CHANNEL_LABELS", "true"),
            ("TIDECAST__LOG__FORMAT", "json"),
            ("TIDECAST__LOG__LEVEL", "tidecast=debug,info"),
            ("TIDECAST__SERVER__PUBLIC_HOST", "10.0.0.1"),
            ("TIDECAST__SERVER__DATA_DIR", "/var/lib/tidecast"),
            ("OTHER_VAR", "ignored"),
            ("TIDECAST_SINGLE_UNDERSCORE", "ignored"),
        ]),
    )
    .expect("load");
    // env beats file
    assert_eq!(cfg.http.listen, "127.0.0.1:0");
    assert_eq!(cfg.channel.reconnect_grace, Duration::from_secs(2));
    // file beats default
    assert_eq!(cfg.http.workers, 3);
    // env beats default, with non-string types recovered from strings
    assert_eq!(cfg.rtmp.max_connections, 5);
    assert_eq!(cfg.rtmp.max_chunk_size, Size(4096));
    assert_eq!(cfg.channel.ring_max_bytes, Size::mib(2));
    assert!(cfg.metrics.per_channel_labels);
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert_eq!(cfg.log.level, "tidecast=debug,info");
    assert_eq!(cfg.server.public_host, "10.0.0.1");
    assert_eq!(cfg.public_host(), "10.0.0.1");
    assert_eq!(cfg.server.data_dir, PathBuf::from("/var/lib/tidecast"));
    // untouched keys keep their defaults
    assert_eq!(cfg.channel.idle_timeout, Duration::from_secs(30));
    assert_eq!(cfg.rtmp.listen, "0.0.0.0:1935");
}

#[test]
fn env_with_wrong_type_is_rejected_by_name() {
    let err = Config::load_with_env(None, &env(&[("TIDECAST__RTMP__MAX_CONNECTIONS", "lots")]))
        .expect_err("not a number");
    assert!(err.to_string().contains("TIDECAST__RTMP__MAX_CONNECTIONS"), "{err}");
    let err = Config::load_with_env(None, &env(&[("TIDECAST__RTMP__WRITE_TIMEOUT", "5 parsecs")]))
        .expect_err("not a duration");
    assert!(err.to_string().contains("invalid duration"), "{err}");
}

#[test]
fn validation_runs_on_load() {
    let err =
        Config::load_with_env(None, &env(&[("TIDECAST__HTTP__LISTEN", "nowhere")])).expect_err("bad listen");
    assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("http.listen"), "{err}");
}

#[test]
fn validate_reports_every_problem() {
    let mut cfg = Config::default();
    cfg.http.listen = "localhost".into();
    cfg.rtmp.listen = "0.0.0.0:99999".into();
    cfg.rtmp.max_chunk_size = Size(64);
    cfg.rtmp.out_chunk_size = Size::mib(16);
    cfg.rtmp.max_message_size = Size::mib(32);
    cfg.rtmp.max_connections = 0;
    cfg.channel.ring_max_bytes = Size::kib(10);
    cfg.channel.ring_duration = Duration::from_millis(500);
    cfg.database.url = "mysql://x".into();
    cfg.database.max_connections = 0;
    cfg.log.level = "tidecast=loud".into();
    cfg.server.public_host = "http://example.com".into();
    cfg.srt.passphrase = "s3cr3tpw".into();
    cfg.srt.pbkeylen = 20;
    cfg.srt.max_connections = 0;
    let ConfigError::Invalid(problems) = cfg.validate().expect_err("invalid") else {
        panic!("expected Invalid");
    };
    let keys = [
        "http.listen",
        "rtmp.listen",
        "rtmp.max_chunk_size",
        "rtmp.out_chunk_size",
        "rtmp.max_message_size",
        "rtmp.max_connections",
        "rtmp.viewer_max_lag",
        "channel.ring_max_bytes",
        "channel.ring_duration",
        "database.url",
        "database.max_connections",
        "log.level",
        "server.public_host",
        "srt.passphrase",
        "srt.pbkeylen",
        "srt.max_connections",
    ];
    for key in keys {
        assert!(problems.iter().any(|p| p.starts_with(key)), "no problem reported for {key}: {problems:#?}");
    }
    assert_eq!(problems.len(), keys.len(), "{problems:#?}");
    assert!(!problems.iter().any(|p| p.contains("s3cr3tpw")), "a secret in a problem: {problems:#?}");
    let shown = ConfigError::Invalid(problems).to_string();
    assert_eq!(shown.lines().count(), keys.len() + 1, "{shown}");
}

#[test]
fn validate_accepts_postgres_and_limits() {
    let mut cfg = Config::default();
    cfg.database.url = "postgresql://tidecast@db/tidecast".into();
    cfg.rtmp.max_chunk_size = Size(128);
    cfg.rtmp.out_chunk_size = Size(RTMP_MAX_24BIT);
    cfg.rtmp.max_message_size = Size(RTMP_MAX_24BIT);
    cfg.validate().expect("valid");
    cfg.database.url = "postgres://x".into();
    cfg.validate().expect("valid");
}

#[test]
fn public_host_defaults_to_localhost() {
    let mut cfg = Config::default();
    assert_eq!(cfg.public_host(), "localhost");
    cfg.server.public_host = "live.example.com:8080".into();
    assert_eq!(cfg.public_host(), "live.example.com:8080");
    assert_eq!(cfg.resolved_database_url(), cfg.database.url);
}

#[test]
fn size_parses_units() {
    let cases = [
        ("4096", 4096),
        ("0", 0),
        ("100B", 100),
        ("64KiB", 64 * 1024),
        ("64kib", 64 * 1024),
        ("8 MiB", 8 << 20),
        (" 8MIB ", 8 << 20),
        ("1GiB", 1 << 30),
        ("2TiB", 2 << 40),
        ("1KB", 1000),
        ("3mb", 3_000_000),
        ("1GB", 1_000_000_000),
        ("1.5KiB", 1536),
        ("0.5MiB", 512 * 1024),
        ("18446744073709551615", u64::MAX),
    ];
    for (s, want) in cases {
        assert_eq!(s.parse::<Size>(), Ok(Size(want)), "{s}");
    }
    for bad in
        ["", "KiB", "-1", "1.", ".5KiB", "12XB", "1 2", "1e3", "16EiB", "18446744073709551616", "20000000TiB"]
    {
        assert!(bad.parse::<Size>().is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn size_displays_in_largest_exact_unit() {
    assert_eq!(Size::kib(64).to_string(), "64KiB");
    assert_eq!(Size::mib(8).to_string(), "8MiB");
    assert_eq!(Size::kib(1536).to_string(), "1536KiB");
    assert_eq!(Size::gib(3).to_string(), "3GiB");
    assert_eq!(Size(1000).to_string(), "1000B");
    assert_eq!(Size(0).to_string(), "0B");
}

#[test]
fn size_deserializes_from_integer_and_string() {
    #[derive(Deserialize)]
    struct T {
        a: Size,
        b: Size,
    }
    let t: T = toml::from_str("a = 4096\nb = \"4KiB\"").expect("parse");
    assert_eq!((t.a, t.b), (Size(4096), Size(4096)));
    assert!(toml::from_str::<T>("a = -1\nb = 1").is_err());
}

#[test]
fn duration_strings_round_trip() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "duration_str")]
        d: Duration,
    }
    for (s, d) in [
        ("200ms", Duration::from_millis(200)),
        ("10s", Duration::from_secs(10)),
        ("1m 30s", Duration::from_secs(90)),
        ("2h", Duration::from_secs(7200)),
    ] {
        let t: T = toml::from_str(&format!("d = {s:?}")).expect("parse");
        assert_eq!(t.d, d);
        let back = toml::to_string(&t).expect("serialize");
        assert_eq!(toml::from_str::<T>(&back).expect("reparse"), t);
    }
    assert!(toml::from_str::<T>("d = \"10\"").is_err());
    assert!(toml::from_str::<T>("d = 10").is_err());
}

proptest! {
    #[test]
    fn size_round_trips(n in any::<u64>()) {
        let s = Size(n);
        prop_assert_eq!(s.to_string().parse::<Size>(), Ok(s));
    }

    #[test]
    fn size_round_trips_binary_units(n in 0u64..1_000_000, shift in prop::sample::select(vec![0u32, 10, 20, 30, 40])) {
        let s = Size(n << shift);
        prop_assert_eq!(s.to_string().parse::<Size>(), Ok(s));
    }

    #[test]
    fn duration_round_trips(secs in 0u64..10_000_000_000, nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        let s = humantime::format_duration(d).to_string();
        prop_assert_eq!(humantime::parse_duration(&s).ok(), Some(d));
    }

    #[test]
    fn whole_config_round_trips_through_toml(
        grace_ms in 0u64..1_000_000,
        ring in 1u64..1_000_000_000,
    ) {
        let mut cfg = Config::default();
        cfg.channel.reconnect_grace = Duration::from_millis(grace_ms);
        cfg.channel.ring_max_bytes = Size(ring);
        let text = toml::to_string(&cfg).expect("serialize");
        prop_assert_eq!(toml::from_str::<Config>(&text).expect("reparse"), cfg);
    }
}

#[test]
fn example_files_load_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read conf/examples")
        .map(|entry| entry.expect("read conf/examples entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected the example files in {}, found {files:?}", dir.display());
    for file in &files {
        // The loader `Config::load` uses, minus this process's own TIDECAST__ variables.
        let config = Config::load_with_env(Some(file), &[])
            .unwrap_or_else(|e| panic!("{} does not load: {e}", file.display()));
        assert_ne!(config, Config::default(), "{} changes nothing", file.display());
    }
}

/// Plain and TLS listeners: either may be off (empty), never both; TLS counts only with a
/// certificate; cert and key come together; addresses must parse.
#[test]
fn tls_and_listener_rules() {
    let problems = |cfg: &Config| match cfg.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(p)) => p,
        Err(e) => panic!("unexpected error: {e}"),
    };
    // Defaults: no certificate, plain listeners on; the TLS addresses are inert but valid.
    let mut cfg = Config::default();
    assert!(!cfg.tls.enabled());
    assert_eq!(cfg.rtmp.tls_listen, "0.0.0.0:1936");
    assert_eq!(cfg.http.tls_listen, "0.0.0.0:8443");
    assert!(problems(&cfg).is_empty());

    // Plain off without a certificate: nothing would listen.
    cfg.rtmp.listen = String::new();
    cfg.http.listen = String::new();
    let p = problems(&cfg);
    assert!(p.iter().any(|p| p.starts_with("rtmp.listen") && p.contains("tls.cert")), "{p:#?}");
    assert!(p.iter().any(|p| p.starts_with("http.listen") && p.contains("tls.cert")), "{p:#?}");

    // With a certificate, TLS-only is fine.
    cfg.tls.cert = "/etc/tidecast/fullchain.pem".into();
    cfg.tls.key = "/etc/tidecast/privkey.pem".into();
    assert!(problems(&cfg).is_empty(), "{:#?}", problems(&cfg));

    // ... but not with both listeners off.
    cfg.rtmp.tls_listen = String::new();
    let p = problems(&cfg);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("rtmp.listen and rtmp.tls_listen: both empty"), "{p:#?}");

    // Bad addresses, a key without a certificate and a zero interval, all reported at once.
    let mut cfg = Config::default();
    cfg.rtmp.tls_listen = "1936".into();
    cfg.http.tls_listen = "localhost:8443".into();
    cfg.tls.key = "/etc/tidecast/privkey.pem".into();
    cfg.tls.reload_interval = std::time::Duration::ZERO;
    let p = problems(&cfg);
    for key in ["rtmp.tls_listen", "http.tls_listen", "tls.cert and tls.key", "tls.reload_interval"] {
        assert!(p.iter().any(|p| p.starts_with(key)), "no problem reported for {key}: {p:#?}");
    }
    assert_eq!(p.len(), 4, "{p:#?}");
}
