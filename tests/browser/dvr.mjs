// Real-player probe for the DVR of tidecast's live watch page (/watch/<channel>): in Debian's
// headless Chromium (driven by playwright-core), waits until the page's hls.js plays live
// (LL-HLS, `window.player.mode()` "live"), samples LIVE_SECONDS, clicks "Rewind" (#rewind: the
// page switches to the DVR playlist, 30 s before its end), samples DVR_SECONDS, clicks "Back to
// live" (#golive), and samples until hls.js's latency is below --live-latency (or BACK_SECONDS
// pass). Prints ONE JSON line on stdout with each phase's figures; diagnostics go to stderr.
//
// Usage: node dvr.mjs URL [--live-seconds N] [--dvr-seconds N] [--back-seconds N]
//                         [--live-latency S] [--screenshot FILE]
//   URL  the watch page, e.g. http://127.0.0.1:8080/watch/main
//   --live-seconds  sampling before Rewind (default 3)
//   --dvr-seconds   sampling in DVR mode, counted from the first frame played there (default 8)
//   --back-seconds  at most this long after Back to live (default 15)
//   --live-latency  Back to live is done once hls.latency is below this (default 3)
// Environment: CHROMIUM (default /usr/bin/chromium), PLAY_START_TIMEOUT_MS (default 30000).
//
// Per phase ("live", "dvr", "back") the report has every sample (compact): the page's mode,
// the playlist hls.js plays (its path), currentTime, the seekable range, hls.latency, the
// program-date-time distance behind live (wall clock minus hls.playingDate), and a summary:
// how far currentTime advanced, the smallest/largest distances, whether the mode ever differed
// from the phase's. hls.js errors carry the mode they happened in. The caller judges.
//
// Exit status: 0 when the run went through all phases (the caller judges the figures), 1 when
// playback never started, a button was missing, or the browser failed (the JSON has "error").
//
// Hook: as in play.mjs, an init script turns `window.hls` into an accessor, so every hls.js
// instance the page creates (one per mode switch) gets an error listener before it loads.

import { collectConsole, runInChromium } from './harness.mjs';

const SAMPLE_MS = 500;

function usage(msg) {
  process.stderr.write(
    `dvr.mjs: ${msg}\nusage: node dvr.mjs URL [--live-seconds N] [--dvr-seconds N] [--back-seconds N] [--live-latency S] [--screenshot FILE]\n`,
  );
  process.exit(2);
}

const argv = process.argv.slice(2);
const positional = [];
const opt = { liveSeconds: 3, dvrSeconds: 8, backSeconds: 15, liveLatency: 3 };
let screenshot = null;
const num = (name, v) => {
  const x = Number(v);
  if (!(x >= 0)) usage(`${name} must be a number >= 0, got ${v}`);
  return x;
};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--live-seconds') opt.liveSeconds = num(a, argv[++i]);
  else if (a === '--dvr-seconds') opt.dvrSeconds = num(a, argv[++i]);
  else if (a === '--back-seconds') opt.backSeconds = num(a, argv[++i]);
  else if (a === '--live-latency') opt.liveLatency = num(a, argv[++i]);
  else if (a === '--screenshot') screenshot = argv[++i];
  else positional.push(a);
}
if (positional.length !== 1) usage('need URL');
const url = new URL(positional[0]);
const startTimeoutMs = Number(process.env.PLAY_START_TIMEOUT_MS || 30000);
const log = (...a) => process.stderr.write(`dvr.mjs: ${a.join(' ')}\n`);

// Runs in the page before any page script. Everything it learns lives in window.__tc.
function initScript() {
  const T = { errors: [], errorCount: 0, fatalCount: 0, players: 0, playingAt: null, waiting: 0, levels: [] };
  window.__tc = T;
  const mode = () => (window.player && window.player.mode ? window.player.mode() : null);
  let player = null;
  Object.defineProperty(window, 'hls', {
    configurable: true,
    get() {
      return player;
    },
    set(h) {
      player = h;
      if (!h) return;
      T.players++;
      const n = T.players;
      h.on('hlsError', (_, d) => {
        T.errorCount++;
        if (d.fatal) T.fatalCount++;
        if (T.errors.length < 50) {
          T.errors.push({
            player: n,
            mode: mode(),
            type: d.type,
            details: d.details,
            fatal: !!d.fatal,
            url: (d.frag && d.frag.url) || (d.context && d.context.url) || d.url || null,
            code: (d.response && d.response.code) || null,
          });
        }
      });
      h.on('hlsLevelLoaded', (_, d) => {
        const x = d.details;
        if (T.levels.length < 200) {
          T.levels.push({ player: n, type: x.type || null, live: x.live, totalduration: x.totalduration, url: x.url });
        }
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
  });
}

// Runs in the page every SAMPLE_MS.
function sampleInPage() {
  const h = window.hls;
  const v = document.getElementById('video');
  const s = v.seekable;
  const pd = h && h.playingDate;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  let playlist = null;
  try {
    playlist = h && h.url ? new URL(h.url, location.href).pathname : null;
  } catch (e) {
    playlist = String(h.url);
  }
  return {
    wall_ms: Date.now(),
    mode: window.player && window.player.mode ? window.player.mode() : null,
    playlist,
    currentTime: v.currentTime,
    seekStart: s.length ? s.start(0) : null,
    seekEnd: s.length ? s.end(s.length - 1) : null,
    latency: h && Number.isFinite(h.latency) ? h.latency : null,
    pdtBehind: pd ? (Date.now() - pd.getTime()) / 1000 : null,
    paused: v.paused,
    readyState: v.readyState,
    frames: q ? q.totalVideoFrames : null,
    rewindVisible: !!document.getElementById('rewind') && !document.getElementById('rewind').hidden,
    goliveVisible: !!document.getElementById('golive') && !document.getElementById('golive').hidden,
  };
}

const r3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const finite = (xs) => xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
const min = (xs) => (finite(xs).length ? r3(Math.min(...finite(xs))) : null);
const max = (xs) => (finite(xs).length ? r3(Math.max(...finite(xs))) : null);

// A phase's summary from its samples.
function summarize(phase, samples, extra) {
  const first = samples[0] || {};
  const last = samples[samples.length - 1] || {};
  return Object.assign(
    {
      samples: samples.length,
      wall_s: samples.length > 1 ? r3((last.wall_ms - first.wall_ms) / 1000) : 0,
      modes: [...new Set(samples.map((s) => s.mode))],
      playlists: [...new Set(samples.map((s) => s.playlist))],
      current_time_start: r3(first.currentTime),
      current_time_end: r3(last.currentTime),
      current_time_advanced_s: r3((last.currentTime ?? 0) - (first.currentTime ?? 0)),
      seekable_span_max_s: max(samples.map((s) => (s.seekEnd === null ? NaN : s.seekEnd - s.seekStart))),
      seekable_behind_s: {
        min: min(samples.map((s) => (s.seekEnd === null ? NaN : s.seekEnd - s.currentTime))),
        max: max(samples.map((s) => (s.seekEnd === null ? NaN : s.seekEnd - s.currentTime))),
        last: last.seekEnd === null || last.seekEnd === undefined ? null : r3(last.seekEnd - last.currentTime),
      },
      pdt_behind_s: { min: min(samples.map((s) => s.pdtBehind)), max: max(samples.map((s) => s.pdtBehind)), last: r3(last.pdtBehind) },
      latency_s: { min: min(samples.map((s) => s.latency)), max: max(samples.map((s) => s.latency)), last: r3(last.latency) },
      paused_samples: samples.filter((s) => s.paused).length,
      frames_decoded: (last.frames ?? 0) - (first.frames ?? 0),
      trace: samples.map(
        (s) =>
          `${s.mode} ${s.playlist} t=${r3(s.currentTime)} seek=${r3(s.seekStart)}..${r3(s.seekEnd)} lat=${r3(s.latency)} pdt=${r3(s.pdtBehind)}${s.paused ? ' paused' : ''}`,
      ),
    },
    extra || {},
  );
}

const result = { url: url.href, options: opt };
const chromiumOptions = {
  timeoutMs: (opt.liveSeconds + opt.dvrSeconds + opt.backSeconds + 60) * 1000 + 2 * startTimeoutMs,
  viewport: { width: 1024, height: 768 },
};
await runInChromium(result, chromiumOptions, async (page) => {
  const consoleLines = collectConsole(page);
  const notOk = [];
  const dvrRequests = { playlists: 0, media: 0 };
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.status() >= 400 && notOk.length < 30) notOk.push(`${r.status()} ${path}`);
    if (/\/dvr\.m3u8$/.test(path)) dvrRequests.playlists++;
    else if (/\/dvr\//.test(path)) dvrRequests.media++;
  });
  result.console = consoleLines;
  result.requests_not_ok = notOk;
  result.dvr_requests = dvrRequests;
  await page.addInitScript(initScript);

  const t0 = Date.now();
  const resp = await page.goto(url.href, { waitUntil: 'domcontentloaded', timeout: 15000 });
  result.page_status = resp ? resp.status() : null;
  const sample = () => page.evaluate(sampleInPage);
  const sleep = (ms) => page.waitForTimeout(ms);

  // 1. Live.
  await page.waitForFunction(
    () =>
      window.__tc.playingAt !== null &&
      document.getElementById('video').currentTime > 0 &&
      window.player &&
      window.player.mode() === 'live' &&
      window.hls &&
      Number.isFinite(window.hls.latency),
    null,
    { timeout: startTimeoutMs, polling: 100 },
  );
  result.time_to_live_s = r3((Date.now() - t0) / 1000);
  log(`live after ${result.time_to_live_s} s`);
  const live = [];
  const liveStart = Date.now();
  do {
    live.push(await sample());
    await sleep(SAMPLE_MS);
  } while (Date.now() - liveStart < opt.liveSeconds * 1000);
  result.live = summarize('live', live);

  // 2. Rewind: the page switches to the DVR playlist. Sampling starts at the click (so a page
  // that never leaves live, or falls back to it, shows in the samples) and runs DVR_SECONDS past
  // the first sample that plays in DVR mode.
  if (!(await page.evaluate(() => !!document.getElementById('rewind') && !document.getElementById('rewind').hidden))) {
    throw new Error('no visible #rewind button on the live page');
  }
  const errorsBefore = await page.evaluate(() => window.__tc.errors.length);
  const clickAt = Date.now();
  await page.click('#rewind');
  const dvr = [];
  let dvrPlayingAt = null;
  let prev = null;
  for (;;) {
    const s = await sample();
    dvr.push(s);
    // Playing in DVR: two samples in a row in DVR mode, not paused, currentTime moving forward
    // by about the time between them (a seek, e.g. the page's own back to 30 s before the end,
    // is not playback).
    const moved = prev ? s.currentTime - prev.currentTime : 0;
    const wall = prev ? (s.wall_ms - prev.wall_ms) / 1000 : 0;
    if (
      dvrPlayingAt === null &&
      prev &&
      s.mode === 'dvr' &&
      prev.mode === 'dvr' &&
      !s.paused &&
      s.seekEnd !== null &&
      moved > 0.1 &&
      moved < wall + 0.5
    ) {
      dvrPlayingAt = Date.now();
    }
    prev = s;
    if (dvrPlayingAt !== null && Date.now() - dvrPlayingAt >= opt.dvrSeconds * 1000) break;
    if (dvrPlayingAt === null && Date.now() - clickAt > startTimeoutMs) break;
    await sleep(SAMPLE_MS);
  }
  const dvrPlaying = dvr.filter((s) => dvrPlayingAt !== null && s.wall_ms >= dvrPlayingAt);
  result.dvr = summarize('dvr', dvr, {
    playing_after_s: dvrPlayingAt === null ? null : r3((dvrPlayingAt - clickAt) / 1000),
    // The same figures over the samples once DVR playback moved: what the viewer sat through.
    playing: dvrPlaying.length ? summarize('dvr', dvrPlaying, {}) : null,
  });
  delete result.dvr.playing?.trace;
  if (screenshot) await page.screenshot({ path: screenshot });

  // 3. Back to live.
  if (!(await page.evaluate(() => !!document.getElementById('golive') && !document.getElementById('golive').hidden))) {
    result.golive_missing = true;
  } else {
    const backAt = Date.now();
    await page.click('#golive');
    const back = [];
    let liveAgainAt = null;
    for (;;) {
      const s = await sample();
      back.push(s);
      if (
        liveAgainAt === null &&
        s.mode === 'live' &&
        s.latency !== null &&
        s.latency < opt.liveLatency &&
        !s.paused &&
        s.currentTime > 0
      ) {
        liveAgainAt = Date.now();
      }
      // Two more samples after reaching the bound, to see it holds.
      if (liveAgainAt !== null && Date.now() - liveAgainAt >= 1000) break;
      if (Date.now() - backAt > opt.backSeconds * 1000) break;
      await sleep(SAMPLE_MS);
    }
    result.back = summarize('back', back, {
      latency_below_bound_after_s: liveAgainAt === null ? null : r3((liveAgainAt - backAt) / 1000),
    });
  }

  const tc = await page.evaluate(() => window.__tc);
  Object.assign(result, {
    players_created: tc.players,
    waiting_events: tc.waiting,
    errors_total: tc.errorCount,
    errors_fatal: tc.fatalCount,
    errors: tc.errors,
    errors_after_rewind: tc.errors.slice(errorsBefore),
    levels: tc.levels.slice(0, 6).concat(tc.levels.length > 6 ? [`... ${tc.levels.length - 6} more`] : []),
    level_types: [...new Set(tc.levels.map((l) => `${l.player}:${l.type}:${l.url ? new URL(l.url).pathname : null}`))],
  });
});
