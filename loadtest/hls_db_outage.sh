#!/usr/bin/env bash
# LL-HLS during a database outage: N LL-HLS players (the `hls-clients` load client, blocking
# playlist reloads + preload-hinted part fetches) against one tidecast backed by a PostgreSQL
# cluster of this script's own, in two windows back to back with the same client settings:
#   A: the database is up;
#   B: the database was stopped (`pg_ctl stop -m fast`) a few seconds before the client started,
#      and stays down for the whole run (the players' ramp included).
# Then the cluster is started again and `/readyz` must come back to 200.
# Target (hardening issue): in B the blocking reload answers still arrive p99 within 50 ms of
# their part completing, as in A.
#
# Usage: bash loadtest/hls_db_outage.sh
# Environment (all optional):
#   CLIENTS=1000             players per window (1..5000)
#   DURATION=20              measurement window per run, seconds (1..300)
#   RAMP=200                 players started per second
#   DOWN_LEAD=3              seconds between stopping the database and starting window B's client
#   AB_TOL_MS=5              how much worse B's arrival p99 may be than A's and still pass
#   TARGET_MS=50             the p99 target for B
#   OUTAGE=1                 0: leave the database up in window B too (a control for the order:
#                            the second window on a server that has just served the first)
#   CLIENT_ARGS=""           extra hls-clients arguments for both windows
#   CARGO_TARGET_DIR         default ~/.cache/tidecast-target
#   TIDECAST_BIN             run this tidecast binary (tidecast is then not built)
#   LOADTEST_BIN_DIR         take rtmp-fanout and hls-clients from here (then not built)
#   LOADTEST_CACHE           where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   PG_BIN_DIR               where initdb/pg_ctl/postgres are, default: from PATH
#   PG_USER=postgres         the OS user the cluster runs as when this script runs as root
#   KEEP=1                   keep the temp dir (server log, cluster log, per-window JSON)
#   NICE=0                   run server, publisher and client under `nice -n NICE`
#
# Loopback only; the machine's own PostgreSQL (5432) is not touched. Every process this script
# starts is killed by its PID on exit, the cluster's postmaster included.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
CLIENTS=${CLIENTS:-1000}
DURATION=${DURATION:-20}
RAMP=${RAMP:-200}
DOWN_LEAD=${DOWN_LEAD:-3}
AB_TOL_MS=${AB_TOL_MS:-5}
TARGET_MS=${TARGET_MS:-50}
OUTAGE=${OUTAGE:-1}
B_LABEL=B-db-down
[[ $OUTAGE == 0 ]] && B_LABEL=B-db-up-control
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
PG_USER=${PG_USER:-postgres}
NICE=${NICE:-0}
NICE_CMD=(nice -n "$NICE")
# As hls_clients.sh: seconds the publisher runs before the first client starts, the client's
# no-player CPU baseline, and its settle time after the ramp.
PREROLL=8
BASELINE=4
SETTLE=3

die() { echo "hls_db_outage.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $NICE =~ ^-?[0-9]+$ ]] && (( NICE >= -20 && NICE <= 19 )) || die "NICE must be -20..19"
[[ $CLIENTS =~ ^[0-9]+$ ]] && (( CLIENTS >= 1 && CLIENTS <= 5000 )) || die "CLIENTS must be 1..5000"
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 300 )) || die "DURATION must be 1..300"
[[ $RAMP =~ ^[0-9]+$ ]] && (( RAMP >= 1 && RAMP <= 2000 )) || die "RAMP must be 1..2000"
[[ $DOWN_LEAD =~ ^[0-9]+$ ]] && (( DOWN_LEAD <= 60 )) || die "DOWN_LEAD must be 0..60"
[[ $AB_TOL_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "AB_TOL_MS must be a number"
[[ $TARGET_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "TARGET_MS must be a number"
[[ $OUTAGE == 0 || $OUTAGE == 1 ]] || die "OUTAGE must be 0 or 1"
PG_BIN=${PG_BIN_DIR:+$PG_BIN_DIR/}
for tool in ffmpeg jq curl python3 "${PG_BIN}initdb" "${PG_BIN}pg_ctl"; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-dboutage

# --- own PostgreSQL cluster --------------------------------------------------------------
# initdb and postgres refuse to run as root, so as root the cluster belongs to PG_USER.
PGDATA_DIR=$WORK/pg/data
PG_SOCK=$WORK/pg/sock
PG_PORT=$(free_port)
PG_PID=""
pg_as() {
    if (( EUID == 0 )); then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

# The postmaster's PID, from its pid file (pg_ctl starts it in the background).
pg_track() {
    PG_PID=$(head -1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
    [[ $PG_PID =~ ^[0-9]+$ ]] || die "no postmaster PID in $PGDATA_DIR/postmaster.pid"
    PIDS+=("$PG_PID")
}

pg_start() {
    pg_as "${PG_BIN}pg_ctl" -D "$PGDATA_DIR" -l "$WORK/pg/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCK -c max_connections=100" start > /dev/null ||
        { cat "$WORK/pg/server.log" >&2; die "the cluster did not start"; }
    pg_track
}

# pg_stop MODE: stop the cluster with pg_ctl and forget its PID.
pg_stop() {
    local keep=() p
    if pg_as "${PG_BIN}pg_ctl" -D "$PGDATA_DIR" -m "$1" -w -t 30 stop > /dev/null; then
        for p in "${PIDS[@]}"; do [[ $p == "$PG_PID" ]] || keep+=("$p"); done
        PIDS=("${keep[@]}")
    elif [[ -n $PG_PID ]]; then
        stop_pid "$PG_PID"
    fi
    PG_PID=""
}

# Stop the cluster before lt_cleanup signals the rest: an immediate shutdown ends its backends too
# (lt_cleanup's SIGTERM to the postmaster alone would be a "smart" shutdown).
cleanup() {
    if [[ -n $PG_PID ]]; then pg_stop immediate; fi
    lt_cleanup
}
trap cleanup EXIT

mkdir -p "$WORK/pg" "$PG_SOCK"
(( EUID == 0 )) && { chmod 755 "$WORK"; chown -R "$PG_USER" "$WORK/pg"; }
log "own PostgreSQL cluster on 127.0.0.1:$PG_PORT (trust auth, $PGDATA_DIR)"
pg_as "${PG_BIN}initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --no-sync > "$WORK/pg/initdb.log" 2>&1 ||
    { cat "$WORK/pg/initdb.log" >&2; die "initdb failed"; }
pg_start
pg_as "${PG_BIN}createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres tidecast 2>/dev/null ||
    pg_as "${PG_BIN}psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc 'CREATE DATABASE tidecast' postgres ||
    die "could not create the database"
DB_URL=postgres://postgres@127.0.0.1:$PG_PORT/tidecast

# --- build -------------------------------------------------------------------------------
if [[ -n ${TIDECAST_BIN:-} ]]; then
    TIDECAST=$TIDECAST_BIN
else
    command -v cargo >/dev/null || die "cargo is not installed"
    log "building tidecast (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --quiet)
    TIDECAST=$CARGO_TARGET_DIR/release/tidecast
fi
if [[ -n ${LOADTEST_BIN_DIR:-} ]]; then
    BIN_DIR=$LOADTEST_BIN_DIR
else
    command -v cargo >/dev/null || die "cargo is not installed"
    log "building rtmp-fanout and hls-clients (release)"
    cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
    BIN_DIR=$CARGO_TARGET_DIR/release
fi
FANOUT=$BIN_DIR/rtmp-fanout
HLSCLIENTS=$BIN_DIR/hls-clients
for b in "$TIDECAST" "$FANOUT" "$HLSCLIENTS"; do [[ -x $b ]] || die "$b is not an executable"; done

ensure_input

# --- tidecast on the cluster -------------------------------------------------------------
DIR=$WORK/tidecast
mkdir -p "$DIR"
# Created before the server starts: its redirections are opened in the background child.
: > "$DIR/stdout.log"
TIDECAST__SERVER__DATA_DIR=$DIR \
TIDECAST__DATABASE__URL=$DB_URL \
TIDECAST__HTTP__LISTEN=127.0.0.1:0 \
TIDECAST__RTMP__LISTEN=127.0.0.1:0 \
TIDECAST__LOG__LEVEL=${TIDECAST_LOG_LEVEL:-warn} \
TIDECAST__HTTP__WORKERS=${TIDECAST_WORKERS:-0} \
    "${NICE_CMD[@]}" "$TIDECAST" > "$DIR/stdout.log" 2> "$DIR/stderr.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
key="" rport="" hport=""
for _ in $(seq 300); do
    key=$(sed -n 's/^  Stream Key: \(live_[0-9a-zA-Z_]*\).*/\1/p' "$DIR/stdout.log" | head -1)
    rport=$(sed -n 's|^  Server: *rtmp://[^:/]*:\([0-9]*\)/live.*|\1|p' "$DIR/stdout.log" | head -1)
    hport=$(sed -n 's|.*LL-HLS http://[^:/]*:\([0-9]*\)/live/.*|\1|p' "$DIR/stdout.log" | head -1)
    [[ -n $key && -n $rport && -n $hport ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DIR/stderr.log" >&2; die "tidecast exited at start-up"; }
    sleep 0.1
done
[[ -n $key && -n $rport && -n $hport ]] || die "no stream key / ports in tidecast's banner ($DIR/stdout.log)"
wait_port "$rport" || die "tidecast is not listening on $rport"
HTTP=http://127.0.0.1:$hport

# readyz: the HTTP status of /readyz ("000" when there is no answer within 5 s).
readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$HTTP/readyz" || true; }
[[ $(readyz) == 200 ]] || die "/readyz is not 200 with the database up"

# One publisher for both windows: the stream must not restart between A and B.
PER_RUN=$(( BASELINE + CLIENTS / RAMP + 1 + SETTLE + DURATION ))
PUB_SECS=$(( PREROLL + 2 * PER_RUN + DOWN_LEAD + 40 ))
timeout $(( PUB_SECS + 30 )) "${NICE_CMD[@]}" "$FANOUT" --label publisher \
    --publish-url "rtmp://127.0.0.1:$rport/live/$key" --input "$INPUT" \
    --warmup 3 --settle 0 --duration "$PUB_SECS" > "$DIR/publisher.json" 2> "$DIR/publisher.log" &
PUB_PID=$!
PIDS+=("$PUB_PID")

URL=$HTTP/live/main/source/index.m3u8
ok=0
for _ in $(seq 300); do
    curl -sf --max-time 2 "$URL" 2>/dev/null | grep -q EXT-X-PART && { ok=1; break; }
    sleep 0.1
done
(( ok )) || die "no LL-HLS playlist at $URL"
sleep "$PREROLL"

# window LABEL: one bounded hls-clients run against the stream.
window() {
    local label=$1 bound=$(( PER_RUN + 40 ))
    log "$label: $CLIENTS players (ll), window ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    timeout "$bound" "${NICE_CMD[@]}" "$HLSCLIENTS" --label "$label" --mode ll --url "$URL" --clients "$CLIENTS" \
        --ramp "$RAMP" --settle "$SETTLE" --baseline "$BASELINE" --duration "$DURATION" \
        --target-ms "$TARGET_MS" --server-pid "$SERVER_PID" ${CLIENT_ARGS:-} \
        > "$WORK/$label.json" 2> "$WORK/$label.log" || {
        cat "$WORK/$label.log" >&2
        die "$label: hls-clients failed"
    }
    kill -0 "$SERVER_PID" 2>/dev/null || die "$label: the server exited during the window"
    sed 's/^/   /' "$WORK/$label.log" >&2
}

log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); nice $NICE"
window A-db-up

if (( OUTAGE )); then
    log "stopping the database (pg_ctl stop -m fast), ${DOWN_LEAD}s before window B's client starts"
    pg_stop fast
else
    log "OUTAGE=0: the database stays up in window B (control run)"
fi
sleep "$DOWN_LEAD"
READY_DOWN=$(readyz)
log "/readyz before window B: $READY_DOWN"
window "$B_LABEL"
READY_END_B=$(readyz)
log "/readyz at the end of window B: $READY_END_B"

if (( OUTAGE )); then
    log "starting the database again"
    pg_start
fi
t0=$(date +%s.%N)
READY_BACK=""
for _ in $(seq 60); do
    [[ $(readyz) == 200 ]] && { READY_BACK=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')"); break; }
    sleep 0.5
done

# --- summary -----------------------------------------------------------------------------
server_log=$(grep -E 'ERROR|WARN' "$DIR/stderr.log" | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn | head -5 || true)
echo
for label in A-db-up "$B_LABEL"; do
    jq -r '"\(.label): blocking reload answer, arrival p99 \(.arrival_first_p99_ms) ms after the first answer to its part (p50 \(.arrival_first_p50_ms), max \(.arrival_first_max_ms), n=\(.arrival_first_n)), p99 \(.arrival_pdt_p99_ms) ms after its part'"'"'s PDT completion; read by the player tasks p99 \(.delay_first_p99_ms) ms; \(.requests) requests, \(.failed) failed\(if .errors != "" then " (\(.errors))" else "" end); server CPU \(.server_cpu_pct * 10 | round / 10)% of a core, RSS mean \((.server_rss_mean_kib // 0) / 1024 | round) MiB"' "$WORK/$label.json"
done
if [[ -n $READY_BACK ]]; then back="200 again ${READY_BACK} s after the restart"; else back="NOT 200 within 30 s of the restart"; fi
echo "/readyz: $READY_DOWN before window B, $READY_END_B at its end, $back"
[[ -n $server_log ]] && echo "server log (warn/error, top 5):" && echo "$server_log" | sed 's/^/   /'
verdict=$(jq -rn --slurpfile a "$WORK/A-db-up.json" --slurpfile b "$WORK/$B_LABEL.json" \
    --argjson t "$TARGET_MS" --argjson tol "$AB_TOL_MS" '
    ($a[0]) as $a | ($b[0]) as $b
    | ($b.arrival_first_p99_ms != null and $b.arrival_first_p99_ms <= $t
       and $b.arrival_pdt_p99_ms != null and $b.arrival_pdt_p99_ms <= $t) as $target
    | ($b.arrival_first_p99_ms != null and $a.arrival_first_p99_ms != null
       and $b.arrival_first_p99_ms - $a.arrival_first_p99_ms <= $tol) as $ab
    | "verdict: B arrival p99 \($b.arrival_first_p99_ms) ms after the first answer, \($b.arrival_pdt_p99_ms) ms after PDT completion (target \($t)): \(if $target then "MET" else "NOT MET" end)\n"
      + "verdict: B - A arrival p99 = \(($b.arrival_first_p99_ms - $a.arrival_first_p99_ms) * 10 | round / 10) ms (allowed \($tol)): \(if $ab then "MET" else "NOT MET" end)\n"
      + "verdict: failed requests A \($a.failed), B \($b.failed)"')
echo "$verdict"
if (( OUTAGE )); then
    if [[ $READY_DOWN == 503 && $READY_END_B == 503 && -n $READY_BACK ]]; then r=MET; else r="NOT MET"; fi
    echo "verdict: /readyz 503 while down, 200 after restart: $r"
fi
echo
echo "arrival = a blocking-reload answer's kernel receive time at the player's socket, minus the earliest"
echo "arrival of an answer to the same part, or minus the part's completion by EXT-X-PROGRAM-DATE-TIME."
echo "Raw JSON lines:"
cat "$WORK/A-db-up.json" "$WORK/$B_LABEL.json"
