//! Real players in a browser: node scripts under `tests/browser/` (playwright-core driving
//! Debian's headless Chromium, hls.js from `tests/browser/node_modules`) that play what a test
//! server serves and report one JSON line on stdout. Used by `tests/hlsjs_play.rs` and
//! `tests/hlsjs_ladder.rs` and `tests/browser_vod.rs` (dash.js, hls.js on recordings, DVR).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::wait_child;

/// `tests/browser`: the node scripts, package.json and node_modules.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// hls.js's `dist` directory, for a server's `[http] static_dir` (the watch page then loads
/// `/static/hls.min.js`).
pub fn hlsjs_dist_dir() -> PathBuf {
    browser_dir().join("node_modules/hls.js/dist")
}

pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether node, Chromium and tests/browser/node_modules are there. Missing: a failure in CI
/// (`CI` set), else a loud SKIP and `false`.
pub fn require_browser_player() -> bool {
    let mut missing = Vec::new();
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        missing.push("node".to_string());
    }
    if !chromium_path().is_file() {
        missing.push(format!("chromium ({})", chromium_path().display()));
    }
    let modules = browser_dir().join("node_modules");
    for needed in [
        "playwright-core/package.json",
        "hls.js/dist/hls.min.js",
        "dashjs/package.json",
        "dashjs/dist/modern/umd/dash.all.min.js",
    ] {
        if !modules.join(needed).is_file() {
            missing.push(format!("tests/browser/node_modules/{needed} (npm ci)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing in CI: {}; tests/run.sh installs them", missing.join(", "));
    }
    eprintln!(
        "\n*** SKIP: {} missing; this real-player test did NOT run. `bash tests/run.sh` installs them. ***\n",
        missing.join(", ")
    );
    false
}

/// Run `node tests/browser/<script> <args>` for at most `timeout`; returns the last JSON line it
/// printed (whatever its exit status: the report says what went wrong) and its stderr.
pub fn run_node_report(script: &str, args: &[&str], timeout: Duration) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout.txt"), dir.path().join("stderr.txt"));
    let mut child = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .env("CHROMIUM", chromium_path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawning node");
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.is_some(), "{script} did not finish within {timeout:?}; stderr:\n{stderr}");
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_else(|| {
        panic!("{script} printed no JSON ({status:?}); stdout:\n{stdout}\nstderr:\n{stderr}")
    });
    let report = serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} JSON: {e}: {line}"));
    (report, stderr)
}

/// The number at JSON `pointer` in `report`, NaN when absent.
pub fn f64_at(report: &serde_json::Value, pointer: &str) -> f64 {
    report.pointer(pointer).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
}
