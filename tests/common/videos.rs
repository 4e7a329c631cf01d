//! What the recording tests share: a video as the API shows it, waiting for its status, and the
//! server log's tail for failure messages.

use std::time::Duration;

use super::{wait_until, TestServer};

/// The last `n` lines of the server log, for failure messages.
pub fn log_tail(server: &TestServer, n: usize) -> String {
    let log = server.logs();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Video `id` as `GET /api/v1/videos/{id}` shows it to an anonymous caller; `None` unless 200.
pub fn video(server: &TestServer, id: i64) -> Option<serde_json::Value> {
    let res = server.get(&format!("/api/v1/videos/{id}"));
    (res.status == 200).then(|| serde_json::from_str(&res.body).expect("video JSON"))
}

/// Wait until video `id` has `status`; returns the video, or fails with the log's tail.
pub fn wait_status(server: &TestServer, id: i64, status: &str, timeout: Duration) -> serde_json::Value {
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = video(server, id);
        last.as_ref().is_some_and(|v| v["status"] == status)
    });
    assert!(
        ok,
        "video {id} did not become {status} within {timeout:?}: {last:?}\nlog tail:\n{}",
        log_tail(server, 40)
    );
    last.unwrap()
}
