#!/usr/bin/env bash
# VOD serving: tidecast's /vod/<id>/... (actix-files NamedFile over the recording's files) against
# nginx serving the very same files with `sendfile on`, same machine, same load client
# (`vod-clients`), one after the other.
#
#   1. record   a fresh tidecast (recording on) records the cached 3 Mbps test stream for RECORD
#               seconds (one ffmpeg copying it in real time over RTMP, then leaving); waits until
#               video 1 is `ready` (reconnect grace 1 s), and stops that server.
#   2. tidecast a fresh tidecast on the same data dir serves the finished recording:
#               /vod/1/source/index.m3u8 -> source/seg-<msn>.m4s (public channel, no token).
#   3. nginx    the same files under the same paths from a generated config: the media playlist
#               tidecast rendered (saved once) and <data_dir>/archive/1/ as the media directory,
#               `sendfile on; tcp_nopush on;`, access log off, no open_file_cache (tidecast opens
#               every file per request too), the same Cache-Control as tidecast's media;
#               `listen ... backlog=4096` and `multi_accept on` (without them a busy single
#               worker left hundreds of the 1,000 viewers in the accept queue or retrying SYNs
#               for up to 13 s, so it served fewer viewers than tidecast did).
#
# The load: CLIENTS viewers (default 1,000), each one connection: GET the media playlist once, the
# init segment once, then random segments back to back, RANGE_SHARE of them (default 25 %) with a
# `Range: bytes=A-B` (A below min(64 KiB, half the smallest segment), 16-256 KiB long; answered
# 206). The window (DURATION) closes early at MAX_REQUESTS requests. Figures: requests/s, MB/s,
# server CPU-seconds (utime+stime of the server process(es) from /proc), requests per server
# CPU-second, latency p50/p99 (request written .. whole body read, at the client), errors (any
# transport failure, or a status other than 200 / 206 for a Range: must be 0).
#
# Workers: tidecast runs with its default HTTP workers (one per core: 2 here). nginx runs with
# NGINX_WORKERS worker processes: 1 (default) is `daemon off; master_process off;
# worker_processes 1;`, one process that is all of nginx; N > 1 runs a master and N workers and
# the CPU of all of them is summed. Requests per CPU-second compares efficiency either way.
#
# Usage: bash loadtest/vod.sh
# Environment (all optional):
#   CLIENTS=1000        viewers (1..5000)
#   DURATION=30         window per server, seconds (5..300)
#   RECORD=60           length of the recording, seconds (10..600)
#   MAX_REQUESTS=1000000  request cap per server run (the whole run, ramp included)
#   RANGE_SHARE=0.25    share of segment requests with a Range header
#   RAMP=500            viewers started per second
#   SERVERS="tidecast nginx"
#   NGINX_WORKERS=1     nginx worker processes (see above)
#   TIDECAST_WORKERS=0  tidecast's [http] workers (0: one per core)
#   PERF=1              also `perf record -g` tidecast for 10 s inside its window (a diagnostic, adds
#                       overhead; report printed and kept in the temp dir)
#   CARGO_TARGET_DIR    default ~/.cache/tidecast-target
#   LOADTEST_CACHE      where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   TIDECAST_BIN        run this tidecast binary instead (the load client is still built)
#   KEEP=1              keep the temp dir (logs, the recording, JSON)
# Needs: ffmpeg, curl, jq, python3, nginx (apt `nginx`). Everything on 127.0.0.1 (tidecast binds
# port 0 and the script reads its ports from its log; nginx gets a free port); every process this
# script starts is ended by its PID on exit. About 3 minutes with the defaults (plus builds).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
CLIENTS=${CLIENTS:-1000}
DURATION=${DURATION:-30}
RECORD=${RECORD:-60}
MAX_REQUESTS=${MAX_REQUESTS:-1000000}
RANGE_SHARE=${RANGE_SHARE:-0.25}
RAMP=${RAMP:-500}
SERVERS=${SERVERS:-"tidecast nginx"}
NGINX_WORKERS=${NGINX_WORKERS:-1}
TIDECAST_WORKERS=${TIDECAST_WORKERS:-0}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
SETTLE=3

die() { echo "vod.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
in_range() { [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= $3 && $2 <= $4 )) || die "$1 must be $3..$4"; }

in_range CLIENTS "$CLIENTS" 1 5000
in_range DURATION "$DURATION" 5 300
in_range RECORD "$RECORD" 10 600
in_range MAX_REQUESTS "$MAX_REQUESTS" 1 100000000
in_range RAMP "$RAMP" 1 5000
in_range NGINX_WORKERS "$NGINX_WORKERS" 1 16
in_range TIDECAST_WORKERS "$TIDECAST_WORKERS" 0 64
for s in $SERVERS; do [[ $s == tidecast || $s == nginx ]] || die "SERVERS entries are tidecast or nginx (got '$s')"; done
for tool in ffmpeg curl jq python3 cargo; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
if [[ " $SERVERS " == *" nginx "* ]]; then command -v nginx >/dev/null || die "nginx is not installed (apt-get install nginx)"; fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-vod
lt_tidecast
log "building vod-clients (release)"
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --bin vod-clients
cp "$CARGO_TARGET_DIR/release/vod-clients" "$WORK/vod-clients"
ensure_input

DIR=$WORK/server
mkdir -p "$DIR"
SERVER_ENV=(
    TIDECAST__ARCHIVE__ENABLED=true TIDECAST__CHANNEL__RECONNECT_GRACE=1s
    TIDECAST__SERVER__DATA_DIR="$DIR" TIDECAST__DATABASE__URL="sqlite://$DIR/tidecast.db"
    TIDECAST__SERVER__CREATE_DEFAULT_CHANNEL=false
    TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0 TIDECAST__SRT__LISTEN=127.0.0.1:0
    TIDECAST__HTTP__WORKERS="$TIDECAST_WORKERS"
    RUST_LOG=info
)

# start_tidecast NAME: a fresh tidecast process on $DIR; sets SERVER_PID, HTTP, RTMP, SLOG.
start_tidecast() {
    lt_serve "$1" "$DIR/server-$1.log"
}

video_status() { curl -s --max-time 2 "http://$HTTP/api/v1/videos/1" | jq -r '.status // empty' 2>/dev/null || true; }

# --- 1. the recording ----------------------------------------------------------------------
KEY=$(env "${SERVER_ENV[@]}" "$TIDECAST" channel create main 2>>"$DIR/cli.log" | tail -1)
[[ $KEY == live_* ]] || die "channel create printed no key; see $DIR/cli.log"
start_tidecast record
log "record: tidecast $SERVER_PID http $HTTP rtmp $RTMP; publishing ${RECORD}s of the test stream"
timeout $(( RECORD + 60 )) ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$INPUT" \
    -t "$RECORD" -c copy -f flv "rtmp://$RTMP/live/$KEY" 2>>"$DIR/publisher.log" &
PUB_PID=$!; PIDS+=("$PUB_PID")
wait "$PUB_PID" || die "the publisher failed; see $DIR/publisher.log"
stop_pid "$PUB_PID"
for (( i = 0; i < 60; i++ )); do
    [[ $(video_status) == ready ]] && break
    sleep 1
done
[[ $(video_status) == ready ]] || die "video 1 is not ready 60 s after the publisher left (status '$(video_status)')"
curl -s "http://$HTTP/api/v1/videos/1" >"$WORK/video.json"
stop_pid "$SERVER_PID"
MEDIA=$DIR/archive/1
[[ -d $MEDIA/source ]] || die "no recording at $MEDIA/source"
read -r NSEG MINSEG MAXSEG TOTAL < <(find "$MEDIA/source" -name 'seg-*.m4s' -printf '%s\n' |
    awk 'NR == 1 || $1 < min { min = $1 } $1 > max { max = $1 } { n++; t += $1 } END { print n, min, max, t }')
(( NSEG > 0 )) || die "the recording has no segments"
RANGE_MAX_START=$(( MINSEG / 2 < 65536 ? MINSEG / 2 : 65536 ))
log "recording: $NSEG segments, $(( TOTAL / 1048576 )) MiB, segment sizes $MINSEG..$MAXSEG bytes;" \
    "gaps $(jq -r '.recording.gaps // "?"' "$WORK/video.json"), duration $(jq -r '(.recording.duration_ms // .duration_ms // 0) / 1000' "$WORK/video.json") s"

# run_clients LABEL URL PIDS: the load client against one server; JSON in $WORK/LABEL.json.
run_clients() {
    local label=$1 url=$2 pids=$3
    log "$label: $CLIENTS viewers, window ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout $(( CLIENTS / RAMP + SETTLE + DURATION + 60 )) "$WORK/vod-clients" --label "$label" --url "$url" \
        --clients "$CLIENTS" --duration "$DURATION" --ramp "$RAMP" --settle "$SETTLE" \
        --max-requests "$MAX_REQUESTS" --range-share "$RANGE_SHARE" --range-max-start "$RANGE_MAX_START" \
        --server-pid "$pids" >"$WORK/$label.json" 2>"$WORK/$label.log" || {
        cat "$WORK/$label.log" >&2
        die "$label: vod-clients failed"
    }
    sed 's/^/   /' "$WORK/$label.log" >&2
}

# --- 2. tidecast serving it ------------------------------------------------------------------
run_tidecast() {
    start_tidecast vod
    local url=http://$HTTP/vod/1/source/index.m3u8
    curl -sf --max-time 5 "$url" >"$WORK/index.m3u8" || die "tidecast: no VOD playlist at $url"
    grep -q '^#EXT-X-ENDLIST' "$WORK/index.m3u8" || die "tidecast: the VOD playlist has no ENDLIST"
    local perf_pid=""
    if [[ ${PERF:-0} == 1 ]]; then
        (sleep $(( CLIENTS / RAMP + SETTLE + 5 )) &&
            exec perf record -q -F 499 -g -p "$SERVER_PID" -o "$WORK/perf.data" -- sleep 10) >"$WORK/perf.log" 2>&1 &
        perf_pid=$!; PIDS+=("$perf_pid")
    fi
    run_clients tidecast "$url" "$SERVER_PID"
    kill -0 "$SERVER_PID" 2>/dev/null || die "tidecast exited during the run"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$WORK/perf.data" --no-children --percent-limit 1 --stdio -g none >"$WORK/perf.txt" 2>/dev/null || true
        log "perf (tidecast, 10 s of the window; $WORK/perf.txt):"
        grep -v '^#' "$WORK/perf.txt" | grep -v '^$' | head -25 | sed 's/^/   /' >&2 || true
    fi
    grep -E 'ERROR|WARN' "$SLOG" | sed 's/^.*\(ERROR\|WARN\)/\1/' | cut -c1-160 | sort | uniq -c | sort -rn | head -5 \
        | sed 's/^/   server log: /' >&2 || true
    stop_pid "$SERVER_PID"
}

# --- 3. nginx serving the same files --------------------------------------------------------
run_nginx() {
    local nd=$WORK/nginx port pid pids
    mkdir -p "$nd/logs" "$nd/tmp" "$nd/playlist"
    if [[ ! -s $WORK/index.m3u8 ]]; then   # SERVERS=nginx alone: have tidecast render it once
        start_tidecast playlist
        curl -sf --max-time 5 "http://$HTTP/vod/1/source/index.m3u8" >"$WORK/index.m3u8" || die "no VOD playlist"
        stop_pid "$SERVER_PID"
    fi
    cp "$WORK/index.m3u8" "$nd/playlist/index.m3u8"
    port=$(free_port)
    local procs="master_process off;"
    # A master started as root runs its workers as `nobody`, which cannot read our 0700 temp dir.
    (( NGINX_WORKERS > 1 )) && procs="master_process on; user $(id -un);"
    cat >"$nd/nginx.conf" <<CONF
daemon off;
$procs
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 65536;
error_log $nd/logs/error.log warn;
pid $nd/nginx.pid;
events { worker_connections 16384; multi_accept on; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $nd/tmp/body;
    proxy_temp_path $nd/tmp/proxy;
    fastcgi_temp_path $nd/tmp/fastcgi;
    uwsgi_temp_path $nd/tmp/uwsgi;
    scgi_temp_path $nd/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; video/mp4 mp4; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /vod/1/source/index.m3u8 {
            alias $nd/playlist/index.m3u8;
            add_header Cache-Control "public, max-age=60";
        }
        location /vod/1/ {
            alias $MEDIA/;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }
    }
}
CONF
    nginx -p "$nd" -c "$nd/nginx.conf" -e "$nd/logs/error.log" >"$nd/stdout.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_port "$port" || { cat "$nd/logs/error.log" >&2; die "nginx is not listening on $port"; }
    pids=$pid
    if (( NGINX_WORKERS > 1 )); then
        local kids=""
        for _ in $(seq 50); do
            kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null | tr -s ' ' '\n' | grep -c . || true)
            (( kids >= NGINX_WORKERS )) && break
            sleep 0.1
        done
        pids+=,$(cat /proc/"$pid"/task/*/children | xargs | tr ' ' ',')
    fi
    local url=http://127.0.0.1:$port/vod/1/source/index.m3u8
    local seg
    seg=$(grep -v '^#' "$WORK/index.m3u8" | head -1)
    curl -sf --max-time 5 -o /dev/null "http://127.0.0.1:$port/vod/1/source/$seg" || die "nginx does not serve $seg"
    log "nginx: pids $pids ($NGINX_WORKERS worker process(es)), http 127.0.0.1:$port"
    run_clients nginx "$url" "$pids"
    kill -0 "$pid" 2>/dev/null || die "nginx exited during the run"
    stop_pid "$pid"
}

log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); $(nginx -v 2>&1 || true)"
for s in $SERVERS; do
    case $s in
        tidecast) run_tidecast ;;
        nginx) run_nginx ;;
    esac
done

# --- summary -------------------------------------------------------------------------------------
echo
echo "=== vod.sh: $CLIENTS viewers seeking at random in a ${RECORD}s recording ($NSEG segments of $MINSEG..$MAXSEG bytes), range share $RANGE_SHARE"
printf '%-9s %9s %9s %8s %8s %7s %11s %8s %8s %8s %7s %8s\n' server req/s MB/s window cpu-s cpu% req/cpu-s p50ms p99ms maxms errors client%
for s in tidecast nginx; do
    f=$WORK/$s.json
    [[ -s $f ]] || continue
    jq -r '[.label, .requests_per_s, .mb_per_s, .window_s, .server_cpu_s, .server_cpu_pct, .requests_per_server_cpu_s,
            .p50_ms, .p99_ms, .max_ms, .errors, .client_cpu_pct]
           | map(if . == null then "-" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end) | @tsv' "$f" |
        awk -F'\t' '{ printf "%-9s %9s %9s %8s %8s %7s %11s %8s %8s %8s %7s %8s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12 }'
done
echo "req/cpu-s = requests completed in the window / server CPU-seconds in it; cpu% = of one core;"
echo "tidecast: $( (( TIDECAST_WORKERS == 0 )) && echo "default workers (one per core, $(nproc))" || echo "$TIDECAST_WORKERS workers"); nginx: $NGINX_WORKERS worker process(es)."
if [[ -s $WORK/tidecast.json && -s $WORK/nginx.json ]]; then
    jq -rn --slurpfile t "$WORK/tidecast.json" --slurpfile g "$WORK/nginx.json" '
        ($t[0].requests_per_server_cpu_s / $g[0].requests_per_server_cpu_s) as $r
        | "requests per server CPU-second, tidecast / nginx = \($r * 1000 | round / 1000) (target at least 1: \(if $r >= 1 then "MET" else "NOT MET" end)); errors tidecast \($t[0].errors), nginx \($g[0].errors)"'
fi
echo "Raw JSON lines:"
for s in tidecast nginx; do [[ -s $WORK/$s.json ]] && cat "$WORK/$s.json"; done
exit 0
