// Real-player probe for tidecast's transcode ladder: opens a /watch/<channel> page (hls.js in
// low-latency mode on the channel's multivariant playlist) in Debian's headless Chromium (driven by
// playwright-core, never a browser download of its own), lets hls.js settle on the top rendition,
// measures live latency, then caps the page's bandwidth below that rendition and watches hls.js
// switch down. Prints ONE JSON line on stdout: the levels hls.js
// parsed, every LEVEL_SWITCHED (from, to, when), stalls (`waiting` on the video element and
// hls.js's bufferStalledError) relative to the cap and to the switch, latency before and after,
// and how far playback moved after the switch. Diagnostics go to stderr.
//
// Usage: node ladder.mjs URL [--cap-kbps N] [--relax-kbps N] [--cap-mode throttle|level] [--settle-max S]
//                            [--stable S] [--measure S] [--switch-timeout S] [--after S]
//   URL               the watch page, e.g. http://127.0.0.1:8080/watch/main
//   --cap-mode        throttle (default): Chromium's network emulation (CDP
//                     Network.emulateNetworkConditions) caps the page's download rate at
//                     --cap-kbps; level: hls.autoLevelCapping is set to the highest level whose
//                     BANDWIDTH fits --cap-kbps (no network change)
//   --cap-kbps        the cap, kbit/s (default 1200)
//   --relax-kbps      throttle only: once hls.js decides to load a lower level (LEVEL_SWITCHING),
//                     raise the cap to this (kbit/s;
//                     default: keep the cap). A network that drops hard and then recovers in
//                     part; with a cap barely above a rung, a low-latency player that rebuffered
//                     before the switch refills at hardly more than real time.
//   --settle-max      at most this long (s) for hls.js to settle (defaults 45 and 4): play the
//                     top level, caught up with its target latency, and stay there for
//                     --stable s without a `waiting` (the report says "settled": false if not; the
//                     cap comes anyway)
//   --measure         latency is sampled this long (s) before the cap (default 6)
//   --switch-timeout  at most this long (s) after the cap for a LEVEL_SWITCHED to a lower level
//                     (default 30)
//   --after           sampling continues this long (s) after that switch (default 15)
// Environment: CHROMIUM (default /usr/bin/chromium), PLAY_START_TIMEOUT_MS (default 30000).
//
// Exit status: 0 when every phase ran (the caller judges the figures, including "no switch"),
// 1 when playback never started or the browser failed (the JSON line then has "error").
//
// Hooks as in play.mjs: the watch page sets `window.Hls` and `window.hls` from inline script; an
// init script turns both into accessors so the listeners are attached the moment the player is
// created, before it loads anything.

import { collectConsole, runInChromium } from './harness.mjs';

const SAMPLE_MS = 500;

function usage(msg) {
  process.stderr.write(
    `ladder.mjs: ${msg}\nusage: node ladder.mjs URL [--cap-kbps N] [--relax-kbps N] [--cap-mode throttle|level] [--settle-max S] [--stable S] [--measure S] [--switch-timeout S] [--after S]\n`,
  );
  process.exit(2);
}

const opts = { capKbps: 1200, relaxKbps: 0, capMode: 'throttle', settleMax: 45, stable: 4, measure: 6, switchTimeout: 30, after: 15 };
const flags = {
  '--cap-kbps': 'capKbps',
  '--relax-kbps': 'relaxKbps',
  '--settle-max': 'settleMax',
  '--stable': 'stable',
  '--measure': 'measure',
  '--switch-timeout': 'switchTimeout',
  '--after': 'after',
};
const argv = process.argv.slice(2);
const positional = [];
for (let i = 0; i < argv.length; i++) {
  if (flags[argv[i]]) {
    const v = Number(argv[++i]);
    if (!(v > 0)) usage(`${argv[i - 1]} needs a positive number`);
    opts[flags[argv[i - 1]]] = v;
  } else if (argv[i] === '--cap-mode') {
    opts.capMode = argv[++i];
    if (opts.capMode !== 'throttle' && opts.capMode !== 'level') usage('--cap-mode is throttle or level');
  } else {
    positional.push(argv[i]);
  }
}
if (positional.length !== 1) usage('need URL');
const [url] = positional;
const startTimeoutMs = Number(process.env.PLAY_START_TIMEOUT_MS || 30000);

const log = (...a) => process.stderr.write(`ladder.mjs: ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// Runs in the page before any page script. Everything it learns lives in window.__tc.
function initScript() {
  const T = {
    errors: [], // Hls.Events.ERROR, in order (capped)
    errorCount: 0,
    fatalCount: 0,
    stalledErrors: [], // performance.now() of each bufferStalledError
    waiting: [], // performance.now() of each `waiting` event
    playing: [], // performance.now() of each `playing` event
    playingAt: null, // performance.now() of the first `playing` event
    levels: null, // hls.levels at MANIFEST_PARSED
    switching: [], // LEVEL_SWITCHING: [t, level]
    switched: [], // LEVEL_SWITCHED: [t, from, to]
    fragsByLevel: {}, // level -> { parts, segments, bytes }
    hlsVersion: null,
    // hls.js's own log, last LOG_KEEP lines ([performance.now(), level, text]), and for every
    // `waiting` event the log lines around it.
    log: [],
    logSeq: 0,
    waitingLogs: [],
    waitingWall: [], // Date.now() of each `waiting` event
    // Who a stall waited on. `lastLoad`: the newest main part/segment hls.js started loading
    // ({key, level}); `inFlight`: whether that load is still running (until its media is
    // appended); `aheadSince`: since when hls.js, nothing in flight, has not requested media
    // newer than `lastLoad` that the playing level's playlist lists (null: nothing such). For
    // each `waiting` and bufferStalledError: a snapshot of these (cause()).
    lastLoad: null,
    inFlight: false,
    aheadSince: null,
    edge: null,
    waitingCause: [],
    stalledCause: [],
  };
  const LOG_KEEP = 600;
  const logger = {};
  for (const level of ['debug', 'log', 'info', 'warn', 'error']) {
    logger[level] = (...args) => {
      T.logSeq++;
      T.log.push([Math.round(performance.now()), level, args.map((a) => String(a)).join(' ').slice(0, 400)]);
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
      ExposedHls =
        typeof v === 'function'
          ? class extends v {
              constructor(config) {
                super(Object.assign({}, config || {}, { debug: logger }));
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
  // Who a stall waited on, now: see lastLoad/inFlight/aheadSince.
  function cause() {
    const idleMs = !T.inFlight && T.aheadSince !== null ? now() - T.aheadSince : 0;
    return { in_flight: T.inFlight, idle_with_media_listed_ms: Math.round(idleMs), player_idle: idleMs >= 400 };
  }
  function attach(h) {
    const E = RealHls.Events;
    T.hlsVersion = RealHls.version || null;
    let playingLevel = null;
    h.on(E.MANIFEST_PARSED, (_, d) => {
      T.levels = d.levels.map((l) => ({
        height: l.height,
        width: l.width,
        bitrate: l.bitrate,
        average_bitrate: l.averageBitrate,
        name: l.name || null,
        codecs: [l.videoCodec, l.audioCodec].filter(Boolean).join(','),
        url: String(l.url).replace(/^.*\/live\/[^/]*\//, ''),
      }));
    });
    h.on(E.LEVEL_SWITCHING, (_, d) => {
      T.switching.push([now(), d.level]);
      // Once capped, the first decision to load a lower level raises the cap (--relax-kbps).
      const l = h.levels && h.levels[d.level];
      if (typeof window.__tcRelax === 'function' && window.__tcCapHeight && l && l.height < window.__tcCapHeight) {
        window.__tcRelax();
      }
    });
    h.on(E.LEVEL_SWITCHED, (_, d) => {
      T.switched.push([now(), playingLevel, d.level]);
      playingLevel = d.level;
    });
    h.on(E.ERROR, (_, d) => {
      T.errorCount++;
      if (d.fatal) T.fatalCount++;
      if (d.details === 'bufferStalledError') {
        T.stalledErrors.push(now());
        T.stalledCause.push(cause());
      }
      if (T.errors.length < 60) {
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
    // Media order: segment sn, part p -> sn * 1000 + p; a whole segment counts as its last part.
    const key = (sn, part) => sn * 1000 + (part === null || part === undefined || part < 0 ? 999 : part);
    const recheck = () => {
      const ahead = T.edge && T.lastLoad && T.edge.level === T.lastLoad.level && T.edge.key > T.lastLoad.key;
      if (!ahead) T.aheadSince = null;
      else if (T.aheadSince === null) T.aheadSince = now();
    };
    h.on(E.FRAG_LOADING, (_, d) => {
      if (d.frag.type !== 'main' || typeof d.frag.sn !== 'number') return;
      T.lastLoad = { key: key(d.frag.sn, d.part ? d.part.index : null), level: d.frag.level };
      T.inFlight = true;
      T.aheadSince = null;
      recheck();
    });
    h.on(E.LEVEL_LOADED, (_, d) => {
      const det = d.details;
      if (!det || !det.live) return;
      const sn = det.lastPartSn ?? det.endSN;
      const part = det.lastPartSn !== undefined && det.lastPartIndex >= 0 ? det.lastPartIndex : null;
      T.edge = { key: key(sn, part), level: d.level };
      recheck();
    });
    h.on(E.ERROR, (_, d) => {
      if (d.frag && d.frag.type === 'main' && /frag|part|aborted/i.test(String(d.details))) {
        T.inFlight = false;
        T.aheadSince = null;
        recheck();
      }
    });
    // A load is in flight until its media is appended (parsing can take long on a busy machine).
    h.on(E.FRAG_BUFFERED, (_, d) => {
      if (d.frag.type !== 'main') return;
      T.inFlight = false;
      T.aheadSince = null;
      recheck();
    });
    h.on(E.FRAG_LOADED, (_, d) => {
      if (d.frag.type !== 'main') return;
      const k = String(d.frag.level);
      const s = (T.fragsByLevel[k] = T.fragsByLevel[k] || { parts: 0, segments: 0, bytes: 0 });
      if (d.part) s.parts++;
      else s.segments++;
      s.bytes += ((d.part || d.frag).stats || {}).loaded || 0;
    });
    const video = document.getElementById('video');
    if (video) {
      video.addEventListener('playing', () => {
        if (T.playingAt === null) T.playingAt = now();
        T.playing.push(now());
      });
      video.addEventListener('waiting', () => {
        T.waiting.push(now());
        T.waitingWall.push(Date.now());
        // Whether hls.js sat idle although the playlist listed media it had not requested (a
        // player-side stall: hls.js 1.7.4 stops loading parts after a busy append, see
        // tests/hlsjs_play.rs) or waited on media that was not there or still loading.
        T.waitingCause.push(cause());
        // hls.js's log: the 40 lines before the event now, the next ones 4 s later.
        const snap = { before: T.log.slice(-40), after: [] };
        T.waitingLogs.push(snap);
        const seq0 = T.logSeq;
        setTimeout(() => {
          const n = Math.min(T.logSeq - seq0, T.log.length);
          snap.after = n > 0 ? T.log.slice(-n).slice(0, 40) : [];
        }, 4000);
      });
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
  const sw = window.__tc.switched;
  return {
    t_ms: performance.now(),
    latency: h && Number.isFinite(h.latency) ? h.latency : null,
    targetLatency: h && Number.isFinite(h.targetLatency) ? h.targetLatency : null,
    waitingCount: window.__tc.waiting.length,
    pdtLatency: pd ? (Date.now() - pd.getTime()) / 1000 : null,
    currentTime: v.currentTime,
    bufferAhead: b.length ? b.end(b.length - 1) - v.currentTime : null,
    playbackRate: v.playbackRate,
    paused: v.paused,
    readyState: v.readyState,
    lowLatencyMode: h ? h.lowLatencyMode : null,
    playingLevel: sw.length ? sw[sw.length - 1][2] : null,
    loadLevel: h ? h.loadLevel : null,
    bwEstimate: h && Number.isFinite(h.bandwidthEstimate) ? Math.round(h.bandwidthEstimate) : null,
    totalFrames: q ? q.totalVideoFrames : null,
    dropped: q ? q.droppedVideoFrames : null,
  };
}

function percentile(values, p) {
  const xs = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!xs.length) return null;
  const i = Math.min(xs.length - 1, Math.max(0, Math.ceil((p / 100) * xs.length) - 1));
  return xs[i];
}
const r3 = (x) => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);
const stats = (xs) => ({
  p50: r3(percentile(xs, 50)),
  p95: r3(percentile(xs, 95)),
  min: r3(percentile(xs, 0)),
  max: r3(percentile(xs, 100)),
  n: xs.filter((x) => Number.isFinite(x)).length,
});

const result = { url, opts };
const budgetS = opts.settleMax + opts.measure + opts.switchTimeout + opts.after + startTimeoutMs / 1000 + 60;
const chromiumOptions = {
  timeoutMs: budgetS * 1000,
  viewport: { width: 1280, height: 800 },
};
await runInChromium(result, chromiumOptions, async (page) => {
  const consoleLines = collectConsole(page);
  const httpStatus = {};
  const failed = [];
  // Every /live/ request: [issued, answered (headers), "status path"] in Date.now() ms, for the
  // requests around a stall.
  const issued = new Map();
  const requestLog = [];
  page.on('request', (q) => issued.set(q, Date.now()));
  page.on('response', (r) => {
    const at = issued.get(r.request());
    if (at !== undefined) {
      issued.delete(r.request());
      if (r.url().includes('/live/') && requestLog.length < 5000) {
        requestLog.push([at, Date.now(), `${r.status()} ${r.url().replace(/^.*\/live\/[^/]*\//, '')}`]);
      }
    }
    if (r.status() >= 400 && failed.length < 20) failed.push(`${r.status()} ${r.url()}`);
    if (r.url().includes('/live/')) httpStatus[r.status()] = (httpStatus[r.status()] || 0) + 1;
  });
  page.on('requestfailed', (r) => {
    if (failed.length < 20) failed.push(`failed ${r.failure() ? r.failure().errorText : '?'} ${r.url()}`);
  });
  await page.addInitScript(initScript);

  const t0 = Date.now();
  const resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  result.page_status = resp ? resp.status() : null;
  const diagnostics = async () => {
    const tc = await page.evaluate(() => window.__tc);
    Object.assign(result, { errors: tc.errors, http_status: httpStatus, failed_requests: failed, console: consoleLines });
    return tc;
  };
  if (!(await page.evaluate(() => !!window.hls))) {
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
    await diagnostics();
    throw new Error(`not playing within ${startTimeoutMs} ms`);
  }
  result.time_to_play_s = r3((Date.now() - t0) / 1000);
  log(`playing after ${result.time_to_play_s} s`);

  const samples = [];
  const sample = async (phase) => {
    const s = await page.evaluate(sampleInPage);
    s.phase = phase;
    samples.push(s);
    return s;
  };

  // Phase 1, settle: until the level on screen is above the lowest and has stayed for --stable s.
  const settleStart = Date.now();
  let stableFrom = null;
  let stableLevel = null;
  let levelsKnown = null;
  result.settled = false;
  while (Date.now() - settleStart < opts.settleMax * 1000) {
    const s = await sample('settle');
    if (!levelsKnown) levelsKnown = await page.evaluate(() => window.__tc.levels);
    const highest = levelsKnown ? Math.max(...levelsKnown.map((l) => l.height)) : null;
    const lvl = s.playingLevel;
    const h = levelsKnown && lvl !== null && levelsKnown[lvl] ? levelsKnown[lvl].height : null;
    // Settled: the top rung, nothing else loading, caught up with the target
    // latency (the page plays faster while behind it), and for --stable s no `waiting` and
    // currentTime moving with the clock.
    const caughtUp = s.latency !== null && s.targetLatency !== null && s.latency - s.targetLatency < 0.5;
    const ok = h !== null && h === highest && s.loadLevel === lvl && caughtUp && !s.paused && s.readyState >= 3;
    if (ok && lvl === stableLevel && s.waitingCount === stableFrom.waitingCount) {
      const wall = (s.t_ms - stableFrom.t_ms) / 1000;
      if (wall >= opts.stable && s.currentTime - stableFrom.currentTime >= wall * 0.8) {
        result.settled = true;
        break;
      }
    } else {
      stableLevel = ok ? lvl : null;
      stableFrom = s;
    }
    await sleep(SAMPLE_MS);
  }
  result.settle_s = r3((Date.now() - settleStart) / 1000);

  // Phase 2, before: latency on the settled level.
  const measureStart = Date.now();
  while (Date.now() - measureStart < opts.measure * 1000) {
    await sample('before');
    await sleep(SAMPLE_MS);
  }

  // Phase 3, the cap.
  const levels = await page.evaluate(() => window.__tc.levels);
  const capBps = opts.capKbps * 1000;
  const capAt = await page.evaluate(() => performance.now());
  const capState = await sample('cap');
  result.level_at_cap = capState.playingLevel;
  let cdp = null;
  let relaxed = false;
  // Raise the cap to --relax-kbps, once.
  const relax = async () => {
    if (relaxed || !cdp || !(opts.relaxKbps > 0)) return;
    relaxed = true;
    await throttle(opts.relaxKbps * 1000);
    const at = await page.evaluate(() => performance.now());
    result.cap.relaxed = { kbps: opts.relaxKbps, after_cap_s: r3((at - capAt) / 1000) };
    log(`hls.js switching down: cap raised to ${opts.relaxKbps} kbit/s`);
  };
  const throttle = (bps) =>
    cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: bps / 8, uploadThroughput: bps / 8 });
  if (opts.capMode === 'throttle') {
    result.cap = { mode: 'throttle', kbps: opts.capKbps };
    cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    await throttle(capBps);
    if (opts.relaxKbps > 0) {
      await page.exposeFunction('__tcRelax', relax);
      await page.evaluate((h) => {
        window.__tcCapHeight = h;
      }, capState.playingLevel !== null && levels ? levels[capState.playingLevel].height : 0);
    }
  } else {
    const fits = (levels || []).map((l, i) => [i, l.bitrate]).filter(([, b]) => b <= capBps);
    const cap = fits.length ? fits.sort((a, b) => b[1] - a[1])[0][0] : 0;
    await page.evaluate((c) => {
      window.hls.autoLevelCapping = c;
    }, cap);
    result.cap = { mode: 'level', kbps: opts.capKbps, auto_level_capping: cap };
  }
  log(`capped (${JSON.stringify(result.cap)}) on level ${capState.playingLevel}`);

  // Phase 4: until a LEVEL_SWITCHED to a lower level than the one at the cap.
  const heightOf = (l) => (levels && l !== null && levels[l] ? levels[l].height : null);
  const capHeight = heightOf(capState.playingLevel);
  const switchStart = Date.now();
  let down = null;
  while (Date.now() - switchStart < opts.switchTimeout * 1000) {
    await sample('switching');
    // The page hook raises the cap at the first LEVEL_SWITCHING to a lower level; this catches
    // one that came before the hook knew the height at the cap.
    const switching = await page.evaluate(() => window.__tc.switching);
    if (switching.some(([t, l]) => t > capAt && capHeight !== null && heightOf(l) !== null && heightOf(l) < capHeight)) await relax();
    const sw = await page.evaluate(() => window.__tc.switched);
    down = sw.find(([t, , to]) => t > capAt && capHeight !== null && heightOf(to) !== null && heightOf(to) < capHeight);
    if (down) break;
    await sleep(SAMPLE_MS);
  }

  // Phase 5: after the switch.
  let switchAt = null;
  if (down) {
    switchAt = down[0];
    log(`switched ${down[1]} -> ${down[2]} ${r3((down[0] - capAt) / 1000)} s after the cap`);

    const afterStart = Date.now();
    while (Date.now() - afterStart < opts.after * 1000) {
      await sample('after');
      await sleep(SAMPLE_MS);
    }
  } else {
    log(`no switch down within ${opts.switchTimeout} s of the cap`);
  }
  const last = await sample('end');
  const tc = await diagnostics();

  const rel = (t, base) => r3((t - base) / 1000);
  // Stall episodes after start: a `waiting` until the next `playing` (or the last sample), later
  // `waiting`s before that `playing` (hls.js nudging, say) in the same episode; each with who the
  // first `waiting` waited on (cause()).
  const episodes = [];
  tc.waiting.forEach((t, i) => {
    if (t <= tc.playingAt) return;
    const p = tc.playing.find((x) => x >= t);
    const end = p === undefined ? last.t_ms : p;
    const prev = episodes[episodes.length - 1];
    if (prev && t <= prev.end) prev.end = Math.max(prev.end, end);
    else episodes.push({ start: t, end, ended: p !== undefined, cause: tc.waitingCause[i] || {} });
  });
  // Stalls from the switch on: episodes that began at or after it, and bufferStalledErrors outside
  // any episode (a stall the video element did not report).
  const stallsFromSwitch = [];
  if (switchAt !== null) {
    for (const e of episodes.filter((e) => e.start >= switchAt)) {
      stallsFromSwitch.push(Object.assign({ kind: 'waiting', at_s: rel(e.start, switchAt), for_s: rel(e.end, e.start), ended: e.ended }, e.cause));
    }
    tc.stalledErrors.forEach((t, i) => {
      if (t < switchAt || episodes.some((e) => t >= e.start - 300 && t <= e.end + 300)) return;
      stallsFromSwitch.push(Object.assign({ kind: 'bufferStalledError', at_s: rel(t, switchAt) }, tc.stalledCause[i] || {}));
    });
  }
  // Time spent stalled in episodes that began between the cap and the switch: a live player
  // keeps that as extra latency until it catches up.
  const stalledBeforeSwitchMs = episodes
    .filter((e) => e.start >= capAt && (switchAt === null || e.start < switchAt))
    .reduce((sum, e) => sum + (e.end - e.start), 0);
  const inPhase = (p) => samples.filter((s) => s.phase === p);
  const atSwitch = switchAt !== null ? samples.find((s) => s.t_ms >= switchAt) || last : null;
  // Latency after the switch: from 2 s after it (the new level's first parts are on screen).
  const settledAfter = switchAt !== null ? samples.filter((s) => s.t_ms >= switchAt + 2000) : [];
  Object.assign(result, {
    hls_version: tc.hlsVersion,
    levels: tc.levels,
    level_switches: tc.switched.map(([t, from, to]) => ({
      at_s: rel(t, tc.playingAt),
      after_cap_s: rel(t, capAt),
      from,
      to,
      from_height: heightOf(from),
      to_height: heightOf(to),
    })),
    level_switching: tc.switching.map(([t, l]) => ({ after_cap_s: rel(t, capAt), level: l })),
    switch_down:
      down && atSwitch
        ? {
            from: down[1],
            to: down[2],
            from_height: heightOf(down[1]),
            to_height: heightOf(down[2]),
            after_cap_s: rel(down[0], capAt),
          }
        : null,
    height_at_cap: capHeight,
    playing_level_end: last.playingLevel,
    playing_height_end: heightOf(last.playingLevel),
    latency_before_s: stats(inPhase('before').map((s) => s.latency)),
    pdt_latency_before_s: stats(inPhase('before').map((s) => s.pdtLatency)),
    latency_after_s: stats(settledAfter.map((s) => s.latency)),
    pdt_latency_after_s: stats(settledAfter.map((s) => s.pdtLatency)),
    bw_estimate_at_cap: capState.bwEstimate,
    bw_estimate_end: last.bwEstimate,
    current_time_at_switch: atSwitch ? r3(atSwitch.currentTime) : null,
    current_time_end: r3(last.currentTime),
    current_time_advanced_after_switch_s: atSwitch ? r3(last.currentTime - atSwitch.currentTime) : null,
    wall_after_switch_s: atSwitch ? rel(last.t_ms, atSwitch.t_ms) : null,
    frames_at_switch: atSwitch ? atSwitch.totalFrames : null,
    frames_end: last.totalFrames,
    frames_after_switch: atSwitch ? last.totalFrames - atSwitch.totalFrames : null,
    dropped_frames_end: last.dropped,
    buffer_ahead_after_s: stats(settledAfter.map((s) => s.bufferAhead)),
    paused_samples_after: settledAfter.filter((s) => s.paused).length,
    low_latency_mode_all_samples: samples.every((s) => s.lowLatencyMode === true),
    // Stalls, in seconds relative to the cap (negative: before it) and to the switch down.
    waiting_after_start_rel_cap_s: tc.waiting.filter((t) => t > tc.playingAt).map((t) => rel(t, capAt)),
    stalled_errors_rel_cap_s: tc.stalledErrors.map((t) => rel(t, capAt)),
    // Each `waiting` after start as [start, end] relative to the cap; end: the next `playing`
    // (null: still waiting at the end).
    stalls_rel_cap_s: tc.waiting
      .filter((t) => t > tc.playingAt)
      .map((t) => [rel(t, capAt), ((e) => (e === undefined ? null : rel(e, capAt)))(tc.playing.find((p) => p >= t))]),
    // For each `waiting` after start: the /live/ requests issued or answered from 3 s before to
    // 7 s after it (ms relative to the event), and hls.js's log lines around it.
    stall_context: tc.waiting
      .filter((t) => t > tc.playingAt)
      .map((t) => {
        const i = tc.waiting.indexOf(t);
        const wall = tc.waitingWall[i];
        const requests = requestLog
          .filter(([a, b]) => (a >= wall - 3000 && a <= wall + 7000) || (b >= wall - 3000 && b <= wall + 7000))
          .map(([a, b, u]) => `${a - wall}..${b - wall} ${u}`);
        const snap = tc.waitingLogs[i] || { before: [], after: [] };
        const hlsLog = snap.before.concat(snap.after).map(([ms, lvl, text]) => `${Math.round(ms - t)} ${lvl} ${text}`);
        return { rel_cap_s: rel(t, capAt), cause: tc.waitingCause[i] || null, requests, hls_log: hlsLog };
      }),
    stall_episodes_rel_cap_s: episodes.map((e) => [rel(e.start, capAt), rel(e.end, capAt)]),
    stalls_from_switch: switchAt !== null ? stallsFromSwitch : null,
    stalled_between_cap_and_switch_s: rel(stalledBeforeSwitchMs, 0),
    waiting_from_switch_s: switchAt !== null ? tc.waiting.filter((t) => t >= switchAt).map((t) => rel(t, switchAt)) : null,
    // The same, with who they waited on: player_idle (hls.js had not requested media its
    // playlist listed for >= 400 ms, nothing loading) or not.
    waiting_from_switch:
      switchAt !== null
        ? tc.waiting
            .map((t, i) => [t, tc.waitingCause[i] || {}])
            .filter(([t]) => t >= switchAt)
            .map(([t, c]) => Object.assign({ at_s: rel(t, switchAt) }, c))
        : null,
    stalled_errors_from_switch_s:
      switchAt !== null ? tc.stalledErrors.filter((t) => t >= switchAt).map((t) => rel(t, switchAt)) : null,
    stalled_errors_from_switch:
      switchAt !== null
        ? tc.stalledErrors
            .map((t, i) => [t, tc.stalledCause[i] || {}])
            .filter(([t]) => t >= switchAt)
            .map(([t, c]) => Object.assign({ at_s: rel(t, switchAt) }, c))
        : null,
    frags_by_level: tc.fragsByLevel,
    errors_total: tc.errorCount,
    errors_fatal: tc.fatalCount,
    // A compact trace: one sample per second (phase, s since the cap, level, latencies, buffer).
    trace: samples
      .filter((_, i) => i % 2 === 0)
      .map((s) =>
        [s.phase, rel(s.t_ms, capAt), s.playingLevel, s.loadLevel, r3(s.latency), r3(s.pdtLatency), r3(s.bufferAhead), r3(s.currentTime), s.totalFrames, s.bwEstimate].join(' '),
      ),
    // hls.js's log from 2 s before the cap on (times relative to the cap, ms); long, so the caller
    // prints it only on failure.
    hls_log: tc.log.filter(([ms]) => ms >= capAt - 2000).map(([ms, lvl, text]) => `${Math.round(ms - capAt)} ${lvl} ${text}`),
  });
});
