// Real-player probe for tidecast's DASH output: plays an MPD with dash.js (from this folder's
// node_modules) in Debian's headless Chromium (driven by playwright-core, never a browser download
// of its own), to the end or for SECONDS, and prints ONE JSON line on stdout with what the viewer
// got: how far currentTime went against the duration, whether `ended` fired, stalls, dash.js
// errors, period switches, decoded and dropped video frames (getVideoPlaybackQuality), decoded
// audio and video bytes (Chromium's webkit*DecodedByteCount: audio decoded from a muxed
// representation shows here), and every media request with its status. Diagnostics go to stderr.
//
// Usage: node dash.mjs MPD_URL [SECONDS] [--dash-settings JSON] [--screenshot FILE]
//   MPD_URL   e.g. http://127.0.0.1:8000/manifest.mpd?token=abc
//   SECONDS   stop after this many seconds of playback; omitted or 0: play to the end
//   --dash-settings  dash.js settings (player.updateSettings) merged over the probe's own
//             (experiments only, e.g. '{"streaming":{"capabilities":{"useMediaCapabilitiesApi":false}}}')
//   --screenshot  save a PNG of the page at the end
// Environment: CHROMIUM (default /usr/bin/chromium), PLAY_START_TIMEOUT_MS (default 30000),
// STALL_TIMEOUT_MS (default 15000: currentTime not moving that long ends the run).
//
// Exit status: 0 when playback started and the run finished (to the end, or SECONDS), 1 when it
// never started, stalled for good, dash.js reported an error, or the browser failed (the JSON
// line then has "error").
//
// The player page is served by request interception at a fixed path on the MPD's own origin
// (`/__tidecast_dash__/`), so the MPD and segments are same-origin requests: no CORS set-up on
// the server under test, and nothing on disk besides dash.js itself.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collectConsole, runInChromium } from './harness.mjs';

const SAMPLE_MS = 500;

function usage(msg) {
  process.stderr.write(
    `dash.mjs: ${msg}\nusage: node dash.mjs MPD_URL [SECONDS] [--dash-settings JSON] [--screenshot FILE]\n`,
  );
  process.exit(2);
}

const argv = process.argv.slice(2);
const positional = [];
let screenshot = null;
let dashSettings = null;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--screenshot') screenshot = argv[++i];
  else if (argv[i] === '--dash-settings') {
    try {
      dashSettings = JSON.parse(argv[++i]);
    } catch (e) {
      usage(`--dash-settings is not JSON: ${e.message}`);
    }
  } else positional.push(argv[i]);
}
if (positional.length < 1 || positional.length > 2) usage('need MPD_URL and optionally SECONDS');
const mpdUrl = new URL(positional[0]);
const seconds = positional.length === 2 ? Number(positional[1]) : 0;
if (!(seconds >= 0)) usage(`SECONDS must be a number >= 0, got ${positional[1]}`);
const startTimeoutMs = Number(process.env.PLAY_START_TIMEOUT_MS || 30000);
const stallTimeoutMs = Number(process.env.STALL_TIMEOUT_MS || 15000);
const log = (...a) => process.stderr.write(`dash.mjs: ${a.join(' ')}\n`);

// dash.js from this folder's node_modules (its package `exports` hide package.json from
// `require.resolve`): the UMD bundle (sets window.dashjs) and the installed version.
const dashDir = join(dirname(fileURLToPath(import.meta.url)), 'node_modules', 'dashjs');
const dashVersion = JSON.parse(readFileSync(join(dashDir, 'package.json'), 'utf8')).version;
const dashBundle = readFileSync(join(dashDir, 'dist/modern/umd/dash.all.min.js'));

const playerPath = '/__tidecast_dash__/';
const pageHtml = `<!doctype html>
<html><head><meta charset="utf-8"><title>tidecast DASH probe</title></head>
<body>
<video id="video" muted autoplay playsinline width="640" height="360"></video>
<script src="${playerPath}dash.all.min.js"></script>
<script>
  const T = (window.__tc = {
    errors: [], waiting: 0, playingAt: null, ended: false, periodSwitches: [], streamInits: 0,
    fragments: [], qualityChanges: 0,
  });
  const v = document.getElementById('video');
  v.addEventListener('playing', () => { if (T.playingAt === null) T.playingAt = performance.now(); });
  v.addEventListener('waiting', () => { T.waiting++; });
  v.addEventListener('ended', () => { T.ended = true; });
  v.addEventListener('error', () => {
    T.errors.push({ source: 'video', code: v.error && v.error.code, message: v.error && v.error.message });
  });
  const player = dashjs.MediaPlayer().create();
  window.player = player;
  player.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING } });
  const extra = ${JSON.stringify(dashSettings)};
  if (extra) player.updateSettings(extra);
  const E = dashjs.MediaPlayer.events;
  player.on(E.ERROR, (e) => {
    if (T.errors.length < 20) {
      const err = e.error || {};
      T.errors.push({ source: 'dash.js', code: err.code, message: String(err.message || e.error || '') });
    }
  });
  player.on(E.PERIOD_SWITCH_COMPLETED, (e) => {
    T.periodSwitches.push(e.toStreamInfo ? e.toStreamInfo.id : null);
  });
  player.on(E.STREAM_INITIALIZED, () => { T.streamInits++; });
  player.on(E.QUALITY_CHANGE_RENDERED, () => { T.qualityChanges++; });
  player.on(E.FRAGMENT_LOADING_COMPLETED, (e) => {
    const r = e.request || {};
    if (T.fragments.length < 500) {
      T.fragments.push({ type: r.mediaType, kind: r.type, index: r.index, t: r.startTime, d: r.duration });
    }
  });
  player.initialize(v, ${JSON.stringify(mpdUrl.href)}, true);
</script>
</body></html>`;

// Runs in the page every SAMPLE_MS.
function sampleInPage() {
  const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const b = [];
  for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]);
  return {
    currentTime: v.currentTime,
    duration: v.duration,
    playerDuration: window.player ? window.player.duration() : null,
    paused: v.paused,
    readyState: v.readyState,
    buffered: b,
    totalFrames: q ? q.totalVideoFrames : null,
    dropped: q ? q.droppedVideoFrames : null,
    audioBytes: v.webkitAudioDecodedByteCount ?? null,
    videoBytes: v.webkitVideoDecodedByteCount ?? null,
    ended: window.__tc.ended,
  };
}

const r3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const result = { mpd: mpdUrl.href, dashjs: dashVersion, seconds: seconds || 'to end', dash_settings: dashSettings };
const chromiumOptions = {
  timeoutMs: (seconds || 600) * 1000 + startTimeoutMs + 60000,
  viewport: { width: 800, height: 450 },
  errorPrefix: 'browser: ',
};
await runInChromium(result, chromiumOptions, async (page) => {
  let exitCode = 0;
  const consoleLines = collectConsole(page);
  // Every request to the server under test (not the probe page): status and URL, and whether it
  // carried the MPD's query (an access token must ride on every URL the MPD names).
  const requests = [];
  const failed = [];
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.origin === mpdUrl.origin && !u.pathname.startsWith(playerPath) && requests.length < 1000) {
      requests.push({ status: r.status(), path: u.pathname, query: u.search });
    }
  });
  page.on('requestfailed', (q) => failed.length < 50 && failed.push(`${q.url()}: ${q.failure()?.errorText}`));
  await page.route(`${mpdUrl.origin}${playerPath}**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path.endsWith('/dash.all.min.js')) {
      return route.fulfill({ status: 200, contentType: 'text/javascript', body: dashBundle });
    }
    return route.fulfill({ status: 200, contentType: 'text/html', body: pageHtml });
  });
  await page.goto(`${mpdUrl.origin}${playerPath}index.html`, { waitUntil: 'domcontentloaded', timeout: 15000 });

  // Wait for the first `playing`.
  const t0 = Date.now();
  let started = false;
  while (Date.now() - t0 < startTimeoutMs) {
    const s = await page.evaluate(() => ({ at: window.__tc.playingAt, errors: window.__tc.errors.length }));
    if (s.at !== null) {
      started = true;
      break;
    }
    if (s.errors > 0) break;
    await page.waitForTimeout(200);
  }
  result.startup_ms = started ? Date.now() - t0 : null;

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
      if (s.ended) break;
      if (seconds > 0 && Date.now() - playStart >= seconds * 1000) break;
      if (Date.now() - lastMove > stallTimeoutMs) {
        stalledOut = true;
        break;
      }
      const errs = await page.evaluate(() => window.__tc.errors.length);
      if (errs > 0) break;
      await page.waitForTimeout(SAMPLE_MS);
    }
  }
  const tc = await page.evaluate(() => window.__tc);
  const last = samples.length ? samples[samples.length - 1] : await page.evaluate(sampleInPage);
  if (screenshot) await page.screenshot({ path: screenshot });

  const mediaRequests = requests.filter((r) => !r.path.endsWith('.mpd'));
  const expectQuery = mpdUrl.search;
  Object.assign(result, {
    started,
    ended: tc.ended,
    stalled_out: stalledOut,
    current_time_reached: r3(Math.max(...samples.map((s) => s.currentTime), last.currentTime)),
    duration: r3(last.duration),
    player_duration: r3(last.playerDuration),
    buffered: last.buffered.map((r) => r.map(r3)),
    waiting_events: tc.waiting,
    errors: tc.errors,
    period_switches: tc.periodSwitches,
    video_frames_decoded: last.totalFrames,
    video_frames_dropped: last.dropped,
    audio_bytes_decoded: last.audioBytes,
    video_bytes_decoded: last.videoBytes,
    fragments_loaded: tc.fragments.length,
    fragments: tc.fragments.map((f) => `${f.type}:${f.kind}#${f.index}@${r3(f.t)}+${r3(f.d)}`),
    requests: requests.map((r) => `${r.status} ${r.path}${r.query}`),
    requests_not_ok: requests.filter((r) => r.status >= 400).length,
    requests_without_query: expectQuery ? mediaRequests.filter((r) => r.query !== expectQuery).length : null,
    failed_requests: failed,
    console: consoleLines,
  });
  if (!started) {
    result.error = tc.errors.length ? 'dash.js error before playback' : `not playing after ${startTimeoutMs} ms`;
    exitCode = 1;
  } else if (tc.errors.length) {
    result.error = 'dash.js error';
    exitCode = 1;
  } else if (stalledOut) {
    result.error = `currentTime stuck for ${stallTimeoutMs} ms at ${r3(lastTime)}`;
    exitCode = 1;
  }
  return exitCode;
});
