#!/usr/bin/env bash
# RTMP fan-out benchmark: tidecast against nginx-rtmp on the same machine, same stream, same
# load client. For each viewer count N it starts a fresh server, publishes a 3 Mbps H.264+AAC
# FLV in real time with `rtmp-fanout`, attaches N viewers from the same process, and reports
# server CPU, memory, time to first frame, publish-to-viewer latency and viewers that kept up.
#
# Usage: bash loadtest/rtmp_fanout.sh
# Environment (all optional):
#   VIEWERS="50 200 500"   viewer counts (each 1..5000)
#   DURATION=20            measurement window per run, seconds (1..300)
#   RAMP=100               viewer connections per second
#   WARMUP=10              seconds the publisher runs alone before viewers attach
#   SERVERS="tidecast nginx"
#   CARGO_TARGET_DIR       default ~/.cache/tidecast-target
#   LOADTEST_CACHE         where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   KEEP=1                 keep the temp dir (server logs, per-run JSON)
#   TIDECAST_BIN           run this tidecast binary instead (A/B comparisons)
#
# Everything is loopback only; every process this script starts is killed by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
VIEWERS=${VIEWERS:-"50 200 500"}
DURATION=${DURATION:-20}
RAMP=${RAMP:-100}
WARMUP=${WARMUP:-10}
SERVERS=${SERVERS:-"tidecast nginx"}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
NGINX_RTMP_MODULE=${NGINX_RTMP_MODULE:-/usr/lib/nginx/modules/ngx_rtmp_module.so}

die() { echo "rtmp_fanout.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 300 )) || die "DURATION must be 1..300"
[[ $RAMP =~ ^[0-9]+$ ]] && (( RAMP >= 1 && RAMP <= 2000 )) || die "RAMP must be 1..2000"
for n in $VIEWERS; do
    [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 5000 )) || die "VIEWERS entries must be 1..5000 (got '$n')"
done
for tool in ffmpeg jq cargo; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

# Each viewer is one socket in the client and one in the server.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-loadtest

# --- build -------------------------------------------------------------------------------
log "building tidecast and rtmp-fanout (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release --quiet)
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
TIDECAST=${TIDECAST_BIN:-$CARGO_TARGET_DIR/release/tidecast}
FANOUT=$CARGO_TARGET_DIR/release/rtmp-fanout

# --- test stream -------------------------------------------------------------------------
ensure_input

# --- one run -----------------------------------------------------------------------------
# run_fanout LABEL SERVER_PID PUBLISH_URL PLAY_URL N  -> JSON line in $WORK/LABEL-N.json
run_fanout() {
    local label=$1 pid=$2 pub=$3 play=$4 n=$5
    local bound=$(( WARMUP + n / RAMP + 3 + DURATION + 60 ))
    log "$label: $n viewers, window ${DURATION}s"
    timeout "$bound" "$FANOUT" --label "$label" --server-pid "$pid" \
        --publish-url "$pub" --input "$INPUT" --url "$play" \
        --viewers "$n" --ramp "$RAMP" --warmup "$WARMUP" --duration "$DURATION" \
        > "$WORK/$label-$n.json" 2> "$WORK/$label-$n.log" || {
        cat "$WORK/$label-$n.log" >&2
        die "$label: rtmp-fanout failed for N=$n"
    }
    kill -0 "$pid" 2>/dev/null || die "$label: the server exited during the N=$n run"
    sed 's/^/   /' "$WORK/$label-$n.log" | grep -E 'kept_up|disconnected|server_cpu_pct |rss_per_viewer|first_frame_p95|latency_p50|client_cpu|errors' >&2 || true
}

run_tidecast() {
    local n=$1 dir=$WORK/tidecast-$n
    mkdir -p "$dir"
    TIDECAST__SERVER__DATA_DIR=$dir \
    TIDECAST__DATABASE__URL=sqlite://$dir/t.db \
    TIDECAST__HTTP__LISTEN=127.0.0.1:0 \
    TIDECAST__RTMP__LISTEN=127.0.0.1:0 \
    TIDECAST__LOG__LEVEL=${TIDECAST_LOG_LEVEL:-warn} \
        "$TIDECAST" > "$dir/stdout.log" 2> "$dir/stderr.log" &
    local pid=$!
    PIDS+=("$pid")
    # The first-start banner names the bound RTMP port and the stream key (printed once).
    local key="" port=""
    for _ in $(seq 150); do
        key=$(sed -n 's/^  Stream Key: \(live_[0-9a-zA-Z_]*\).*/\1/p' "$dir/stdout.log" | head -1)
        port=$(sed -n 's|^  Server: *rtmp://[^:/]*:\([0-9]*\)/live.*|\1|p' "$dir/stdout.log" | head -1)
        [[ -n $key && -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr.log" >&2; die "tidecast exited at start-up"; }
        sleep 0.1
    done
    [[ -n $key && -n $port ]] || die "no stream key / RTMP port in tidecast's banner ($dir/stdout.log)"
    wait_port "$port" || die "tidecast is not listening on $port"
    run_fanout tidecast "$pid" "rtmp://127.0.0.1:$port/live/$key" "rtmp://127.0.0.1:$port/live/main" "$n"
    stop_pid "$pid"
}

run_nginx() {
    local n=$1 dir=$WORK/nginx-$n port
    [[ -f $NGINX_RTMP_MODULE ]] || die "nginx-rtmp module not found at $NGINX_RTMP_MODULE"
    mkdir -p "$dir/logs"
    port=$(free_port)
    cat > "$dir/nginx.conf" <<CONF
load_module $NGINX_RTMP_MODULE;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 8192; }
rtmp {
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live {
            live on;
        }
    }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" > "$dir/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" || { cat "$dir/logs/error.log" >&2; die "nginx is not listening on $port"; }
    run_fanout nginx-rtmp "$pid" "rtmp://127.0.0.1:$port/live/stream" "rtmp://127.0.0.1:$port/live/stream" "$n"
    stop_pid "$pid"
}

# --- sweep -------------------------------------------------------------------------------
log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
for n in $VIEWERS; do
    for s in $SERVERS; do
        case $s in
            tidecast) run_tidecast "$n" ;;
            nginx) run_nginx "$n" ;;
            *) die "unknown server '$s' in SERVERS" ;;
        esac
    done
done

# --- summary -----------------------------------------------------------------------------
echo
printf '%-10s %5s %8s %10s %12s %11s %11s %11s %11s %10s %8s %7s\n' \
    server N cpu% cpu%/view cpu%/view+ rssKiB/view ff_p50ms ff_p95ms lat_p50ms lat_p95ms kept_up client%
for n in $VIEWERS; do
    for label in tidecast nginx-rtmp; do
        f=$WORK/$label-$n.json
        [[ -s $f ]] || continue
        jq -r '[.label, .viewers, .server_cpu_pct, .server_cpu_pct_per_viewer,
                .server_cpu_pct_per_viewer_marginal, .server_rss_per_viewer_kib,
                .first_frame_p50_ms, .first_frame_p95_ms, .latency_p50_ms, .latency_p95_ms,
                "\(.kept_up)/\(.viewers)", .client_cpu_pct]
               | map(if type == "number" then (. * 1000 | round / 1000) else . end) | @tsv' "$f" |
            awk -F'\t' '{ printf "%-10s %5s %8.1f %10.4f %12.4f %11.1f %11.2f %11.2f %11.3f %10.3f %8s %7.1f\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12 }'
    done
    t=$WORK/tidecast-$n.json g=$WORK/nginx-rtmp-$n.json
    if [[ -s $t && -s $g ]]; then
        jq -rn --slurpfile t "$t" --slurpfile g "$g" '
            ($t[0].server_cpu_pct_per_viewer / $g[0].server_cpu_pct_per_viewer) as $r
            | "N=\($t[0].viewers): tidecast/nginx CPU per viewer = \($r * 100 | round / 100) (target <= 0.8)"'
    fi
done
echo
echo "cpu% = server CPU over the window, % of one core; cpu%/view+ = (cpu% - publish-only cpu%) / N;"
echo "rssKiB/view = (mean RSS in window - RSS before viewers) / N; ff = time to first video frame;"
echo "lat = publish-to-viewer latency; client% = the load client's own CPU."
echo "Raw JSON lines:"
for f in "$WORK"/*.json; do cat "$f"; done
