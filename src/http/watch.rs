//! The watch page: `/watch/<channel>` plays the channel's LL-HLS stream with hls.js in
//! low-latency mode. hls.js is loaded from `http.hlsjs_url` (a CDN by default, a local copy
//! under `/static/` for offline deployments and the tests).

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::store::validate_channel_name;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/watch/{channel}", web::get().to(watch_page));
}

/// Escape text for an HTML attribute or element (the channel name is validated already; the
/// hls.js URL comes from the operator's config).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn watch_page(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let channel = path.into_inner();
    if validate_channel_name(&channel).is_err() {
        return super::error::error_response(crate::ErrorKind::NotFound, "no such channel");
    }
    let name = escape(&channel);
    let hlsjs = escape(&state.hlsjs_url);
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} · tidecast</title>
<style>
  body {{ margin: 0; background: #111; color: #eee; font: 15px system-ui, sans-serif; }}
  main {{ max-width: 1280px; margin: 0 auto; padding: 16px; }}
  video {{ width: 100%; aspect-ratio: 16 / 9; background: #000; }}
  #status {{ opacity: .7; margin-top: 8px; }}
</style>
</head>
<body>
<main>
  <h1>{name}</h1>
  <video id="video" controls autoplay muted playsinline></video>
  <div id="status">connecting…</div>
</main>
<script src="{hlsjs}"></script>
<script>
(function () {{
  var src = "/live/" + encodeURIComponent("{name}") + "/index.m3u8" + location.search;
  var video = document.getElementById("video");
  var status = document.getElementById("status");
  function show(t) {{ status.textContent = t; }}
  if (window.Hls && Hls.isSupported()) {{
    // Low-latency mode: blocking playlist reloads, parts and preload hints (hls.js >= 1.0).
    var hls = new Hls({{ lowLatencyMode: true, backBufferLength: 30 }});
    window.hls = hls;
    // Catching up with the live edge. A player starts (and, after a stall, resumes) further
    // behind than the target latency (PART-HOLD-BACK, raised by hls.js after each stall).
    // hls.js's own catch-up (maxLiveSyncPlaybackRate) only runs while more than 1 s is
    // buffered, so with 200 ms parts it leaves viewers ~1 s behind; a seek would show as a
    // rebuffer. Instead play slightly faster while behind target and at least 0.4 s is
    // buffered, and at normal speed otherwise.
    video.addEventListener("timeupdate", function () {{
      var latency = hls.latency, target = hls.targetLatency, b = video.buffered;
      if (!latency || !target || !b.length) return;
      var ahead = b.end(b.length - 1) - video.currentTime;
      var behind = latency - target;
      var rate = behind > 0.1 && ahead > 0.4 ? (behind > 1 ? 1.25 : 1.1) : 1;
      if (video.playbackRate !== rate) video.playbackRate = rate;
    }});
    hls.on(Hls.Events.ERROR, function (_, d) {{ if (d.fatal) show("error: " + d.type + " " + d.details); }});
    hls.on(Hls.Events.FRAG_CHANGED, function () {{
      if (hls.latency) show("live · latency " + hls.latency.toFixed(2) + " s");
    }});
    hls.loadSource(src);
    hls.attachMedia(video);
  }} else if (video.canPlayType("application/vnd.apple.mpegurl")) {{
    video.src = src; // Safari plays LL-HLS natively.
  }} else {{
    show("this browser cannot play HLS");
  }}
}})();
</script>
</body>
</html>
"#
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html)
}
