//! Turns per-viewer reports and /proc samples into the result: a table for people (stderr) and
//! one JSON line for scripts (stdout). Percentiles are nearest-rank over the sorted values.

use crate::fields::Value;
use crate::proc::{cpu_percent, Sample};
use crate::publisher::PublishReport;
use crate::viewer::ViewerReport;

pub struct ServerSamples {
    /// Publisher alone, before any viewer.
    pub baseline: (Sample, Sample),
    /// The measurement window.
    pub window: (Sample, Sample),
    /// RSS sampled once a second inside the window.
    pub rss_kib: Vec<u64>,
}

pub struct Inputs<'a> {
    pub label: &'a str,
    pub n: usize,
    pub window_secs: f64,
    pub keep_up_ms: u32,
    pub reports: &'a [ViewerReport],
    pub pub_span_ms: Option<u32>,
    pub publisher: Option<&'a Result<PublishReport, String>>,
    pub server: Option<ServerSamples>,
    pub client_cpu: (Sample, Sample),
}

pub struct Summary {
    fields: Vec<(&'static str, Value)>,
}

fn pct<T: Copy + Ord>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Summary {
    pub fn build(i: Inputs<'_>) -> Self {
        let mut f: Vec<(&'static str, Value)> = Vec::new();
        let num = |v: Option<f64>| v.map(Value::Num).unwrap_or(Value::Null);
        f.push(("label", Value::Str(i.label.to_string())));
        f.push(("viewers", Value::Int(i.n as u64)));
        f.push(("window_s", Value::Num(i.window_secs)));

        let setup_failed = i.reports.iter().filter(|r| r.setup_error.is_some()).count();
        let disconnected = i.reports.iter().filter(|r| r.disconnected.is_some()).count();
        let target_span = i.pub_span_ms.unwrap_or((i.window_secs * 1000.0) as u32);
        let span = |r: &ViewerReport| r.window_ts.map(|(lo, hi)| hi - lo);
        let kept_up = i
            .reports
            .iter()
            .filter(|r| {
                r.setup_error.is_none()
                    && r.disconnected.is_none()
                    && span(r).is_some_and(|s| s.abs_diff(target_span) <= i.keep_up_ms)
            })
            .count();
        let gapped = i.reports.iter().filter(|r| r.max_gap_ms > 500).count();
        f.push(("kept_up", Value::Int(kept_up as u64)));
        f.push(("setup_failed", Value::Int(setup_failed as u64)));
        f.push(("disconnected", Value::Int(disconnected as u64)));
        f.push(("viewers_with_gap_over_500ms", Value::Int(gapped as u64)));
        f.push(("publisher_span_ms", i.pub_span_ms.map(|v| Value::Int(v as u64)).unwrap_or(Value::Null)));
        let mut spans: Vec<u32> = i.reports.iter().filter_map(span).collect();
        spans.sort_unstable();
        f.push(("viewer_span_min_ms", pct(&spans, 0.0).map(|v| Value::Int(v as u64)).unwrap_or(Value::Null)));

        let mut ff: Vec<u128> =
            i.reports.iter().filter_map(|r| r.first_video.map(|d| d.as_micros())).collect();
        ff.sort_unstable();
        let ms = |v: Option<u128>| num(v.map(|us| us as f64 / 1000.0));
        f.push(("first_frame_p50_ms", ms(pct(&ff, 50.0))));
        f.push(("first_frame_p95_ms", ms(pct(&ff, 95.0))));
        f.push(("first_frame_max_ms", ms(pct(&ff, 100.0))));

        let mut lat: Vec<u32> = i.reports.iter().flat_map(|r| r.latencies_us.iter().copied()).collect();
        lat.sort_unstable();
        let lms = |v: Option<u32>| num(v.map(|us| us as f64 / 1000.0));
        f.push(("latency_p50_ms", lms(pct(&lat, 50.0))));
        f.push(("latency_p95_ms", lms(pct(&lat, 95.0))));
        f.push(("latency_p99_ms", lms(pct(&lat, 99.0))));
        f.push(("latency_max_ms", lms(pct(&lat, 100.0))));
        f.push(("latency_samples", Value::Int(lat.len() as u64)));
        f.push(("latency_unmatched", Value::Int(i.reports.iter().map(|r| r.unmatched).sum())));

        let ok: Vec<&ViewerReport> = i.reports.iter().filter(|r| r.setup_error.is_none()).collect();
        let bytes: u64 = ok.iter().map(|r| r.bytes).sum();
        let msgs: u64 = ok.iter().map(|r| r.messages).sum();
        let nok = ok.len().max(1) as f64;
        f.push(("bytes_total", Value::Int(bytes)));
        f.push(("bytes_per_viewer_mean", Value::Num(bytes as f64 / nok)));
        f.push(("bytes_per_viewer_min", Value::Int(ok.iter().map(|r| r.bytes).min().unwrap_or(0))));
        f.push(("messages_per_viewer_mean", Value::Num(msgs as f64 / nok)));

        if let Some(s) = &i.server {
            let cpu = cpu_percent(&s.window.0, &s.window.1);
            let base = cpu_percent(&s.baseline.0, &s.baseline.1);
            let n = i.n.max(1) as f64;
            let rss_base = s.baseline.1.rss_kib;
            let rss_mean = if s.rss_kib.is_empty() {
                s.window.1.rss_kib as f64
            } else {
                s.rss_kib.iter().sum::<u64>() as f64 / s.rss_kib.len() as f64
            };
            f.push(("server_cpu_pct", Value::Num(cpu)));
            f.push(("server_cpu_pct_per_viewer", Value::Num(cpu / n)));
            f.push(("server_cpu_pct_publish_only", Value::Num(base)));
            f.push(("server_cpu_pct_per_viewer_marginal", Value::Num((cpu - base) / n)));
            f.push(("server_rss_before_kib", Value::Int(rss_base)));
            f.push(("server_rss_window_mean_kib", Value::Num(rss_mean)));
            f.push(("server_rss_per_viewer_kib", Value::Num((rss_mean - rss_base as f64) / n)));
        }
        f.push(("client_cpu_pct", Value::Num(cpu_percent(&i.client_cpu.0, &i.client_cpu.1))));
        match i.publisher {
            Some(Ok(p)) => {
                f.push(("publisher_tags", Value::Int(p.tags_sent)));
                f.push(("publisher_late_sends", Value::Int(p.late_sends)));
                f.push(("publisher_error", Value::Null));
            }
            Some(Err(e)) => f.push(("publisher_error", Value::Str(e.clone()))),
            None => {}
        }
        // First few distinct reasons, so a failure says where.
        let mut reasons: Vec<String> = Vec::new();
        for r in i.reports {
            if let Some(e) = r.setup_error.as_ref().or(r.disconnected.as_ref()) {
                if !reasons.contains(e) && reasons.len() < 3 {
                    reasons.push(e.clone());
                }
            }
        }
        f.push(("errors", Value::Str(reasons.join(" | "))));
        Self { fields: f }
    }

    pub fn print(&self) {
        crate::fields::print(&self.fields);
    }
}
