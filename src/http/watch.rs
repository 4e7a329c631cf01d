//! The watch pages. `/watch/<channel>` plays the channel's LL-HLS stream with hls.js in
//! low-latency mode, and offers its DVR (`/live/<channel>/dvr.m3u8`, the recording so far): a
//! "rewind" button switches to it, with a seek bar reaching back over the DVR window, and "back
//! to live" returns to LL-HLS. `/watch/v/<video_id>` plays a video (`/vod/<id>/index.m3u8`).
//! hls.js is loaded from `http.hlsjs_url` (a CDN by default, a local copy under `/static/` for
//! offline deployments and the tests). The page's query (`?token=...`) rides on every playlist
//! URL. A live channel also offers WebRTC (WHEP, `/whep/<channel>`) as its lowest-latency mode:
//! the "Real-time" toggle switches to it and back; when WebRTC fails (refused, no connection,
//! no picture within 5 s) the page says why and returns to LL-HLS. `?webrtc=1` starts in it.

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
    let whep = format!("/whep/{name}");
    page(&name, &escape(&state.hlsjs_url), &live, Some((&dvr, &whep)))
}

async fn video_page(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let Ok(id) = path.into_inner().parse::<i64>() else {
        return super::error::error_response(crate::ErrorKind::NotFound, "no such video");
    };
    page(&format!("video {id}"), &escape(&state.hlsjs_url), &format!("/vod/{id}/index.m3u8"), None)
}

/// The player page: `src` (LL-HLS when `dvr` is given: a live channel; else a video).
fn page(title: &str, hlsjs: &str, src: &str, live_urls: Option<(&str, &str)>) -> HttpResponse {
    let live = live_urls.is_some();
    let (dvr, whep) = live_urls.unwrap_or_default();
    let buttons = if live {
        r#"<button id="rewind" type="button">&#x23EA; Rewind</button> <button id="golive" type="button" hidden>&#x25CF; Back to live</button> <button id="realtime" type="button">&#x26A1; Real-time (WebRTC)</button>"#
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
  var realtime = document.getElementById("realtime");
  var whepSrc = "{whep}" + location.search;
  var pc = null, whepResource = null, fellBack = "";
  function show(t) {{ status.textContent = t; }}
  var hls = null, mode = LIVE ? "live" : "vod";
  window.player = {{ mode: function () {{ return mode; }} }};
  // Play `url`: "live" is LL-HLS at the edge; "dvr" the recording so far (an EVENT playlist,
  // seekable back over the DVR window) from `back` seconds before its end; "vod" a video.
  function play(url, next, back) {{
    if (hls) {{ hls.destroy(); hls = null; }}
    stopWebrtc();
    mode = next;
    if (rewind) {{ rewind.hidden = next !== "live"; golive.hidden = next !== "dvr"; }}
    if (realtime) realtime.textContent = "\u26A1 Real-time (WebRTC)";
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
      if (mode === "live" && hls.latency) show("live · latency " + hls.latency.toFixed(2) + " s" + fellBack);
      if (mode === "dvr") {{
        var s = video.seekable, edge = s.length ? s.end(s.length - 1) : 0;
        show("DVR · " + Math.max(0, edge - video.currentTime).toFixed(0) + " s behind live");
      }}
      if (mode === "vod") show("video · " + video.currentTime.toFixed(0) + " s");
    }});
    hls.loadSource(url);
    hls.attachMedia(video);
  }}
  // WebRTC (WHEP): the lowest latency; any failure falls back to LL-HLS with the reason.
  function stopWebrtc() {{
    if (pc) {{ pc.close(); pc = null; }}
    if (whepResource) {{ fetch(whepResource, {{ method: "DELETE" }}).catch(function () {{}}); whepResource = null; }}
    if (video.srcObject) video.srcObject = null;
  }}
  function fallback(why) {{
    if (mode !== "webrtc") return;
    fellBack = " · WebRTC unavailable (" + why + ")";
    play(src, "live");
    show("WebRTC unavailable (" + why + "); playing LL-HLS");
  }}
  function playWebrtc() {{
    if (hls) {{ hls.destroy(); hls = null; }}
    video.removeAttribute("src");
    mode = "webrtc";
    fellBack = "";
    rewind.hidden = true; golive.hidden = true;
    realtime.textContent = "LL-HLS";
    show("connecting over WebRTC…");
    var mine = pc = new RTCPeerConnection();
    pc.addTransceiver("video", {{ direction: "recvonly" }});
    pc.addTransceiver("audio", {{ direction: "recvonly" }});
    var stream = new MediaStream();
    pc.ontrack = function (e) {{ stream.addTrack(e.track); video.srcObject = stream; }};
    pc.onconnectionstatechange = function () {{
      if (mine === pc && pc.connectionState === "failed") fallback("connection failed");
    }};
    var t0 = performance.now();
    pc.createOffer().then(function (o) {{ return pc.setLocalDescription(o); }}).then(function () {{
      return new Promise(function (done) {{
        if (pc.iceGatheringState === "complete") return done();
        pc.addEventListener("icegatheringstatechange", function () {{ if (pc && pc.iceGatheringState === "complete") done(); }});
        setTimeout(done, 2000);
      }});
    }}).then(function () {{
      return fetch(whepSrc, {{ method: "POST", headers: {{ "Content-Type": "application/sdp" }}, body: pc.localDescription.sdp }});
    }}).then(function (res) {{
      return res.text().then(function (body) {{
        if (res.status !== 201) {{
          var why = "HTTP " + res.status;
          try {{ why = JSON.parse(body).error.message; }} catch (e) {{}}
          throw new Error(why);
        }}
        whepResource = new URL(res.headers.get("Location"), location.href).href;
        var note = res.headers.get("X-Tidecast-Audio");
        return pc.setRemoteDescription({{ type: "answer", sdp: body }}).then(function () {{ return note; }});
      }});
    }}).then(function (note) {{
      video.requestVideoFrameCallback(function () {{
        if (mine !== pc) return;
        show("real-time · first picture in " + Math.round(performance.now() - t0) + " ms" + (note ? " · " + note : ""));
      }});
      setTimeout(function () {{ if (mine === pc && !video.videoWidth) fallback("no picture within 5 s"); }}, 5000);
    }}).catch(function (e) {{ if (mine === pc) fallback(e.message || String(e)); }});
  }}
  if (LIVE) {{
    realtime.addEventListener("click", function () {{ if (mode === "webrtc") play(src, "live"); else playWebrtc(); }});
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
  if (LIVE && /[?&]webrtc=1/.test(location.search)) playWebrtc(); else play(src, mode);
}})();
</script>
</body>
</html>
"#
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html)
}
