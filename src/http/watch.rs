//! The watch pages. `/watch/<channel>` plays the channel's LL-HLS stream with hls.js in
//! low-latency mode, and offers its DVR (`/live/<channel>/dvr.m3u8`, the recording so far): a
//! "rewind" button switches to it, with a seek bar reaching back over the DVR window, and "back
//! to live" returns to LL-HLS. `/watch/v/<video_id>` plays a video (`/vod/<id>/index.m3u8`).
//! hls.js is loaded from `http.hlsjs_url` (a CDN by default, a local copy under `/static/` for
//! offline deployments and the tests). The page's query (`?token=...`) rides on every playlist
//! URL.

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::store::validate_channel_name;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/watch/v/{video}", web::get().to(video_page))
        .route("/watch/{channel}", web::get().to(watch_page));
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
    let live = format!("/live/{name}/index.m3u8");
    let dvr = format!("/live/{name}/dvr.m3u8");
    page(&name, &escape(&state.hlsjs_url), &live, Some(&dvr))
}

async fn video_page(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let Ok(id) = path.into_inner().parse::<i64>() else {
        return super::error::error_response(crate::ErrorKind::NotFound, "no such video");
    };
    page(&format!("video {id}"), &escape(&state.hlsjs_url), &format!("/vod/{id}/index.m3u8"), None)
}

/// The player page: `src` (LL-HLS when `dvr` is given: a live channel; else a video).
fn page(title: &str, hlsjs: &str, src: &str, dvr: Option<&str>) -> HttpResponse {
    let live = dvr.is_some();
    let dvr = dvr.unwrap_or_default();
    let buttons = if live {
        r#"<button id="rewind" type="button">&#x23EA; Rewind</button> <button id="golive" type="button" hidden>&#x25CF; Back to live</button>"#
    } else {
        ""
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · tidecast</title>
<style>
  body {{ margin: 0; background: #111; color: #eee; font: 15px system-ui, sans-serif; }}
  main {{ max-width: 1280px; margin: 0 auto; padding: 16px; }}
  video {{ width: 100%; aspect-ratio: 16 / 9; background: #000; }}
  #status {{ opacity: .7; margin-top: 8px; }}
  button {{ background: #333; color: #eee; border: 1px solid #555; border-radius: 4px; padding: 4px 10px; }}
</style>
</head>
<body>
<main>
  <h1>{title}</h1>
  <video id="video" controls autoplay muted playsinline></video>
  <div id="status">connecting…</div>
  <div>{buttons}</div>
</main>
<script src="{hlsjs}"></script>
<script>
(function () {{
  var LIVE = {live};
  var src = "{src}" + location.search;
  var dvrSrc = "{dvr}" + location.search;
  var video = document.getElementById("video");
  var status = document.getElementById("status");
  var rewind = document.getElementById("rewind"), golive = document.getElementById("golive");
  function show(t) {{ status.textContent = t; }}
  var hls = null, mode = LIVE ? "live" : "vod";
  window.player = {{ mode: function () {{ return mode; }} }};
  // Play `url`: "live" is LL-HLS at the edge; "dvr" the recording so far (an EVENT playlist,
  // seekable back over the DVR window) from `back` seconds before its end; "vod" a video.
  function play(url, next, back) {{
    if (hls) {{ hls.destroy(); hls = null; }}
    mode = next;
    if (rewind) {{ rewind.hidden = next !== "live"; golive.hidden = next !== "dvr"; }}
    if (!(window.Hls && Hls.isSupported())) {{
      if (video.canPlayType("application/vnd.apple.mpegurl")) video.src = url; // Safari: native HLS
      else show("this browser cannot play HLS");
      return;
    }}
    var config = {{ lowLatencyMode: next === "live", backBufferLength: next === "live" ? 30 : 90 }};
    // DVR starts `back` seconds behind its edge: hls.js's own live start position. (Setting
    // currentTime before anything is buffered only moves the element's default start, which
    // hls.js replaces with its start three target durations from the edge.)
    if (back) config.liveSyncDuration = back;
    hls = new Hls(config);
    window.hls = hls;
    hls.on(Hls.Events.ERROR, function (_, d) {{
      if (!d.fatal) return;
      if (next === "dvr") {{ show("DVR unavailable (" + d.details + "); back to live"); play(src, "live"); }}
      else show("error: " + d.type + " " + d.details);
    }});
    hls.on(Hls.Events.FRAG_CHANGED, function () {{
      if (mode === "live" && hls.latency) show("live · latency " + hls.latency.toFixed(2) + " s");
      if (mode === "dvr") {{
        var s = video.seekable, edge = s.length ? s.end(s.length - 1) : 0;
        show("DVR · " + Math.max(0, edge - video.currentTime).toFixed(0) + " s behind live");
      }}
      if (mode === "vod") show("video · " + video.currentTime.toFixed(0) + " s");
    }});
    hls.loadSource(url);
    hls.attachMedia(video);
  }}
  if (LIVE) {{
    // Catching up with the live edge. A player starts (and, after a stall, resumes) further
    // behind than the target latency (PART-HOLD-BACK, raised by hls.js after each stall).
    // hls.js's own catch-up (maxLiveSyncPlaybackRate) only runs while more than 1 s is
    // buffered, so with 200 ms parts it leaves viewers ~1 s behind; a seek would show as a
    // rebuffer. Instead play slightly faster while behind target and at least 0.4 s is
    // buffered, and at normal speed otherwise.
    video.addEventListener("timeupdate", function () {{
      if (mode !== "live" || !hls) return;
      var latency = hls.latency, target = hls.targetLatency, b = video.buffered;
      if (!latency || !target || !b.length) return;
      var ahead = b.end(b.length - 1) - video.currentTime;
      var behind = latency - target;
      var rate = behind > 0.1 && ahead > 0.4 ? (behind > 1 ? 1.25 : 1.1) : 1;
      if (video.playbackRate !== rate) video.playbackRate = rate;
    }});
    rewind.addEventListener("click", function () {{ video.playbackRate = 1; play(dvrSrc, "dvr", 30); }});
    golive.addEventListener("click", function () {{ play(src, "live"); }});
  }}
  play(src, mode);
}})();
</script>
</body>
</html>
"#
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html)
}
