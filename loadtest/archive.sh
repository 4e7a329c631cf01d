#!/usr/bin/env bash
# Recording cost: N live channels (default 50) published at once, served passthrough, measured
# twice in the same run on a fresh server each time: recording off ([archive] enabled = false),
# then recording on ([archive] enabled = true, sync = "segment": every segment fsynced with its
# journal). Each window reads the tidecast process only (/proc/<pid>/stat utime+stime, VmRSS of
# /proc/<pid>/status once a second, write_bytes of /proc/<pid>/io: bytes the process caused to
# be written to the storage layer), so the publisher's CPU is never part of a server figure.
#
# The publisher is ONE ffmpeg: the cached 30 s 720p30 3 Mbps test stream (common.sh's
# ensure_input) read once in real time (-re -stream_loop -1), copied (no encode) to N RTMP
# outputs through the tee muxer (each output `onfail=ignore`, so one refused connection does not
# end the others; a channel that is not live is caught below and fails the run).
#
# After the recorded run: the publisher stops; every channel's recording must become `ready`
# (reconnect grace 1 s) with no gaps: /metrics tidecast_archive_gaps_total 0 and each video's
# GET /api/v1/videos/<id> recording.gaps 0 (video ids 1..N: the first sessions of a fresh server).
#
# Then the floor, with no server: a minimal writer writes the archive's measured MB/s the way the
# archive does (N files, a part each every 200 ms, kept open, fdatasync per 2 s segment) for the
# same window; its CPU is what the kernel's buffered write of those bytes costs on its own, and is
# printed beside the recording's cost.
#
# Usage: bash loadtest/archive.sh
# Environment (all optional):
#   CHANNELS=50        live channels (1..200)
#   DURATION=30        measurement window per run, seconds (5..300)
#   WARMUP=15          after every channel is live, before the window (5..120)
#   RUNS="off on"      which runs, in order
#   SYNC=segment       [archive] sync of the recorded run (segment, part, none)
#   DATA_ROOT          where the servers' data dirs go (default: the temp dir under /tmp); the
#                      disk write figure is only real on a disk-backed file system (not tmpfs)
#   CARGO_TARGET_DIR   default ~/.cache/tidecast-target
#   LOADTEST_CACHE     where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   TIDECAST_BIN       run this tidecast binary instead (no build)
#   KEEP=1             keep the temp dir (server logs, data dirs, samples)
#   PERF=1             also `perf record -g` tidecast for 10 s inside each window (a diagnostic:
#                      adds overhead, so not for figures); report printed and kept in the temp dir
# Needs: ffmpeg, curl, jq, python3. Everything runs on 127.0.0.1 (the server binds port 0 and the
# script reads its ports from its log); every process this script starts is ended by its PID on
# exit. Takes about 3 minutes with the defaults (plus a build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
CHANNELS=${CHANNELS:-50}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-15}
RUNS=${RUNS:-"off on"}
SYNC=${SYNC:-segment}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}

die() { echo "archive.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
in_range() { [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= $3 && $2 <= $4 )) || die "$1 must be $3..$4"; }

in_range CHANNELS "$CHANNELS" 1 200
in_range DURATION "$DURATION" 5 300
in_range WARMUP "$WARMUP" 5 120
[[ $SYNC =~ ^(segment|part|none)$ ]] || die "SYNC must be segment, part or none"
for r in $RUNS; do [[ $r == off || $r == on ]] || die "RUNS entries are 'off' or 'on' (got '$r')"; done
for tool in ffmpeg curl jq python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-archive
DATA_ROOT=${DATA_ROOT:-$WORK}
mkdir -p "$DATA_ROOT"
lt_tidecast
ensure_input

# --- the sampler: one window of /proc readings of the server (and, apart, the publisher) ---------
cat >"$WORK/sample.py" <<'PY'
import os, sys, time, urllib.request

TICKS = os.sysconf("SC_CLK_TCK")

def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])           # utime + stime: the process's own threads

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def io(pid, key):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == key:
                return int(v)
    return 0

def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)

def metric(http, name):
    try:
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    except Exception:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.split("{")[0].split(" ")[0] == name:
            total += float(line.rsplit(" ", 1)[1])
    return total

secs, pid, pub, http = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
t0, c0, p0, m0 = time.time(), ticks(pid), ticks(pub), machine()
w0, a0 = io(pid, "write_bytes"), metric(http, "tidecast_archive_bytes_total")
rss = []
for i in range(secs):                            # bounded: one sample a second
    time.sleep(max(0.0, t0 + i + 1 - time.time()))
    rss.append(rss_kib(pid))
t1, c1, p1, m1 = time.time(), ticks(pid), ticks(pub), machine()
w1, a1 = io(pid, "write_bytes"), metric(http, "tidecast_archive_bytes_total")
dt = t1 - t0
print(f"window_s {dt:.2f}")
print(f"cpu_pct {(c1 - c0) / TICKS / dt * 100:.2f}")
print(f"rss_mean_mib {sum(rss) / len(rss) / 1024:.1f}")
print(f"rss_max_mib {max(rss) / 1024:.1f}")
print(f"write_mb_s {(w1 - w0) / dt / 1e6:.2f}")
print(f"archive_mb_s {(a1 - a0) / dt / 1e6:.2f}")
print(f"publisher_cpu_pct {(p1 - p0) / TICKS / dt * 100:.2f}")
print(f"machine_busy_pct {(m1[0] - m0[0]) / (m1[1] - m0[1]) * 100:.1f}")
PY
val() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }

# --- the floor: what the kernel's buffered write of the recorded bytes costs on its own ----------
# A minimal writer (no server): CHANNELS files written like the archive writes them (one write of
# one part per channel every 200 ms, files kept open, a new file every 2 s per channel, fdatasync
# at each file's end unless SYNC=none), at the archive's measured rate, for the window's length.
# Its CPU (nearly all system time: page-cache allocation and copy, the file system's block
# reservation) is what any recorder pays for these bytes on this machine.
cat >"$WORK/floor.py" <<'PY'
import os, resource, sys, time

root, secs, channels, mb_s, sync = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] != "none"
os.makedirs(root, exist_ok=True)
part = os.urandom(max(1, int(mb_s * 1e6 / channels / 5)))  # 5 parts a second per channel
fds = {}
r0, t0, tick = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), 0
while time.monotonic() - t0 < secs:                      # bounded by the window
    for c in range(channels):
        if tick % 10 == 0:                               # a new 2 s segment
            if c in fds:
                if sync:
                    os.fdatasync(fds[c])
                os.close(fds[c])
                os.unlink(f"{root}/c{c}-{tick // 10 - 1}.m4s")
            fds[c] = os.open(f"{root}/c{c}-{tick // 10}.m4s", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fds[c], part)
    tick += 1
    time.sleep(max(0.0, t0 + tick * 0.2 - time.monotonic()))
r1, dt = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
print(f"floor_cpu_pct {((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / dt * 100:.2f}")
print(f"floor_mb_s {tick * channels * len(part) / dt / 1e6:.2f}")
PY

# start_server NAME ARCHIVE(true|false): a fresh tidecast with channels ch1..chN; sets SERVER_PID,
# HTTP, RTMP, KEYS, SLOG, DIR.
start_server() {
    DIR=$DATA_ROOT/$1
    mkdir -p "$DIR"
    SERVER_ENV=(
        TIDECAST__ARCHIVE__ENABLED="$2" TIDECAST__ARCHIVE__SYNC="$SYNC"
        TIDECAST__CHANNEL__RECONNECT_GRACE=1s
        TIDECAST__SERVER__DATA_DIR="$DIR" TIDECAST__DATABASE__URL="sqlite://$DIR/tidecast.db"
        TIDECAST__SERVER__CREATE_DEFAULT_CHANNEL=false
        TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0
        TIDECAST__SRT__LISTEN=127.0.0.1:0
        RUST_LOG=info
    )
    KEYS=()
    local i key
    for (( i = 1; i <= CHANNELS; i++ )); do
        key=$(env "${SERVER_ENV[@]}" "$TIDECAST" channel create "ch$i" 2>>"$DIR/cli.log" | tail -1)
        [[ $key == live_* ]] || die "channel create ch$i printed no key; see $DIR/cli.log"
        KEYS+=("$key")
    done
    lt_serve "$1" "$DIR/server.log"
}

# start_publisher: one ffmpeg, the file read once in real time, copied to every channel.
start_publisher() {
    local outs="" i
    for (( i = 0; i < CHANNELS; i++ )); do
        outs+="${outs:+|}[f=flv:flvflags=no_duration_filesize:onfail=ignore]rtmp://$RTMP/live/${KEYS[$i]}"
    done
    ffmpeg -nostdin -hide_banner -loglevel warning -re -stream_loop -1 -i "$INPUT" \
        -map 0:v -map 0:a -c copy -f tee "$outs" 2>>"$DIR/publisher.log" &
    PUB_PID=$!; PIDS+=("$PUB_PID")
}

# wait_live SECONDS: until every channel's source playlist lists parts.
wait_live() {
    local t i missing
    for (( t = 0; t < $1; t++ )); do
        missing=0
        for (( i = 1; i <= CHANNELS; i++ )); do
            curl -s --max-time 2 "http://$HTTP/live/ch$i/source/index.m3u8" | grep -q '^#EXT-X-PART:' \
                || { missing=$(( missing + 1 )); }
        done
        (( missing == 0 )) && return 0
        kill -0 "$PUB_PID" 2>/dev/null || die "the publisher exited; see $DIR/publisher.log"
        kill -0 "$SERVER_PID" 2>/dev/null || die "tidecast exited; see $SLOG"
        sleep 1
    done
    die "$missing of $CHANNELS channels not live after $1 s"
}

# check_recordings: after the publisher left, every video 1..N ready without gaps.
check_recordings() {
    local t i v status gaps ready bad=0 names
    for (( t = 0; t < 120; t++ )); do
        ready=0
        for (( i = 1; i <= CHANNELS; i++ )); do
            status=$(curl -s --max-time 2 "http://$HTTP/api/v1/videos/$i" | jq -r '.status // empty' 2>/dev/null || true)
            [[ $status == ready ]] && ready=$(( ready + 1 ))
        done
        (( ready == CHANNELS )) && break
        sleep 1
    done
    log "recordings ready: $ready of $CHANNELS (after ${t} s)"
    echo "ready $ready" >>"$WORK/on.checks"
    : >"$WORK/videos.jsonl"
    for (( i = 1; i <= CHANNELS; i++ )); do
        v=$(curl -s --max-time 5 "http://$HTTP/api/v1/videos/$i")
        echo "$v" >>"$WORK/videos.jsonl"
        status=$(jq -r '.status // "?"' <<<"$v" 2>/dev/null || echo "?")
        gaps=$(jq -r '.recording.gaps // "?"' <<<"$v" 2>/dev/null || echo "?")
        if [[ $status != ready || $gaps != 0 ]]; then
            bad=$(( bad + 1 ))
            log "video $i: status $status, recording.gaps $gaps: $(head -c 300 <<<"$v")"
        fi
    done
    names=$(jq -r '.channel_name // empty' "$WORK/videos.jsonl" 2>/dev/null | sort -u | wc -l)
    gaps=$(jq -s '[.[].recording.gaps // 0] | add' "$WORK/videos.jsonl" 2>/dev/null || echo "?")
    {
        echo "videos_bad $bad"
        echo "videos_gaps_sum $gaps"
        echo "videos_distinct_channels $names"
        echo "metrics_gaps $(curl -s "http://$HTTP/metrics" | awk '$1 == "tidecast_archive_gaps_total" { print $2 }')"
        echo "durations_s $(jq -s -r '[.[] | (.recording.duration_ms // .duration_ms // 0) / 1000] | "min \(min) max \(max)"' "$WORK/videos.jsonl" 2>/dev/null)"
        echo "archive_du_mib $(du -sm "$DIR/archive" | cut -f1)"
    } >>"$WORK/on.checks"
}

log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "data on: $(df -T "$DATA_ROOT" | awk 'NR == 2 { print $1, $2 }')"

for run in $RUNS; do
    on=false; [[ $run == on ]] && on=true
    start_server "$run" "$on"
    log "$run: tidecast $SERVER_PID (archive enabled $on, sync $SYNC) http $HTTP rtmp $RTMP; $CHANNELS channels"
    start_publisher
    wait_live 60
    log "$run: every channel live; warm-up ${WARMUP}s"
    sleep "$WARMUP"
    log "$run: window ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    perf_pid=""
    if [[ ${PERF:-0} == 1 ]]; then
        (sleep 2 && exec perf record -q -F 499 -g -p "$SERVER_PID" -o "$WORK/perf-$run.data" -- sleep 10) \
            >"$WORK/perf-$run.log" 2>&1 &
        perf_pid=$!; PIDS+=("$perf_pid")
    fi
    python3 "$WORK/sample.py" "$DURATION" "$SERVER_PID" "$PUB_PID" "$HTTP" >"$WORK/$run.result"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$WORK/perf-$run.data" --no-children --percent-limit 1 --stdio -g none \
            >"$WORK/perf-$run.txt" 2>/dev/null || true
        log "perf ($run, 10 s of the window; $WORK/perf-$run.txt):"
        grep -v '^#' "$WORK/perf-$run.txt" | grep -v '^$' | head -25 | sed 's/^/   /' >&2 || true
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "$run: tidecast exited during the window"
    kill -0 "$PUB_PID" 2>/dev/null || die "$run: the publisher exited during the window"
    stop_pid "$PUB_PID"
    [[ $run == on ]] && check_recordings
    grep -E 'ERROR|WARN' "$SLOG" | sed 's/^.*\(ERROR\|WARN\)/\1/' | cut -c1-160 | sort | uniq -c | sort -rn | head -5 \
        | sed 's/^/   server log: /' >&2 || true
    stop_pid "$SERVER_PID"
done

if [[ -s $WORK/on.result ]]; then
    log "floor: a minimal writer of $(val "$WORK/on.result" archive_mb_s) MB/s in $CHANNELS files for ${DURATION}s"
    python3 "$WORK/floor.py" "$DATA_ROOT/floor" "$DURATION" "$CHANNELS" "$(val "$WORK/on.result" archive_mb_s)" "$SYNC" \
        >"$WORK/floor.result"
    rm -rf "$DATA_ROOT/floor"
fi

# --- report ----------------------------------------------------------------------------------
echo
echo "=== archive.sh: $CHANNELS channels x 3 Mbps, ${DURATION}s windows, $(nproc) cores"
printf '%-14s %9s %9s %9s %13s %14s %12s %10s\n' run cpu% rssMiB rssmax write-MB/s archive-MB/s publisher% busy%
for run in $RUNS; do
    f=$WORK/$run.result
    printf '%-14s %9s %9s %9s %13s %14s %12s %10s\n' "recording-$run" "$(val "$f" cpu_pct)" "$(val "$f" rss_mean_mib)" \
        "$(val "$f" rss_max_mib)" "$(val "$f" write_mb_s)" "$(val "$f" archive_mb_s)" "$(val "$f" publisher_cpu_pct)" \
        "$(val "$f" machine_busy_pct)"
done
echo "cpu% = tidecast only, % of one core; write-MB/s = /proc/<pid>/io write_bytes; archive-MB/s ="
echo "tidecast_archive_bytes_total; publisher% = the one ffmpeg (not in cpu%); busy% = the whole machine."
if [[ -s $WORK/off.result && -s $WORK/on.result ]]; then
    python3 - "$(val "$WORK/off.result" cpu_pct)" "$(val "$WORK/on.result" cpu_pct)" \
        "$(val "$WORK/off.result" rss_mean_mib)" "$(val "$WORK/on.result" rss_mean_mib)" <<'EOF'
import sys
off, on, roff, ron = map(float, sys.argv[1:5])
inc = (on - off) / off * 100
print(f"recording adds {on - off:+.1f} % of a core ({inc:+.1f} % of the server's CPU without it; target at most +15 %: "
      f"{'MET' if inc <= 15 else 'NOT MET'}), RSS {ron - roff:+.1f} MiB")
EOF
    if [[ -s $WORK/floor.result ]]; then
        python3 - "$(val "$WORK/off.result" cpu_pct)" "$(val "$WORK/on.result" cpu_pct)" \
            "$(val "$WORK/floor.result" floor_cpu_pct)" "$(val "$WORK/floor.result" floor_mb_s)" <<'EOF'
import sys
off, on, floor, mb = map(float, sys.argv[1:5])
print(f"floor: the kernel's buffered write of the same {mb:.1f} MB/s by a minimal writer costs {floor:.2f} % of a core "
      f"({floor / off * 100:+.1f} % of the server's CPU without recording); tidecast's recording above it: {on - off - floor:+.2f} %")
EOF
    fi
fi
if [[ -s $WORK/on.checks ]]; then
    c=$WORK/on.checks
    echo "after the recorded run: $(val "$c" ready) of $CHANNELS videos ready; videos not ready or with gaps: $(val "$c" videos_bad);"
    echo "  recording.gaps summed over the videos: $(val "$c" videos_gaps_sum); /metrics tidecast_archive_gaps_total: $(val "$c" metrics_gaps);"
    echo "  distinct channels among videos 1..$CHANNELS: $(val "$c" videos_distinct_channels); durations $(grep '^durations_s' "$c" | cut -d' ' -f2-) s; archive on disk $(val "$c" archive_du_mib) MiB"
    if [[ $(val "$c" ready) == "$CHANNELS" && $(val "$c" videos_bad) == 0 && $(val "$c" metrics_gaps) == 0 ]]; then
        echo "  -> every recording ready, no gaps: MET"
    else
        echo "  -> NOT MET"
    fi
fi
