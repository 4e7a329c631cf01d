//! Log hygiene: client mistakes are not server errors, and a flood of them must not flood the log.
//!
//! Two tools (and a budget for srt-tokio's own lines, [`SRT_PROTOCOL_LINES`]). [`LogBudget`] rate-limits one kind of line (at most N lines per interval; the next
//! line logged says how many were suppressed before it). [`ClientNoise`] handles the one ERROR
//! line we do not emit ourselves: actix-http logs every request it could not parse, every reset
//! and every slow-request timeout at ERROR (`stream error: request parse error: ...`), though
//! each is the client's doing. [`HideClientNoise`] keeps those events out of the formatting
//! layer, and [`ClientNoise`], a layer, logs them again at WARN under [`HTTP_CLIENT_ERRORS`]'s
//! budget, target `tidecast::http`. actix's other ERROR lines (service, body, upgrade and
//! internal errors) are the server's own and stay as they are.
//!
//! Levels, by convention: ERROR is the server's own failure (a bug, a dependency down); WARN a
//! client or peer mistake worth an operator's glance; INFO a normal event. Connection-level
//! client mistakes go through a [`LogBudget`]; `/metrics` counts all of them, logged or not.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Filter, Layer};

/// Rate limit of one kind of log line: at most `lines` per `interval`, the rest counted.
pub struct LogBudget {
    lines: u32,
    interval: Duration,
    window: Mutex<Option<Window>>,
}

struct Window {
    start: Instant,
    used: u32,
    /// Lines suppressed since the last one logged.
    suppressed: u64,
}

impl LogBudget {
    pub const fn new(lines: u32, interval: Duration) -> Self {
        LogBudget { lines, interval, window: Mutex::new(None) }
    }

    /// `Some(n)`: log this line, and say that `n` lines of this kind were suppressed before it.
    /// `None`: suppress it. Suppressed lines are reported with the next line logged, so a flood
    /// that stops is reported at its next occurrence (its metric counts it at once).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().expect("a log budget is never poisoned: no panics under it");
        let w = w.get_or_insert(Window { start: now, used: 0, suppressed: 0 });
        if now.saturating_duration_since(w.start) >= self.interval {
            w.start = now;
            w.used = 0;
        }
        if w.used < self.lines {
            w.used += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// Requests actix-http refused before our code saw them (malformed, reset, too slow).
pub static HTTP_CLIENT_ERRORS: LogBudget = LogBudget::new(10, Duration::from_secs(60));

/// srt-tokio's own lines (target `srt_protocol`): on shutdown after SRT publishing it logged
/// `closed socket ... PacketStreamClosedError` 11,000 to 22,000 times in 90 ms, and under loss it
/// logs every late packet batch. At most this many per interval reach the log; the SRT counters
/// in `/metrics` (retransmitted, dropped, gaps) carry the rest.
pub static SRT_PROTOCOL_LINES: LogBudget = LogBudget::new(20, Duration::from_secs(10));

/// Prefixes of actix-http's ERROR lines that report a client's mistake (the `Display` of
/// `actix_http::error::DispatchError`'s variants `Parse`, `Io`, `SlowRequestTimeout`,
/// `DisconnectTimeout`, `HandlerDroppedPayload`, behind the dispatcher's `"stream error: "`).
const ACTIX_CLIENT_ERRORS: &[&str] = &[
    "stream error: request parse error",
    "stream error: I/O error",
    "stream error: request did not complete within",
    "stream error: connection shutdown timeout",
    "stream error: handler dropped payload",
    "MAX_BUFFER_SIZE unprocessed data reached",
];

/// Demotes actix-http's client-error lines from ERROR to rate-limited WARN (see the module doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientNoise;

impl ClientNoise {
    fn may_match(meta: &Metadata<'_>) -> bool {
        *meta.level() == Level::ERROR && meta.target().starts_with("actix_http::")
    }

    /// The client-error message of `event`, if it is one of actix's.
    fn client_error(event: &Event<'_>) -> Option<String> {
        if !Self::may_match(event.metadata()) {
            return None;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        ACTIX_CLIENT_ERRORS.iter().any(|p| message.0.starts_with(p)).then_some(message.0)
    }
}

/// The formatting layer's filter: leaves out what [`ClientNoise`] logs again at WARN.
#[derive(Clone, Copy, Debug, Default)]
pub struct HideClientNoise;

impl<S: Subscriber> Filter<S> for HideClientNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        // srt-tokio logs through the `log` crate: its events carry their target in fields.
        let normalized = event.normalized_metadata();
        let target = normalized.as_ref().map_or(event.metadata().target(), |m| m.target());
        if target.starts_with("srt_protocol") {
            return SRT_PROTOCOL_LINES.admit().is_some();
        }
        ClientNoise::client_error(event).is_none()
    }
}

impl<S: Subscriber> Layer<S> for ClientNoise {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if let Some(message) = Self::client_error(event) {
            if let Some(suppressed) = HTTP_CLIENT_ERRORS.admit() {
                let error = message.trim_start_matches("stream error: ");
                tracing::warn!(target: "tidecast::http", error, suppressed, "HTTP client error; connection closed");
            }
        }
    }
}

/// Collects an event's `message` field.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use fmt::Write;
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_admits_n_per_interval_and_counts_the_rest() {
        let b = LogBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let got: Vec<_> = (0..5).map(|_| b.admit_at(t0)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None]);
        // A new interval: the first line reports the two suppressed.
        assert_eq!(b.admit_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(b.admit_at(t0 + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn budget_survives_a_clock_that_does_not_advance() {
        let b = LogBudget::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(b.admit_at(t0 + Duration::from_secs(5)), Some(0));
        // An earlier instant (another thread's) is not a new interval.
        assert_eq!(b.admit_at(t0), None);
    }
}
