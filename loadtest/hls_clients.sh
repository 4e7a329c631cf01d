#!/usr/bin/env bash
# HLS load benchmark: N LL-HLS players (blocking playlist reloads + preload-hinted part fetches)
# against tidecast, and N plain-HLS players (playlist polling + one GET per new .ts) against
# nginx-rtmp's HLS files served by nginx, same machine, same 3 Mbps stream, same load client
# (`hls-clients`). Optionally also tidecast under the plain pattern, for a like-for-like ratio.
#
# Usage: bash loadtest/hls_clients.sh
# Environment (all optional):
#   CLIENTS="100 500 1000"   player counts (each 1..5000)
#   DURATION=30              measurement window per run, seconds (1..300)
#   RAMP=200                 players started per second
#   RUNS="tidecast-ll tidecast-plain nginx-plain"
#   POLL_MS=500              plain pattern: playlist poll interval
#   CLIENT_ARGS=""           extra hls-clients arguments for every run (e.g. "--no-parts")
#   CARGO_TARGET_DIR         default ~/.cache/tidecast-target
#   LOADTEST_CACHE           where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   TIDECAST_BIN             run this tidecast binary instead (A/B comparisons); still builds
#   KEEP=1                   keep the temp dir (server logs, per-run JSON)
#   NICE=0                   run servers, publisher and client under `nice -n NICE` (e.g. -10 on a
#                            machine shared with other work; needs root for negative values)
#   PERF=1                   also `perf record -g` tidecast for 10 s inside each window (adds
#                            overhead: a diagnostic, not for figures); report in the kept dir
#
# Loopback only; every process this script starts is killed by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
CLIENTS=${CLIENTS:-"100 500 1000"}
DURATION=${DURATION:-30}
RAMP=${RAMP:-200}
RUNS=${RUNS:-"tidecast-ll tidecast-plain nginx-plain"}
POLL_MS=${POLL_MS:-500}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
NGINX_RTMP_MODULE=${NGINX_RTMP_MODULE:-/usr/lib/nginx/modules/ngx_rtmp_module.so}
# Seconds the publisher runs before the client starts (a few segments in every playlist), and
# the client's own no-player CPU baseline.
NICE=${NICE:-0}
NICE_CMD=(nice -n "$NICE")
PREROLL=8
BASELINE=4
SETTLE=3

die() { echo "hls_clients.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $NICE =~ ^-?[0-9]+$ ]] && (( NICE >= -20 && NICE <= 19 )) || die "NICE must be -20..19"
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 300 )) || die "DURATION must be 1..300"
[[ $RAMP =~ ^[0-9]+$ ]] && (( RAMP >= 1 && RAMP <= 2000 )) || die "RAMP must be 1..2000"
for n in $CLIENTS; do
    [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 5000 )) || die "CLIENTS entries must be 1..5000 (got '$n')"
done
for tool in ffmpeg jq cargo curl python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

# Each player holds up to ~2-5 keep-alive connections in the client and as many in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-hlsload

# wait_playlist URL PATTERN: until the playlist answers 200 and lists PATTERN (max 30 s).
wait_playlist() {
    for _ in $(seq 300); do
        curl -sf --max-time 2 "$1" 2>/dev/null | grep -q "$2" && return 0
        sleep 0.1
    done
    return 1
}

# --- build -------------------------------------------------------------------------------
log "building tidecast, rtmp-fanout and hls-clients (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release --quiet)
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
TIDECAST=${TIDECAST_BIN:-$CARGO_TARGET_DIR/release/tidecast}
FANOUT=$CARGO_TARGET_DIR/release/rtmp-fanout
HLSCLIENTS=$CARGO_TARGET_DIR/release/hls-clients

# --- test stream (same file as rtmp_fanout.sh) ---------------------------------------------
ensure_input

# start_publisher URL N LOG: a real-time publisher (rtmp-fanout's publisher mode, no viewers)
# lasting the whole run; sets PUB_PID.
start_publisher() {
    local url=$1 n=$2 logf=$3
    local secs=$(( PREROLL + BASELINE + n / RAMP + 1 + SETTLE + DURATION + 10 ))
    timeout $(( secs + 30 )) "${NICE_CMD[@]}" "$FANOUT" --label publisher --publish-url "$url" --input "$INPUT" \
        --warmup 3 --settle 0 --duration "$secs" > "$logf.json" 2> "$logf" &
    PUB_PID=$!
    PIDS+=("$PUB_PID")
}

# run_clients LABEL MODE SERVER_PID URL N
run_clients() {
    local label=$1 mode=$2 pid=$3 url=$4 n=$5
    local bound=$(( BASELINE + n / RAMP + 1 + SETTLE + DURATION + 40 ))
    log "$label: $n players ($mode), window ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout "$bound" "${NICE_CMD[@]}" "$HLSCLIENTS" --label "$label" --mode "$mode" --url "$url" --clients "$n" \
        --ramp "$RAMP" --settle "$SETTLE" --baseline "$BASELINE" --duration "$DURATION" \
        --poll-ms "$POLL_MS" --server-pid "$pid" ${CLIENT_ARGS:-} \
        > "$WORK/$label-$n.json" 2> "$WORK/$label-$n.log" || {
        cat "$WORK/$label-$n.log" >&2
        die "$label: hls-clients failed for N=$n"
    }
    kill -0 "$pid" 2>/dev/null || die "$label: the server exited during the N=$n run"
    sed 's/^/   /' "$WORK/$label-$n.log" >&2
}

run_tidecast() {
    local n=$1 mode=$2 label=tidecast-$2 dir=$WORK/tidecast-$2-$1
    mkdir -p "$dir"
    TIDECAST__SERVER__DATA_DIR=$dir \
    TIDECAST__DATABASE__URL=sqlite://$dir/t.db \
    TIDECAST__HTTP__LISTEN=127.0.0.1:0 \
    TIDECAST__RTMP__LISTEN=127.0.0.1:0 \
    TIDECAST__LOG__LEVEL=${TIDECAST_LOG_LEVEL:-warn} \
    TIDECAST__HTTP__WORKERS=${TIDECAST_WORKERS:-0} \
        "${NICE_CMD[@]}" "$TIDECAST" > "$dir/stdout.log" 2> "$dir/stderr.log" &
    local pid=$!
    PIDS+=("$pid")
    local key="" rport="" hport=""
    for _ in $(seq 150); do
        key=$(sed -n 's/^  Stream Key: \(live_[0-9a-zA-Z_]*\).*/\1/p' "$dir/stdout.log" | head -1)
        rport=$(sed -n 's|^  Server: *rtmp://[^:/]*:\([0-9]*\)/live.*|\1|p' "$dir/stdout.log" | head -1)
        hport=$(sed -n 's|.*LL-HLS http://[^:/]*:\([0-9]*\)/live/.*|\1|p' "$dir/stdout.log" | head -1)
        [[ -n $key && -n $rport && -n $hport ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr.log" >&2; die "tidecast exited at start-up"; }
        sleep 0.1
    done
    [[ -n $key && -n $rport && -n $hport ]] || die "no stream key / ports in tidecast's banner ($dir/stdout.log)"
    wait_port "$rport" || die "tidecast is not listening on $rport"
    start_publisher "rtmp://127.0.0.1:$rport/live/$key" "$n" "$dir/publisher.log"
    local url=http://127.0.0.1:$hport/live/main/source/index.m3u8
    wait_playlist "$url" EXT-X-PART || die "tidecast: no LL-HLS playlist at $url"
    sleep "$PREROLL"
    local perf_pid=""
    if [[ ${PERF:-0} == 1 ]]; then
        (sleep $(( BASELINE + n / RAMP + 1 + SETTLE + 5 )) &&
            exec perf record -q -F 499 -g -p "$pid" -o "$dir/perf.data" -- sleep 10) > "$dir/perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    run_clients "$label" "$mode" "$pid" "$url" "$n"
    if [[ $mode == ll ]]; then
        # The server's own share: from a part's publication to the release of each request that
        # was blocked on it (histogram tidecast_hls_block_release_seconds; quantiles are the
        # upper bounds of the buckets they fall in). Kernel send and client parsing come after.
        curl -s "http://127.0.0.1:$hport/metrics" | awk '
            /^tidecast_hls_block_release_seconds_bucket/ {
                match($0, /kind="[^"]*"/); k = substr($0, RSTART + 6, RLENGTH - 7)
                match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
                n[k]++; les[k, n[k]] = le; cnt[k, n[k]] = $2
            }
            END {
                for (k in n) {
                    total = cnt[k, n[k]]; if (total == 0) continue
                    split("0.5 0.99", qs, " ")
                    for (i = 1; i <= 2; i++) for (j = 1; j <= n[k]; j++) if (cnt[k, j] >= qs[i] * total) { res[i] = les[k, j]; break }
                    printf "   server-side release of held %s requests after part publication: p50 <= %s s, p99 <= %s s (%d requests)\n", k, res[1], res[2], total
                }
            }' >&2 || true
    fi
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$dir/perf.data" --no-children --percent-limit 1.5 --stdio -g none \
            > "$dir/perf.txt" 2>/dev/null || true
        log "perf report: $dir/perf.txt"
    fi
    grep -E 'ERROR|WARN' "$dir/stderr.log" | sort | uniq -c | sort -rn | head -5 | sed 's/^/   server log: /' >&2 || true
    stop_pid "$PUB_PID"
    stop_pid "$pid"
}

run_nginx() {
    local n=$1 dir=$WORK/nginx-plain-$1 rport hport
    [[ -f $NGINX_RTMP_MODULE ]] || die "nginx-rtmp module not found at $NGINX_RTMP_MODULE"
    mkdir -p "$dir/logs" "$dir/hls" "$dir/tmp"
    rport=$(free_port)
    hport=$(free_port)
    # One process (master_process off, one worker) does RTMP ingest, HLS muxing and HTTP, so
    # /proc/PID covers all of nginx's work, as /proc/PID of tidecast covers all of tidecast's.
    cat > "$dir/nginx.conf" <<CONF
load_module $NGINX_RTMP_MODULE;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 16384; }
rtmp {
    server {
        listen 127.0.0.1:$rport;
        chunk_size 4096;
        application live {
            live on;
            hls on;
            hls_path $dir/hls;
            hls_fragment 1s;
            hls_playlist_length 6s;
        }
    }
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server {
        listen 127.0.0.1:$hport;
        location /hls/ {
            alias $dir/hls/;
            add_header Cache-Control no-cache;
        }
    }
}
CONF
    "${NICE_CMD[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" > "$dir/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$rport" || { cat "$dir/logs/error.log" >&2; die "nginx is not listening on $rport"; }
    start_publisher "rtmp://127.0.0.1:$rport/live/stream" "$n" "$dir/publisher.log"
    local url=http://127.0.0.1:$hport/hls/stream.m3u8
    wait_playlist "$url" '\.ts' || die "nginx: no HLS playlist at $url"
    sleep "$PREROLL"
    run_clients nginx-plain plain "$pid" "$url" "$n"
    stop_pid "$PUB_PID"
    stop_pid "$pid"
}

# --- sweep -------------------------------------------------------------------------------
log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); nice $NICE"
for n in $CLIENTS; do
    for r in $RUNS; do
        case $r in
            tidecast-ll) run_tidecast "$n" ll ;;
            tidecast-plain) run_tidecast "$n" plain ;;
            nginx-plain) run_nginx "$n" ;;
            *) die "unknown run '$r' in RUNS" ;;
        esac
    done
done

# --- summary -----------------------------------------------------------------------------
echo
printf '%-15s %5s %9s %8s %9s %9s %9s %9s %9s %9s %7s %9s %10s %8s\n' \
    run N req/s failed 'p50ms' 'p95ms' 'p99ms' 'maxms' 'pdtp99ms' 'readp99' cpu% rssMiB 'req/cpu-s' client%
for n in $CLIENTS; do
    for label in tidecast-ll tidecast-plain nginx-plain; do
        f=$WORK/$label-$n.json
        [[ -s $f ]] || continue
        jq -r '[.label, .clients, .requests_per_s, .failed, .arrival_first_p50_ms, .arrival_first_p95_ms,
                .arrival_first_p99_ms, .arrival_first_max_ms, .arrival_pdt_p99_ms, .delay_first_p99_ms,
                .server_cpu_pct, ((.server_rss_mean_kib // 0) / 1024), .requests_per_server_cpu_s, .client_cpu_pct]
               | map(if . == null then "-" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end) | @tsv' "$f" |
            awk -F'\t' '{ printf "%-15s %5s %9s %8s %9s %9s %9s %9s %9s %9s %7s %9s %10s %8s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14 }'
    done
    g=$WORK/nginx-plain-$n.json
    for label in tidecast-ll tidecast-plain; do
        t=$WORK/$label-$n.json
        if [[ -s $t && -s $g ]]; then
            jq -rn --slurpfile t "$t" --slurpfile g "$g" --arg l "$label" '
                ($t[0].requests_per_server_cpu_s / $g[0].requests_per_server_cpu_s) as $r
                | "N=\($t[0].clients): requests per server CPU-second, \($l) / nginx-plain = \($r * 100 | round / 100)"'
        fi
    done
    t=$WORK/tidecast-ll-$n.json
    [[ -s $t ]] && jq -r '"N=\(.clients): tidecast LL-HLS blocking reload answers arrived p99 \(.arrival_first_p99_ms) ms after the first answer to their part (target 50): \(if .target_met then "MET" else "NOT MET" end); read by the player tasks p99 \(.delay_first_p99_ms) ms"' "$t"
done
echo
echo "p50..max = a blocking-reload answer's arrival at the player's socket (kernel receive time) minus the"
echo "earliest arrival of an answer to the same part (LL-HLS only); pdtp99 = p99 of arrival minus the part's"
echo "completion by EXT-X-PROGRAM-DATE-TIME; readp99 = p99 of the same delay taken when the player task had read"
echo "the answer (adds the load client's own queueing on the shared cores); cpu% = server, % of one core;"
echo "req/cpu-s = all requests answered in the window / server CPU seconds in it (publishing and packaging included)."
echo "The patterns differ: LL-HLS is ~5 blocking reloads + ~5 part GETs per player per second (200 ms parts);"
echo "plain is 2 playlist polls + ~0.5 segment GETs per player per second. See loadtest/README.md."
echo "Raw JSON lines:"
for f in "$WORK"/*.json; do [[ $f == */publisher.log.json ]] || cat "$f"; done
