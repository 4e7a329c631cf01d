//! Supervised channel outputs: a child task that is restarted, with exponential backoff, when
//! it panics.
//!
//! A channel's outputs (the HLS packager of each rendition, the LL-HLS viewer sweep; later the
//! archive writer and the transcode ladder) are ring cursors or timers that run as tokio tasks
//! on the media runtime, not actix actors: an actor is pinned to one arbiter thread and its
//! mailbox would sit on the frame path. They still need what actix's `Supervisor` gives actors,
//! and more (ARCHITECTURE.md, "Supervision with backoff"):
//! - a panic is noticed (the child runs in its own task; its `JoinError` says it panicked),
//!   logged at ERROR, counted in `tidecast_channel_output_restarts_total{output}`, and the child
//!   is started again after a backoff that doubles with each restart (reset after the child ran
//!   well for `reset_after`);
//! - a child that returns has finished its job (its ring closed) and is not restarted;
//! - `tidecast_channel_outputs{output}` counts the outputs running now;
//! - the `cancel` token stops restarting (the channel is gone); it does not abort a running
//!   child, which ends on its own when its ring closes.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::media::clock::Clock;
use crate::metrics::{metrics, GaugeGuard};

/// Restart timing of a supervised output.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The delay doubles per restart up to this.
    pub max: Duration,
    /// A child that ran this long before failing starts again from `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Start `make(restarts)` on `runtime` and keep it running: restart it after a panic. `output`
/// labels the metrics and logs; `channel` names the channel in logs.
pub fn spawn_supervised<F, Fut>(
    runtime: &tokio::runtime::Handle,
    output: &'static str,
    channel: String,
    backoff: Backoff,
    clock: Clock,
    cancel: CancellationToken,
    mut make: F,
) -> JoinHandle<()>
where
    F: FnMut(u32) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = runtime.clone();
    runtime.spawn(async move {
        let _running = GaugeGuard::new(metrics().outputs_running.with_label_values(&[output]));
        let mut restarts = 0u32;
        let mut delay = backoff.initial;
        loop {
            let started = clock.now();
            let outcome = rt.spawn(make(restarts)).await;
            match outcome {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    metrics().output_restarts.with_label_values(&[output]).inc();
                    if clock.since(started) >= backoff.reset_after {
                        delay = backoff.initial;
                    }
                    error!(%channel, output, restarts, delay_ms = delay.as_millis() as u64, "channel output panicked; restarting");
                }
                Err(_) => {
                    warn!(%channel, output, "channel output task was cancelled");
                    return;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(backoff.max);
            restarts += 1;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_child_is_restarted_with_backoff_until_it_finishes() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let before = metrics().output_restarts.with_label_values(&["test_output"]).get();
        let t0 = tokio::time::Instant::now();
        let h = spawn_supervised(
            &tokio::runtime::Handle::current(),
            "test_output",
            "studio".into(),
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                reset_after: Duration::from_secs(60),
            },
            Clock::system(),
            CancellationToken::new(),
            move |restarts| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    if restarts < 3 {
                        panic!("child failure {restarts}");
                    }
                }
            },
        );
        h.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4, "three panics, three restarts, then a clean finish");
        assert_eq!(metrics().output_restarts.with_label_values(&["test_output"]).get() - before, 3);
        // 100 + 200 + 400 ms of backoff on simulated time.
        assert!(t0.elapsed() >= Duration::from_millis(700), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_restarting() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let h = spawn_supervised(
            &tokio::runtime::Handle::current(),
            "test_output_cancel",
            "studio".into(),
            Backoff::default(),
            Clock::system(),
            cancel,
            |_| async { panic!("always") },
        );
        tokio::time::timeout(Duration::from_secs(5), h).await.expect("supervisor ends").unwrap();
    }
}
