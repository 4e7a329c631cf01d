#!/usr/bin/python3
"""Misbehaving RTSP server for tidecast's RTSP-pull bad-input tests.

Plain asyncio, no GStreamer. Serves clients one after another (or at once),
so a puller that reconnects meets the same misbehaviour each time. Prints
exactly one line "READY <port>" on stdout once listening; logs go to stderr.

    /usr/bin/python3 tests/rtsp/fake_camera.py --port 0 --mode bad-sdp

Modes:
  garbage          answer every request with random bytes
  bad-status       answer with a status line that is not RTSP
  bad-sdp          OPTIONS fine, DESCRIBE 200 with a malformed SDP body
  huge-header      answer with a multi-megabyte header line
  bad-interleaved  valid OPTIONS/DESCRIBE/SETUP/PLAY for one H.264 track over
                   TCP-interleaved, then '$'-framed garbage and malformed RTP
                   (later requests such as GET_PARAMETER still get a 200)
  hang             accept and never answer
  close            accept and close at once
"""
import argparse
import asyncio
import os
import random
import re
import signal
import struct
import sys

MODES = ["garbage", "bad-status", "bad-sdp", "huge-header", "bad-interleaved", "hang", "close"]

GOOD_SDP = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 127.0.0.1\r\n"
    "s=fake camera\r\n"
    "t=0 0\r\n"
    "a=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;"
    "sprop-parameter-sets=Z0LAHtoCgL/lwFqDAwNSgAAAAwCAAAAZR4sXUA==,aM48gA==\r\n"
    "a=control:trackID=0\r\n"
)

BAD_SDP = (
    "v=0\r\n"
    "o=this is not an origin line\r\n"
    "m=video notaport RTP/AVP ninety-six\r\n"
    "a=rtpmap:96\r\n"
    "a=fmtp:96 sprop-parameter-sets=!!!not-base64!!!\r\n"
    "c=IN IP4\r\n"
    "garbage without an equals sign\r\n"
)


def log(*args):
    print("fake_camera:", *args, file=sys.stderr, flush=True)


def rtp(seq, ts, payload, version=2, cc=0, padding=False):
    first = (version << 6) | (0x20 if padding else 0) | cc
    return struct.pack(">BBHII", first, 0x80 | 96, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234) + payload


def frame(channel, data, length=None):
    return struct.pack(">cBH", b"$", channel, len(data) if length is None else length) + data


def bad_packets(seq, ts):
    """One round of '$'-framed junk and malformed RTP on interleaved channel 0."""
    return [
        frame(0, os.urandom(5)),  # shorter than an RTP header
        frame(0, rtp(seq, ts, b"\x65" + os.urandom(50), version=1)),  # RTP version 1
        frame(0, rtp(seq + 1, ts, b"\x65", cc=15)),  # claims 15 CSRCs, has none
        frame(0, rtp(seq + 2, ts, b"\x65\x00\x00\xff", padding=True)),  # padding > length
        frame(0, rtp(seq + 3, ts, b"\x1c\x45" + os.urandom(20))),  # FU-A end without start
        frame(0, rtp(seq + 4, ts, b"\x00" + os.urandom(20))),  # NAL type 0 (forbidden/reserved)
        frame(0, rtp(seq + 500, ts - 900000, b"\x65" + os.urandom(30))),  # seq/ts jump
        frame(7, os.urandom(64)),  # channel that was never set up
        frame(1, os.urandom(40)),  # "RTCP" that is noise
        frame(0, os.urandom(300)),  # random payload
        frame(0, b"", length=0),  # empty frame
    ]


class Conn:
    def __init__(self, mode, reader, writer):
        self.mode, self.r, self.w = mode, reader, writer
        self.session = "%08X" % random.getrandbits(32)
        self.playing = None

    async def read_request(self):
        """Return (method, url, headers) or None at EOF; skips '$' frames."""
        while True:
            first = await self.r.readexactly(1)
            if first == b"$":
                _ch, n = struct.unpack(">BH", await self.r.readexactly(3))
                await self.r.readexactly(n)
                continue
            head = first + await self.r.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = int(headers.get("content-length", "0") or 0)
            if body:
                await self.r.readexactly(body)
            return parts[0], parts[1] if len(parts) > 1 else "", headers

    def reply(self, cseq, status="200 OK", headers=(), body=b""):
        out = f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n"
        for h in headers:
            out += h + "\r\n"
        if body:
            out += f"Content-Length: {len(body)}\r\n"
        self.w.write(out.encode() + b"\r\n" + body)

    def answer_valid(self, method, url, h, sdp):
        cseq = h.get("cseq", "0")
        sess = f"Session: {self.session};timeout=60"
        if method == "OPTIONS":
            self.reply(cseq, headers=["Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"])
        elif method == "DESCRIBE":
            base = url.rstrip("/") + "/"
            self.reply(cseq, headers=["Content-Type: application/sdp", f"Content-Base: {base}"],
                       body=sdp.encode())
        elif method == "SETUP":
            m = re.search(r"interleaved=(\d+)-(\d+)", h.get("transport", ""))
            if not m or "TCP" not in h.get("transport", ""):
                self.reply(cseq, "461 Unsupported Transport")
            else:
                self.reply(cseq, headers=[
                    f"Transport: RTP/AVP/TCP;unicast;interleaved={m[1]}-{m[2]};ssrc=00001234", sess])
        elif method == "PLAY":
            base = url.rstrip("/")
            self.reply(cseq, headers=[sess, "Range: npt=0.000-",
                                      f"RTP-Info: url={base}/trackID=0;seq=1000;rtptime=90000"])
            if self.playing is None:
                self.playing = asyncio.ensure_future(self.spew())
        else:  # GET_PARAMETER keepalives, TEARDOWN, ...
            self.reply(cseq, headers=[sess])

    async def spew(self):
        seq, ts = 1000, 90000
        try:
            while True:
                for pkt in bad_packets(seq, ts):
                    self.w.write(pkt)
                await self.w.drain()
                seq, ts = seq + 510, ts + 3600
                await asyncio.sleep(0.04)
        except ConnectionError:
            pass

    async def run(self):
        if self.mode == "close":
            return
        while True:
            method, url, h = await self.read_request()
            log(f"{self.mode}: got {method} {url} CSeq {h.get('cseq')}")
            cseq = h.get("cseq", "0")
            if self.mode == "garbage":
                # never starts with '$' (would read as an interleaved frame)
                self.w.write(b"\xff" + os.urandom(random.randint(64, 4096)))
            elif self.mode == "bad-status":
                self.w.write(f"HTTP/1.1 200 Totally Fine\r\nCSeq: {cseq}\r\n\r\n".encode())
            elif self.mode == "huge-header":
                self.w.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nX-Junk: ".encode()
                             + b"A" * (8 << 20) + b"\r\n\r\n")
            elif self.mode == "bad-sdp":
                self.answer_valid(method, url, h, BAD_SDP)
            elif self.mode == "bad-interleaved":
                self.answer_valid(method, url, h, GOOD_SDP)
            # "hang": read and ignore
            await self.w.drain()


async def main():
    p = argparse.ArgumentParser(description="misbehaving RTSP server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--mode", choices=MODES, required=True)
    a = p.parse_args()

    async def handle(reader, writer):
        log(f"{a.mode}: client {writer.get_extra_info('peername')}")
        conn = Conn(a.mode, reader, writer)
        try:
            await conn.run()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            if conn.playing:
                conn.playing.cancel()
            writer.close()
            log(f"{a.mode}: client gone")

    server = await asyncio.start_server(handle, a.address, a.port, limit=1 << 20)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log("shutting down")


if __name__ == "__main__":
    asyncio.run(main())
