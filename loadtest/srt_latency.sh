#!/usr/bin/env bash
# SRT publish to LL-HLS latency: one SRT publisher into a fresh tidecast, one LL-HLS client doing
# blocking playlist reloads, and for every video frame the time from the publisher handing it to
# SRT to the client having the LL-HLS part that carries it. Run once per SRT latency setting.
#
# What is measured, per video frame sent in the window (frames matched by content, not by
# timestamp: the last 16 bytes of the H.264 access unit, entropy-coded slice data that tidecast
# passes through unchanged; fingerprints that occur twice in the file are left out):
#
#   send       wall clock when the publisher handed the frame's last byte to the SRT sender. The
#              publisher is a pacer (python3, below) that reads a pre-encoded MPEG-TS file (720p30
#              H.264 3 Mb/s x264 zerolatency, 2 s GOP, AAC; encoded once and cached) and writes it
#              in real time (each PES at its DTS) as UDP datagrams of up to 7 TS packets to
#              srt-live-transmit (udp:// in, srt:// caller out, one SRT packet per datagram, no
#              buffering), so the instant a frame is published is known exactly. Encoder delay is
#              not included: "glass" is the encoder's output.
#   listed     wall clock when the client received the blocking playlist answer
#              (_HLS_msn/_HLS_part from the preload hint) that first lists the part.
#   got        wall clock when the client had the whole part (GET after listed).
#
#   end-to-end = got - send      (the headline; target: p50 <= 1.0 s + the SRT latency)
#   listed - send                (the same without the part download)
#   pdt - send                   the frame's EXT-X-PROGRAM-DATE-TIME (its part's PDT + the
#                                frame's media offset in the part) minus its send time.
#                                tidecast stamps the wall clock on arrival of a session's first
#                                frame and extrapolates every later PDT by media time, so with a
#                                paced sender this is one constant per session: the first
#                                frame's delay (SRT latency + demuxer + start-up), not a
#                                per-frame transport delay
#   got - pdt                    what a PDT-based player would show as its latency if it played
#                                the frame at once (excludes the SRT leg; negative where the PDT
#                                anchor was later than the frames that followed)
#
# p50/p90/max over all frames sent in the window. Frames at the start of a part wait up to a
# part target (200 ms) for their part to close; that is LL-HLS, not transport.
#
# Usage: bash loadtest/srt_latency.sh
# Environment (all optional):
#   LATENCIES="200ms 120ms"  SRT latencies to run, each a fresh server (srt.latency and the
#                            caller's latency option both set to it, in ms)
#   DURATION=40              measurement window, seconds (5..60)
#   WARMUP=8                 seconds from the first frame sent to the window (0..20)
#   CARGO_TARGET_DIR         default ~/.cache/tidecast-target
#   LOADTEST_CACHE           where the test TS is kept, default ~/.cache/tidecast-loadtest
#   KEEP=1                   keep the temp dir (server log, per-frame records)
#   TIDECAST_BIN             run this tidecast binary instead (no build)
#
# Needs ffmpeg (libx264, aac; only to encode the test file once), srt-live-transmit (Debian
# srt-tools), curl, python3. Everything is loopback only; every process this script starts is
# killed by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
LATENCIES=${LATENCIES:-"200ms 120ms"}
DURATION=${DURATION:-40}
WARMUP=${WARMUP:-8}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
FILE_S=75   # length of the test file; WARMUP + DURATION + the tail must fit

die() { echo "srt_latency.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 5 && DURATION <= 60 )) || die "DURATION must be 5..60"
[[ $WARMUP =~ ^[0-9]+$ ]] && (( WARMUP <= 20 )) || die "WARMUP must be 0..20"
(( WARMUP + DURATION + 5 <= FILE_S )) || die "WARMUP + DURATION must be at most $(( FILE_S - 5 ))"
for l in $LATENCIES; do [[ $l =~ ^[0-9]+ms$ ]] && (( ${l%ms} >= 20 && ${l%ms} <= 2000 )) || die "LATENCIES entries are 20ms..2000ms"; done
for tool in ffmpeg srt-live-transmit curl python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-srt-latency

lt_tidecast

mkdir -p "$CACHE"
TS=$CACHE/testsrc2-720p30-3M-zerolatency-aac-${FILE_S}s.ts
if [[ ! -s $TS ]]; then
    log "encoding the ${FILE_S} s test stream once into $TS"
    ffmpeg -nostdin -hide_banner -loglevel error -y \
        -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=1000:sample_rate=48000 \
        -t "$FILE_S" -c:v libx264 -preset veryfast -tune zerolatency -b:v 3M -maxrate 3M -bufsize 3M \
        -g 60 -keyint_min 60 -pix_fmt yuv420p -c:a aac -b:a 128k -f mpegts "$TS.tmp"
    mv "$TS.tmp" "$TS"
fi

cat >"$WORK/lat.py" <<'PY'
"""send: pace a TS file to UDP in real time and log each video frame's send time.
poll: follow an LL-HLS media playlist with blocking reloads and log each video sample seen.
report: match the two by content and print the figures."""
import http.client, json, socket, struct, sys, time, urllib.parse
from datetime import datetime

TS = 188


def ts_packets(data):
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if p[0] != 0x47:
            raise SystemExit(f"lost TS sync at byte {off}")
        yield p


def payload_of(p):
    afc = (p[3] >> 4) & 3
    start = 4
    if afc & 2:
        start = 5 + p[4]
    return p[start:] if afc & 1 else b""


def pes_ts(pl):
    """DTS (or PTS) of a PES header, 90 kHz, or None."""
    if len(pl) < 14 or pl[:3] != b"\0\0\1":
        return None
    flags = pl[7] >> 6
    def rd(b):
        return ((b[0] >> 1) & 7) << 30 | (b[1] << 7 | b[2] >> 1) << 15 | (b[3] << 7 | b[4] >> 1)
    if flags == 3 and len(pl) >= 19:
        return rd(pl[14:19])
    if flags >= 2:
        return rd(pl[9:14])
    return None


def send(path, host, port, out, t_limit):
    data = open(path, "rb").read()
    pkts = list(ts_packets(data))
    # PMT: find the H.264 PID.
    pmt_pid = video_pid = None
    for p in pkts:
        pid = (p[1] & 0x1f) << 8 | p[2]
        pl = payload_of(p)
        if pid == 0 and pl and p[1] & 0x40:
            sec = pl[1 + pl[0]:]
            pmt_pid = (sec[10] & 0x1f) << 8 | sec[11]
        elif pid == pmt_pid and pl and p[1] & 0x40:
            sec = pl[1 + pl[0]:]
            n = ((sec[1] & 0xf) << 8 | sec[2]) - 4
            i = 12 + ((sec[10] & 0xf) << 8 | sec[11])
            while i < 3 + n:
                st, epid, esl = sec[i], (sec[i + 1] & 0x1f) << 8 | sec[i + 2], (sec[i + 3] & 0xf) << 8 | sec[i + 4]
                if st == 0x1b:
                    video_pid = epid
                i += 5 + esl
            break
    if video_pid is None:
        raise SystemExit("no H.264 stream in the file")
    # Per packet: (time to send it at, in 90 kHz from the first PES) and where video AUs end.
    sched, first, cur = [], None, 0
    au_end = {}  # packet index -> fingerprint of the AU that ends there
    tail, au_start = b"", None
    fps_seen = {}
    for idx, p in enumerate(pkts):
        pid = (p[1] & 0x1f) << 8 | p[2]
        pusi = p[1] & 0x40
        pl = payload_of(p)
        if pusi and pl:
            t = pes_ts(pl)
            if t is not None:
                first = t if first is None else first
                d = (t - first) % (1 << 33)
                if d < (1 << 32):  # else: before the first timestamp (33-bit wrap-around)
                    cur = max(cur, d)
        if pid == video_pid:
            if pusi:
                if au_start is not None and len(tail) >= 16:
                    au_end[prev_video] = tail[-16:]
                au_start = idx
                hl = 9 + pl[8] if len(pl) > 8 else len(pl)
                tail = pl[hl:]
            else:
                tail = (tail + pl)[-64:]
            prev_video = idx
        sched.append(cur)
    if au_start is not None and len(tail) >= 16:
        au_end[prev_video] = tail[-16:]
    for fp in au_end.values():
        fps_seen[fp] = fps_seen.get(fp, 0) + 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    log = open(out, "w")
    t0 = time.time() + 0.2
    print(json.dumps({"start": t0}), file=log, flush=True)
    buf, ends, frame = [], [], 0
    def flush():
        nonlocal buf, ends, frame
        if buf:
            sock.sendto(b"".join(buf), (host, port))
            now = time.time()
            for fp in ends:
                if fps_seen[fp] == 1:
                    log.write(f'{{"fp":"{fp.hex()}","send":{now:.6f},"frame":{frame}}}\n')
                frame += 1
            buf, ends = [], []
    for idx, p in enumerate(pkts):
        due = t0 + sched[idx] / 90000
        if due > time.time():
            flush()
            if due > t_limit:
                break
            time.sleep(max(0.0, due - time.time()))
        buf.append(p)
        if idx in au_end:
            ends.append(au_end[idx])
        if len(buf) == 7 or idx in au_end:
            flush()  # a frame's last bytes leave as soon as the frame is due, not with the next PES
    flush()
    log.close()


def boxes(b, off=0, end=None):
    end = len(b) if end is None else end
    while off + 8 <= end:
        size, typ = struct.unpack(">I4s", b[off:off + 8])
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack(">Q", b[off + 8:off + 16])[0], 16
        elif size == 0:
            size = end - off
        yield typ.decode("latin1"), off, off + hdr, off + size
        off += size


def init_tracks(b):
    """track_id -> (timescale, handler, default sample duration from trex) from an init segment."""
    out, trex = {}, {}
    for t, _, s, e in boxes(b):
        if t != "moov":
            continue
        for t2, _, s2, e2 in boxes(b, s, e):
            if t2 == "mvex":
                for t3, _, s3, e3 in boxes(b, s2, e2):
                    if t3 == "trex":
                        tid, _, dur = struct.unpack(">III", b[s3 + 4:s3 + 16])
                        trex[tid] = dur
            if t2 != "trak":
                continue
            tid = ts = hdl = None
            for t3, _, s3, e3 in boxes(b, s2, e2):
                if t3 == "tkhd":
                    v = b[s3]
                    tid = struct.unpack(">I", b[s3 + (20 if v == 1 else 12):][:4])[0]
                elif t3 == "mdia":
                    for t4, _, s4, e4 in boxes(b, s3, e3):
                        if t4 == "mdhd":
                            v = b[s4]
                            ts = struct.unpack(">I", b[s4 + (20 if v == 1 else 12):][:4])[0]
                        elif t4 == "hdlr":
                            hdl = b[s4 + 8:s4 + 12].decode("latin1")
            out[tid] = (ts, hdl)
    return {tid: (ts, hdl, trex.get(tid, 0)) for tid, (ts, hdl) in out.items()}


def samples(b, tracks):
    """(track_id, decode time, fingerprint) for every sample of a fragment."""
    out = []
    for t, moof, s, e in boxes(b):
        if t != "moof":
            continue
        for t2, _, s2, e2 in boxes(b, s, e):
            if t2 != "traf":
                continue
            tid, base, dflt_dur, dflt_size, tfdt = None, moof, 0, 0, 0
            runs = []
            for t3, _, s3, e3 in boxes(b, s2, e2):
                if t3 == "tfhd":
                    fl = int.from_bytes(b[s3 + 1:s3 + 4], "big")
                    tid = struct.unpack(">I", b[s3 + 4:s3 + 8])[0]
                    dflt_dur = tracks.get(tid, (0, "", 0))[2]
                    i = s3 + 8
                    if fl & 1:
                        base = struct.unpack(">Q", b[i:i + 8])[0]; i += 8
                    if fl & 2: i += 4
                    if fl & 8:
                        dflt_dur = struct.unpack(">I", b[i:i + 4])[0]; i += 4
                    if fl & 0x10:
                        dflt_size = struct.unpack(">I", b[i:i + 4])[0]; i += 4
                elif t3 == "tfdt":
                    v = b[s3]
                    tfdt = struct.unpack(">Q" if v == 1 else ">I", b[s3 + 4:s3 + (12 if v == 1 else 8)])[0]
                elif t3 == "trun":
                    runs.append((s3, e3))
            dt = tfdt
            for s3, e3 in runs:
                fl = int.from_bytes(b[s3 + 1:s3 + 4], "big")
                n = struct.unpack(">I", b[s3 + 4:s3 + 8])[0]
                i, doff = s3 + 8, 0
                if fl & 1:
                    doff = struct.unpack(">i", b[i:i + 4])[0]; i += 4
                if fl & 4: i += 4
                pos = base + doff
                for _ in range(n):
                    dur, size = dflt_dur, dflt_size
                    if fl & 0x100:
                        dur = struct.unpack(">I", b[i:i + 4])[0]; i += 4
                    if fl & 0x200:
                        size = struct.unpack(">I", b[i:i + 4])[0]; i += 4
                    if fl & 0x400: i += 4
                    if fl & 0x800: i += 4
                    out.append((tid, dt, b[pos + size - 16:pos + size].hex() if size >= 16 else ""))
                    pos += size
                    dt += dur
    return out


def pdt_parse(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def poll(base_url, out, t_limit):
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    def get(path):
        nonlocal conn
        for _ in range(3):
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                return r.status, body, time.time()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        return 0, b"", time.time()
    log = open(out, "w")
    seen, inits = set(), {}
    query, last_text = "", ""
    while time.time() < t_limit:
        st, body, t_listed = get(u.path + query)
        if st != 200:
            time.sleep(0.05)
            query = ""
            continue
        text = body.decode()
        pdt, off, init_uri, hint = None, 0.0, None, None
        new = []
        for line in text.splitlines():
            if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                pdt, off = pdt_parse(line.split(":", 1)[1]), 0.0
            elif line.startswith("#EXT-X-MAP:"):
                init_uri = line.split('URI="', 1)[1].split('"', 1)[0]
            elif line.startswith("#EXT-X-PART:"):
                attrs = line.split(":", 1)[1]
                dur = float(attrs.split("DURATION=", 1)[1].split(",", 1)[0])
                uri = attrs.split('URI="', 1)[1].split('"', 1)[0]
                if uri not in seen:
                    seen.add(uri)
                    new.append((uri, None if pdt is None else pdt + off, dur, init_uri))
                off += dur
            elif line.startswith("#EXTINF:"):
                if pdt is not None:
                    pdt += float(line.split(":", 1)[1].split(",", 1)[0])
                off = 0.0
            elif line.startswith("#EXT-X-PRELOAD-HINT:") and "TYPE=PART" in line:
                hint = line.split('URI="', 1)[1].split('"', 1)[0]
        first_answer = query == ""
        for uri, ppdt, dur, iuri in new:
            if first_answer:
                continue  # parts that existed before we started polling: not timed
            path = urllib.parse.urljoin(u.path, uri)
            st, part, t_got = get(path)
            if st != 200:
                continue
            if iuri not in inits:
                inits[iuri] = init_tracks(get(urllib.parse.urljoin(u.path, iuri))[1])
            tracks = inits[iuri]
            smp = samples(part, tracks)
            if not smp:
                continue
            # The part's PDT is that of its first video frame (the segmenter starts parts there).
            vid = [dt / tracks[tid][0] for tid, dt, _ in smp if tracks.get(tid, (0, ""))[1] == "vide"]
            if not vid:
                continue
            start = min(vid)
            for tid, dt, fp in smp:
                ts, hdl, _ = tracks.get(tid, (90000, "", 0))
                if hdl != "vide":
                    continue
                fpdt = None if ppdt is None else ppdt + dt / ts - start
                log.write(json.dumps({"fp": fp, "listed": t_listed, "got": t_got, "pdt": fpdt, "part": uri}) + "\n")
        log.flush()
        last_text = text
        if hint and "part-" in hint:
            msn, idx = hint.rsplit("part-", 1)[1].split(".")[0].split("-")[:2]
            query = f"?_HLS_msn={msn}&_HLS_part={idx}"
        else:
            query = "?x=1"
            time.sleep(0.05)
    log.close()
    if last_text:
        open(out + ".last.m3u8", "w").write(last_text)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def report(sent_path, seen_path, warmup, duration, latency_s):
    sent = [json.loads(l) for l in open(sent_path)]
    start = sent[0]["start"]
    frames = {s["fp"]: s for s in sent[1:]}
    w0, w1 = start + warmup, start + warmup + duration
    window = {fp: s for fp, s in frames.items() if w0 <= s["send"] < w1}
    got = {}
    for l in open(seen_path):
        r = json.loads(l)
        if r["fp"] in window and r["fp"] not in got:
            got[r["fp"]] = r
    rows = {"got - send (end to end)": [], "listed - send": [], "pdt - send": [], "got - pdt": []}
    for fp, r in got.items():
        s = window[fp]["send"]
        rows["got - send (end to end)"].append(r["got"] - s)
        rows["listed - send"].append(r["listed"] - s)
        if r["pdt"] is not None:
            rows["pdt - send"].append(r["pdt"] - s)
            rows["got - pdt"].append(r["got"] - r["pdt"])
    print(f"frames sent in window {len(window)}, seen in LL-HLS parts {len(got)}, missing {len(window) - len(got)}")
    print(f"{'ms':<26} {'p50':>7} {'p90':>7} {'max':>7} {'min':>7}")
    for k, xs in rows.items():
        if xs:
            print(f"{k:<26} {pct(xs, 50) * 1000:7.0f} {pct(xs, 90) * 1000:7.0f} {max(xs) * 1000:7.0f} {min(xs) * 1000:7.0f}")
    e2e = rows["got - send (end to end)"]
    if e2e:
        p50 = pct(e2e, 50)
        limit = 1.0 + latency_s
        print(f"end-to-end p50 {p50 * 1000:.0f} ms; target <= 1.0 s + SRT latency = {limit * 1000:.0f} ms: "
              f"{'MET' if p50 <= limit and len(got) == len(window) else 'NOT MET'}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "send":
        send(sys.argv[2], "127.0.0.1", int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    elif mode == "poll":
        poll(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        report(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
PY

# run LATENCY (e.g. 200ms): one fresh server, one publisher, one client; prints the report.
run() {
    local lat=$1 ms=${1%ms} dir=$WORK/$1 pid key http srt udp slt
    mkdir -p "$dir"
    SERVER_ENV=(
        TIDECAST__SERVER__DATA_DIR="$dir" TIDECAST__DATABASE__URL="sqlite://$dir/tidecast.db"
        TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0
        TIDECAST__SRT__LISTEN=127.0.0.1:0 TIDECAST__SRT__LATENCY="$lat" RUST_LOG=info
    )
    lt_serve "$lat" "$dir/server.log"
    pid=$SERVER_PID http=$HTTP srt=$(lt_listen_addr srt)
    key=$(grep -o 'live_[0-9a-f]\{64\}' "$dir/server.out" | head -1)
    [[ -n $http && -n $srt && -n $key ]] || die "$lat: no address or key in $dir/server.log / server.out"
    udp=$(free_port)
    # udp:// in, srt:// caller out; the stream id's `publish:live/<key>` form (a URI cannot carry
    # the raw '#' of the `#!::` form through srt-live-transmit's parser).
    srt-live-transmit -a:no -ll:error "udp://127.0.0.1:$udp" \
        "srt://$srt?mode=caller&latency=$ms&streamid=publish:live/$key" >"$dir/slt.log" 2>&1 &
    slt=$!; PIDS+=("$slt")
    sleep 1
    kill -0 "$slt" 2>/dev/null || die "$lat: srt-live-transmit exited; see $dir/slt.log"
    local now end
    now=$(date +%s.%N)
    end=$(python3 -c "print($now + $WARMUP + $DURATION + 4)")
    python3 "$WORK/lat.py" send "$TS" "$udp" "$dir/sent.jsonl" "$end" &
    local sender=$!; PIDS+=("$sender")
    # The client starts once the media playlist exists and follows it until the sender is done.
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$http/live/main/source/index.m3u8") == 200 ]] && break
        sleep 0.1
    done
    python3 "$WORK/lat.py" poll "http://$http/live/main/source/index.m3u8" "$dir/seen.jsonl" "$end" &
    local poller=$!; PIDS+=("$poller")
    wait "$sender" || die "$lat: the sender failed"
    wait "$poller" || die "$lat: the client failed"
    # Both have exited and been reaped: forget their PIDs rather than signal them later.
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$sender" || $p == "$poller" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    local m
    m=$(curl -s "http://$http/metrics")
    echo "--- srt.latency $lat (caller latency=$ms ms)"
    python3 "$WORK/lat.py" report "$dir/sent.jsonl" "$dir/seen.jsonl" "$WARMUP" "$DURATION" "$(python3 -c "print($ms / 1000)")"
    echo "srt counters (in): $(grep -E '^tidecast_srt_(packets_(lost|dropped|retransmitted)_total\{direction="in"\}|ts_gaps_total|dropped_units_total)' <<<"$m" | sed 's/tidecast_srt_//; s/{direction="in"}//' | tr '\n' ' ')"
    echo "server log WARN/ERROR lines: $(grep -c ' WARN \| ERROR ' "$dir/server.log" || true)"
    stop_pid "$slt"
    stop_pid "$pid"
}

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); window ${DURATION}s after ${WARMUP}s"
for lat in $LATENCIES; do
    run "$lat"
done
