// Real-player probe for tidecast's LL-HLS output: opens a /watch/<channel> page in Debian's
// headless Chromium (driven by playwright-core, never a browser download of its own), waits until
// the page's hls.js player is playing, then samples the player every 500 ms for SECONDS and prints
// ONE JSON line on stdout summarising what a viewer got: live latency (hls.js's own estimate and
// the program-date-time one, wall clock minus EXT-X-PROGRAM-DATE-TIME of the frame on screen),
// stalls, hls.js errors, whether low-latency mode really fetched parts, dropped frames, and how far
// currentTime moved. Diagnostics go to stderr.
//
// Usage: node play.mjs URL SECONDS [--hls-config JSON] [--seek-to-live-sync] [--screenshot FILE]
//   URL            the watch page, e.g. http://127.0.0.1:8080/watch/main
//   SECONDS        how long to sample once playing
//   --hls-config   extra hls.js config merged over the page's own (experiments only: the page's
//                  Hls constructor is wrapped before the page script runs; the page is unchanged)
//   --seek-to-live-sync  once playing, seek to hls.liveSyncPosition (experiment: what a watch
//                  page could do to shed the start-up delay that hls.js otherwise keeps)
//   --screenshot   save a PNG of the page at the end
// Environment: CHROMIUM (default /usr/bin/chromium), PLAY_START_TIMEOUT_MS (default 30000).
//
// Exit status: 0 when playback started and sampling finished (the caller judges the figures),
// 1 when playback never started or the browser failed (the JSON line then has "error").
//
// Hooks: the watch page sets `window.Hls` (hls.js's UMD bundle) and `window.hls` (the player) from
// inline script; an init script turns both into accessors so the listeners below are attached the
// moment the player is created, before it loads anything.

import { collectConsole, runInChromium } from './harness.mjs';

const SAMPLE_MS = 500;

function usage(msg) {
  process.stderr.write(`play.mjs: ${msg}\nusage: node play.mjs URL SECONDS [--hls-config JSON] [--seek-to-live-sync] [--trust-spki BASE64] [--screenshot FILE]\n`);
  process.exit(2);
}

const argv = process.argv.slice(2);
const positional = [];
let extraConfig = null;
let screenshot = null;
let seekToLiveSync = false;
// Base64 SHA-256 of a server key's SubjectPublicKeyInfo that Chromium trusts for HTTPS (a
// self-signed test certificate), and only that key: certificate checks stay on for the rest.
let trustSpki = null;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--hls-config') {
    try {
      extraConfig = JSON.parse(argv[++i]);
    } catch (e) {
      usage(`--hls-config is not JSON: ${e.message}`);
    }
  } else if (argv[i] === '--seek-to-live-sync') {
    seekToLiveSync = true;
  } else if (argv[i] === '--trust-spki') {
    trustSpki = argv[++i];
  } else if (argv[i] === '--screenshot') {
    screenshot = argv[++i];
  } else {
    positional.push(argv[i]);
  }
}
if (positional.length !== 2) usage('need URL and SECONDS');
const [url, secondsArg] = positional;
const seconds = Number(secondsArg);
if (!(seconds > 0)) usage(`SECONDS must be a positive number, got ${secondsArg}`);
const startTimeoutMs = Number(process.env.PLAY_START_TIMEOUT_MS || 30000);

const log = (...a) => process.stderr.write(`play.mjs: ${a.join(' ')}\n`);

// Runs in the page before any page script. Everything it learns lives in window.__tc.
function initScript(extra) {
  const T = {
    errors: [], // every Hls.Events.ERROR, in order (capped)
    errorCount: 0,
    fatalCount: 0,
    waiting: [], // performance.now() of each `waiting` event
    seeking: [], // performance.now() of each `seeking` event
    playingAt: null, // performance.now() of the first `playing` event
    parts: 0, // FRAG_LOADED events for EXT-X-PART loads
    fullFrags: 0, // FRAG_LOADED events for whole segments
    partBytes: 0,
    levelLoaded: 0,
    lowLatencyAtLoad: null, // hls.lowLatencyMode after the first playlist (hls.js turns it off when the playlist has no parts)
    canBlockReload: null,
    partTarget: null,
    hlsVersion: null,
    config: null,
    // hls.js's own debug log, last LOG_KEEP lines ([performance.now(), level, text]), and for
    // every `waiting` event the log lines around it.
    log: [],
    logSeq: 0,
    waitingLogs: [],
    waitingWall: [], // Date.now() of each `waiting` event
  };
  const LOG_KEEP = 400;
  const logger = {};
  for (const level of ['debug', 'log', 'info', 'warn', 'error']) {
    logger[level] = (...args) => {
      T.logSeq++;
      T.log.push([Math.round(performance.now()), level, args.map((a) => String(a)).join(' ').slice(0, 300)]);
      if (T.log.length > LOG_KEEP) T.log.shift();
    };
  }
  logger.trace = () => {};
  window.__tc = T;
  const now = () => performance.now();
  let RealHls = null;
  let ExposedHls = null;
  Object.defineProperty(window, 'Hls', {
    configurable: true,
    get() {
      return ExposedHls;
    },
    set(v) {
      RealHls = v;
      // Every player gets our logger (hls.js's `debug` accepts an object of log functions) and
      // the extra config, if any.
      ExposedHls =
        typeof v === 'function'
          ? class extends v {
              constructor(config) {
                super(Object.assign({}, config || {}, extra || {}, { debug: logger }));
              }
            }
          : v;
    },
  });
  let player = null;
  Object.defineProperty(window, 'hls', {
    configurable: true,
    get() {
      return player;
    },
    set(h) {
      player = h;
      attach(h);
    },
  });
  function attach(h) {
    const E = RealHls.Events;
    T.hlsVersion = RealHls.version || null;
    T.config = {
      lowLatencyMode: h.config.lowLatencyMode,
      liveSyncDuration: h.config.liveSyncDuration ?? null,
      liveSyncDurationCount: h.config.liveSyncDurationCount,
      liveMaxLatencyDurationCount: h.config.liveMaxLatencyDurationCount,
      maxLiveSyncPlaybackRate: h.config.maxLiveSyncPlaybackRate,
      backBufferLength: h.config.backBufferLength,
    };
    h.on(E.ERROR, (_, d) => {
      T.errorCount++;
      if (d.fatal) T.fatalCount++;
      if (T.errors.length < 50) {
        T.errors.push({
          t_ms: Math.round(now()),
          type: d.type,
          details: d.details,
          fatal: !!d.fatal,
          url: (d.frag && (d.part ? d.part.url : d.frag.url)) || (d.context && d.context.url) || d.url || null,
          code: (d.response && d.response.code) || null,
          reason: d.reason || (d.error && String(d.error.message || d.error)) || null,
        });
      }
    });
    h.on(E.FRAG_LOADED, (_, d) => {
      if (d.part) {
        T.parts++;
        T.partBytes += (d.part.stats && d.part.stats.loaded) || 0;
      } else {
        T.fullFrags++;
      }
    });
    h.on(E.LEVEL_LOADED, (_, d) => {
      T.levelLoaded++;
      if (T.lowLatencyAtLoad === null) {
        T.lowLatencyAtLoad = h.lowLatencyMode;
        T.canBlockReload = !!d.details.canBlockReload;
        T.partTarget = d.details.partTarget || null;
      }
    });
    const video = document.getElementById('video');
    if (video) {
      video.addEventListener('playing', () => {
        if (T.playingAt === null) T.playingAt = now();
      });
      video.addEventListener('waiting', () => {
        T.waiting.push(now());
        T.waitingWall.push(Date.now());
        // hls.js's log: the 60 lines before the event now, the next ones 4 s later.
        const snap = { before: T.log.slice(-60), after: [] };
        T.waitingLogs.push(snap);
        const seq0 = T.logSeq;
        setTimeout(() => {
          const n = Math.min(T.logSeq - seq0, T.log.length);
          snap.after = n > 0 ? T.log.slice(-n).slice(0, 60) : [];
        }, 4000);
      });
      video.addEventListener('seeking', () => T.seeking.push(now()));
    }
  }
}

// Runs in the page every SAMPLE_MS.
function sampleInPage() {
  const h = window.hls;
  const v = document.getElementById('video');
  const b = v.buffered;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const pd = h && h.playingDate;
  return {
    t_ms: performance.now(),
    wall_ms: Date.now(),
    latency: h && Number.isFinite(h.latency) ? h.latency : null,
    targetLatency: h && Number.isFinite(h.targetLatency) ? h.targetLatency : null,
    pdtLatency: pd ? (Date.now() - pd.getTime()) / 1000 : null,
    currentTime: v.currentTime,
    bufferedEnd: b.length ? b.end(b.length - 1) : null,
    playbackRate: v.playbackRate,
    paused: v.paused,
    readyState: v.readyState,
    lowLatencyMode: h ? h.lowLatencyMode : null,
    dropped: q ? q.droppedVideoFrames : null,
    totalFrames: q ? q.totalVideoFrames : null,
  };
}

function percentile(values, p) {
  const xs = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!xs.length) return null;
  const i = Math.min(xs.length - 1, Math.max(0, Math.ceil((p / 100) * xs.length) - 1));
  return xs[i];
}
const r3 = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 1000);
const stats = (xs) => ({
  p50: r3(percentile(xs, 50)),
  p90: r3(percentile(xs, 90)),
  p95: r3(percentile(xs, 95)),
  min: r3(percentile(xs, 0)),
  max: r3(percentile(xs, 100)),
  n: xs.filter((x) => Number.isFinite(x)).length,
});

const result = { url, seconds, hls_config_extra: extraConfig, seek_to_live_sync: seekToLiveSync };
const chromiumOptions = {
  timeoutMs: (seconds + 60) * 1000 + startTimeoutMs,
  viewport: { width: 1280, height: 800 },
  args: trustSpki ? [`--ignore-certificate-errors-spki-list=${trustSpki}`] : [],
};
await runInChromium(result, chromiumOptions, async (page) => {
  const console = collectConsole(page);
  // Status counts of every /live/ response, and requests that failed outright.
  const httpStatus = {};
  const failed = [];
  let liveRequests = 0;
  // Arrival times of part responses: a long gap between two says media stopped coming.
  const partArrivals = [];
  // Requests that took longer than a second from issue to response headers: a held request
  // that should have been released, or one the browser queued behind others.
  const issued = new Map();
  const slow = [];
  // Every /live/ request: [issued, answered (headers), url] in Date.now() ms, for the
  // requests around a stall.
  const requestLog = [];
  page.on('request', (q) => issued.set(q, Date.now()));
  page.on('response', (r) => {
    const at = issued.get(r.request());
    if (at !== undefined) {
      issued.delete(r.request());
      const ms = Date.now() - at;
      if (r.url().includes('/live/') && requestLog.length < 5000) {
        requestLog.push([at, Date.now(), `${r.status()} ${r.url().replace(/^.*\/live\/[^/]*\//, '')}`]);
      }
      if (ms > 1000 && slow.length < 20) slow.push({ ms, url: r.url().replace(/^.*\/live\//, '/live/'), issued_s: (at - t0) / 1000 });
    }
    if (r.status() >= 400 && failed.length < 20) failed.push(`${r.status()} ${r.url()}`);
    if (!r.url().includes('/live/')) return;
    if (/\/part-[^/]*$/.test(r.url())) partArrivals.push([Date.now(), r.url().replace(/^.*\//, '')]);
    liveRequests++;
    httpStatus[r.status()] = (httpStatus[r.status()] || 0) + 1;
  });
  page.on('requestfailed', (r) => {
    if (failed.length < 20) failed.push(`failed ${r.failure() ? r.failure().errorText : '?'} ${r.url()}`);
  });
  await page.addInitScript(initScript, extraConfig);

  const t0 = Date.now();
  const resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  result.page_status = resp ? resp.status() : null;
  const hasPlayer = await page.evaluate(() => !!window.hls);
  if (!hasPlayer) {
    const status = await page.evaluate(() => document.getElementById('status')?.textContent ?? null);
    throw new Error(`the page created no hls.js player (window.hls unset); page status line: ${status}`);
  }
  try {
    await page.waitForFunction(
      () => window.__tc.playingAt !== null && document.getElementById('video').currentTime > 0,
      null,
      { timeout: startTimeoutMs, polling: 100 },
    );
  } catch (e) {
    const tc = await page.evaluate(() => window.__tc);
    result.errors = tc.errors;
    result.http_status = httpStatus;
    result.failed_requests = failed;
    result.console = console;
    throw new Error(`not playing within ${startTimeoutMs} ms`);
  }
  result.time_to_play_s = r3((Date.now() - t0) / 1000);
  log(`playing after ${result.time_to_play_s} s; sampling for ${seconds} s`);
  if (seekToLiveSync) {
    await new Promise((res) => setTimeout(res, 1000));
    result.seek_to_live_sync = await page.evaluate(() => {
      const v = document.getElementById('video');
      const from = v.currentTime;
      const to = window.hls.liveSyncPosition;
      if (Number.isFinite(to) && to > from) v.currentTime = to;
      return { from, to };
    });
    await new Promise((res) => setTimeout(res, 1000));
  }

  const samples = [];
  const sampleStart = Date.now();
  const next = () => new Promise((res) => setTimeout(res, SAMPLE_MS));
  while (Date.now() - sampleStart < seconds * 1000) {
    samples.push(await page.evaluate(sampleInPage));
    await next();
  }
  samples.push(await page.evaluate(sampleInPage));
  if (screenshot) await page.screenshot({ path: screenshot });
  const tc = await page.evaluate(() => window.__tc);

  const first = samples[0];
  const last = samples[samples.length - 1];
  const after = (ts) => ts.filter((t) => t > tc.playingAt);
  const stallsAfterStart = after(tc.waiting);
  Object.assign(result, {
    hls_version: tc.hlsVersion,
    hls_config: tc.config,
    samples: samples.length,
    sampled_wall_s: r3((last.wall_ms - first.wall_ms) / 1000),
    current_time_start: r3(first.currentTime),
    current_time_end: r3(last.currentTime),
    current_time_advanced_s: r3(last.currentTime - first.currentTime),
    latency_s: stats(samples.map((s) => s.latency)),
    pdt_latency_s: stats(samples.map((s) => s.pdtLatency)),
    target_latency_s: stats(samples.map((s) => s.targetLatency)),
    buffer_ahead_s: stats(samples.map((s) => (s.bufferedEnd === null ? NaN : s.bufferedEnd - s.currentTime))),
    playback_rate: stats(samples.map((s) => s.playbackRate)),
    low_latency_mode: last.lowLatencyMode,
    low_latency_mode_all_samples: samples.every((s) => s.lowLatencyMode === true),
    low_latency_at_first_playlist: tc.lowLatencyAtLoad,
    can_block_reload: tc.canBlockReload,
    part_target_s: tc.partTarget,
    parts_loaded: tc.parts,
    part_bytes: tc.partBytes,
    full_segments_loaded: tc.fullFrags,
    playlists_loaded: tc.levelLoaded,
    ll_engaged: last.lowLatencyMode === true && tc.parts > 0,
    waiting_total: tc.waiting.length,
    stalls_after_start: stallsAfterStart.length,
    stall_times_s: stallsAfterStart.map((t) => r3((t - tc.playingAt) / 1000)),
    seeks_after_start: after(tc.seeking).length,
    paused_samples: samples.filter((s) => s.paused).length,
    errors_total: tc.errorCount,
    errors_fatal: tc.fatalCount,
    errors: tc.errors,
    dropped_frames: last.dropped,
    total_frames: last.totalFrames,
    part_arrival_gaps_s: partArrivals
      .slice(1)
      .map(([t, name], i) => ({ gap_s: r3((t - partArrivals[i][0]) / 1000), part: name, at_s: r3((t - t0) / 1000) }))
      .sort((a, b) => b.gap_s - a.gap_s)
      .slice(0, 3),
    live_requests: liveRequests,
    http_status: httpStatus,
    failed_requests: failed,
    slow_requests: slow,
    // For each `waiting` after start: the /live/ requests issued or answered from 3 s before
    // to 7 s after it (times relative to the event, ms), and hls.js's log lines around it.
    stall_context: stallsAfterStart.map((t) => {
      const i = tc.waiting.indexOf(t);
      const wall = tc.waitingWall[i];
      const requests = requestLog
        .filter(([a, b]) => (a >= wall - 3000 && a <= wall + 7000) || (b >= wall - 3000 && b <= wall + 7000))
        .map(([a, b, u]) => `${a - wall}..${b - wall} ${u}`);
      const snap = tc.waitingLogs[i] || { before: [], after: [] };
      const hlsLog = snap.before.concat(snap.after).map(([ms, lvl, text]) => `${Math.round(ms - t)} ${lvl} ${text}`);
      return { at_s: r3((t - tc.playingAt) / 1000), requests, hls_log: hlsLog };
    }),
    console,
  });
});
