#!/usr/bin/env bash
# Platform API benchmark: watch-progress throughput and read latency (GET /videos/{id},
# /users/me/history, /search) at 200 concurrent keep-alive clients, on SQLite and PostgreSQL.
#
# For each backend it starts a fresh release server (temp data dir; for PostgreSQL a fresh
# database on 127.0.0.1:5432, dropped at the end), seeds 1000 users, 1000 public videos with
# searchable titles and 50 history rows per user straight into the database, runs `api-load`
# for each endpoint, stops the server with SIGTERM, and checks that the watch updates were
# written. Tokens are signed by api-load with the server's generated JWT key ring.
#
# Usage: bash loadtest/api_load.sh
# Environment (all optional):
#   BACKENDS="sqlite postgres"
#   MODES="watch video history search"
#   CONCURRENCY=200     connections per run
#   DURATION=10         measured seconds per run (after 1 s of warm-up)
#   RATE=2000           offered requests/s of the open-loop read runs (200 clients x 10/s)
#   PG_ADMIN_URL        default postgres://postgres@127.0.0.1:5432/postgres
#   CARGO_TARGET_DIR    default ~/.cache/tidecast-target
#   KEEP=1              keep the temp dir (server logs, JSON lines)
#
# Loopback only; every process this script starts is killed by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
BACKENDS=${BACKENDS:-"sqlite postgres"}
MODES=${MODES:-"watch video history search"}
CONCURRENCY=${CONCURRENCY:-200}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}

die() { echo "api_load.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
for tool in cargo sqlite3 psql jq; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
ulimit -n 16384 2>/dev/null || true

WORK=$(mktemp -d /tmp/tidecast-apiload.XXXXXX)
PIDS=()
PG_DB="tidecast_apiload_$$"
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "building tidecast and api-load (release)"
# The target dir is shared with other checkouts, so `release/tidecast` may be another branch's
# build; take the executable cargo reports for this checkout instead.
exe_of() { jq -r "select(.reason == \"compiler-artifact\" and .target.name == \"$1\" and .executable != null) | .executable" | tail -1; }
BIN=$(cd "$ROOT" && cargo build --release --quiet --bin tidecast --message-format=json | exe_of tidecast)
LOAD=$(cd "$HERE/api_load" && cargo build --release --quiet --message-format=json | exe_of api-load)
[[ -x $BIN && -x $LOAD ]] || die "build failed"

WORDS="CASE i % 10 WHEN 0 THEN 'rust' WHEN 1 THEN 'music' WHEN 2 THEN 'news' WHEN 3 THEN 'game' \
WHEN 4 THEN 'live' WHEN 5 THEN 'cook' WHEN 6 THEN 'travel' WHEN 7 THEN 'talk' WHEN 8 THEN 'code' ELSE 'film' END"
seed_sql() { # $1, $2, $3: FROM items with a column i: 1..1000 as s, 1..1000 as u, 1..50 as k
    cat <<SQL
INSERT INTO users (email, username, is_admin, created_at_ms)
  SELECT 'load' || i || '@example.com', 'load' || i, FALSE, 0 FROM $1;
INSERT INTO videos (title, description, tags, visibility, source, duration_ms, status, created_at_ms, updated_at_ms)
  SELECT 'Video ' || i || ' about ' || ($WORDS), 'A long description of ' || ($WORDS) || ' number ' || i,
         ($WORDS) || ' tag' || (i % 50), 'public', 'upload', 600000, 'ready', i, i FROM $1;
INSERT INTO watch_history (user_id, video_id, position_ms, updated_at_ms)
  SELECT u.i, ((u.i * 7 + k.i) % 1000) + 1, k.i * 1000, k.i FROM $2, $3;
SQL
}

run_backend() {
    local backend=$1 dir="$WORK/$1" url
    mkdir -p "$dir"
    if [[ $backend == sqlite ]]; then
        url="sqlite://$dir/tidecast.db"
    else
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >/dev/null
        url="${PG_ADMIN_URL%/*}/$PG_DB"
    fi
    log "$backend: starting tidecast"
    TIDECAST__TRANSCODE__ENABLED=false TIDECAST__SERVER__DATA_DIR="$dir" TIDECAST__DATABASE__URL="$url" \
    TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0 \
    TIDECAST__DATABASE__MAX_CONNECTIONS=16 \
    TIDECAST__LOG__LEVEL="warn,tidecast::http=info,tidecast::app=info,tidecast::http::api=warn" \
        "$BIN" >"$dir/stdout.log" 2>"$dir/server.log" &
    local pid=$!
    PIDS+=("$pid")
    local addr=""
    for _ in $(seq 1 200); do
        addr=$(grep -o 'listening protocol="http" addr=[0-9.:]*' "$dir/server.log" 2>/dev/null | head -1 | sed 's/.*addr=//') || true
        [[ -n $addr ]] && grep -q "tidecast is running" "$dir/server.log" && break
        sleep 0.1
    done
    [[ -n $addr ]] || { cat "$dir/server.log" >&2; die "$backend: server did not start"; }
    log "$backend: seeding 1000 users, 1000 videos, 50000 history rows"
    if [[ $backend == sqlite ]]; then
        local n1000="(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000) SELECT i FROM r)"
        local n50="(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 50) SELECT i FROM r)"
        seed_sql "$n1000 AS s" "$n1000 AS u" "$n50 AS k" | sqlite3 -bail -cmd ".timeout 5000" "$dir/tidecast.db"
    else
        seed_sql "generate_series(1, 1000) AS s(i)" "generate_series(1, 1000) AS u(i)" "generate_series(1, 50) AS k(i)" \
            | psql -q -v ON_ERROR_STOP=1 "$url" >/dev/null
    fi
    for mode in $MODES; do
        # Closed loop: saturation throughput (and the latency that comes with saturation).
        "$LOAD" --addr "$addr" --mode "$mode" --concurrency "$CONCURRENCY" --duration "$DURATION" \
            --jwt-keys "$dir/secrets/jwt.keys" --label "$backend $mode max" | tee -a "$WORK/results.jsonl"
        # Open loop: latency at a fixed offered rate from the same number of clients.
        if [[ $mode != watch ]]; then
            "$LOAD" --addr "$addr" --mode "$mode" --concurrency "$CONCURRENCY" --duration "$DURATION" \
                --rate "$RATE" --jwt-keys "$dir/secrets/jwt.keys" --label "$backend $mode @${RATE}/s" \
                | tee -a "$WORK/results.jsonl"
        fi
    done
    kill -TERM "$pid"
    wait "$pid" || die "$backend: server exited with an error"
    local rows
    if [[ $backend == sqlite ]]; then
        rows=$(sqlite3 "$dir/tidecast.db" "SELECT COUNT(*) FROM watch_history WHERE updated_at_ms > 1000000")
    else
        rows=$(psql -tA "$url" -c "SELECT COUNT(*) FROM watch_history WHERE updated_at_ms > 1000000")
    fi
    log "$backend: $rows watch-history rows written by the API (distinct user/video pairs)"
}

for backend in $BACKENDS; do run_backend "$backend"; done
log "results (JSON lines): $WORK/results.jsonl"
