#!/usr/bin/env bash
# The transcode ladder (source + 480p + 360p + Opus from one 720p30 stream), against the issue's
# three targets, in one run on this machine:
#
#   1. real time   the ladder's ffmpeg keeps up with a 720p30 publisher: the media time each rung's
#                  LL-HLS playlist gains per second of wall clock (10 s spans, sampled every 1 s),
#                  how far each rung trails the source (and whether that grows), ffmpeg's own speed
#                  (tidecast_transcode_speed_ratio buckets), and the CPU of tidecast alone and of
#                  its ffmpeg child (the publisher is a separate process, counted apart).
#   2. overhead    side by side in one window: (a) tidecast with the ladder, fed by the publisher,
#                  and (b) one plain ffmpeg with the child's own arguments (read from
#                  /proc/<child>/cmdline) but reading the test file in real time (-re) and writing
#                  to /dev/null. CPU of (a) tidecast + child against (b), and the ratio. Then a
#                  fresh tidecast with the ladder off (passthrough) and the same publisher, so
#                  tidecast's own CPU with and without the ladder can be compared.
#   3. latency     hls.js (lowLatencyMode, the watch page's own player code) in headless Chromium,
#                  two players at once: the source's media playlist and the 360p one. PDT latency
#                  (Date.now() - hls.playingDate) p50/p90 of each and the difference.
#
# The publisher is ffmpeg copying the cached 30 s 720p30 3 Mbps test stream (testsrc2 + sine,
# libx264 veryfast, -g 60, AAC; common.sh's ensure_input) in a loop at real time (-re
# -stream_loop -1) over RTMP; it does not encode, so it costs little, and its CPU is never part of
# a server figure (/proc/<pid>/stat of tidecast counts tidecast's own threads only; the child's
# time is read from the child's own stat).
#
# Usage: bash loadtest/ladder.sh
# Environment (all optional):
#   DURATION=60       target 1 window, seconds (20..300)
#   SIDE_BY_SIDE=30   target 2 window with the plain ffmpeg beside, seconds (10..300)
#   PASSTHROUGH=30    the ladder-off window, seconds (10..300)
#   PLAY_SECONDS=30   target 3 sampling window of each player, seconds (10..300)
#   WARMUP=15         after the ladder's playlists exist, before measuring (5..120); longer than
#                     the ffmpeg start-up and a few 2 s segments
#   CARGO_TARGET_DIR  default ~/.cache/tidecast-target
#   LOADTEST_CACHE    where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   KEEP=1            keep the temp dir (server logs, the players' JSON reports, samples)
#   TIDECAST_BIN      run this tidecast binary instead (no build)
# Needs: ffmpeg (libx264, libopus), curl, python3, node, /usr/bin/chromium and `npm ci` in
# tests/browser (done here when missing). Everything runs on 127.0.0.1 (servers bind port 0 and
# the script reads the ports from the log) and every process this script starts is ended by its
# PID on exit. Takes about 4 minutes with the defaults (plus a build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
DURATION=${DURATION:-60}
SIDE_BY_SIDE=${SIDE_BY_SIDE:-30}
PASSTHROUGH=${PASSTHROUGH:-30}
PLAY_SECONDS=${PLAY_SECONDS:-30}
WARMUP=${WARMUP:-15}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
CHANNEL=ladder
SPAN=10   # seconds of wall clock per speed figure: one 200 ms part is 2 % of it

die() { echo "ladder.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
in_range() { [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= $3 && $2 <= $4 )) || die "$1 must be $3..$4"; }

in_range DURATION "$DURATION" 20 300
in_range SIDE_BY_SIDE "$SIDE_BY_SIDE" 10 300
in_range PASSTHROUGH "$PASSTHROUGH" 10 300
in_range PLAY_SECONDS "$PLAY_SECONDS" 10 300
in_range WARMUP "$WARMUP" 5 120
for tool in ffmpeg curl python3 node; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing; run tests/run.sh"
if [[ ! -f $ROOT/tests/browser/node_modules/hls.js/dist/hls.min.js ]]; then
    (cd "$ROOT/tests/browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2)
fi

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-ladder
lt_tidecast
ensure_input

# ---------------------------------------------------------------------------------------------
# The Python half: sampling a window (playlists, /proc, /metrics), the plain ffmpeg's arguments,
# the player page, and the final arithmetic. Bash starts and stops processes; Python counts.
cat >"$WORK/ladder.py" <<'PY'
import datetime, json, os, re, sys, time, urllib.request

TICKS = os.sysconf("SC_CLK_TCK")

def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except Exception:
        return None

def cpu_ticks(pid):
    """utime + stime of one process (its own threads, not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return None

def runq_wait_ns(pid):
    """Time all of a process's threads spent runnable but waiting for a CPU (schedstat field 2,
    ns): how much a process was held back by others' load rather than by its own work."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[1])
            except OSError:
                pass               # a thread that ended between listdir and open
    except OSError:
        return None
    return total

def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    total = sum(v)
    return total - v[3] - v[4], total          # busy (not idle, not iowait), all

def pdt(s):
    return datetime.datetime.fromisoformat(s.strip().replace("Z", "+00:00")).timestamp()

def playlist_end(text):
    """The program date time at the end of the newest part or segment of a media playlist
    (epoch seconds), or None. Segments carry EXTINF and a URI; the parts of the segment being
    made are listed before it, so parts after the last segment URI extend its end."""
    if not text:
        return None
    cur, parts, seg_dur = None, 0.0, None
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            cur = pdt(line.split(":", 1)[1])
            parts = 0.0
        elif line.startswith("#EXTINF:"):
            seg_dur = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-PART:"):
            m = re.search(r"DURATION=([0-9.]+)", line)
            if m:
                parts += float(m.group(1))
        elif line and not line.startswith("#") and seg_dur is not None:
            if cur is not None:
                cur += seg_dur
            seg_dur, parts = None, 0.0
    return None if cur is None else cur + parts

def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, -(-p * len(xs) // 100) - 1))]

def histogram(text, name, label):
    """{le: cumulative count} of one histogram series in a /metrics text."""
    out = {}
    for line in (text or "").splitlines():
        if line.startswith(name + "_bucket{") and label in line:
            le = re.search(r'le="([^"]+)"', line).group(1)
            out[le] = float(line.rsplit(" ", 1)[1])
    return out

def counter(text, name):
    for line in (text or "").splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0

def f(x, n=3):
    return "n/a" if x is None else f"{x:.{n}f}"

def window(seconds, http, channel, renditions, pids, span):
    """Sample every second for `seconds`: playlist ends of each rendition, CPU ticks of each
    named process, the machine's busy time; print `key value` lines."""
    base = f"http://{http}/live/{channel}"
    m0 = fetch(f"http://{http}/metrics")
    samples = []
    for i in range(seconds + 1):           # bounded: one sample a second
        t_next = time.time() + 1
        s = {"t": time.time(), "cpu": {n: cpu_ticks(p) for n, p in pids.items()},
             "wait": {n: runq_wait_ns(p) for n, p in pids.items()}, "mach": machine()}
        s["end"] = {r: playlist_end(fetch(f"{base}/{r}/index.m3u8")) for r in renditions}
        samples.append(s)
        if i < seconds:
            time.sleep(max(0.0, t_next - time.time()))
    m1 = fetch(f"http://{http}/metrics")
    a, b = samples[0], samples[-1]
    secs = b["t"] - a["t"]
    print(f"window_s {secs:.1f}")
    for n in pids:
        c0, c1 = a["cpu"][n], b["cpu"][n]
        v = None if c0 is None or c1 is None else (c1 - c0) / TICKS / secs * 100
        print(f"cpu_{n} {f(v, 1)}")
        w0, w1 = a["wait"][n], b["wait"][n]
        w = None if w0 is None or w1 is None else (w1 - w0) / 1e9 / secs * 100
        print(f"runq_wait_{n} {f(w, 1)}")
    print(f"machine_busy_pct {(b['mach'][0] - a['mach'][0]) / (b['mach'][1] - a['mach'][1]) * 100:.1f}")
    src = renditions[0]
    for r in renditions:
        ends = [s["end"][r] for s in samples]
        # Speed: media time the playlist gained per wall second over each SPAN-second stretch.
        speeds = [(ends[i + span] - ends[i]) / (samples[i + span]["t"] - samples[i]["t"])
                  for i in range(len(samples) - span)
                  if ends[i] is not None and ends[i + span] is not None]
        whole = None
        if ends[0] is not None and ends[-1] is not None:
            whole = (ends[-1] - ends[0]) / secs
        ages = [s["t"] - e for s, e in zip(samples, ends) if e is not None]
        print(f"speed_{r} min {f(min(speeds) if speeds else None)} p50 {f(pct(speeds, 50))} "
              f"whole {f(whole)} spans {len(speeds)}")
        print(f"edge_age_{r} p50 {f(pct(ages, 50))} max {f(max(ages) if ages else None)}")
        if r != src:
            lags = [s["end"][src] - e for s, e in zip(samples, ends) if e is not None and s["end"][src] is not None]
            if lags:
                # Growth: the last 5 samples' mean against the first 5 (one part of noise each).
                g = sum(lags[-5:]) / len(lags[-5:]) - sum(lags[:5]) / len(lags[:5])
                print(f"lag_{r} min {f(min(lags))} max {f(max(lags))} growth {f(g)}")
            else:
                print(f"lag_{r} min n/a max n/a growth n/a")
    # ffmpeg's own speed figure (its cumulative average since it started), per window.
    name, label = "tidecast_transcode_speed_ratio", 'rung_class="480p"'
    h0, h1 = histogram(m0, name, label), histogram(m1, name, label)
    if h1:
        les = sorted(h1, key=lambda k: float("inf") if k == "+Inf" else float(k))
        delta = {le: h1[le] - h0.get(le, 0) for le in les}
        lowest = next((le for le in les if delta[le] > 0), None)
        below1 = delta.get("0.9", 0)
        print(f"ffmpeg_speed_obs {delta['+Inf']:.0f} lowest_bucket_le {lowest} at_or_below_0.9 {below1:.0f} "
              f"at_or_below_1.0 {delta.get('1.0', delta.get('1', 0)):.0f}")
        lowest_ever = next((le for le in les if h1[le] > 0), None)
        print(f"ffmpeg_speed_lowest_bucket_since_start le {lowest_ever} of {h1['+Inf']:.0f}")
    for c in ("tidecast_transcode_frames_dropped_total", "tidecast_transcode_restarts_total"):
        print(f"{c} {counter(m1, c) - counter(m0, c):.0f} ({counter(m1, c):.0f} since start)")

def plain_args(child_pid, input_file):
    """The ladder child's arguments with the file as its real-time input and /dev/null outputs."""
    with open(f"/proc/{child_pid}/cmdline", "rb") as fh:
        argv = [a.decode() for a in fh.read().split(b"\0") if a]
    out, i = ["-y"], 1
    while i < len(argv):
        a = argv[i]
        if a == "-protocol_whitelist":         # pipes only, for the child; the file needs `file`
            i += 2
            continue
        if a == "-f" and i + 3 < len(argv) and argv[i + 2] == "-i" and argv[i + 3] == "pipe:0":
            out += ["-re", "-stream_loop", "-1", "-i", input_file]
            i += 4
            continue
        out.append("/dev/null" if re.fullmatch(r"pipe:[3-9]", a) else a)
        i += 1
    print("\0".join([argv[0]] + out), end="")

def page(watch_html, src):
    """The watch page with its player pointed at one media playlist (same hls.js config and
    catch-up code as /watch/<channel>)."""
    html, n = re.subn(r'var src = [^\n]*;', f'var src = "{src}";', watch_html, count=1)
    if n != 1:
        sys.exit("the watch page has no `var src = ...;` line")
    print(html, end="")

def player(path):
    """p50/p90 PDT latency and health of one play.mjs report."""
    r = json.loads(open(path).read().strip().splitlines()[-1])
    if r.get("error"):
        print(f"error {r['error']}")
        return
    p = r["pdt_latency_s"]
    print(f"pdt_p50 {f(p['p50'])}\npdt_p90 {f(p.get('p90'))}\npdt_n {p['n']}")
    print(f"latency_p50 {f(r['latency_s']['p50'])}")
    print(f"stalls {r['stalls_after_start']}\nerrors {r['errors_total']}\nfatal {r['errors_fatal']}")
    print(f"parts {r['parts_loaded']}\nll {r['ll_engaged']}\nstarted_s {r['time_to_play_s']}")
    print(f"dropped {r['dropped_frames']}/{r['total_frames']}\nhls {r['hls_version']}")

cmd = sys.argv[1]
if cmd == "window":
    secs, http, channel, rends, pids, span = sys.argv[2:8]
    window(int(secs), http, channel, rends.split(","),
           dict(kv.split("=") for kv in pids.split(",")), int(span))
elif cmd == "plain-args":
    plain_args(sys.argv[2], sys.argv[3])
elif cmd == "page":
    page(sys.stdin.read(), sys.argv[2])
elif cmd == "player":
    player(sys.argv[2])
PY
py() { python3 "$WORK/ladder.py" "$@"; }
# val FILE KEY [FIELD]: the FIELD-th word (default 2) of the line starting with KEY.
val() { awk -v k="$2" -v n="${3:-2}" '$1 == k { print $n; exit }' "$1"; }

# Pages for the players: hls.js from node_modules and the watch page per rendition (below).
mkdir -p "$WORK/static"
cp "$ROOT/tests/browser/node_modules/hls.js/dist/hls.min.js" "$WORK/static/"

# start_server NAME LADDER(true|false): a fresh tidecast in $WORK/NAME with one channel; sets
# SERVER_PID, HTTP, RTMP, KEY, SLOG.
start_server() {
    local dir=$WORK/$1
    mkdir -p "$dir"
    SERVER_ENV=(
        TIDECAST__TRANSCODE__ENABLED="$2"
        TIDECAST__SERVER__DATA_DIR="$dir" TIDECAST__DATABASE__URL="sqlite://$dir/tidecast.db"
        TIDECAST__SERVER__CREATE_DEFAULT_CHANNEL=false
        TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0
        TIDECAST__SRT__LISTEN=127.0.0.1:0
        TIDECAST__HTTP__STATIC_DIR="$WORK/static" TIDECAST__HTTP__HLSJS_URL=/static/hls.min.js
        RUST_LOG=info
    )
    KEY=$(env "${SERVER_ENV[@]}" "$TIDECAST" channel create "$CHANNEL" 2>>"$dir/cli.log" | tail -1)
    [[ $KEY == live_* ]] || die "channel create printed no key; see $dir/cli.log"
    lt_serve "$1" "$dir/server.log"
}

# start_publisher NAME: the test file, copied (no encode), looped in real time; sets PUB_PID.
start_publisher() {
    ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$INPUT" -c copy \
        -f flv "rtmp://$RTMP/live/$KEY" 2>>"$WORK/$1/publisher.log" &
    PUB_PID=$!; PIDS+=("$PUB_PID")
}

# wait_playlist RENDITION SECONDS: until its media playlist answers 200 with parts.
wait_playlist() {
    local i
    for (( i = 0; i < $2 * 5; i++ )); do
        curl -s --max-time 2 "http://$HTTP/live/$CHANNEL/$1/index.m3u8" | grep -q '^#EXT-X-PART:' && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || die "tidecast exited; see $SLOG"
        sleep 0.2
    done
    return 1
}

log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "$(ffmpeg -version | head -1)"

# --- Run 1: the ladder on. Targets 1, 2 (side by side) and 3 on one server, in turn. ---------
start_server ladder true
log "ladder: tidecast $SERVER_PID on http $HTTP rtmp $RTMP; publishing $INPUT (looped, -re)"
start_publisher ladder
wait_playlist source 30 || die "no source playlist after 30 s; see $SLOG"
wait_playlist 360p 60 || die "no 360p playlist after 60 s (is the ladder on? ffmpeg libx264?); see $SLOG"
CHILD_PID=$(grep 'transcoder started' "$SLOG" | grep -o ' pid=[0-9]*' | tail -1 | cut -d= -f2)
[[ -n $CHILD_PID && -r /proc/$CHILD_PID/cmdline ]] || die "no live transcoder pid in $SLOG"
# The child must be tidecast's own (PPid), not some other ffmpeg on the machine.
[[ $(awk '/^PPid:/ { print $2 }' "/proc/$CHILD_PID/status") == "$SERVER_PID" ]] \
    || die "pid $CHILD_PID is not a child of tidecast $SERVER_PID"
log "ladder child ffmpeg pid $CHILD_PID: $(tr '\0' ' ' <"/proc/$CHILD_PID/cmdline")"
curl -s "http://$HTTP/live/$CHANNEL/index.m3u8" | grep -o '[a-z0-9]*/index.m3u8' | sort -u | tr '\n' ' ' \
    | sed 's/^/== multivariant lists: /' >&2; echo >&2
log "warm-up ${WARMUP}s"
sleep "$WARMUP"

# Target 1: the ladder alone (nothing else heavy on the machine), DURATION seconds.
log "target 1: ladder alone, ${DURATION}s window"
py window "$DURATION" "$HTTP" "$CHANNEL" source,480p,360p \
    "tidecast=$SERVER_PID,child=$CHILD_PID,publisher=$PUB_PID" "$SPAN" >"$WORK/t1.result"

# Target 2 (a)+(b): the plain ffmpeg beside it, from the child's own arguments.
mapfile -d '' PLAIN < <(py plain-args "$CHILD_PID" "$INPUT")
log "target 2: plain ffmpeg: ${PLAIN[*]}"
"${PLAIN[@]}" 2>"$WORK/plain.log" &
PLAIN_PID=$!; PIDS+=("$PLAIN_PID")
sleep 8   # its probe and start-up, out of the window
kill -0 "$PLAIN_PID" 2>/dev/null || die "the plain ffmpeg exited; see $WORK/plain.log"
# Its own progress (time= of the stats line) at both ends of the window: did it keep real time?
plain_time() { tr '\r' '\n' <"$WORK/plain.log" | grep -o 'time=[0-9:.]*' | tail -1 | cut -d= -f2 \
    | awk -F: '{ print $1 * 3600 + $2 * 60 + $3 }'; }
pt0=$(plain_time); ptw0=$(date +%s.%N)
log "target 2: side by side, ${SIDE_BY_SIDE}s window"
py window "$SIDE_BY_SIDE" "$HTTP" "$CHANNEL" source,480p,360p \
    "tidecast=$SERVER_PID,child=$CHILD_PID,publisher=$PUB_PID,plain=$PLAIN_PID" "$SPAN" >"$WORK/t2.result"
pt1=$(plain_time); ptw1=$(date +%s.%N)
echo "plain_speed $(python3 -c "print(f'{($pt1 - $pt0) / ($ptw1 - $ptw0):.3f}')")" >>"$WORK/t2.result"
stop_pid "$PLAIN_PID"

# Target 3: two players at once, source and 360p, each on the watch page's player code pointed
# at one media playlist (no ABR switching to blur the comparison).
for r in source 360p; do
    curl -s --max-time 5 "http://$HTTP/watch/$CHANNEL" | py page "/live/$CHANNEL/$r/index.m3u8" >"$WORK/static/play-$r.html"
done
log "target 3: hls.js source and 360p at once, ${PLAY_SECONDS}s each"
PLAYERS=()
for r in source 360p; do
    timeout $(( PLAY_SECONDS + 120 )) node "$ROOT/tests/browser/play.mjs" \
        "http://$HTTP/static/play-$r.html" "$PLAY_SECONDS" >"$WORK/play-$r.json" 2>"$WORK/play-$r.log" &
    PLAYERS+=("$!"); PIDS+=("$!")
done
# Meanwhile the ladder's figures under the players' load (Chromium decodes on the same 2 cores).
py window "$PLAY_SECONDS" "$HTTP" "$CHANNEL" source,480p,360p \
    "tidecast=$SERVER_PID,child=$CHILD_PID" "$SPAN" >"$WORK/t3.window"
for p in "${PLAYERS[@]}"; do wait "$p" || true; done
for r in source 360p; do py player "$WORK/play-$r.json" >"$WORK/t3-$r.result"; done
RESTARTS=$(grep -c 'transcoder started' "$SLOG" || true)
stop_pid "$PUB_PID"
stop_pid "$SERVER_PID"

# --- Run 2: the ladder off (passthrough), the same publisher: tidecast's own CPU. -----------
start_server passthrough false
log "passthrough: tidecast $SERVER_PID on http $HTTP rtmp $RTMP"
start_publisher passthrough
wait_playlist source 30 || die "no source playlist after 30 s; see $SLOG"
sleep "$WARMUP"
log "passthrough: ${PASSTHROUGH}s window"
py window "$PASSTHROUGH" "$HTTP" "$CHANNEL" source "tidecast=$SERVER_PID,publisher=$PUB_PID" "$SPAN" \
    >"$WORK/pass.result"
stop_pid "$PUB_PID"
stop_pid "$SERVER_PID"

# --- Report -------------------------------------------------------------------------------------
for f in t1 t2 pass; do echo "--- $f: $(case $f in t1) echo "target 1, ladder alone";; t2) echo "target 2, ladder + plain ffmpeg side by side";; pass) echo "ladder off (passthrough)";; esac)"; cat "$WORK/$f.result"; done
echo "--- target 3, the ladder while both players ran"; cat "$WORK/t3.window"
for r in source 360p; do echo "--- target 3, player $r"; cat "$WORK/t3-$r.result"; done

python3 - "$WORK" "$SPAN" "$RESTARTS" "$(nproc)" <<'EOF'
import sys
work, span, starts, NCPU = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def read(name):
    d = {}
    for line in open(f"{work}/{name}"):
        k, _, v = line.strip().partition(" ")
        d[k] = v
    return d
def num(s, field=0):
    try:
        return float(s.split()[field])
    except (ValueError, IndexError, AttributeError):
        return None
def word(s, key):   # "min 0.99 p50 1.0 ..." -> the number after key
    w = (s or "").split()
    return num(w[w.index(key) + 1]) if key in w else None
t1, t2, ps = read("t1.result"), read("t2.result"), read("pass.result")
p_src, p_low = read("t3-source.result"), read("t3-360p.result")
ok = lambda b: "MET" if b else "NOT MET"
tol = 0.2 / span   # one 200 ms part of quantisation per span
print()
print("=== ladder.sh summary")
# 1
mins = [word(t1.get(f"speed_{r}"), "min") for r in ("480p", "360p")]
p50s = [word(t1.get(f"speed_{r}"), "p50") for r in ("480p", "360p")]
growth = [word(t1.get(f"lag_{r}"), "growth") for r in ("480p", "360p")]
lagmax = [word(t1.get(f"lag_{r}"), "max") for r in ("480p", "360p")]
c_srv, c_child, c_pub = num(t1.get("cpu_tidecast")), num(t1.get("cpu_child")), num(t1.get("cpu_publisher"))
met1 = (None not in mins + growth) and min(mins) >= 1 - tol and max(growth) < 0.5 and starts == 1
print(f"target 1  720p30 ladder keeps real time (speed >= 1.0x at all times)")
print(f"          rung speed over {span} s spans, min / p50: 480p {mins[0]} / {p50s[0]}, 360p {mins[1]} / {p50s[1]}"
      f"  (tolerance {tol:.2f}: one part)")
print(f"          rung lag behind source: max 480p {lagmax[0]} s, 360p {lagmax[1]} s; growth over the window "
      f"{growth[0]} s / {growth[1]} s; transcoder starts {starts}")
print(f"          ffmpeg's own speed (histogram): {t1.get('ffmpeg_speed_obs', 'n/a')}")
print(f"          CPU (% of one core): tidecast {c_srv}, ffmpeg child {c_child} "
      f"(= {c_child / 100 if c_child is not None else float('nan'):.2f} cores), publisher {c_pub} (not counted); "
      f"machine busy {t1.get('machine_busy_pct')} % of {NCPU} cores")
# Other load on the machine (not ours) takes cores from the ladder; say how much there was.
def others(d, ours):
    busy = num(d.get("machine_busy_pct"))
    return None if busy is None else busy * NCPU / 100 * 100 - sum(num(d.get(f"cpu_{n}")) or 0 for n in ours)
o1 = others(t1, ("tidecast", "child", "publisher"))
print(f"          other processes on the machine meanwhile: {o1:.0f} % of one core; the child's threads "
      f"waited for a CPU {t1.get('runq_wait_child')} % of one core (run queue, summed over threads)")
print(f"          -> {ok(met1)}")
# 2
a = (num(t2.get("cpu_tidecast")) or 0) + (num(t2.get("cpu_child")) or 0)
b = num(t2.get("cpu_plain"))
ratio = a / b if b else None
srv_l, srv_p = num(t1.get("cpu_tidecast")), num(ps.get("cpu_tidecast"))
print(f"target 2  CPU overhead over one plain ffmpeg making the same renditions, side by side: at most +10 %")
print(f"          (a) tidecast {t2.get('cpu_tidecast')} + child {t2.get('cpu_child')} = {a:.1f} %   "
      f"(b) plain ffmpeg {b} %   ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)" if ratio else "          n/a")
print(f"          plain ffmpeg speed over the window {t2.get('plain_speed')}; ladder rung speed min "
      f"480p {word(t2.get('speed_480p'), 'min')} 360p {word(t2.get('speed_360p'), 'min')}; "
      f"machine busy {t2.get('machine_busy_pct')} % of {NCPU} cores")
print(f"          other processes on the machine meanwhile: {others(t2, ('tidecast', 'child', 'publisher', 'plain')):.0f} % of one core")
print(f"          tidecast alone: ladder on {srv_l} % (target 1 window), ladder off (passthrough) {srv_p} %"
      + (f": the ladder adds {srv_l - srv_p:.1f} % of a core inside tidecast" if None not in (srv_l, srv_p) else ""))
print(f"          -> {ok(ratio is not None and ratio <= 1.10)}")
# 3
ls, ll = num(p_src.get("pdt_p50")), num(p_low.get("pdt_p50"))
print(f"target 3  hls.js PDT latency of 360p: p50 at most 0.3 s above the source's, same run")
for name, p in (("source", p_src), ("360p  ", p_low)):
    if "error" in p:
        print(f"          {name}: error {p['error']}")
    else:
        print(f"          {name}: p50 {p.get('pdt_p50')} s  p90 {p.get('pdt_p90')} s  (n {p.get('pdt_n')}, "
              f"stalls {p.get('stalls')}, errors {p.get('errors')}, parts {p.get('parts')}, LL {p.get('ll')})")
diff = None if None in (ls, ll) else ll - ls
d90 = None if None in (num(p_src.get("pdt_p90")), num(p_low.get("pdt_p90"))) else num(p_low["pdt_p90"]) - num(p_src["pdt_p90"])
print(f"          (ladder during playback: rung lag behind source max {word(read('t3.window').get('lag_360p'), 'max')} s, "
      f"child run-queue wait {read('t3.window').get('runq_wait_child')} %, "
      f"machine busy {read('t3.window').get('machine_busy_pct')} % of {NCPU} cores)")
print(f"          difference 360p - source: p50 {'n/a' if diff is None else f'{diff:+.3f}'} s, "
      f"p90 {'n/a' if d90 is None else f'{d90:+.3f}'} s")
# A source player that is itself far behind (tests/hlsjs_play.rs bounds its PDT p50 at 2.5 s)
# was starved or stalled at start: then the difference says nothing about the ladder.
if ls is not None and ls >= 2.5:
    print(f"          -> INCONCLUSIVE (the source player itself at p50 {ls:.3f} s >= 2.5 s; "
          f"difference would be {'n/a' if diff is None else f'{diff:+.3f}'} s)")
else:
    print(f"          -> {ok(diff is not None and diff <= 0.3)}")
if max(o1 or 0, others(t2, ("tidecast", "child", "publisher", "plain")) or 0) > 50:
    print("note      other processes used more than half a core during the windows: the figures are "
          "from a busy machine (speeds and latencies suffer first; CPU times much less)")
EOF
