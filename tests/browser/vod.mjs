// Real-player probe for tidecast's recorded videos: opens a /watch/v/<id> page in Debian's headless
// Chromium (driven by playwright-core, never a browser download of its own), waits until the page's
// hls.js player plays, then lets it play to the end (the video element's `ended`) or for SECONDS,
// and prints ONE JSON line on stdout with what the viewer got: how far currentTime went against the
// duration, whether `ended` fired, stalls, hls.js errors, discontinuities crossed, decoded and
// dropped video frames (getVideoPlaybackQuality), decoded audio and video bytes (Chromium's
// webkit*DecodedByteCount), and every request to the server with its status. Diagnostics go to
// stderr.
//
// Usage: node vod.mjs URL [SECONDS] [--screenshot FILE]
//   URL       the watch page, e.g. http://127.0.0.1:8080/watch/v/1
//   SECONDS   stop after this many seconds of playback; omitted or 0: play to the end
//   --screenshot  save a PNG of the page at the end
// Environment: CHROMIUM (default /usr/bin/chromium), PLAY_START_TIMEOUT_MS (default 30000),
// STALL_TIMEOUT_MS (default 15000: currentTime not moving that long ends the run).
//
// Exit status: 0 when playback started and the run finished (to the end, or SECONDS), 1 when it
// never started, stalled for good, hls.js reported a fatal error, or the browser failed (the JSON
// line then has "error"). Non-fatal hls.js errors are reported, not judged: the caller decides.
//
// Hook: the watch page sets `window.hls` (the player) from inline script; an init script turns it
// into an accessor so the listeners below are attached the moment the player is created, before
// it loads anything. hls.js event names are its string constants ('hlsError', ...), so the hook
// needs nothing from the page's Hls.

import { collectConsole, runInChromium } from './harness.mjs';

const SAMPLE_MS = 500;

function usage(msg) {
  process.stderr.write(`vod.mjs: ${msg}\nusage: node vod.mjs URL [SECONDS] [--screenshot FILE]\n`);
  process.exit(2);
}

const argv = process.argv.slice(2);
const positional = [];
let screenshot = null;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--screenshot') screenshot = argv[++i];
  else positional.push(argv[i]);
}
if (positional.length < 1 || positional.length > 2) usage('need URL and optionally SECONDS');
const url = new URL(positional[0]);
const seconds = positional.length === 2 ? Number(positional[1]) : 0;
if (!(seconds >= 0)) usage(`SECONDS must be a number >= 0, got ${positional[1]}`);
const startTimeoutMs = Number(process.env.PLAY_START_TIMEOUT_MS || 30000);
const stallTimeoutMs = Number(process.env.STALL_TIMEOUT_MS || 15000);
const log = (...a) => process.stderr.write(`vod.mjs: ${a.join(' ')}\n`);

// Runs in the page before any page script. Everything it learns lives in window.__tc.
function initScript() {
  const T = {
    errors: [], // hls.js ERROR events (capped) and video element errors
    errorCount: 0,
    fatalCount: 0,
    waiting: 0,
    playingAt: null,
    ended: false,
    hlsVersion: null,
    fragsLoaded: 0,
    discontinuitiesCrossed: 0, // FRAG_CHANGED to a fragment of another discontinuity sequence
    lastCc: null,
    levelDetails: null,
  };
  window.__tc = T;
  const pushError = (e) => {
    T.errorCount++;
    if (e.fatal) T.fatalCount++;
    if (T.errors.length < 50) T.errors.push(e);
  };
  let player = null;
  Object.defineProperty(window, 'hls', {
    configurable: true,
    get() {
      return player;
    },
    set(h) {
      player = h;
      if (!h) return;
      T.hlsVersion = (window.Hls && window.Hls.version) || null;
      h.on('hlsError', (_, d) => {
        pushError({
          source: 'hls.js',
          type: d.type,
          details: d.details,
          fatal: !!d.fatal,
          url: (d.frag && d.frag.url) || (d.context && d.context.url) || d.url || null,
          code: (d.response && d.response.code) || null,
          reason: d.reason || (d.error && String(d.error.message || d.error)) || null,
        });
      });
      h.on('hlsFragLoaded', () => {
        T.fragsLoaded++;
      });
      h.on('hlsFragChanged', (_, d) => {
        const cc = d.frag ? d.frag.cc : null;
        if (T.lastCc !== null && cc !== null && cc !== T.lastCc) T.discontinuitiesCrossed++;
        T.lastCc = cc;
      });
      h.on('hlsLevelLoaded', (_, d) => {
        const x = d.details;
        T.levelDetails = { type: x.type, live: x.live, totalduration: x.totalduration, fragments: x.fragments.length };
      });
    },
  });
  document.addEventListener('DOMContentLoaded', () => {
    const v = document.getElementById('video');
    if (!v) return;
    v.addEventListener('playing', () => {
      if (T.playingAt === null) T.playingAt = performance.now();
    });
    v.addEventListener('waiting', () => T.waiting++);
    v.addEventListener('ended', () => {
      T.ended = true;
    });
    v.addEventListener('error', () =>
      pushError({ source: 'video', fatal: true, code: v.error && v.error.code, reason: v.error && v.error.message }),
    );
  });
}

// Runs in the page every SAMPLE_MS.
function sampleInPage() {
  const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const b = [];
  for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]);
  return {
    currentTime: v.currentTime,
    duration: v.duration,
    paused: v.paused,
    readyState: v.readyState,
    buffered: b,
    totalFrames: q ? q.totalVideoFrames : null,
    dropped: q ? q.droppedVideoFrames : null,
    audioBytes: v.webkitAudioDecodedByteCount ?? null,
    videoBytes: v.webkitVideoDecodedByteCount ?? null,
    ended: window.__tc.ended,
    fatal: window.__tc.fatalCount,
    mode: window.player && window.player.mode ? window.player.mode() : null,
  };
}

const r3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const result = { url: url.href, seconds: seconds || 'to end' };
const chromiumOptions = {
  timeoutMs: (seconds || 600) * 1000 + startTimeoutMs + 60000,
  viewport: { width: 800, height: 600 },
};
await runInChromium(result, chromiumOptions, async (page) => {
  let exitCode = 0;
  const consoleLines = collectConsole(page);
  const requests = [];
  const failed = [];
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.origin === url.origin && requests.length < 1000) requests.push({ status: r.status(), path: u.pathname });
  });
  page.on('requestfailed', (q) => failed.length < 50 && failed.push(`${q.url()}: ${q.failure()?.errorText}`));
  await page.addInitScript(initScript);

  const resp = await page.goto(url.href, { waitUntil: 'domcontentloaded', timeout: 15000 });
  result.page_status = resp ? resp.status() : null;

  // Wait for the first `playing`.
  const t0 = Date.now();
  let started = false;
  while (Date.now() - t0 < startTimeoutMs) {
    const s = await page.evaluate(() => ({ at: window.__tc.playingAt, fatal: window.__tc.fatalCount }));
    if (s.at !== null) {
      started = true;
      break;
    }
    if (s.fatal > 0) break;
    await page.waitForTimeout(200);
  }
  result.startup_ms = started ? Date.now() - t0 : null;
  result.has_player = await page.evaluate(() => !!window.hls);

  const samples = [];
  let lastMove = Date.now();
  let lastTime = -1;
  let stalledOut = false;
  if (started) {
    const playStart = Date.now();
    for (;;) {
      const s = await page.evaluate(sampleInPage);
      samples.push(s);
      if (s.currentTime > lastTime + 0.01) {
        lastTime = s.currentTime;
        lastMove = Date.now();
      }
      if (s.ended || s.fatal > 0) break;
      if (seconds > 0 && Date.now() - playStart >= seconds * 1000) break;
      if (Date.now() - lastMove > stallTimeoutMs) {
        stalledOut = true;
        break;
      }
      await page.waitForTimeout(SAMPLE_MS);
    }
    result.played_wall_s = r3((Date.now() - playStart) / 1000);
  }
  const tc = await page.evaluate(() => window.__tc);
  const last = samples.length ? samples[samples.length - 1] : await page.evaluate(sampleInPage);
  if (screenshot) await page.screenshot({ path: screenshot });

  Object.assign(result, {
    hls_version: tc.hlsVersion,
    mode: last.mode,
    started,
    ended: tc.ended,
    stalled_out: stalledOut,
    current_time_reached: r3(Math.max(last.currentTime, ...samples.map((s) => s.currentTime))),
    duration: r3(last.duration),
    level: tc.levelDetails,
    buffered: last.buffered.map((r) => r.map(r3)),
    waiting_events: tc.waiting,
    errors_total: tc.errorCount,
    errors_fatal: tc.fatalCount,
    errors: tc.errors,
    discontinuities_crossed: tc.discontinuitiesCrossed,
    frags_loaded: tc.fragsLoaded,
    video_frames_decoded: last.totalFrames,
    video_frames_dropped: last.dropped,
    audio_bytes_decoded: last.audioBytes,
    video_bytes_decoded: last.videoBytes,
    requests: requests.map((r) => `${r.status} ${r.path}`),
    requests_not_ok: requests.filter((r) => r.status >= 400).length,
    failed_requests: failed,
    console: consoleLines,
  });
  if (!result.has_player) {
    result.error = 'the page created no hls.js player (window.hls unset)';
    exitCode = 1;
  } else if (!started) {
    result.error = tc.fatalCount ? 'fatal error before playback' : `not playing after ${startTimeoutMs} ms`;
    exitCode = 1;
  } else if (tc.fatalCount) {
    result.error = 'fatal hls.js or video error';
    exitCode = 1;
  } else if (stalledOut) {
    result.error = `currentTime stuck for ${stallTimeoutMs} ms at ${r3(lastTime)}`;
    exitCode = 1;
  }
  log(`done: ${result.error || 'ok'}`);
  return exitCode;
});
