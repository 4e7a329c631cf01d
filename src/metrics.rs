//! Every Prometheus collector, registered once in one registry and served at `/metrics`.
//!
//! Names follow `tidecast_<subsystem>_<name>_<unit>`. Labels are low-cardinality enums
//! (protocol, consumer, reason); there is no per-channel label (an operator switch may add one
//! later), so a server with ten thousand channels still exports a few hundred series.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// `reason` of `tidecast_connections_rejected_total`: the server's own connection limit.
pub const REJECT_MAX_CONNECTIONS: &str = "max_connections";
/// `reason` of `tidecast_connections_rejected_total`: the client address's limit.
pub const REJECT_PER_ADDRESS: &str = "per_address";

pub struct Metrics {
    pub registry: Registry,
    /// Publisher connections currently live, by protocol.
    pub ingest_sessions: IntGaugeVec,
    /// Media bytes received from publishers, by protocol.
    pub ingest_bytes: IntCounterVec,
    /// Channels with a publisher (including those in reconnect grace).
    pub channels_live: IntGauge,
    /// Viewers currently attached, by protocol.
    pub viewers: IntGaugeVec,
    /// TLS certificate reloads after the files changed, by result (`ok`, `error`): alert on
    /// `error`, since the previous certificate keeps being served until it expires.
    pub tls_reloads: IntCounterVec,
    /// Bytes sent to viewers, by protocol.
    pub egress_bytes: IntCounterVec,
    /// Frames a consumer never saw because it fell behind, by consumer.
    pub frames_dropped: IntCounterVec,
    /// Viewers disconnected by the server, by protocol and reason (`slow`, `stalled`, `shutdown`).
    pub viewers_cut: IntCounterVec,
    /// RTMP viewers the channel writer handed back to their own task because their socket could
    /// not take a whole write (full or failed), by protocol. A steady rate means viewers whose
    /// links are slower than the stream.
    pub viewer_handbacks: IntCounterVec,
    /// Refused credentials (stream keys, passwords, tokens), by protocol.
    pub auth_failures: IntCounterVec,
    /// Connections refused by admission control, by protocol and reason (`max_connections`: the
    /// server's limit; `per_address`: the client address's limit). Never an address label.
    pub connections_rejected: IntCounterVec,
    /// Connections closed for malformed input, by protocol.
    pub protocol_errors: IntCounterVec,
    /// Channel actors restarted after dying.
    pub channel_restarts: IntCounter,
    /// MPEG-TS continuity-counter gaps on SRT ingest: loss SRT could not repair within its
    /// latency. No per-session label (cardinality); the session's log has the detail.
    pub srt_ts_gaps: IntCounter,
    /// Access units SRT ingest dropped as damaged or undecodable instead of passing them on.
    pub srt_dropped_units: IntCounter,
    /// SRT data packets retransmitted, by direction (`in`: publishers resent to us; `out`: we
    /// resent to players): the loss SRT repaired.
    pub srt_retransmitted: IntCounterVec,
    /// SRT data packets detected missing, by direction (`in`: at our receivers; `out`: reported
    /// by players).
    pub srt_lost: IntCounterVec,
    /// SRT data packets dropped as too late for their latency, by direction: the loss SRT could
    /// not repair.
    pub srt_dropped: IntCounterVec,
    /// WebRTC sessions open now (negotiated, connecting or connected), by kind (`whip`,
    /// `whep`). Publishers and viewers among them are also in `tidecast_ingest_sessions` and
    /// `tidecast_viewers` with `protocol="webrtc"` once attached.
    pub webrtc_sessions: IntGaugeVec,
    /// RTP packets of WHIP publishers given up on (not repaired by NACK within the wait).
    pub webrtc_rtp_lost: IntCounter,
    /// NACK feedback packets: `sent` to WHIP publishers, `received` from WHEP viewers.
    pub webrtc_nacks: IntCounterVec,
    /// Key frame requests (RTCP PLI) sent to WHIP publishers.
    pub webrtc_plis_sent: IntCounter,
    /// Datagrams the shared WebRTC ports dropped: a session's queue full, or a full socket.
    pub webrtc_datagrams_dropped: IntCounter,
    /// Supervised channel outputs running now, by output (`hls_packager`, `hls_viewer_sweep`).
    pub outputs_running: IntGaugeVec,
    /// Supervised channel outputs restarted after a panic, by output.
    pub output_restarts: IntCounterVec,
    /// Frames an output could not serialize (skipped, logged once per frame), by protocol.
    pub frames_unwritable: IntCounterVec,
    /// Restream destinations of live channels, by protocol and state (connecting, live,
    /// retrying, error).
    pub push_destinations: IntGaugeVec,
    /// Media bytes written to restream destinations, by protocol.
    pub push_bytes: IntCounterVec,
    /// Failed restream attempts that were retried after a backoff, by protocol.
    pub push_retries: IntCounterVec,
    /// Pulled sources (RTSP cameras), by protocol and state.
    pub pull_sources: IntGaugeVec,
    /// Pulls that failed or ended and were started again, by protocol.
    pub pull_reconnects: IntCounterVec,
    /// Transcode ladders (one ffmpeg each) running.
    pub transcodes_running: IntGauge,
    /// ffmpeg processes of a ladder started again, by reason (`exit`, `stall`, `source`).
    pub transcode_restarts: IntCounterVec,
    /// ffmpeg's encode speed (x real time), by the ladder's highest encoded rung (`1080p`,
    /// `720p`, `480p`, `360p`, `other`).
    pub transcode_speed: HistogramVec,
    /// Frames ffmpeg reported dropped.
    pub transcode_frames_dropped: IntCounter,
    /// 1 when no ffmpeg was found: every channel runs passthrough only.
    pub transcode_ffmpeg_missing: IntGauge,
    /// Channels served passthrough although their ladder is on, by reason (`cap`).
    pub transcode_refused: IntCounterVec,
    /// Source segments a rung had no aligned key frame for (published as gaps).
    pub transcode_misaligned_segments: IntCounter,
    /// Live sessions being recorded now.
    pub archive_recordings_active: IntGauge,
    /// Media bytes the archive wrote, by storage backend (`local`).
    pub archive_bytes: IntCounterVec,
    /// Time one batch of archive writes took (a part, or a segment's end with its flushes).
    pub archive_write_seconds: Histogram,
    /// Stretches a recording could not record (storage errors, falling behind the live window).
    pub archive_gaps: IntCounter,
    /// Unfinished recordings (a crash) finished at start.
    pub archive_recoveries: IntCounter,
    /// Recordings deleted by retention (age or size).
    pub archive_retention_deletions: IntCounter,
    /// Finished recordings moved to the object store, by result (`ok`, `error`: retried).
    pub archive_moves: IntCounterVec,
    /// Time from a viewer's play request to its first media byte written.
    pub first_frame_seconds: HistogramVec,
    /// HTTP requests by route pattern and status.
    pub http_requests: IntCounterVec,
    /// HTTP request handling time.
    pub http_duration_seconds: Histogram,
    /// LL-HLS requests by kind (`multivariant`, `playlist`, `blocking_playlist`, `part`,
    /// `segment`, `init`) and status.
    pub hls_requests: IntCounterVec,
    /// Time blocking playlist reloads and preload-hinted part requests waited.
    pub hls_block_wait_seconds: Histogram,
    /// From a part's publication to the release of a request that was blocked waiting for it,
    /// by what was waiting (`playlist`: blocking reloads and the multivariant playlist at
    /// stream start; `part`: preload-hinted part requests).
    pub hls_block_release_seconds: HistogramVec,
    /// Parts and segments produced by the packagers.
    pub hls_parts: IntCounter,
    pub hls_segments: IntCounter,
    /// Durations of produced parts.
    pub hls_part_duration_seconds: Histogram,
    /// Shared-state operations that fell back to in-process state because Redis did not answer.
    pub shared_state_fallbacks: IntCounter,
    /// Watch-progress updates accepted by the API.
    pub watch_updates: IntCounter,
    /// Watch-history rows written by batch flushes.
    pub watch_rows_written: IntCounter,
    /// Watch-history flushes that failed (the batch is kept and retried).
    pub watch_flush_failures: IntCounter,
    /// Watch-progress updates buffered, not yet written.
    pub watch_pending: IntGauge,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition is valid");
    r.register(Box::new(c.clone())).expect("each metric is registered once");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition is valid");
    r.register(Box::new(c.clone())).expect("each metric is registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition is valid");
    r.register(Box::new(g.clone())).expect("each metric is registered once");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");
        let channels_live =
            IntGauge::new("tidecast_channels_live", "Channels with a publisher, including reconnect grace")
                .expect("valid");
        r.register(Box::new(channels_live.clone())).expect("registered once");
        let channel_restarts =
            IntCounter::new("tidecast_channel_restarts_total", "Channel actors restarted after dying")
                .expect("valid");
        r.register(Box::new(channel_restarts.clone())).expect("registered once");
        let first_frame_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tidecast_viewer_first_frame_seconds",
                "Play request to first media byte written",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["protocol"],
        )
        .expect("valid");
        r.register(Box::new(first_frame_seconds.clone())).expect("registered once");
        let http_duration_seconds = Histogram::with_opts(
            HistogramOpts::new("tidecast_http_request_duration_seconds", "HTTP request handling time")
                .buckets(prometheus::exponential_buckets(0.0005, 2.5, 12).expect("valid buckets")),
        )
        .expect("valid");
        r.register(Box::new(http_duration_seconds.clone())).expect("registered once");
        let hls_block_wait_seconds = Histogram::with_opts(
            HistogramOpts::new("tidecast_hls_block_wait_seconds", "Time blocking LL-HLS requests waited")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0]),
        )
        .expect("valid");
        r.register(Box::new(hls_block_wait_seconds.clone())).expect("registered once");
        let hls_block_release_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tidecast_hls_block_release_seconds",
                "Part publication to release of a request blocked on it",
            )
            .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 1.0]),
            &["kind"],
        )
        .expect("valid");
        r.register(Box::new(hls_block_release_seconds.clone())).expect("registered once");
        let hls_part_duration_seconds = Histogram::with_opts(
            HistogramOpts::new("tidecast_hls_part_duration_seconds", "Durations of produced LL-HLS parts")
                .buckets(vec![0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.0]),
        )
        .expect("valid");
        r.register(Box::new(hls_part_duration_seconds.clone())).expect("registered once");
        let hls_parts = IntCounter::new("tidecast_hls_parts_total", "LL-HLS parts produced").expect("valid");
        r.register(Box::new(hls_parts.clone())).expect("registered once");
        let hls_segments =
            IntCounter::new("tidecast_hls_segments_total", "LL-HLS segments produced").expect("valid");
        r.register(Box::new(hls_segments.clone())).expect("registered once");
        Metrics {
            hls_requests: counter_vec(
                &r,
                "tidecast_hls_requests_total",
                "LL-HLS requests",
                &["kind", "status"],
            ),
            hls_block_wait_seconds,
            hls_block_release_seconds,
            hls_parts,
            hls_segments,
            hls_part_duration_seconds,
            ingest_sessions: gauge_vec(
                &r,
                "tidecast_ingest_sessions",
                "Live publisher connections",
                &["protocol"],
            ),
            ingest_bytes: counter_vec(
                &r,
                "tidecast_ingest_bytes_total",
                "Bytes received from publishers",
                &["protocol"],
            ),
            channels_live,
            viewers: gauge_vec(&r, "tidecast_viewers", "Viewers attached", &["protocol"]),
            egress_bytes: counter_vec(
                &r,
                "tidecast_egress_bytes_total",
                "Bytes sent to viewers",
                &["protocol"],
            ),
            frames_dropped: counter_vec(
                &r,
                "tidecast_frames_dropped_total",
                "Frames skipped because a consumer fell behind",
                &["consumer"],
            ),
            viewers_cut: counter_vec(
                &r,
                "tidecast_viewers_disconnected_total",
                "Viewers disconnected by the server",
                &["protocol", "reason"],
            ),
            viewer_handbacks: counter_vec(
                &r,
                "tidecast_viewer_handbacks_total",
                "Viewers the RTMP channel writer handed back to their own task (socket full or failed)",
                &["protocol"],
            ),
            webrtc_sessions: gauge_vec(
                &r,
                "tidecast_webrtc_sessions",
                "WebRTC sessions open (negotiated, connecting or connected)",
                &["kind"],
            ),
            webrtc_rtp_lost: counter(
                &r,
                "tidecast_webrtc_rtp_packets_lost_total",
                "RTP packets of WHIP publishers lost (not repaired by NACK in time)",
            ),
            webrtc_nacks: counter_vec(
                &r,
                "tidecast_webrtc_nacks_total",
                "RTCP NACK packets (sent: to WHIP publishers; received: from WHEP viewers)",
                &["direction"],
            ),
            webrtc_plis_sent: counter(
                &r,
                "tidecast_webrtc_plis_sent_total",
                "Key frame requests (RTCP PLI) sent to WHIP publishers",
            ),
            webrtc_datagrams_dropped: counter(
                &r,
                "tidecast_webrtc_datagrams_dropped_total",
                "Datagrams dropped by the shared WebRTC ports (session queue or socket full)",
            ),
            srt_ts_gaps: counter(
                &r,
                "tidecast_srt_ts_gaps_total",
                "MPEG-TS continuity gaps on SRT ingest (loss SRT did not repair)",
            ),
            srt_dropped_units: counter(
                &r,
                "tidecast_srt_dropped_units_total",
                "Damaged or undecodable access units dropped by SRT ingest",
            ),
            srt_retransmitted: counter_vec(
                &r,
                "tidecast_srt_packets_retransmitted_total",
                "SRT data packets retransmitted (in: by publishers; out: to players)",
                &["direction"],
            ),
            srt_lost: counter_vec(
                &r,
                "tidecast_srt_packets_lost_total",
                "SRT data packets detected missing (in: at our receivers; out: reported by players)",
                &["direction"],
            ),
            srt_dropped: counter_vec(
                &r,
                "tidecast_srt_packets_dropped_total",
                "SRT data packets dropped as too late for the latency (loss SRT did not repair)",
                &["direction"],
            ),
            auth_failures: counter_vec(
                &r,
                "tidecast_auth_failures_total",
                "Refused credentials",
                &["protocol"],
            ),
            connections_rejected: counter_vec(
                &r,
                "tidecast_connections_rejected_total",
                "Connections refused by admission control",
                &["protocol", "reason"],
            ),
            protocol_errors: counter_vec(
                &r,
                "tidecast_protocol_errors_total",
                "Connections closed for malformed input",
                &["protocol"],
            ),
            tls_reloads: counter_vec(
                &r,
                "tidecast_tls_certificate_reloads_total",
                "TLS certificate reloads after the files changed, by result",
                &["result"],
            ),
            channel_restarts,
            outputs_running: gauge_vec(
                &r,
                "tidecast_channel_outputs",
                "Supervised channel outputs running",
                &["output"],
            ),
            output_restarts: counter_vec(
                &r,
                "tidecast_channel_output_restarts_total",
                "Supervised channel outputs restarted after a panic",
                &["output"],
            ),
            push_destinations: gauge_vec(
                &r,
                "tidecast_push_destinations",
                "Restream destinations of live channels, by protocol and state",
                &["protocol", "state"],
            ),
            push_bytes: counter_vec(
                &r,
                "tidecast_push_bytes_total",
                "Media bytes written to restream destinations",
                &["protocol"],
            ),
            push_retries: counter_vec(
                &r,
                "tidecast_push_retries_total",
                "Failed restream attempts retried after a backoff",
                &["protocol"],
            ),
            pull_sources: gauge_vec(
                &r,
                "tidecast_pull_sources",
                "Pulled sources (RTSP cameras), by protocol and state",
                &["protocol", "state"],
            ),
            pull_reconnects: counter_vec(
                &r,
                "tidecast_pull_reconnects_total",
                "Pulls that failed or ended and were started again after a backoff",
                &["protocol"],
            ),
            transcodes_running: {
                let g = IntGauge::new(
                    "tidecast_transcodes_running",
                    "Transcode ladders running (one ffmpeg each)",
                )
                .expect("valid");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            transcode_restarts: counter_vec(
                &r,
                "tidecast_transcode_restarts_total",
                "ffmpeg processes of a transcode ladder started again, by reason",
                &["reason"],
            ),
            transcode_speed: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "tidecast_transcode_speed_ratio",
                        "ffmpeg encode speed (x real time), by the ladder's highest encoded rung",
                    )
                    .buckets(vec![0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0, 4.0]),
                    &["rung_class"],
                )
                .expect("valid");
                r.register(Box::new(h.clone())).expect("registered once");
                h
            },
            transcode_frames_dropped: counter(
                &r,
                "tidecast_transcode_frames_dropped_total",
                "Frames ffmpeg reported dropped while transcoding",
            ),
            transcode_ffmpeg_missing: {
                let g = IntGauge::new(
                    "tidecast_transcode_ffmpeg_missing",
                    "1 when no ffmpeg was found and every channel runs passthrough only",
                )
                .expect("valid");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            transcode_refused: counter_vec(
                &r,
                "tidecast_transcode_refused_total",
                "Live sessions served passthrough although their ladder is on, by reason",
                &["reason"],
            ),
            archive_recordings_active: {
                let g =
                    IntGauge::new("tidecast_archive_recordings_active", "Live sessions being recorded now")
                        .expect("valid");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            archive_bytes: counter_vec(
                &r,
                "tidecast_archive_bytes_total",
                "Media bytes the archive wrote, by storage backend",
                &["backend"],
            ),
            archive_write_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "tidecast_archive_write_seconds",
                        "Time one batch of archive writes took (a part, or a segment end with its flushes)",
                    )
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
                )
                .expect("valid");
                r.register(Box::new(h.clone())).expect("registered once");
                h
            },
            archive_gaps: counter(
                &r,
                "tidecast_archive_gaps_total",
                "Stretches a recording could not record (storage errors, falling behind the live window)",
            ),
            archive_recoveries: counter(
                &r,
                "tidecast_archive_recoveries_total",
                "Unfinished recordings (left by a crash) finished at start",
            ),
            archive_moves: counter_vec(
                &r,
                "tidecast_archive_moves_total",
                "Finished recordings moved to the object store, by result (error: retried later)",
                &["result"],
            ),
            archive_retention_deletions: counter(
                &r,
                "tidecast_archive_retention_deletions_total",
                "Recordings deleted by retention (older than keep_days, or past keep_bytes)",
            ),
            transcode_misaligned_segments: counter(
                &r,
                "tidecast_transcode_misaligned_segments_total",
                "Source segments a transcoded rendition had no aligned key frame for",
            ),
            frames_unwritable: counter_vec(
                &r,
                "tidecast_egress_frames_unwritable_total",
                "Frames an output could not serialize and skipped",
                &["protocol"],
            ),
            first_frame_seconds,
            http_requests: counter_vec(
                &r,
                "tidecast_http_requests_total",
                "HTTP requests",
                &["route", "status"],
            ),
            http_duration_seconds,
            shared_state_fallbacks: counter(
                &r,
                "tidecast_shared_state_fallbacks_total",
                "Shared-state operations served in-process because Redis did not answer",
            ),
            watch_updates: counter(&r, "tidecast_api_watch_updates_total", "Watch-progress updates accepted"),
            watch_rows_written: counter(
                &r,
                "tidecast_api_watch_rows_written_total",
                "Watch-history rows written by batch flushes",
            ),
            watch_flush_failures: counter(
                &r,
                "tidecast_api_watch_flush_failures_total",
                "Watch-history flushes that failed and will be retried",
            ),
            watch_pending: {
                let g = IntGauge::new("tidecast_api_watch_pending", "Watch-progress updates not yet written")
                    .expect("valid");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            registry: r,
        }
    }

    /// Create the known label combinations at zero, so `/metrics` lists them from the start
    /// and Prometheus `increase()` sees the first event.
    fn touch_known_series(&self) {
        self.viewers.with_label_values(&["hls"]);
        self.egress_bytes.with_label_values(&["hls"]);
        self.viewer_handbacks.with_label_values(&["rtmp"]);
        for d in ["in", "out"] {
            self.srt_retransmitted.with_label_values(&[d]);
            self.srt_lost.with_label_values(&[d]);
            self.srt_dropped.with_label_values(&[d]);
        }
        for k in ["whip", "whep"] {
            self.webrtc_sessions.with_label_values(&[k]);
        }
        for d in ["sent", "received"] {
            self.webrtc_nacks.with_label_values(&[d]);
        }
        for p in ["rtmp", "rtmps", "srt", "rtsp", "webrtc"] {
            self.ingest_sessions.with_label_values(&[p]);
            self.ingest_bytes.with_label_values(&[p]);
            self.viewers.with_label_values(&[p]);
            self.egress_bytes.with_label_values(&[p]);
            self.auth_failures.with_label_values(&[p]);
            for reason in [REJECT_MAX_CONNECTIONS, REJECT_PER_ADDRESS] {
                self.connections_rejected.with_label_values(&[p, reason]);
            }
            self.protocol_errors.with_label_values(&[p]);
            for reason in ["slow", "stalled", "shutdown"] {
                self.viewers_cut.with_label_values(&[p, reason]);
            }
        }
        for p in ["rtmp", "rtmps", "srt"] {
            self.push_bytes.with_label_values(&[p]);
            self.push_retries.with_label_values(&[p]);
            for state in ["connecting", "live", "retrying", "error"] {
                self.push_destinations.with_label_values(&[p, state]);
            }
        }
        self.pull_reconnects.with_label_values(&["rtsp"]);
        for state in ["waiting", "connecting", "live", "retrying"] {
            self.pull_sources.with_label_values(&["rtsp", state]);
        }
        for reason in ["exit", "stall", "source"] {
            self.transcode_restarts.with_label_values(&[reason]);
        }
        self.transcode_refused.with_label_values(&["cap"]);
        for output in ["hls_packager", "hls_viewer_sweep", "restream", "transcode"] {
            self.outputs_running.with_label_values(&[output]);
            self.output_restarts.with_label_values(&[output]);
        }
        self.connections_rejected.with_label_values(&["http", REJECT_PER_ADDRESS]);
        self.connections_rejected.with_label_values(&["https", REJECT_PER_ADDRESS]);
        for p in ["rtmp", "rtmps"] {
            self.frames_unwritable.with_label_values(&[p]);
        }
        for result in ["ok", "error"] {
            self.tls_reloads.with_label_values(&[result]);
        }
        for consumer in ["rtmp_play", "hls"] {
            self.frames_dropped.with_label_values(&[consumer]);
        }
        for kind in ["playlist", "part"] {
            self.hls_block_release_seconds.with_label_values(&[kind]);
        }
    }

    /// The text exposition of every collector.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// Holds a gauge up by one while alive: every exit path of a session is counted down.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(g: IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The process-wide metrics. A static because every actor and connection counts into it, and
/// Prometheus collectors are internally atomic.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics::new();
    m.touch_known_series();
    m
});

/// Shorthand used at call sites.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_prefix() {
        let m = metrics();
        m.ingest_bytes.with_label_values(&["rtmp"]).inc_by(10);
        m.viewers.with_label_values(&["rtmp"]).set(0);
        let text = m.render();
        assert!(text.contains("tidecast_ingest_bytes_total{protocol=\"rtmp\"}"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(name.starts_with("tidecast_") || name.starts_with("process_"), "{name}");
        }
    }
}
