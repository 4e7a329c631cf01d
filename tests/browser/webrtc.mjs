// WebRTC in headless Chromium: `whip` publishes the fake camera and microphone to a WHIP
// endpoint (RFC 9725, non-trickle, H.264 + Opus as the server picks them from Chromium's
// offer); `whep` plays a channel from a WHEP endpoint and reports what the browser decoded.
//
//   node webrtc.mjs whip URL KEY SECONDS   -> {"connected":true,"codec":"video/H264",...}
//   node webrtc.mjs whep URL SECONDS [TOKEN] -> {"framesDecoded":..,"firstFrameMs":..,...}
//   node webrtc.mjs vanish URL               -> plays over WHEP until the first picture, then
//                                               SIGKILLs its Chromium (no DELETE, no DTLS close)
//   node webrtc.mjs watch WATCH_URL SECONDS  -> the watch page's "Real-time" toggle: its mode,
//                                               picture size and status line after SECONDS
//
// Both end with DELETE on the session resource and print one JSON line (harness.mjs).
import { execSync } from 'node:child_process';
import { runInChromium } from './harness.mjs';

const [mode, url, arg3, arg4, arg5] = process.argv.slice(2);
const result = { mode, url };

// Loopback ICE (INTEROP-NOTES): candidates on 127.0.0.1 only; fake devices, no prompts.
const args = [
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];

const seconds = mode === 'vanish' ? 0 : Number(mode === 'whip' ? arg4 : arg3);
const token = mode === 'whip' ? arg3 : arg4;

await runInChromium(result, { timeoutMs: (seconds + 40) * 1000, args, errorPrefix: `${mode}: ` }, async (page) => {
  if (mode === 'watch') {
    await page.goto(url);
    await page.waitForFunction(() => window.player && document.getElementById('realtime'));
    await page.click('#realtime');
    await page.waitForTimeout(seconds * 1000);
    Object.assign(
      result,
      await page.evaluate(() => {
        const v = document.getElementById('video');
        return {
          playerMode: window.player.mode(),
          width: v.videoWidth,
          webrtc: !!v.srcObject,
          status: document.getElementById('status').textContent,
        };
      }),
    );
    return 0;
  }
  // A page of the server's own origin: a secure context (loopback) for getUserMedia.
  await page.goto(new URL('/healthz', url).href);
  const report = await page.evaluate(
    async ({ mode, url, token, seconds }) => {
      const out = {};
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const pc = new RTCPeerConnection();
      let stream = null;
      if (mode === 'whip') {
        stream = await navigator.mediaDevices.getUserMedia({
          video: { width: 640, height: 360, frameRate: 30 },
          audio: true,
        });
        for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly', streams: [stream] });
      } else {
        // 'whep' and 'vanish' play.
        pc.addTransceiver('video', { direction: 'recvonly' });
        pc.addTransceiver('audio', { direction: 'recvonly' });
      }
      await pc.setLocalDescription(await pc.createOffer());
      // Non-trickle, like OBS: wait for every candidate to be in the offer.
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
        setTimeout(resolve, 3000);
      });
      const headers = { 'Content-Type': 'application/sdp' };
      if (token) headers.Authorization = `Bearer ${token}`;
      const posted = performance.now();
      const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
      out.status = res.status;
      const body = await res.text();
      if (res.status !== 201) {
        out.body = body;
        return out;
      }
      out.location = res.headers.get('Location');
      out.etag = res.headers.get('ETag');
      out.audioNote = res.headers.get('X-Tidecast-Audio');
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
      const until = (cond, ms) =>
        new Promise((resolve) => {
          const t0 = performance.now();
          const tick = () => (cond() || performance.now() - t0 > ms ? resolve(cond()) : setTimeout(tick, 20));
          tick();
        });
      out.connected = await until(() => pc.connectionState === 'connected', 10000);
      out.connectMs = Math.round(performance.now() - posted);
      if (mode !== 'whip') {
        const video = document.createElement('video');
        video.muted = true;
        video.autoplay = true;
        document.body.appendChild(video);
        const ms = new MediaStream(pc.getReceivers().map((r) => r.track));
        video.srcObject = ms;
        const first = new Promise((resolve) => video.requestVideoFrameCallback(() => resolve(performance.now())));
        const t = await Promise.race([first, sleep(10000).then(() => null)]);
        out.firstFrameMs = t === null ? null : Math.round(t - posted);
        out.width = video.videoWidth;
        out.height = video.videoHeight;
        if (mode === 'vanish') return out;
      }
      await sleep(seconds * 1000);
      const stats = await pc.getStats();
      for (const s of stats.values()) {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          out.framesEncoded = s.framesEncoded;
          out.videoBytesSent = s.bytesSent;
          const codec = stats.get(s.codecId);
          out.codec = codec && codec.mimeType;
        }
        if (s.type === 'outbound-rtp' && s.kind === 'audio') {
          out.audioBytesSent = s.bytesSent;
          const codec = stats.get(s.codecId);
          out.audioCodec = codec && codec.mimeType;
        }
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          out.framesDecoded = s.framesDecoded;
          out.framesDropped = s.framesDropped;
          out.packetsLost = s.packetsLost;
          out.nackCount = s.nackCount;
          out.jitterBufferDelayMs = s.jitterBufferEmittedCount
            ? Math.round((1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount)
            : null;
          const codec = stats.get(s.codecId);
          out.codec = codec && codec.mimeType;
        }
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.audioPacketsReceived = s.packetsReceived;
          const codec = stats.get(s.codecId);
          out.audioCodec = codec && codec.mimeType;
        }
      }
      out.connectionState = pc.connectionState;
      const del = await fetch(new URL(out.location, url), { method: 'DELETE' });
      out.deleteStatus = del.status;
      if (stream) stream.getTracks().forEach((t) => t.stop());
      pc.close();
      return out;
    },
    { mode, url, token, seconds },
  );
  Object.assign(result, report);
  if (mode === 'vanish') {
    // The peer disappears: its browser dies at once, so nothing says goodbye.
    const browsers = execSync(`ps -o pid=,comm= --ppid ${process.pid}`)
      .toString()
      .split('\n')
      .filter((l) => /chrom/.test(l))
      .map((l) => Number(l.trim().split(/\s+/)[0]));
    for (const pid of browsers) process.kill(pid, 'SIGKILL');
    result.killed = browsers.length > 0;
  }
  return result.status === 201 && result.connected ? 0 : 1;
});
