#!/usr/bin/env python3
"""A WHIP publisher shaped like OBS (RFC 9725), from aiortc (PyPI).

    whip_publish.py URL KEY SECONDS

Publishes a synthetic 640x360 30 fps picture (a scrolling gradient with a moving bar) as H.264
(libx264 through PyAV: constrained baseline, so no B-frames; SPS and PPS in band before every
IDR; an IDR every 2 s) and a 48 kHz stereo tone as Opus, from a non-trickle offer (every
candidate in it: aiortc gathers before `setLocalDescription` returns). After SECONDS connected
it DELETEs the session resource and prints one JSON line on stdout:

    {"status": 201, "connected": true, "secondsSent": 12.0, "location": "/whip/...",
     "deleteStatus": 200, "codec": "video/H264", "audioCodec": "audio/opus", ...}

Exit status 0 when the POST got 201, ICE/DTLS connected and the DELETE got 200.

Loopback: aioice (aiortc's ICE) leaves 127.0.0.1 out of its host candidates
(`aioice.ice.get_host_addresses` skips it), so against a server on 127.0.0.1 no pair would ever
form. This script replaces that function with one that gathers on 127.0.0.1 only
(`TIDECAST_AIORTC_HOSTS`, comma-separated, overrides), and uses no STUN server (aiortc's
default is stun.l.google.com, which a machine without a network cannot resolve).
"""

import asyncio
import fractions
import json
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.codecs import h264

WIDTH, HEIGHT, FPS = 640, 360, 30
SAMPLE_RATE, AUDIO_PTIME = 48000, 0.020
KEYFRAME_FRAMES = 2 * FPS  # an IDR every 2 s
USER_AGENT = "tidecast-tests aiortc WHIP publisher (OBS-shaped)"

DEBUG = os.environ.get("TIDECAST_AIORTC_DEBUG") not in (None, "", "0")
HOSTS = [h for h in os.environ.get("TIDECAST_AIORTC_HOSTS", "127.0.0.1").split(",") if h]
# aioice's Connection.gather_candidates looks this name up in its module at call time, so
# replacing the module attribute is enough (there is no option for it).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(HOSTS)


def log(*args):
    print("whip_publish:", *args, file=sys.stderr, flush=True)


# What the H.264 encoder actually put on the wire, NAL unit by NAL unit (aiortc's encoder yields
# the NAL units of each encoded picture without start codes before packetizing them).
h264_seen = {
    "pictures": 0,
    "idr": 0,
    "idrWithSpsPps": 0,
    "spsCount": 0,
    "profileIdc": None,
    "nalTypes": {},
}
_encode_frame = h264.H264Encoder._encode_frame


def _counted_encode_frame(self, frame, force_keyframe):
    types = []
    for nal in _encode_frame(self, frame, force_keyframe):
        t = nal[0] & 0x1F
        types.append(t)
        if t == 7:
            h264_seen["spsCount"] += 1
            h264_seen["profileIdc"] = nal[1]
        yield nal
    if not types:
        return
    h264_seen["pictures"] += 1
    for t in types:
        h264_seen["nalTypes"][str(t)] = h264_seen["nalTypes"].get(str(t), 0) + 1
    if 5 in types:
        h264_seen["idr"] += 1
        idr = types.index(5)
        if 7 in types[:idr] and 8 in types[:idr]:
            h264_seen["idrWithSpsPps"] += 1


h264.H264Encoder._encode_frame = _counted_encode_frame


class PatternVideo(VideoStreamTrack):
    """640x360 at 30 fps: a horizontally scrolling luma gradient with a bright bar moving down,
    and slowly changing chroma; built from bytes (no numpy)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        # Set once negotiated: asks aiortc's sender to encode the frame being returned as an IDR.
        self.sender = None
        ramp = bytes((16 + (x * 219) // WIDTH) for x in range(WIDTH))
        self.ramp = ramp + ramp

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        n = self.n
        self.n += 1
        # OBS-style fixed key-frame interval, counted in frames as an encoder's keyint is (so IDRs
        # are exactly 2 s apart in media time). aiortc's encoder otherwise makes one
        # only on a PLI or after x264's default 250 frames. The sender reads its flag after this
        # recv returns, for this very frame.
        if n > 0 and n % KEYFRAME_FRAMES == 0 and self.sender is not None:
            self.sender._send_keyframe()
        off = (n * 8) % WIDTH
        row = self.ramp[off : off + WIDTH]
        bar_top = (n * 4) % (HEIGHT - 40)
        white = b"\xeb" * WIDTH
        y = row * bar_top + white * 40 + row * (HEIGHT - 40 - bar_top)
        cw, ch = WIDTH // 2, HEIGHT // 2
        u = bytes([(128 + int(60 * math.sin(n / 30))) & 0xFF]) * (cw * ch)
        v = bytes([(128 + int(60 * math.cos(n / 45))) & 0xFF]) * (cw * ch)
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        for plane, data, w, h in zip(frame.planes, (y, u, v), (WIDTH, cw, cw), (HEIGHT, ch, ch)):
            if plane.line_size == w:
                plane.update(data)
            else:  # padded lines
                stride = plane.line_size
                padded = b"".join(data[i * w : (i + 1) * w] + b"\x00" * (stride - w) for i in range(h))
                plane.update(padded)
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudio(MediaStreamTrack):
    """48 kHz stereo s16 in 20 ms frames: 1 kHz on the left, 500 Hz on the right."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.samples = int(SAMPLE_RATE * AUDIO_PTIME)  # 960
        pcm = bytearray()
        for i in range(self.samples):  # both periods divide 960 samples
            left = int(8000 * math.sin(2 * math.pi * 1000 * i / SAMPLE_RATE))
            right = int(8000 * math.sin(2 * math.pi * 500 * i / SAMPLE_RATE))
            pcm += struct.pack("<hh", left, right)
        self.pcm = bytes(pcm)
        self.start = None
        self.pts = 0

    async def recv(self):
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
            self.pts = 0
        else:
            self.pts += self.samples
            wait = self.start + self.pts / SAMPLE_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=self.samples)
        frame.planes[0].update(self.pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


def http(method, url, key, body=None):
    """One request; returns (status, headers (case-insensitive `get`), body text). Blocking: run
    it in a thread."""
    headers = {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/sdp"
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as res:
            return res.status, res.headers, res.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


def answer_codecs(sdp):
    """The first payload type's rtpmap of each m= section of an SDP: {"video": "H264/90000"...}."""
    out, kind, first_pt = {}, None, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            parts = line[2:].split()
            kind, first_pt = parts[0], (parts[3] if len(parts) > 3 else None)
        elif line.startswith("a=rtpmap:") and kind and kind not in out:
            pt, name = line[len("a=rtpmap:") :].split(" ", 1)
            if pt == first_pt:
                out[kind] = name
    return out


async def publish(url, key, seconds, out):
    # No STUN server. aiortc's default bundle policy (balanced): the offer has a transport per
    # m= section and aiortc drops the second when the answer accepts BUNDLE. Not max-bundle:
    # aiortc 1.16 then keys the answer's candidates by the one shared transport and keeps the
    # last m= section's, and an answer that puts its candidates only in the BUNDLE-tag section
    # (as RFC 8843 has it, and tidecast does) leaves aiortc with no remote candidate at all.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    states = []
    pc.on("connectionstatechange", lambda: states.append(pc.connectionState))
    try:
        video = PatternVideo()
        video_t = pc.addTransceiver(video, direction="sendonly")
        video.sender = video_t.sender
        audio_t = pc.addTransceiver(ToneAudio(), direction="sendonly")
        # OBS offers H.264 (packetization-mode 1) and Opus only.
        video_codecs = RTCRtpSender.getCapabilities("video").codecs
        audio_codecs = RTCRtpSender.getCapabilities("audio").codecs
        video_t.setCodecPreferences(
            [
                c
                for c in video_codecs
                if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"
            ]
        )
        audio_t.setCodecPreferences([c for c in audio_codecs if c.mimeType == "audio/opus"])

        await pc.setLocalDescription(await pc.createOffer())
        # Non-trickle: aiortc has gathered every candidate by now; check it.
        assert pc.iceGatheringState == "complete", pc.iceGatheringState
        offer = pc.localDescription.sdp
        out["offerCandidates"] = [l[2:] for l in offer.splitlines() if l.startswith("a=candidate:")]

        posted = time.monotonic()
        status, headers, body = await asyncio.to_thread(http, "POST", url, key, offer)
        out["status"] = status
        if status != 201:
            out["body"] = body[:500]
            return
        location = headers.get("Location")
        out["location"] = location
        out["etag"] = headers.get("ETag")
        out["answerCandidates"] = [l[2:] for l in body.splitlines() if l.startswith("a=candidate:")]
        out["answerCodecs"] = answer_codecs(body)
        if DEBUG:
            log("offer:\n" + offer + "\nanswer:\n" + body)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

        deadline = time.monotonic() + 10
        while pc.connectionState != "connected" and time.monotonic() < deadline:
            if pc.connectionState in ("failed", "closed"):
                break
            await asyncio.sleep(0.02)
        out["connected"] = pc.connectionState == "connected"
        out["connectMs"] = round((time.monotonic() - posted) * 1000)
        if out["connected"]:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                await asyncio.sleep(0.05)
                if pc.connectionState != "connected":
                    break
            out["secondsSent"] = round(time.monotonic() - started, 2)
        out["connectionStates"] = states

        # aiortc's getStats has no codec entries: the negotiated codec each sender encodes with.
        codecs = {t.kind: (t._codecs[0].mimeType if t._codecs else None) for t in (video_t, audio_t)}
        out["codec"], out["audioCodec"] = codecs.get("video"), codecs.get("audio")
        for t in (video_t, audio_t):
            stats = await t.sender.getStats()
            for s in stats.values():
                if s.type == "outbound-rtp":
                    prefix = "video" if t.kind == "video" else "audio"
                    out[prefix + "PacketsSent"] = s.packetsSent
                    out[prefix + "BytesSent"] = s.bytesSent
        out["h264"] = h264_seen

        if location:
            resource = urllib.parse.urljoin(url, location)
            status, _, body = await asyncio.to_thread(http, "DELETE", resource, key)
            out["deleteStatus"] = status
            if status != 200:
                out["deleteBody"] = body[:300]
    finally:
        await pc.close()


def main():
    if DEBUG:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    out = {"url": url, "aiortcHosts": HOSTS}
    try:
        asyncio.run(asyncio.wait_for(publish(url, key, seconds, out), timeout=seconds + 40))
    except BaseException as e:  # report whatever went wrong as JSON too
        out["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, Exception):
            print(json.dumps(out), flush=True)
            raise
    print(json.dumps(out), flush=True)
    ok = out.get("status") == 201 and out.get("connected") and out.get("deleteStatus") == 200
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
