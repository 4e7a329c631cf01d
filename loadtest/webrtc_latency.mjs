// WebRTC latency as a viewer sees it, measured in the picture: one headless Chromium (Debian's,
// driven by playwright-core through tests/browser/harness.mjs) with three pages on the server's
// own origin.
//
//   page A  publishes over WHIP (POST /whip/<channel>, Bearer <stream key>) a canvas stream
//           (canvas.captureStream(30)) and the fake microphone (Opus). Every animation frame it
//           draws the wall clock (performance.timeOrigin + performance.now(), ms) into the picture
//           as a barcode: 2 rows of 24 black/white blocks (sync 1010, the clock's low 32 bits,
//           CRC-8, sync 0101), each block 1/27 of the width and 16 % of the height, so it
//           survives H.264 at any bitrate the browser picks and any resolution it scales to.
//   page B  plays over WHEP (POST /whep/<channel>). For every frame the video element presents
//           (requestVideoFrameCallback) it draws the frame into a canvas, reads the barcode back
//           and records (its wall clock now - the drawn wall clock): glass to glass. The pages
//           share the browser, so the clocks are the same (checked: `clock_skew_ms`).
//   page C  plays the channel's LL-HLS through the watch page as shipped (/watch/<channel>,
//           hls.js in low-latency mode) and reads the same barcode from hls.js's video frames,
//           and samples Date.now() - hls.playingDate (the PDT latency of hls_latency.sh).
//
// Phases, one after another (so they do not share the 2 cores' decoders):
//   0. A WHEP viewer joining as the publisher starts (3 s): what a viewer who is early gets.
//      Then the run waits for the media playlist (a complete segment): a running stream.
//   1. WHEP glass to glass: one session, SETTLE s discarded, then WHEP_SECONDS s of frames.
//   2. WHEP first frame: TRIALS fresh sessions, each from the POST to the first presented
//      frame (rVFC), with the POST's answer and ICE "connected" times, the first frame's glass
//      to glass (how old the picture is: the viewer starts on the newest key frame), the POST
//      to the first picture less than 100 ms old, and the glass to glass TRIAL_TAIL s later.
//   3. LL-HLS: the watch page; once playing, SETTLE s discarded, then HLS_SECONDS s sampled.
//   4. Baseline: the WHIP publisher leaves, and page A sends the same canvas and microphone to
//      page B over a direct RTCPeerConnection (no server, H.264 preferred), P2P_SECONDS s: what
//      the browsers alone cost.
//
// Per presented frame the video frame callback also gives `receiveTime` (WebRTC: when the
// frame's last packet arrived), so glass to glass splits into drawn -> received (capture,
// encode, pacing, both network legs, the server) and received -> presented (the viewer's jitter
// buffer, decode, render). The viewer's getStats deltas over the window say the same from
// WebRTC's side (jitter buffer delay and target, decode time, NACKs, freezes).
//
// Usage: node loadtest/webrtc_latency.mjs HTTP_ADDR STREAM_KEY [CHANNEL]
// Environment (all optional): WHEP_SECONDS (20), SETTLE (2), TRIALS (5), TRIAL_TAIL (1.5),
//   HLS_SECONDS (20), P2P_SECONDS (8; 0 skips the baseline), WIDTH x HEIGHT (640 x 360),
//   AUDIO (1; 0 publishes video only), SPLIT_AV (0; 1: the WHEP player does not lip-sync video to
//   audio: the answer's audio track goes in a stream of its own), CHROMIUM.
// Output: a table on stderr, one JSON line on stdout. Exit 0 when every phase produced figures
// (the caller judges them), 1 when one failed (the JSON line then has "error").

import { collectConsole, runInChromium } from '../tests/browser/harness.mjs';

const [http, key, channel = 'main'] = process.argv.slice(2);
if (!http || !key) {
  process.stderr.write('usage: node loadtest/webrtc_latency.mjs HTTP_ADDR STREAM_KEY [CHANNEL]\n');
  process.exit(2);
}
const num = (name, def) => (process.env[name] === undefined || process.env[name] === '' ? def : Number(process.env[name]));
const cfg = {
  seconds: num('WHEP_SECONDS', 20),
  settle: num('SETTLE', 2),
  trials: num('TRIALS', 5),
  trialTail: num('TRIAL_TAIL', 1.5),
  hlsSeconds: num('HLS_SECONDS', 20),
  p2pSeconds: num('P2P_SECONDS', 8),
  width: num('WIDTH', 640),
  height: num('HEIGHT', 360),
  audio: num('AUDIO', 1) !== 0,
  splitAv: num('SPLIT_AV', 0) !== 0,
};
const base = `http://${http}`;
const log = (...a) => process.stderr.write(`webrtc_latency: ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// In the pages: the barcode, the publisher, the players. Injected as a script tag into each.
function pageLib(cfg) {
  const W = cfg.width;
  const H = cfg.height;
  const COLS = 24;
  const X0 = W * 0.05;
  const BW = (W * 0.9) / COLS;
  const ROW_Y = [H * 0.04, H * 0.22];
  const BH = H * 0.16;
  const BAND = Math.ceil(H * 0.4);
  const SYNC_HEAD = [1, 0, 1, 0];
  const SYNC_TAIL = [0, 1, 0, 1];
  const wall = () => performance.timeOrigin + performance.now();
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function crc8(bytes) {
    let c = 0;
    for (const b of bytes) {
      c ^= b;
      for (let i = 0; i < 8; i++) c = c & 0x80 ? ((c << 1) ^ 0x07) & 0xff : (c << 1) & 0xff;
    }
    return c;
  }
  function bitsFor(ms) {
    const v = Math.floor(ms) % 4294967296;
    const bytes = [Math.floor(v / 16777216) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
    const bits = [...SYNC_HEAD];
    for (const b of bytes) for (let i = 7; i >= 0; i--) bits.push((b >> i) & 1);
    const c = crc8(bytes);
    for (let i = 7; i >= 0; i--) bits.push((c >> i) & 1);
    bits.push(...SYNC_TAIL);
    return bits; // 48
  }
  const rect = (i) => [X0 + (i % COLS) * BW, ROW_Y[Math.floor(i / COLS)], BW, BH];
  function drawCode(ctx, ms) {
    ctx.fillStyle = '#808080';
    ctx.fillRect(0, 0, W, BAND);
    bitsFor(ms).forEach((bit, i) => {
      ctx.fillStyle = bit ? '#ffffff' : '#000000';
      ctx.fillRect(...rect(i));
    });
  }
  // The drawn clock's low 32 bits, or null (no sync, bad CRC).
  function readCode(ctx) {
    const img = ctx.getImageData(0, 0, W, BAND).data;
    const level = [];
    for (let i = 0; i < 48; i++) {
      const [x, y, w, h] = rect(i);
      const x0 = Math.round(x + w * 0.25), x1 = Math.round(x + w * 0.75);
      const y0 = Math.round(y + h * 0.25), y1 = Math.round(y + h * 0.75);
      let sum = 0, n = 0;
      for (let yy = y0; yy < y1; yy += 2) {
        for (let xx = x0; xx < x1; xx += 2) {
          const p = (yy * W + xx) * 4;
          sum += img[p] + img[p + 1] + img[p + 2];
          n++;
        }
      }
      level.push(sum / (3 * n));
    }
    const syncIdx = [0, 1, 2, 3, 44, 45, 46, 47];
    const syncBits = [...SYNC_HEAD, ...SYNC_TAIL];
    let on = 0, off = 0;
    syncIdx.forEach((j, k) => (syncBits[k] ? (on += level[j]) : (off += level[j])));
    on /= 4;
    off /= 4;
    if (on - off < 60) return null;
    const thr = (on + off) / 2;
    const bits = level.map((l) => (l > thr ? 1 : 0));
    if (syncIdx.some((j, k) => bits[j] !== syncBits[k])) return null;
    const bytes = [0, 0, 0, 0, 0];
    for (let i = 0; i < 40; i++) bytes[i >> 3] = (bytes[i >> 3] << 1) | bits[4 + i];
    if (crc8(bytes.slice(0, 4)) !== bytes[4]) return null;
    return bytes[0] * 16777216 + ((bytes[1] << 16) | (bytes[2] << 8) | bytes[3]);
  }
  // The full drawn wall clock from its low 32 bits, the nearest to `nowMs`.
  function unwrap(low, nowMs) {
    const now = Math.floor(nowMs);
    let d = (now % 4294967296) - low;
    if (d < -2147483648) d += 4294967296;
    if (d > 2147483648) d -= 4294967296;
    return now - d;
  }

  // Record glass to glass for every frame `video` presents, into `sink`.
  function watch(video, sink) {
    const c = document.createElement('canvas');
    c.width = W;
    c.height = H;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    Object.assign(sink, { frames: [], bad: 0, stopped: false, sizes: {} });
    const toWall = (t) => (typeof t === 'number' ? performance.timeOrigin + t : null);
    const cb = (_, md) => {
      const at = wall();
      if (sink.stopped) return;
      ctx.drawImage(video, 0, 0, W, H);
      const low = readCode(ctx);
      if (low === null) {
        sink.bad++;
      } else {
        const drawn = unwrap(low, at);
        const recv = toWall(md.receiveTime);
        const disp = toWall(md.expectedDisplayTime);
        sink.frames.push([
          at, // presented (callback), wall ms
          drawn,
          recv === null ? null : recv - drawn,
          disp === null ? null : disp - drawn,
        ]);
      }
      const size = `${md.width}x${md.height}`;
      sink.sizes[size] = (sink.sizes[size] || 0) + 1;
      video.requestVideoFrameCallback(cb);
    };
    video.requestVideoFrameCallback(cb);
  }

  function videoElement() {
    const v = document.createElement('video');
    v.muted = true;
    v.autoplay = true;
    v.playsInline = true;
    v.style.width = `${W}px`;
    v.style.height = `${H}px`;
    document.body.appendChild(v);
    return v;
  }

  async function gathered(pc) {
    if (pc.iceGatheringState === 'complete') return;
    await new Promise((resolve) => {
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 3000);
    });
  }

  // getStats of one kind of RTP stream, the fields the report uses.
  async function rtpStats(pc, type) {
    const out = {};
    const stats = await pc.getStats();
    for (const s of stats.values()) {
      if (s.type !== type) continue;
      const codec = stats.get(s.codecId);
      out[s.kind] = { ...s, codec: codec && codec.mimeType };
    }
    return out;
  }

  // ---- page A: the publisher
  const pub = {
    canvas: null,
    stream: null,
    drawnFrames: 0,
    async start(whipUrl, key, withAudio) {
      const canvas = document.createElement('canvas');
      canvas.width = W;
      canvas.height = H;
      document.body.appendChild(canvas);
      const ctx = canvas.getContext('2d');
      const draw = () => {
        const ms = wall();
        const t = ms / 1000;
        // Something that moves, for the encoder: a sliding gradient and a bouncing box.
        const g = ctx.createLinearGradient(0, 0, W, H);
        const hue = (t * 40) % 360;
        g.addColorStop(0, `hsl(${hue},60%,35%)`);
        g.addColorStop(1, `hsl(${(hue + 120) % 360},60%,35%)`);
        ctx.fillStyle = g;
        ctx.fillRect(0, 0, W, H);
        const bx = ((Math.sin(t * 1.3) + 1) / 2) * (W - 80);
        const by = H * 0.45 + ((Math.cos(t * 1.7) + 1) / 2) * (H * 0.5 - 80);
        ctx.fillStyle = '#f0c040';
        ctx.fillRect(bx, by, 80, 80);
        ctx.fillStyle = '#ffffff';
        ctx.font = `${Math.round(H / 12)}px monospace`;
        ctx.fillText(`${new Date(ms).toISOString().slice(11, 23)}  #${pub.drawnFrames}`, W * 0.05, H * 0.95);
        drawCode(ctx, ms);
        pub.drawnFrames++;
        requestAnimationFrame(draw);
      };
      draw();
      const stream = canvas.captureStream(30);
      if (withAudio) {
        const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
        stream.addTrack(mic.getAudioTracks()[0]);
      }
      pub.stream = stream;
      const pc = new RTCPeerConnection();
      for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly', streams: [stream] });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const res = await fetch(whipUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` },
        body: pc.localDescription.sdp,
      });
      const body = await res.text();
      if (res.status !== 201) throw new Error(`WHIP POST: ${res.status} ${body.slice(0, 300)}`);
      pub.location = new URL(res.headers.get('Location'), whipUrl).href;
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
      const t0 = performance.now();
      while (pc.connectionState !== 'connected' && performance.now() - t0 < 10000) await sleep(20);
      pub.pc = pc;
      return { connected: pc.connectionState === 'connected', connectMs: Math.round(performance.now() - t0) };
    },
    async stats() {
      const s = await rtpStats(pub.pc, 'outbound-rtp');
      const v = s.video || {};
      return {
        codec: v.codec,
        framesEncoded: v.framesEncoded,
        totalEncodeTime: v.totalEncodeTime,
        totalPacketSendDelay: v.totalPacketSendDelay,
        packetsSent: v.packetsSent,
        bytesSent: v.bytesSent,
        frameWidth: v.frameWidth,
        frameHeight: v.frameHeight,
        framesPerSecond: v.framesPerSecond,
        qualityLimitationReason: v.qualityLimitationReason,
        audioCodec: s.audio && s.audio.codec,
        drawnFrames: pub.drawnFrames,
      };
    },
    async stop() {
      if (pub.location) await fetch(pub.location, { method: 'DELETE' }).catch(() => {});
      if (pub.pc) pub.pc.close();
    },
    // Baseline: the same tracks to page B over a direct connection.
    async p2pOffer() {
      const pc = new RTCPeerConnection();
      for (const t of pub.stream.getTracks()) {
        const tr = pc.addTransceiver(t, { direction: 'sendonly', streams: [pub.stream] });
        // H.264 like the WHIP leg (Chromium would pick VP8 page to page).
        if (t.kind === 'video') {
          const codecs = RTCRtpSender.getCapabilities('video').codecs;
          tr.setCodecPreferences([...codecs.filter((c) => c.mimeType === 'video/H264'), ...codecs.filter((c) => c.mimeType !== 'video/H264')]);
        }
      }
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      pub.p2p = pc;
      return pc.localDescription.sdp;
    },
    async p2pAnswer(sdp) {
      await pub.p2p.setRemoteDescription({ type: 'answer', sdp });
    },
    p2pClose() {
      if (pub.p2p) pub.p2p.close();
    },
  };

  // ---- pages B and C: the players
  const rx = {
    // A WHEP session: POST, answer, connect; times relative to the POST. `sink` gets the frames.
    async whep(url, withAudio, sink) {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      if (withAudio) pc.addTransceiver('audio', { direction: 'recvonly' });
      const g0 = performance.now();
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const gatherMs = performance.now() - g0;
      const video = videoElement();
      let connectedAt = null;
      pc.addEventListener('connectionstatechange', () => {
        if (pc.connectionState === 'connected' && connectedAt === null) connectedAt = performance.now();
      });
      const posted = performance.now();
      const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
      const body = await res.text();
      const answeredAt = performance.now();
      if (res.status !== 201) throw new Error(`WHEP POST: ${res.status} ${body.slice(0, 300)}`);
      // SPLIT_AV=1 (an experiment): the answer's audio track in a stream of its own, so that the
      // browser does not synchronise the video with it.
      const sdp = cfg.splitAv ? body.replace(/msid:(\S+) audio/g, 'msid:$1-audio audio') : body;
      await pc.setRemoteDescription({ type: 'answer', sdp });
      const first = new Promise((resolve) => video.requestVideoFrameCallback((now, md) => resolve(performance.now())));
      video.srcObject = new MediaStream(pc.getReceivers().map((r) => r.track));
      video.play().catch(() => {});
      watch(video, sink);
      const firstAt = await Promise.race([first, sleep(10000).then(() => null)]);
      const s = {
        pc,
        video,
        location: new URL(res.headers.get('Location'), url).href,
        audioNote: res.headers.get('X-Tidecast-Audio'),
        answerAudio: (body.match(/m=audio[^]*?a=(sendonly|recvonly|sendrecv|inactive)/) || [null, 'none'])[1],
        gatherMs,
        answerMs: answeredAt - posted,
        connectedMs: connectedAt === null ? null : connectedAt - posted,
        firstFrameMs: firstAt === null ? null : firstAt - posted,
        firstFrameWall: firstAt === null ? null : performance.timeOrigin + firstAt,
      };
      return s;
    },
    async close(s) {
      if (s.location) await fetch(s.location, { method: 'DELETE' }).catch(() => {});
      s.pc.close();
      s.video.srcObject = null;
      s.video.remove();
    },
    async inboundStats(pc) {
      const s = await rtpStats(pc, 'inbound-rtp');
      const v = s.video || {};
      const a = s.audio || {};
      return {
        codec: v.codec,
        framesDecoded: v.framesDecoded,
        framesDropped: v.framesDropped,
        framesReceived: v.framesReceived,
        packetsLost: v.packetsLost,
        nackCount: v.nackCount,
        pliCount: v.pliCount,
        freezeCount: v.freezeCount,
        totalFreezesDuration: v.totalFreezesDuration,
        jitterBufferDelay: v.jitterBufferDelay,
        jitterBufferTargetDelay: v.jitterBufferTargetDelay,
        jitterBufferMinimumDelay: v.jitterBufferMinimumDelay,
        jitterBufferEmittedCount: v.jitterBufferEmittedCount,
        totalDecodeTime: v.totalDecodeTime,
        totalProcessingDelay: v.totalProcessingDelay,
        totalAssemblyTime: v.totalAssemblyTime,
        framesAssembledFromMultiplePackets: v.framesAssembledFromMultiplePackets,
        frameWidth: v.frameWidth,
        frameHeight: v.frameHeight,
        audioCodec: a.codec,
        audioPacketsReceived: a.packetsReceived,
        audioJitterBufferDelay: a.jitterBufferDelay,
        audioJitterBufferTargetDelay: a.jitterBufferTargetDelay,
        audioJitterBufferEmittedCount: a.jitterBufferEmittedCount,
      };
    },
    async p2pAnswer(offer, sink) {
      const pc = new RTCPeerConnection();
      const video = videoElement();
      pc.addEventListener('track', () => {
        if (!video.srcObject) {
          video.srcObject = new MediaStream(pc.getReceivers().map((r) => r.track));
          video.play().catch(() => {});
          watch(video, sink);
        }
      });
      await pc.setRemoteDescription({ type: 'offer', sdp: offer });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      rx.p2p = { pc, video };
      return pc.localDescription.sdp;
    },
  };

  window.__lat = { pub, rx, watch, wall, readCode, drawCode };
}

// ---------------------------------------------------------------------------------------------
// In node: statistics and the phases.
function percentile(values, p) {
  const xs = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!xs.length) return null;
  const i = Math.min(xs.length - 1, Math.max(0, Math.ceil((p / 100) * xs.length) - 1));
  return xs[i];
}
const r1 = (x) => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10) / 10);
const stats = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x));
  return {
    n: v.length,
    p50: r1(percentile(v, 50)),
    p95: r1(percentile(v, 95)),
    max: r1(percentile(v, 100)),
    min: r1(percentile(v, 0)),
    mean: v.length ? r1(v.reduce((a, b) => a + b, 0) / v.length) : null,
  };
};
// Stats over the frames of a sink presented in [from, to) (wall ms).
function frameStats(sink, from = -Infinity, to = Infinity) {
  const fr = sink.frames.filter((f) => f[0] >= from && f[0] < to);
  return {
    frames: fr.length,
    undecodable: sink.bad,
    glass_to_glass_ms: stats(fr.map((f) => f[0] - f[1])),
    drawn_to_received_ms: stats(fr.map((f) => f[2])),
    received_to_presented_ms: stats(fr.map((f) => (f[2] === null ? NaN : f[0] - f[1] - f[2]))),
    drawn_to_display_ms: stats(fr.map((f) => f[3])),
    presented_fps: fr.length > 1 ? r1(((fr.length - 1) * 1000) / (fr[fr.length - 1][0] - fr[0][0])) : null,
    sizes: sink.sizes,
  };
}
// Per-frame averages from two getStats snapshots (ms).
function inboundDelta(a, b) {
  const d = (k) => (b[k] ?? 0) - (a[k] ?? 0);
  const per = (k, n) => (d(n) > 0 ? r1((1000 * d(k)) / d(n)) : null);
  return {
    codec: b.codec,
    audio_codec: b.audioCodec,
    frames_decoded: d('framesDecoded'),
    frames_dropped: d('framesDropped'),
    packets_lost: d('packetsLost'),
    nacks: d('nackCount'),
    plis: d('pliCount'),
    freezes: d('freezeCount'),
    jitter_buffer_delay_ms: per('jitterBufferDelay', 'jitterBufferEmittedCount'),
    jitter_buffer_target_ms: per('jitterBufferTargetDelay', 'jitterBufferEmittedCount'),
    jitter_buffer_minimum_ms: per('jitterBufferMinimumDelay', 'jitterBufferEmittedCount'),
    decode_ms: per('totalDecodeTime', 'framesDecoded'),
    processing_ms: per('totalProcessingDelay', 'framesDecoded'),
    assembly_ms: per('totalAssemblyTime', 'framesAssembledFromMultiplePackets'),
    audio_packets: d('audioPacketsReceived'),
    audio_jitter_buffer_delay_ms: per('audioJitterBufferDelay', 'audioJitterBufferEmittedCount'),
    audio_jitter_buffer_target_ms: per('audioJitterBufferTargetDelay', 'audioJitterBufferEmittedCount'),
    size: `${b.frameWidth}x${b.frameHeight}`,
  };
}
function outboundDelta(a, b) {
  const d = (k) => (b[k] ?? 0) - (a[k] ?? 0);
  return {
    codec: b.codec,
    audio_codec: b.audioCodec,
    size: `${b.frameWidth}x${b.frameHeight}`,
    frames_encoded: d('framesEncoded'),
    encode_ms: d('framesEncoded') > 0 ? r1((1000 * d('totalEncodeTime')) / d('framesEncoded')) : null,
    packet_send_delay_ms: d('packetsSent') > 0 ? r1((1000 * d('totalPacketSendDelay')) / d('packetsSent')) : null,
    kbit_per_s: null,
    quality_limitation: b.qualityLimitationReason,
    drawn_frames: d('drawnFrames'),
    bytes: d('bytesSent'),
  };
}

// One short WHEP session in `page`: POST -> first presented frame, and how the picture's age
// evolves from there (the viewer starts on the newest key frame, which may be seconds old).
async function whepTrial(page, tail) {
  const t = await page.evaluate(async ({ url, audio, tail }) => {
    const sink = {};
    const s = await window.__lat.rx.whep(url, audio, sink);
    await new Promise((r) => setTimeout(r, tail * 1000));
    const st = await window.__lat.rx.inboundStats(s.pc);
    sink.stopped = true;
    await window.__lat.rx.close(s);
    const { pc, video, ...rest } = s;
    return { ...rest, frames: sink.frames, bad: sink.bad, audioPackets: st.audioPacketsReceived ?? 0 };
  }, { url: `${base}/whep/${channel}`, audio: cfg.audio, tail });
  const fr = t.frames;
  const g = (f) => f[0] - f[1];
  const last = fr.length ? fr.filter((f) => f[0] >= fr[fr.length - 1][0] - 500) : [];
  const caught = fr.findIndex((f) => g(f) < 100);
  return {
    gather_ms: r1(t.gatherMs),
    answer_ms: r1(t.answerMs),
    connected_ms: r1(t.connectedMs),
    first_frame_ms: r1(t.firstFrameMs),
    first_frame_glass_to_glass_ms: fr.length ? r1(g(fr[0])) : null,
    // From the first presented frame to the first one less than 100 ms old, and how many frames
    // were presented before it.
    catch_up_ms: caught < 0 ? null : r1(fr[caught][0] - fr[0][0]),
    catch_up_frames: caught < 0 ? null : caught,
    // POST -> the first presented frame less than 100 ms old: a live picture.
    live_picture_ms: caught < 0 || t.firstFrameMs === null ? null : r1(t.firstFrameMs + fr[caught][0] - fr[0][0]),
    // The glass to glass of the frames of the session's last 0.5 s.
    tail_glass_to_glass_ms: fr.length ? stats(last.map(g)).p50 : null,
    frames: fr.length,
    audio_packets: t.audioPackets,
    answer_audio: t.answerAudio,
    audio_note: t.audioNote,
  };
}

const result = { http, channel, config: cfg };
const timeoutMs = (cfg.settle * 3 + 30 + cfg.seconds + cfg.trials * (cfg.trialTail + 4) + cfg.hlsSeconds + cfg.p2pSeconds + 90) * 1000;
const args = [
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // Host candidates as IPs, not mDNS names (the direct baseline connects page to page).
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

await runInChromium(result, { timeoutMs, args, viewport: { width: 1280, height: 800 } }, async (pageA) => {
  const context = pageA.context();
  const pageB = await context.newPage();
  const consoleLines = [...[pageA, pageB].map((p) => collectConsole(p, 10))];
  const inject = async (page) => {
    await page.addScriptTag({ content: `(${pageLib.toString()})(${JSON.stringify(cfg)});` });
  };
  for (const p of [pageA, pageB]) {
    await p.goto(`${base}/healthz`);
    await inject(p);
  }
  // The same clock in both pages? (wall() in each, read back to back.)
  const skews = [];
  for (let i = 0; i < 5; i++) {
    const a = await pageA.evaluate(() => window.__lat.wall() - Date.now());
    const b = await pageB.evaluate(() => window.__lat.wall() - Date.now());
    skews.push(b - a);
  }
  result.clock_skew_ms = r1(percentile(skews.map(Math.abs), 100));

  // The publisher page's state at each phase: its draws so far and whether it is visible. On a
  // busy machine its drawing slows down (and the canvas track with it), page visible or not.
  result.publisher_probe = [];
  const probe = async (phase) =>
    result.publisher_probe.push({
      phase,
      ...(await pageA.evaluate(() => ({
        t: Math.round(window.__lat.wall()),
        drawn: window.__lat.pub.drawnFrames,
        visibility: document.visibilityState,
      }))),
    });
  // --- publish
  log(`publishing a ${cfg.width}x${cfg.height} canvas${cfg.audio ? ' + fake microphone' : ''} over WHIP`);
  result.whip = await pageA.evaluate(
    ({ url, key, audio }) => window.__lat.pub.start(url, key, audio),
    { url: `${base}/whip/${channel}`, key, audio: cfg.audio },
  );
  if (!result.whip.connected) throw new Error('WHIP publisher did not connect');
  await probe('start');
  // --- 0. A viewer that joins as the publisher starts (before the first frames reach the ring).
  result.whep_at_publish_start = await whepTrial(pageB, 3);
  log(`WHEP at publish start: first frame ${result.whep_at_publish_start.first_frame_ms} ms after the POST, ` +
    `its glass to glass ${result.whep_at_publish_start.first_frame_glass_to_glass_ms} ms, ${result.whep_at_publish_start.audio_packets} audio packets`);
  // The stream is established once the media playlist answers (a complete segment), as a viewer
  // joining a running stream would find it.
  const t0 = Date.now();
  while (Date.now() - t0 < 20000) {
    const r = await fetch(`${base}/live/${channel}/source/index.m3u8`).catch(() => null);
    if (r && r.status === 200) break;
    await sleep(100);
  }
  result.whip.media_playlist_after_s = r1((Date.now() - t0) / 1000);
  await sleep(1000);

  await probe('whep');
  // --- 1. WHEP glass to glass
  log(`WHEP glass to glass: ${cfg.settle} s settle + ${cfg.seconds} s`);
  const whep = await pageB.evaluate(async ({ url, audio }) => {
    window.__sink = {};
    const s = await window.__lat.rx.whep(url, audio, window.__sink);
    window.__whep = s;
    const { pc, video, ...rest } = s;
    return rest;
  }, { url: `${base}/whep/${channel}`, audio: cfg.audio });
  await sleep(cfg.settle * 1000);
  const [inA, outA, from] = await Promise.all([
    pageB.evaluate(() => window.__lat.rx.inboundStats(window.__whep.pc)),
    pageA.evaluate(() => window.__lat.pub.stats()),
    pageB.evaluate(() => window.__lat.wall()),
  ]);
  await sleep(cfg.seconds * 1000);
  const [inB, outB, to] = await Promise.all([
    pageB.evaluate(() => window.__lat.rx.inboundStats(window.__whep.pc)),
    pageA.evaluate(() => window.__lat.pub.stats()),
    pageB.evaluate(() => window.__lat.wall()),
  ]);
  const sink = await pageB.evaluate(() => {
    window.__sink.stopped = true;
    return window.__sink;
  });
  await pageB.evaluate(() => window.__lat.rx.close(window.__whep));
  const first = sink.frames.length ? sink.frames[0] : null;
  result.whep = {
    session: { ...whep, first_frame_glass_to_glass_ms: first ? r1(first[0] - first[1]) : null },
    window: { ...frameStats(sink, from, to), seconds: r1((to - from) / 1000) },
    start: frameStats(sink, -Infinity, from),
    viewer_stats: inboundDelta(inA, inB),
    publisher_stats: { ...outboundDelta(outA, outB), kbit_per_s: r1(((outB.bytesSent - outA.bytesSent) * 8) / (to - from)) },
  };
  log(`WHEP g2g p50 ${result.whep.window.glass_to_glass_ms.p50} ms over ${result.whep.window.frames} frames`);

  await probe('first frames');
  // --- 2. WHEP first frame
  result.whep_first_frame = [];
  for (let i = 0; i < cfg.trials; i++) {
    // Spread the joins over the key-frame interval (the viewer starts on the newest key frame).
    await sleep(300 + ((i * 700) % 2000));
    const t = await whepTrial(pageB, cfg.trialTail);
    result.whep_first_frame.push(t);
    log(`WHEP first frame trial ${i + 1}: ${t.first_frame_ms} ms (answer ${t.answer_ms}, connected ${t.connected_ms}); ` +
      `first frame g2g ${t.first_frame_glass_to_glass_ms} ms, under 100 ms after ${t.catch_up_ms} ms (${t.catch_up_frames} frames)`);
  }

  await probe('ll-hls');
  // --- 3. LL-HLS through the watch page
  log(`LL-HLS: /watch/${channel}, ${cfg.settle} s settle + ${cfg.hlsSeconds} s`);
  const pageC = await context.newPage();
  consoleLines.push(collectConsole(pageC, 10));
  const hlsT0 = Date.now();
  // `waiting` after the first `playing`: stalls (hls.js raises its target latency by 1 s each).
  await pageC.addInitScript(() => {
    window.__stalls = [];
    document.addEventListener(
      'waiting',
      () => window.__playingAt !== undefined && window.__stalls.push(Math.round(performance.now() - window.__playingAt)),
      true,
    );
    document.addEventListener('playing', () => window.__playingAt === undefined && (window.__playingAt = performance.now()), true);
  });
  await pageC.goto(`${base}/watch/${channel}`, { waitUntil: 'domcontentloaded', timeout: 15000 });
  await inject(pageC);
  await pageC.waitForFunction(
    () => {
      const v = document.getElementById('video');
      return window.hls && v && !v.paused && v.currentTime > 0;
    },
    null,
    { timeout: 30000, polling: 100 },
  );
  const hlsStartS = (Date.now() - hlsT0) / 1000;
  await pageC.evaluate(() => {
    window.__sink = {};
    window.__pdt = [];
    window.__lat.watch(document.getElementById('video'), window.__sink);
  });
  await sleep(cfg.settle * 1000);
  await probe('ll-hls playing');
  const hFrom = await pageC.evaluate(() => {
    const T = window;
    T.__pdtTimer = setInterval(() => {
      const h = window.hls;
      const pd = h && h.playingDate;
      const v = document.getElementById('video');
      T.__pdt.push([
        pd ? Date.now() - pd.getTime() : null,
        h && Number.isFinite(h.latency) ? h.latency * 1000 : null,
        v.buffered.length ? (v.buffered.end(v.buffered.length - 1) - v.currentTime) * 1000 : null,
        v.playbackRate,
      ]);
    }, 250);
    return window.__lat.wall();
  });
  await sleep(cfg.hlsSeconds * 1000);
  const hls = await pageC.evaluate(() => {
    clearInterval(window.__pdtTimer);
    window.__sink.stopped = true;
    const q = document.getElementById('video').getVideoPlaybackQuality();
    return {
      sink: window.__sink,
      pdt: window.__pdt,
      to: window.__lat.wall(),
      version: window.Hls && window.Hls.version,
      dropped: q.droppedVideoFrames,
      total: q.totalVideoFrames,
      lowLatencyMode: window.hls && window.hls.lowLatencyMode,
      stalls: window.__stalls,
      targetLatency: window.hls && window.hls.targetLatency,
    };
  });
  await pageC.close();
  const hw = frameStats(hls.sink, hFrom, hls.to);
  result.ll_hls = {
    hls_js: hls.version,
    low_latency_mode: hls.lowLatencyMode,
    target_latency_ms: r1(hls.targetLatency * 1000),
    time_to_play_s: r1(hlsStartS),
    window: {
      seconds: r1((hls.to - hFrom) / 1000),
      frames: hw.frames,
      undecodable: hw.undecodable,
      glass_to_glass_ms: hw.glass_to_glass_ms,
      presented_fps: hw.presented_fps,
      sizes: hw.sizes,
    },
    pdt_latency_ms: stats(hls.pdt.map((s) => s[0] ?? NaN)),
    // How much later than the truth the PDT says the pictures were taken (glass to glass minus
    // PDT latency, medians): the session's PDT anchor.
    pdt_offset_ms: null,
    hls_latency_ms: stats(hls.pdt.map((s) => s[1] ?? NaN)),
    buffer_ahead_ms: stats(hls.pdt.map((s) => s[2] ?? NaN)),
    playback_rate: stats(hls.pdt.map((s) => s[3])),
    dropped_frames: hls.dropped,
    total_frames: hls.total,
    // ms after the first `playing` event.
    stalls_at_ms: hls.stalls,
  };
  result.ll_hls.pdt_offset_ms = r1(hw.glass_to_glass_ms.p50 - result.ll_hls.pdt_latency_ms.p50);
  log(`LL-HLS g2g p50 ${hw.glass_to_glass_ms.p50} ms, PDT latency p50 ${result.ll_hls.pdt_latency_ms.p50} ms`);

  await probe('end');
  // The publisher leaves (the baseline then encodes once, not twice).
  result.publisher_end = await pageA.evaluate(() => window.__lat.pub.stats());
  await pageA.evaluate(() => window.__lat.pub.stop());

  // --- 4. Baseline: the same tracks page to page, no server
  if (cfg.p2pSeconds > 0) {
    log(`baseline: direct connection page to page, ${cfg.settle} s settle + ${cfg.p2pSeconds} s`);
    const offer = await pageA.evaluate(() => window.__lat.pub.p2pOffer());
    const answer = await pageB.evaluate((sdp) => {
      window.__sink = {};
      return window.__lat.rx.p2pAnswer(sdp, window.__sink);
    }, offer);
    await pageA.evaluate((sdp) => window.__lat.pub.p2pAnswer(sdp), answer);
    await sleep(cfg.settle * 1000 + 1000);
    const [pA, pFrom] = await Promise.all([
      pageB.evaluate(() => window.__lat.rx.inboundStats(window.__lat.rx.p2p.pc)),
      pageB.evaluate(() => window.__lat.wall()),
    ]);
    await sleep(cfg.p2pSeconds * 1000);
    const [pB, pTo] = await Promise.all([
      pageB.evaluate(() => window.__lat.rx.inboundStats(window.__lat.rx.p2p.pc)),
      pageB.evaluate(() => window.__lat.wall()),
    ]);
    const psink = await pageB.evaluate(() => {
      window.__sink.stopped = true;
      window.__lat.rx.p2p.pc.close();
      return window.__sink;
    });
    await pageA.evaluate(() => window.__lat.pub.p2pClose());
    result.p2p = {
      window: { ...frameStats(psink, pFrom, pTo), seconds: r1((pTo - pFrom) / 1000) },
      viewer_stats: inboundDelta(pA, pB),
    };
    log(`baseline g2g p50 ${result.p2p.window.glass_to_glass_ms.p50} ms`);
  }

  result.console = consoleLines.flat();

  // --- the table
  const ff = result.whep_first_frame;
  result.summary = {
    whep_glass_to_glass_p50_ms: result.whep.window.glass_to_glass_ms.p50,
    whep_glass_to_glass_p95_ms: result.whep.window.glass_to_glass_ms.p95,
    whep_glass_to_glass_max_ms: result.whep.window.glass_to_glass_ms.max,
    whep_first_frame_p50_ms: r1(percentile(ff.map((t) => t.first_frame_ms ?? NaN), 50)),
    whep_first_frame_max_ms: r1(percentile(ff.map((t) => t.first_frame_ms ?? NaN), 100)),
    ll_hls_glass_to_glass_p50_ms: result.ll_hls.window.glass_to_glass_ms.p50,
    ll_hls_pdt_latency_p50_ms: result.ll_hls.pdt_latency_ms.p50,
    p2p_glass_to_glass_p50_ms: result.p2p ? result.p2p.window.glass_to_glass_ms.p50 : null,
  };
  const S = result.summary;
  const below = (v, t) => v !== null && v !== undefined && v < t;
  const row = (name, s, target, met) =>
    `| ${name.padEnd(40)} | ${String(s.p50).padStart(7)} | ${String(s.p95).padStart(7)} | ${String(s.max).padStart(7)} | ${String(s.n).padStart(5)} | ${target.padEnd(9)} | ${met === null ? '-' : met ? 'yes' : 'NO'} |`;
  const lines = [
    '',
    `WebRTC latency, ${cfg.width}x${cfg.height} canvas${cfg.audio ? ' + audio' : ''}${cfg.splitAv ? ' (WHEP video not synced to audio)' : ''}, Chromium ${result.browser}, clock skew between pages ${result.clock_skew_ms} ms`,
    `| ${'figure (ms)'.padEnd(40)} |     p50 |     p95 |     max |     n | target    | met |`,
    `|${'-'.repeat(42)}|---------|---------|---------|-------|-----------|-----|`,
    row('WHIP -> WHEP glass to glass', result.whep.window.glass_to_glass_ms, '< 150 p50', below(S.whep_glass_to_glass_p50_ms, 150)),
    row('  drawn -> received (last packet)', result.whep.window.drawn_to_received_ms, '', null),
    row('  received -> presented', result.whep.window.received_to_presented_ms, '', null),
    row('WHEP first frame (POST -> presented)', stats(ff.map((t) => t.first_frame_ms ?? NaN)), '< 300 p50', below(S.whep_first_frame_p50_ms, 300)),
    row('  POST -> answer', stats(ff.map((t) => t.answer_ms ?? NaN)), '', null),
    row('  POST -> ICE+DTLS connected', stats(ff.map((t) => t.connected_ms ?? NaN)), '', null),
    row('  first frame glass to glass (its age)', stats(ff.map((t) => t.first_frame_glass_to_glass_ms ?? NaN)), '', null),
    row('  POST -> first picture < 100 ms old', stats(ff.map((t) => t.live_picture_ms ?? NaN)), '', null),
    row('WHIP -> LL-HLS glass to glass', result.ll_hls.window.glass_to_glass_ms, '', null),
    row('WHIP -> LL-HLS PDT latency', result.ll_hls.pdt_latency_ms, '<= 1000 p50', below(S.ll_hls_pdt_latency_p50_ms, 1000.001)),
    row('  (the same target, by the barcode)', result.ll_hls.window.glass_to_glass_ms, '<= 1000 p50', below(S.ll_hls_glass_to_glass_p50_ms, 1000.001)),
  ];
  if (result.p2p) {
    lines.push(row('baseline: page to page, no server', result.p2p.window.glass_to_glass_ms, '', null));
    lines.push(row('  drawn -> received (last packet)', result.p2p.window.drawn_to_received_ms, '', null));
    lines.push(row('  received -> presented', result.p2p.window.received_to_presented_ms, '', null));
  }
  const vs = result.whep.viewer_stats;
  lines.push(
    `WHEP viewer (getStats over the window): jitter buffer ${vs.jitter_buffer_delay_ms} ms (target ${vs.jitter_buffer_target_ms}, minimum ${vs.jitter_buffer_minimum_ms}), decode ${vs.decode_ms} ms, ` +
      `processing ${vs.processing_ms} ms, audio jitter buffer ${vs.audio_jitter_buffer_delay_ms} ms; ${vs.frames_decoded} frames decoded, ${vs.frames_dropped} dropped, ` +
      `${vs.packets_lost} packets lost, ${vs.nacks} NACKs, ${vs.freezes} freezes; ${vs.codec} ${vs.size} + ${vs.audio_codec} (${vs.audio_packets} audio packets)`,
  );
  const ps0 = result.whep_at_publish_start;
  lines.push(
    `WHEP viewer joining as the publisher starts: first frame ${ps0.first_frame_ms} ms after the POST, ${ps0.first_frame_glass_to_glass_ms} ms old; ` +
      `${ps0.audio_packets} audio packets (answer: audio ${ps0.answer_audio}); media playlist ${result.whip.media_playlist_after_s} s later`,
  );
  if (result.p2p) {
    const ps = result.p2p.viewer_stats;
    lines.push(`baseline viewer: jitter buffer ${ps.jitter_buffer_delay_ms} ms (target ${ps.jitter_buffer_target_ms}), decode ${ps.decode_ms} ms, audio jitter buffer ${ps.audio_jitter_buffer_delay_ms} ms; ${ps.codec} ${ps.size}`);
  }
  const pb = result.whep.publisher_stats;
  lines.push(`publisher: ${pb.codec} ${pb.size}, encode ${pb.encode_ms} ms/frame, ${pb.kbit_per_s} kbit/s, ${pb.frames_encoded} frames encoded in the window, limited by ${pb.quality_limitation}`);
  const lh = result.ll_hls;
  lines.push(`LL-HLS: hls.js ${lh.hls_js}, playing after ${lh.time_to_play_s} s, PDT ${lh.pdt_offset_ms} ms later than the barcode, hls.latency p50 ${lh.hls_latency_ms.p50} ms (target ${lh.target_latency_ms}), buffer ahead p50 ${lh.buffer_ahead_ms.p50} ms, ${lh.stalls_at_ms.length} stalls after start${lh.stalls_at_ms.length ? ` (at ${lh.stalls_at_ms.join(', ')} ms)` : ''}, ${lh.window.frames} frames read (${lh.window.presented_fps} fps), dropped ${lh.dropped_frames}/${lh.total_frames}`);
  process.stderr.write(lines.join('\n') + '\n\n');
  const missing = Object.entries(S).filter(([k, v]) => v === null && !k.startsWith('p2p')).map(([k]) => k);
  if (missing.length) {
    result.error = `no figures for ${missing.join(', ')}`;
    return 1;
  }
  return 0;
});
