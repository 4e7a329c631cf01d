#!/usr/bin/env bash
# RTMPS vs RTMP ingest CPU: the same PUBLISHERS streams (the cached 3 Mbps 720p30 H.264+AAC FLV,
# copied, not re-encoded, looped in real time by ffmpeg) into a fresh tidecast over plain RTMP,
# then over RTMPS (a self-signed P-256 certificate, TLS 1.3 as ffmpeg negotiates it). Reports
# the server's CPU (utime+stime from /proc, % of one core) over the measurement window and the
# RTMPS/RTMP ratio. Target (issue 11): at most 1.3x.
#
# The server does the same work after the TLS layer in both runs (demux, ring, LL-HLS packaging
# of every channel), so the difference is what TLS costs: record decryption per read.
#
# Usage: bash loadtest/rtmps_ingest.sh
# Environment (all optional):
#   PUBLISHERS=10          streams at once (1..100), one channel each
#   DURATION=20            measurement window, seconds (1..300)
#   WARMUP=5               seconds after the last publisher is live before measuring
#   CARGO_TARGET_DIR       default ~/.cache/tidecast-target
#   LOADTEST_CACHE         where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   KEEP=1                 keep the temp dir (server logs)
#   TIDECAST_BIN           run this tidecast binary instead
#
# Everything is loopback only; every process this script starts is killed by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
PUBLISHERS=${PUBLISHERS:-10}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}

die() { echo "rtmps_ingest.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $PUBLISHERS =~ ^[0-9]+$ ]] && (( PUBLISHERS >= 1 && PUBLISHERS <= 100 )) || die "PUBLISHERS must be 1..100"
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 300 )) || die "DURATION must be 1..300"
[[ $WARMUP =~ ^[0-9]+$ ]] && (( WARMUP <= 120 )) || die "WARMUP must be 0..120"
for tool in ffmpeg openssl curl python3 cargo; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-rtmps

log "building tidecast (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
if [[ -z ${TIDECAST_BIN:-} ]]; then (cd "$ROOT" && cargo build --release --quiet); fi
TIDECAST=${TIDECAST_BIN:-$CARGO_TARGET_DIR/release/tidecast}
ensure_input

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=tidecast-loadtest -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
TICKS=$(getconf CLK_TCK)

# cpu_ticks PID: utime + stime of the process (all threads).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# metric TEXT SERIES: the value of one sample, 0 if absent.
metric() { awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }' <<<"$1"; }

# run MODE (rtmp|rtmps): prints the server's CPU % of one core over the window.
run() {
    local mode=$1 dir=$WORK/$1 http rtmp rtmps keys=() pid i url
    mkdir -p "$dir"
    http=$(free_port); rtmp=$(free_port); rtmps=$(free_port)
    local env=(
        TIDECAST__SERVER__DATA_DIR="$dir" TIDECAST__DATABASE__URL="sqlite://$dir/tidecast.db"
        TIDECAST__SERVER__CREATE_DEFAULT_CHANNEL=false
        TIDECAST__HTTP__LISTEN=127.0.0.1:$http TIDECAST__RTMP__LISTEN=127.0.0.1:$rtmp
        TIDECAST__RTMP__TLS_LISTEN=127.0.0.1:$rtmps TIDECAST__HTTP__TLS_LISTEN=
        TIDECAST__TLS__CERT="$WORK/cert.pem" TIDECAST__TLS__KEY="$WORK/key.pem"
        RUST_LOG=warn
    )
    for i in $(seq "$PUBLISHERS"); do
        keys+=("$(env "${env[@]}" "$TIDECAST" channel create "load$i" 2>>"$dir/cli.log" | tail -1)")
    done
    env "${env[@]}" "$TIDECAST" serve >"$dir/server.out" 2>"$dir/server.log" &
    pid=$!; PIDS+=("$pid")
    wait_port "$http" || die "$mode: server did not start; see $dir/server.log"
    for i in $(seq "$PUBLISHERS"); do
        if [[ $mode == rtmp ]]; then url=rtmp://127.0.0.1:$rtmp/live/${keys[$((i - 1))]}
        else url=rtmps://127.0.0.1:$rtmps/live/${keys[$((i - 1))]}; fi
        ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$INPUT" -c copy -f flv "$url" \
            2>>"$dir/ffmpeg.log" &
        PIDS+=("$!")
    done
    local live=0
    for _ in $(seq 150); do
        live=$(metric "$(curl -s "http://127.0.0.1:$http/metrics")" "tidecast_ingest_sessions{protocol=\"$mode\"}")
        (( ${live%.*} >= PUBLISHERS )) && break
        sleep 0.2
    done
    (( ${live%.*} >= PUBLISHERS )) || die "$mode: only $live of $PUBLISHERS publishers live; see $dir"
    sleep "$WARMUP"
    local t0 t1 c0 c1 b0 b1 m
    m=$(curl -s "http://127.0.0.1:$http/metrics")
    b0=$(metric "$m" "tidecast_ingest_bytes_total{protocol=\"$mode\"}")
    c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    sleep "$DURATION"
    c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
    m=$(curl -s "http://127.0.0.1:$http/metrics")
    b1=$(metric "$m" "tidecast_ingest_bytes_total{protocol=\"$mode\"}")
    live=$(metric "$m" "tidecast_ingest_sessions{protocol=\"$mode\"}")
    (( ${live%.*} >= PUBLISHERS )) || die "$mode: publishers dropped during the window ($live left)"
    python3 - "$mode" "$c0" "$c1" "$t0" "$t1" "$TICKS" "$b0" "$b1" "$PUBLISHERS" <<'EOF'
import sys
mode, c0, c1, t0, t1, ticks, b0, b1, n = sys.argv[1:]
secs = float(t1) - float(t0)
cpu = (float(c1) - float(c0)) / float(ticks) / secs * 100
mbps = (float(b1) - float(b0)) * 8 / secs / 1e6
print(f"{mode} {cpu:.2f} {mbps:.1f} {cpu / int(n):.3f}")
EOF
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || stop_pid "$p"; done
    stop_pid "$pid"
}

log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
log "$PUBLISHERS publishers x 3 Mbps, warm-up ${WARMUP}s, window ${DURATION}s"
# Not `$(run ...)`: a subshell would not share PIDS or the EXIT trap that ends our processes.
run rtmp >"$WORK/rtmp.result"
run rtmps >"$WORK/rtmps.result"
plain=$(cat "$WORK/rtmp.result")
tls=$(cat "$WORK/rtmps.result")
echo "mode   server_cpu%  ingest_Mbps  cpu%/publisher"
printf '%-6s %11s %12s %15s\n' $plain
printf '%-6s %11s %12s %15s\n' $tls
python3 - "$plain" "$tls" <<'EOF'
import sys
p, t = (float(a.split()[1]) for a in sys.argv[1:])
print(f"RTMPS/RTMP server CPU = {t / p:.2f}x (target <= 1.3x)")
EOF
echo "server_cpu% = tidecast's utime+stime over the window, % of one core (ingest, ring and LL-HLS packaging)."
