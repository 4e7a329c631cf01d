#!/usr/bin/env bash
# LL-HLS latency as a viewer sees it: a release build of tidecast, ffmpeg publishing 720p30 over
# RTMP (x264 veryfast zerolatency, 2 s GOP, AAC), and hls.js 1.x in Debian's headless Chromium
# playing /watch/main for SECONDS (tests/browser/play.mjs). Prints p50/p95 of the
# program-date-time latency (Date.now() - hls.playingDate: wall clock minus the
# EXT-X-PROGRAM-DATE-TIME of the frame on screen) and of hls.latency (hls.js's distance to the
# live edge), plus stalls, errors and parts loaded; the full JSON report goes to OUT.
#
# Usage: loadtest/hls_latency.sh
# Environment:
#   SECONDS_TO_PLAY  sampling window once playing (default 60)
#   PART_TARGET      hls.part_target (default 200ms)
#   HLS_CONFIG       JSON merged over the watch page's hls.js config, for experiments, e.g.
#                    '{"maxLiveSyncPlaybackRate":1.5}' (the page itself is not changed)
#   SEEK_TO_LIVE_SYNC=1  once playing, seek to hls.liveSyncPosition (what the watch page could do)
#   RUNS             how many player runs against the same live stream (default 1)
#   OUT              where the JSON reports go (default a temp file, printed at the end)
# Needs: ffmpeg, node, /usr/bin/chromium and `npm ci` in tests/browser (tests/run.sh installs
# them all). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_TO_PLAY=${SECONDS_TO_PLAY:-60}
PART_TARGET=${PART_TARGET:-200ms}
HLS_CONFIG=${HLS_CONFIG:-}
RUNS=${RUNS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}"

for tool in ffmpeg node; do
  command -v "$tool" >/dev/null || { echo "hls_latency.sh: $tool missing; run tests/run.sh" >&2; exit 1; }
done
[ -x /usr/bin/chromium ] || { echo "hls_latency.sh: /usr/bin/chromium missing; run tests/run.sh" >&2; exit 1; }
if [ ! -f tests/browser/node_modules/hls.js/dist/hls.min.js ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

cargo build --release --locked --bin tidecast >&2
WORK=$(mktemp -d /tmp/tidecast-hls-latency.XXXXXX)
# A private copy: the shared target dir may be rebuilt from another checkout while we run.
cp "$CARGO_TARGET_DIR/release/tidecast" "$WORK/tidecast"
OUT=${OUT:-$WORK/reports.jsonl}

server_pid=""
ffmpeg_pid=""
cleanup() {
  [ -n "$ffmpeg_pid" ] && kill "$ffmpeg_pid" 2>/dev/null || true
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

mkdir -p "$WORK/data"
TIDECAST__TRANSCODE__ENABLED=false TIDECAST__SERVER__DATA_DIR="$WORK/data" \
TIDECAST__DATABASE__URL="sqlite://$WORK/data/tidecast.db" \
TIDECAST__HTTP__LISTEN=127.0.0.1:0 \
TIDECAST__RTMP__LISTEN=127.0.0.1:0 \
TIDECAST__HLS__PART_TARGET="$PART_TARGET" \
TIDECAST__HTTP__STATIC_DIR="$ROOT/tests/browser/node_modules/hls.js/dist" \
TIDECAST__HTTP__HLSJS_URL=/static/hls.min.js \
RUST_LOG=info \
  "$WORK/tidecast" serve >"$WORK/server.out" 2>"$WORK/server.log" &
server_pid=$!

for _ in $(seq 200); do
  grep -q "tidecast is running" "$WORK/server.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
addr() { grep "listening protocol=\"$1\"" "$WORK/server.log" | grep -o 'addr=[0-9.:]*' | head -1 | cut -d= -f2; }
RTMP=$(addr rtmp)
HTTP=$(addr http)
KEY=$(grep -o 'live_[0-9a-f]\{64\}' "$WORK/server.out" | head -1)
[ -n "$RTMP" ] && [ -n "$HTTP" ] && [ -n "$KEY" ] || { echo "server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }
echo "tidecast (release) on http://$HTTP rtmp://$RTMP; part_target $PART_TARGET" >&2

publish_s=$(( (SECONDS_TO_PLAY + 30) * RUNS + 30 ))
ffmpeg -hide_banner -nostdin -loglevel warning -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac \
  -t "$publish_s" -f flv "rtmp://$RTMP/live/$KEY" 2>"$WORK/ffmpeg.log" &
ffmpeg_pid=$!

for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$HTTP/live/main/source/index.m3u8")" = 200 ] && break
  sleep 0.1
done
# Let the first complete segments exist, as a viewer joining a running stream would see.
sleep 5

args=("http://$HTTP/watch/main" "$SECONDS_TO_PLAY")
[ -n "$HLS_CONFIG" ] && args+=(--hls-config "$HLS_CONFIG")
[ "${SEEK_TO_LIVE_SYNC:-0}" = 1 ] && args+=(--seek-to-live-sync)
for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS: playing ${SECONDS_TO_PLAY}s${HLS_CONFIG:+ with $HLS_CONFIG}" >&2
  node tests/browser/play.mjs "${args[@]}" | tee -a "$OUT" | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const r = JSON.parse(s.trim().split("\n").pop());
      if (r.error) { console.log(`error: ${r.error}`); process.exitCode = 1; return; }
      const f = (x) => (x === null ? "n/a" : x.toFixed(3));
      console.log(`hls.js ${r.hls_version}, Chromium ${r.browser}, part target ${r.part_target_s} s, ` +
        `config extra ${JSON.stringify(r.hls_config_extra)}, seek to live sync ${JSON.stringify(r.seek_to_live_sync)}`);
      console.log(`  PDT latency (Date.now() - hls.playingDate): p50 ${f(r.pdt_latency_s.p50)} s  p95 ${f(r.pdt_latency_s.p95)} s`);
      console.log(`  hls.latency:                               p50 ${f(r.latency_s.p50)} s  p95 ${f(r.latency_s.p95)} s  (target ${f(r.target_latency_s.p50)} s)`);
      console.log(`  buffer ahead p50 ${f(r.buffer_ahead_s.p50)} s; playback rate p50 ${r.playback_rate.p50} max ${r.playback_rate.max}`);
      console.log(`  started in ${r.time_to_play_s} s; currentTime +${r.current_time_advanced_s} s over ${r.sampled_wall_s} s; ` +
        `stalls ${r.stalls_after_start}; errors ${r.errors_total} (fatal ${r.errors_fatal}); ` +
        `parts ${r.parts_loaded}, whole segments ${r.full_segments_loaded}; dropped ${r.dropped_frames}/${r.total_frames}`);
    });'
done
echo "JSON reports: $OUT" >&2
