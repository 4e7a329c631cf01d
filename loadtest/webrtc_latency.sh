#!/usr/bin/env bash
# WebRTC latency as the viewer sees it, read from the picture: a release build of tidecast, and
# one headless Chromium (loadtest/webrtc_latency.mjs) whose page A publishes over WHIP a canvas
# stream with the wall clock drawn into every frame as a barcode (plus the fake microphone, Opus),
# page B plays it over WHEP and reads the barcode back from every presented frame, and page C
# plays the channel's LL-HLS through the watch page (hls.js, low-latency mode) and reads the same
# barcode. Figures, each against the issue's target:
#
#   WHIP -> WHEP glass to glass    presented wall clock - drawn wall clock, per frame, over
#                                  WHEP_SECONDS after SETTLE           target p50 < 150 ms
#   WHEP first frame               POST /whep -> first presented frame, TRIALS fresh sessions
#                                                                  target p50 < 300 ms
#   WHIP -> LL-HLS                 Date.now() - hls.playingDate (PDT latency, as hls_latency.sh
#                                  does for RTMP)                  target p50 <= 1.0 s
#                                  and glass to glass from the barcode (no target; the truth)
#   baseline                       the same canvas page to page over a direct connection (no
#                                  server): what the browsers alone cost
#   server side (SNIFF=1, root)    from the wire on lo (python3, AF_PACKET with kernel receive
#                                  timestamps; SRTP leaves RTP headers in the clear): per WHEP
#                                  video frame, the server's last packet out - the publisher's
#                                  last packet in (matched by RTP timestamp); the publisher's
#                                  first RTCP sender report per stream (the ingest holds frames
#                                  until every stream has had one); pauses in its video
#
# Usage: bash loadtest/webrtc_latency.sh
# Environment (all optional):
#   WHEP_SECONDS=20  WHEP glass-to-glass window (5..120)
#   SETTLE=2         seconds dropped at the start of each playing phase (0..10)
#   TRIALS=5         WHEP first-frame sessions (1..20)
#   HLS_SECONDS=20   LL-HLS window (5..120)
#   P2P_SECONDS=8    baseline window (0 skips it)
#   WIDTH=640 HEIGHT=360  the canvas
#   AUDIO=1          0: publish video only
#   SPLIT_AV=0       1: the WHEP player puts the answer's audio in a stream of its own, so the
#                    browser does not delay video to lip-sync it (an experiment)
#   PART_TARGET=200ms     hls.part_target
#   SERVER_ENV_EXTRA="VAR=value ..."  more server environment, for experiments
#   OUT              where the JSON line goes (default a file in the temp dir, printed at the end)
#   CARGO_TARGET_DIR default ~/.cache/tidecast-target; TIDECAST_BIN runs that binary instead
#   SNIFF            1 (the default as root): the server-side figures; 0: without
#   KEEP=1           keep the temp dir (server log)
# Needs: node, /usr/bin/chromium and `npm ci` in tests/browser (done here when missing); python3
# and CAP_NET_RAW for SNIFF=1.
# Loopback only; the run stops by itself (about 85 s with the defaults, hard limit in the
# script); every process it starts is ended by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
WHEP_SECONDS=${WHEP_SECONDS:-20}
SETTLE=${SETTLE:-2}
TRIALS=${TRIALS:-5}
HLS_SECONDS=${HLS_SECONDS:-20}
P2P_SECONDS=${P2P_SECONDS:-8}
PART_TARGET=${PART_TARGET:-200ms}
SNIFF=${SNIFF:-$([[ $(id -u) == 0 ]] && echo 1 || echo 0)}

die() { echo "webrtc_latency.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

int_in() { [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= $3 && $2 <= $4 )) || die "$1 must be $3..$4"; }
int_in WHEP_SECONDS "$WHEP_SECONDS" 5 120
int_in SETTLE "$SETTLE" 0 10
int_in TRIALS "$TRIALS" 1 20
int_in HLS_SECONDS "$HLS_SECONDS" 5 120
int_in P2P_SECONDS "$P2P_SECONDS" 0 60
command -v node >/dev/null || die "node is not installed (tests/run.sh installs it)"
[[ -x ${CHROMIUM:-/usr/bin/chromium} ]] || die "${CHROMIUM:-/usr/bin/chromium} missing (tests/run.sh installs it)"
if [[ ! -f $ROOT/tests/browser/node_modules/hls.js/dist/hls.min.js || ! -d $ROOT/tests/browser/node_modules/playwright-core ]]; then
    (cd "$ROOT/tests/browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2)
fi

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-webrtc-latency
lt_tidecast
OUT=${OUT:-$WORK/report.json}

SERVER_ENV=(
    TIDECAST__SERVER__DATA_DIR="$WORK" TIDECAST__DATABASE__URL="sqlite://$WORK/tidecast.db"
    TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0 TIDECAST__SRT__LISTEN=127.0.0.1:0
    TIDECAST__HLS__PART_TARGET="$PART_TARGET"
    TIDECAST__HTTP__STATIC_DIR="$ROOT/tests/browser/node_modules/hls.js/dist"
    TIDECAST__HTTP__HLSJS_URL=/static/hls.min.js
    RUST_LOG=info
)
# shellcheck disable=SC2206
[[ -n ${SERVER_ENV_EXTRA:-} ]] && SERVER_ENV+=($SERVER_ENV_EXTRA)
lt_serve webrtc "$WORK/server.log"
KEY=$(grep -o 'live_[0-9a-f]\{64\}' "$WORK/server.out" | head -1)
WEBRTC=$(lt_listen_addr webrtc)
[[ -n $KEY && -n $WEBRTC ]] || die "no stream key or WebRTC listening line; see $WORK/server.log"
log "tidecast (release) on http://$HTTP, WebRTC UDP $WEBRTC, part target $PART_TARGET"

SNIFFER=""
if [[ $SNIFF == 1 ]]; then
    cat >"$WORK/sniff.py" <<'PY'
"""Server-side timing from the wire: every UDP datagram to or from the server's WebRTC port on
lo, with the kernel's receive timestamp (AF_PACKET, SO_TIMESTAMPNS; needs CAP_NET_RAW). SRTP
and SRTCP leave the RTP header and the first 8 bytes of RTCP in the clear, which is all this
reads. Run until SIGTERM, then write a JSON summary:

  residency   per WHEP viewer and video frame: the server sent the frame's last packet (marker)
              - the publisher's last packet of that frame reached the server. Output frames are
              matched to input frames by RTP timestamp: the server's is the publisher's plus a
              per-viewer constant (both 90 kHz), found as the most common difference. Only
              frames that reached the server after the viewer's first packet count (the frames
              before are the ring's backlog the viewer starts with, counted apart as `backlog`).
  first_sr    per publisher stream: the first RTCP sender report after the stream's first RTP
              packet (the ingest holds every frame until each stream has had one).

Usage: python3 sniff.py PORT OUT.json
"""
import json
import signal
import socket
import struct
import sys
import time
from collections import Counter, defaultdict

PORT = int(sys.argv[1])
OUT = sys.argv[2]
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind(("lo", 0))
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.settimeout(0.3)

# (direction, peer port, ssrc) -> list of (t, seq, ts, marker, size)
rtp = defaultdict(list)
# (peer port, ssrc) -> list of (t, pt)
rtcp = defaultdict(list)
started = time.time()
while not stop:
    try:
        data, anc, _flags, addr = s.recvmsg(65535, 256)
    except socket.timeout:
        continue
    except InterruptedError:
        continue
    if addr[2] == PACKET_OUTGOING:
        continue
    t = None
    for level, kind, d in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", d[:16])
            t = sec + nsec / 1e9
    if t is None:
        t = time.time()
    ip = data[14:]
    if len(ip) < 28 or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
    if PORT not in (sport, dport):
        continue
    p = ip[ihl + 8 :]
    if len(p) < 12 or not (128 <= p[0] <= 191):
        continue  # STUN, DTLS
    inbound = dport == PORT
    peer = sport if inbound else dport
    if 192 <= p[1] <= 223:
        rtcp[(peer, struct.unpack("!I", p[4:8])[0])].append((t, p[1]))
        continue
    seq, ts, ssrc = struct.unpack("!HII", p[2:12])
    rtp[("in" if inbound else "out", peer, ssrc)].append((t, seq, ts, bool(p[1] & 0x80), len(p)))


def kind_of(pkts):
    """'audio' when consecutive timestamps step by 960 (20 ms Opus at 48 kHz), else 'video'."""
    steps = Counter((b[2] - a[2]) & 0xFFFFFFFF for a, b in zip(pkts, pkts[1:]) if b[2] != a[2])
    return "audio" if steps and steps.most_common(1)[0][0] == 960 else "video"


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    i = min(len(xs) - 1, max(0, -(-p * len(xs) // 100) - 1))
    return round(xs[i] * 1000, 2)


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "max": pct(xs, 100), "min": pct(xs, 0)}


def frames(pkts):
    """RTP timestamp -> (first packet time, marker packet time) of each complete frame."""
    out = {}
    first = {}
    for t, _seq, ts, marker, _size in pkts:
        first.setdefault(ts, t)
        if marker and ts not in out:
            out[ts] = (first[ts], t)
    return out


result = {"seconds": round(time.time() - started, 1)}
pub = {k: v for k, v in rtp.items() if k[0] == "in" and len(v) > 50}
pub_video = [k for k, v in pub.items() if kind_of(v) == "video"]
pub_audio = [k for k, v in pub.items() if kind_of(v) == "audio"]
result["publisher_streams"] = {"video": len(pub_video), "audio": len(pub_audio)}


def sr_times(key):
    return [t for t, pt in rtcp.get((key[1], key[2]), []) if pt == 200]


# The sender reports' start-up: the publisher's first RTP packet (any stream) -> each stream's
# first SR, and the interval between SRs.
if pub_video:
    t0 = min(pub[k][0][0] for k in pub_video + pub_audio)
    result["first_sr_after_first_rtp_ms"] = {}
    result["sr_interval_ms"] = {}
    for key in pub_video + pub_audio:
        name = "video" if key in pub_video else "audio"
        srs = sr_times(key)
        later = [t for t in srs if t >= t0]
        result["first_sr_after_first_rtp_ms"][name] = round((later[0] - t0) * 1000, 1) if later else None
        result["sr_interval_ms"][name] = summary([b - a for a, b in zip(srs, srs[1:])])
        result.setdefault("first_rtp_after_first_rtp_ms", {})[name] = round((pub[key][0][0] - t0) * 1000, 1)
if pub_video:
    in_by_ts = frames(pub[pub_video[0]])
    # Pauses in the publisher's video (a starved browser): gaps over 150 ms between frames, as
    # (ms since its first packet, gap ms); the fps of the rest.
    arrivals = sorted(v[1] for v in in_by_ts.values())
    t0v = arrivals[0]
    result["publisher_video_pauses"] = [
        (round((a - t0v) * 1000), round((b - a) * 1000)) for a, b in zip(arrivals, arrivals[1:]) if b - a > 0.15
    ]
    result["publisher_video_fps"] = round((len(arrivals) - 1) / max(arrivals[-1] - t0v, 1e-3), 1)
    viewers = []
    all_live = []
    for key, pkts in rtp.items():
        if key[0] != "out" or len(pkts) < 30 or kind_of(pkts) != "video":
            continue
        vout = frames(pkts)
        joined = pkts[0][0]
        # The constant: the most common (out ts - in ts) over pairs arriving within 3 s.
        diffs = Counter()
        in_list = sorted(in_by_ts.items(), key=lambda kv: kv[1][1])
        for ots, (_, ot) in list(vout.items())[:60]:
            for its, (_, it) in in_list:
                if ot - 3 <= it <= ot:
                    diffs[(ots - its) & 0xFFFFFFFF] += 1
        if not diffs:
            continue
        c, _ = diffs.most_common(1)[0]
        live, backlog, unmatched = [], [], 0
        for ots, (_, ot) in vout.items():
            m = None
            for d in (0, 1, -1):
                its = (ots - c + d) & 0xFFFFFFFF
                if its in in_by_ts:
                    m = in_by_ts[its]
                    break
            if m is None:
                unmatched += 1
                continue
            (live if m[1] >= joined else backlog).append(ot - m[1])
        all_live += live
        viewers.append({
            "peer_port": key[1],
            "frames": len(vout),
            "backlog_frames": len(backlog),
            "backlog_oldest_ms": pct(backlog, 100),
            "unmatched": unmatched,
            "residency_ms": summary(live),
        })
    result["viewers"] = viewers
    result["residency_ms"] = summary(all_live)
with open(OUT, "w") as f:
    json.dump(result, f)
PY
    python3 "$WORK/sniff.py" "${WEBRTC##*:}" "$WORK/sniff.json" 2>"$WORK/sniff.log" &
    SNIFFER=$!; PIDS+=("$SNIFFER")
    sleep 0.5
    kill -0 "$SNIFFER" 2>/dev/null || die "the sniffer exited (SNIFF=0 runs without it); see $WORK/sniff.log"
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
limit=$(( 3 * SETTLE + 30 + WHEP_SECONDS + TRIALS * 6 + HLS_SECONDS + P2P_SECONDS + 120 ))
set +e
WHEP_SECONDS=$WHEP_SECONDS SETTLE=$SETTLE TRIALS=$TRIALS HLS_SECONDS=$HLS_SECONDS P2P_SECONDS=$P2P_SECONDS \
    timeout "$limit" node "$HERE/webrtc_latency.mjs" "$HTTP" "$KEY" main >"$WORK/browser.json" &
node_pid=$!; PIDS+=("$node_pid")
wait "$node_pid"; rc=$?
set -e
keep=(); for p in "${PIDS[@]}"; do [[ $p == "$node_pid" ]] || keep+=("$p"); done; PIDS=("${keep[@]}")
kill -0 "$SERVER_PID" 2>/dev/null || die "tidecast exited during the run; see $WORK/server.log"
if [[ -n $SNIFFER ]]; then
    stop_pid "$SNIFFER"
    [[ -s $WORK/sniff.json ]] || log "the sniffer wrote nothing; see $WORK/sniff.log"
fi
# One JSON line: the browser's report with the server-side figures as "server_side"; those also
# as lines under the table.
python3 - "$WORK/browser.json" "$WORK/sniff.json" "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT" <<'PY'
import json, os, sys
lines = open(sys.argv[1]).read().strip().splitlines()
r = json.loads(lines[-1]) if lines else {"error": "no report from webrtc_latency.mjs"}
r["loadavg_start"], r["loadavg_end"] = sys.argv[3], sys.argv[4]
print(f"load average at the start {sys.argv[3]}, at the end {sys.argv[4]}", file=sys.stderr)
if os.path.exists(sys.argv[2]) and os.path.getsize(sys.argv[2]):
    s = r["server_side"] = json.load(open(sys.argv[2]))
    res = s.get("residency_ms") or {}
    sr = s.get("first_sr_after_first_rtp_ms") or {}
    print(f"server (from the wire): WHEP video frame residency, publisher's last packet in -> viewer's last packet out: "
          f"p50 {res.get('p50')} ms, p95 {res.get('p95')} ms, max {res.get('max')} ms over {res.get('n')} frames "
          f"of {len(s.get('viewers', []))} viewers", file=sys.stderr)
    fr = s.get("first_rtp_after_first_rtp_ms") or {}
    print(f"server (from the wire): publisher's first sender report after its first RTP packet: video {sr.get('video')} ms, "
          f"audio {sr.get('audio')} ms (frames are held until both); first video packet at {fr.get('video')} ms, "
          f"first audio packet at {fr.get('audio')} ms", file=sys.stderr)
    pauses = s.get("publisher_video_pauses") or []
    print(f"server (from the wire): publisher's video {s.get('publisher_video_fps')} fps, {len(pauses)} pauses over 150 ms"
          + (f" (longest {max(p[1] for p in pauses)} ms)" if pauses else ""), file=sys.stderr)
print(json.dumps(r))
PY
cat "$OUT"
log "JSON: $OUT"
if (( rc != 0 )); then
    log "the run failed (exit $rc); server log tail:"
    tail -20 "$WORK/server.log" >&2
    KEEP=1
    exit "$rc"
fi
