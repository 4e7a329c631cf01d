//! The API contract: schemathesis (PyPI, 4.x) generates requests from the served OpenAPI
//! document (`/api/v1/openapi.json`) of a real server and checks every answer against it:
//! no 5xx, no status the operation does not document, no schema-valid request refused, no
//! schema-invalid one accepted, headers and bodies as documented. Once anonymous and once with
//! a signed-in user's token; logout is left out (it would revoke that token mid-run).
//! Settings and the per-operation exceptions: `tests/contract/schemathesis.toml`.
//!
//! schemathesis comes from the virtualenv that `tests/run.sh` installs
//! (`$TIDECAST_VENV`, default `~/.cache/tidecast-venv`); the test installs it there itself when
//! it is missing, so a plain `cargo test` runs it too. Bounded: `--max-examples` per operation
//! and `--max-time` per run (`TIDECAST_CONTRACT_SECONDS`, default 30), with a fixed seed
//! (`TIDECAST_CONTRACT_SEED`) so a failure reproduces.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;
use tidecast::store::{NewVideo, Store, VideoSource, VideoStatus, Visibility};

/// The schemathesis major version the config file is written for.
const SCHEMATHESIS: &str = "schemathesis>=4,<5";

fn venv() -> PathBuf {
    match std::env::var_os("TIDECAST_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/tidecast-venv"),
    }
}

fn works(program: &std::path::Path) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The schemathesis executable, installed into the virtualenv if missing. `None` (with a loud
/// SKIP) only when there is no Python at all outside CI.
fn schemathesis() -> Option<PathBuf> {
    let venv = venv();
    let bin = venv.join("bin/schemathesis");
    if works(&bin) {
        return Some(bin);
    }
    if !works(std::path::Path::new("python3")) {
        assert!(std::env::var_os("CI").is_none(), "python3 is required in CI for schemathesis");
        eprintln!("\n*** SKIP: python3 not found; the API contract test did NOT run. ***\n");
        return None;
    }
    eprintln!("installing {SCHEMATHESIS} into {}", venv.display());
    let venv_s = venv.to_str().expect("a UTF-8 venv path");
    let made = run_tool("python3", &["-m", "venv", venv_s], Duration::from_secs(120));
    assert!(made.status.success(), "python3 -m venv {venv_s}: {}", made.stderr);
    let pip = venv.join("bin/pip");
    let pip = pip.to_str().expect("a UTF-8 venv path");
    let installed = run_tool(pip, &["install", "-q", SCHEMATHESIS], Duration::from_secs(600));
    assert!(installed.status.success(), "pip install {SCHEMATHESIS}: {}", installed.stderr);
    assert!(works(&bin), "{} does not run after installing", bin.display());
    Some(bin)
}

/// Runs `program` in `dir` to completion within `timeout` (killed and failed otherwise).
fn run_in(dir: &std::path::Path, program: &std::path::Path, args: &[&str], timeout: Duration) -> Ran {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status
        .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}:\n{stderr}", program.display()));
    Ran { status, stdout: std::fs::read_to_string(&out_path).unwrap_or_default(), stderr }
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[test]
fn the_api_keeps_its_openapi_contract() {
    let Some(schemathesis) = schemathesis() else { return };
    let server = TestServer::start(&[]);
    let creds = json!({"email": "contract@example.com", "password": "contract password"});
    let mut register = creds.clone();
    register["username"] = json!("contract");
    let (s, v) = http_json(server.http, "POST", "/api/v1/users/register", None, Some(register));
    assert_eq!(s, 201, "{v}");
    let (s, v) = http_json(server.http, "POST", "/api/v1/auth/login", None, Some(creds));
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    // Videos for the id dictionary of the config (1 public, 2 for subscribers, 3 private), so
    // the video operations get past "not found" into their own logic. There is no API to
    // upload one, so they go straight into the server's store.
    let db_url = format!("sqlite://{}/tidecast.db", server.data_dir().display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(Store::connect(&db_url, 1)).unwrap();
    for (title, visibility) in
        [("open", Visibility::Public), ("paid", Visibility::Subscribers), ("hidden", Visibility::Private)]
    {
        let video = rt
            .block_on(store.create_video(NewVideo {
                channel_id: None,
                owner_id: None,
                title: title.into(),
                description: String::new(),
                tags: vec![],
                visibility,
                source: VideoSource::Upload,
                duration_ms: 60_000,
                status: VideoStatus::Ready,
            }))
            .unwrap();
        assert!((1..=3).contains(&video.id), "the config's dictionary names ids 1-3, got {}", video.id);
    }

    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/schemathesis.toml");
    let url = format!("http://{}/api/v1/openapi.json", server.http);
    let seconds = env_or("TIDECAST_CONTRACT_SECONDS", "30");
    let seed = env_or("TIDECAST_CONTRACT_SEED", "20261203");
    let budget = Duration::from_secs(seconds.parse::<u64>().expect("TIDECAST_CONTRACT_SECONDS") + 120);
    let auth = format!("Authorization: Bearer {token}");
    // schemathesis and hypothesis keep state in the working directory: not in the clone.
    let work = tempfile::tempdir().unwrap();
    for (label, header) in [("anonymous", None), ("signed in", Some(auth.as_str()))] {
        let mut args = vec![
            "--config-file",
            config,
            "run",
            &url,
            "--max-examples",
            "15",
            "--max-time",
            &seconds,
            "--seed",
            &seed,
            "--exclude-path",
            "/api/v1/auth/logout",
        ];
        if let Some(h) = header {
            args.extend(["--header", h]);
        }
        let ran = run_in(work.path(), &schemathesis, &args, budget);
        let summary: String = ran
            .stdout
            .lines()
            .skip_while(|l| !l.contains("FAILURES") && !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            ran.status.success(),
            "schemathesis ({label}) found contract violations:\n{summary}\n{}\nserver log:\n{}",
            ran.stderr,
            tail(&server.logs(), 8000)
        );
        eprintln!("schemathesis ({label}):\n{summary}");
    }
}
