#!/usr/bin/env bash
# WHEP play at scale, against RTMP play in the same run: one 2 Mb/s 720p30 H.264 stream without
# B-frames (WebRTC cannot carry them; its AAC audio WHEP leaves out) is published over RTMP by
# ffmpeg (a cached file, copied, looped in real time), and N viewers play it, first over RTMP
# (`rtmp-fanout`, viewers only), then over WHEP (`whep-clients`: N `rtc` peer connections in one
# process, each on its own UDP socket, counting RTP without decoding). Each part gets a fresh
# tidecast (memory the previous part freed but kept is not in its RSS) and its own publisher.
# When a xiu binary is found (XIU, `xiu` on PATH, or ~/.cargo/bin/xiu), a third part gives xiu
# the same publisher and the same WHEP load, guarded by a probe (see xiu_part below).
#
# For each part it prints:
#   viewers     connected (WHEP: ICE and DTLS done), received media in the window, kept up (no
#               2 s without RTP, not cut off; RTMP: rtmp-fanout's kept-up rule), stalled (some
#               2 s without RTP inside the window), cut off (still without RTP at the window's
#               end, or the connection failed or closed in it)
#   cpu         the server's utime+stime (/proc/PID/stat) over the window, % of one core, and / N;
#               "cpu%/view+" leaves out the publish-only CPU, measured over BASELINE s before the
#               viewers come
#   rss         server VmRSS: (mean over the window - before the viewers) / N, KiB
#   media       WHEP: RTP bytes each viewer received in the window, Mb/s
#   udp         datagrams the kernel dropped for a full receive buffer: on the viewers' sockets
#               (before the window / in it), on the server's shared WebRTC port, and the
#               server's own count of datagrams it could not send or queue
#               (tidecast_webrtc_datagrams_dropped_total)
#   client      the load client's own CPU over the window (it shares the 2 cores)
# and the ratios: tidecast WHEP/RTMP CPU per viewer (the issue's target: at most 3) and memory per
# viewer, and, when xiu ran, xiu/tidecast over WHEP.
#
# Usage: bash loadtest/webrtc_viewers.sh
# Environment (all optional):
#   VIEWERS=200            viewers per part (1..2000)
#   DURATION=20            measurement window, seconds (3..300)
#   RAMP=20                new viewers per second (both clients)
#   WARMUP=10              seconds the publisher runs alone before the baseline (3..120; the ring
#                          is 8 s)
#   BASELINE=5             seconds of publish-only CPU before the viewers (1..60)
#   PARTS="rtmp whep xiu"  which parts, in this order (xiu is skipped, with the reason, if absent)
#   XIU                    the xiu binary (default: `xiu` on PATH, else ~/.cargo/bin/xiu)
#   XIU_BIND               the address xiu's viewers bind (default: the machine's first
#                          non-loopback IPv4; xiu's ICE agent has no loopback candidates)
#   CARGO_TARGET_DIR       default ~/.cache/tidecast-target
#   LOADTEST_CACHE         where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   KEEP=1                 keep the temp dir (server logs, per-part JSON)
#   PERF=1                 also `perf record` the server for 10 s inside each window (a
#                          diagnostic: it adds CPU of its own; the report goes to stderr);
#                          PERF_CALLGRAPH="--call-graph dwarf,32768" for call chains through libc
#   TIDECAST_BIN           run this tidecast binary instead (no build)
# Quick check: VIEWERS=20 DURATION=5 bash loadtest/webrtc_viewers.sh
#
# Loopback only for tidecast (the xiu part uses the machine's own address, which stays inside the
# kernel too); every process this script starts is killed by its PID on exit. On a shared
# machine, run it under `nice -n -10`: UDP has no back-pressure, so a starved server or client
# loses datagrams where TCP would only fall behind (see loadtest/README.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
VIEWERS=${VIEWERS:-200}
DURATION=${DURATION:-20}
RAMP=${RAMP:-20}
WARMUP=${WARMUP:-10}
BASELINE=${BASELINE:-5}
PARTS=${PARTS:-"rtmp whep xiu"}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}
SETTLE=3

die() { echo "webrtc_viewers.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $VIEWERS =~ ^[0-9]+$ ]] && (( VIEWERS >= 1 && VIEWERS <= 2000 )) || die "VIEWERS must be 1..2000"
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 3 && DURATION <= 300 )) || die "DURATION must be 3..300"
[[ $RAMP =~ ^[0-9]+$ ]] && (( RAMP >= 1 && RAMP <= 500 )) || die "RAMP must be 1..500"
[[ $WARMUP =~ ^[0-9]+$ ]] && (( WARMUP >= 3 && WARMUP <= 120 )) || die "WARMUP must be 3..120"
[[ $BASELINE =~ ^[0-9]+$ ]] && (( BASELINE >= 1 && BASELINE <= 60 )) || die "BASELINE must be 1..60"
for p in $PARTS; do [[ $p =~ ^(rtmp|whep|xiu)$ ]] || die "PARTS entries are rtmp, whep or xiu (got '$p')"; done
for tool in ffmpeg jq curl cargo python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
# Each RTMP viewer is a socket in the client and one in the server; each WHEP viewer a UDP socket
# in the client (and two TCP connections for POST and DELETE).
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-webrtc

# --- build -------------------------------------------------------------------------------
lt_tidecast
log "building rtmp-fanout and whep-clients (release)"
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --bin rtmp-fanout --bin whep-clients
cp "$CARGO_TARGET_DIR/release/rtmp-fanout" "$CARGO_TARGET_DIR/release/whep-clients" "$WORK/"
FANOUT=$WORK/rtmp-fanout
WHEP=$WORK/whep-clients

# --- the test stream: 2 Mb/s, no B-frames --------------------------------------------------
mkdir -p "$CACHE"
INPUT=$CACHE/testsrc2-720p30-2M-nobframes-aac-60s.flv
if [[ ! -s $INPUT ]]; then
    log "encoding the 2 Mb/s test stream (no B-frames) once into $INPUT"
    ffmpeg -nostdin -hide_banner -loglevel error -y \
        -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=1000:sample_rate=48000 \
        -t 60 -c:v libx264 -preset veryfast -tune zerolatency -b:v 2M -maxrate 2M -bufsize 2M -g 60 \
        -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$INPUT.tmp"
    mv "$INPUT.tmp" "$INPUT"
fi

# --- helpers -------------------------------------------------------------------------------
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Kernel UDP receive-buffer overflows, all sockets (/proc/net/snmp).
udp_rcvbuf_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp; }
# udp_drops PORT: the kernel's drop count of the UDP socket on 127.0.0.1:PORT (/proc/net/udp,
# last column: datagrams that found its receive buffer full).
udp_drops() { awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { print $NF; f = 1 } END { if (!f) print 0 }' /proc/net/udp; }
metric() { curl -s --max-time 5 "http://$1/metrics" | awk -v s="$2" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }'; }

# start_publisher URL LOG: ffmpeg sends the file in real time, looped, copied; sets PUB_PID.
start_publisher() {
    ffmpeg -nostdin -hide_banner -loglevel warning -re -stream_loop -1 -i "$INPUT" \
        -map 0:v -map 0:a -c copy -f flv -flvflags no_duration_filesize "$1" 2>>"$2" &
    PUB_PID=$!; PIDS+=("$PUB_PID")
}

# warm_and_baseline PID: the publisher alone for WARMUP s, then the server's CPU over BASELINE s
# (publish only); sets BASE_CPU (% of a core).
warm_and_baseline() {
    sleep "$WARMUP"
    kill -0 "$PUB_PID" 2>/dev/null || die "the publisher exited during the warm-up"
    local c0 c1 t0 t1
    c0=$(cpu_ticks "$1"); t0=$(date +%s.%N)
    sleep "$BASELINE"
    c1=$(cpu_ticks "$1"); t1=$(date +%s.%N)
    BASE_CPU=$(python3 -c "print(f'{($c1 - $c0) / $TICKS / ($t1 - $t0) * 100:.3f}')")
}

# run_client LABEL KIND(rtmp|whep) PID URL: one client run, its JSON in $WORK/LABEL.json with
# the script's own figures (baseline CPU, UDP drops) merged in.
run_client() {
    local label=$1 kind=$2 pid=$3 url=$4 out=$WORK/$1.json bound u0 u1
    shift 4   # the rest: extra whep-clients arguments
    bound=$(( VIEWERS / RAMP + SETTLE + DURATION + 60 ))
    log "$label: $VIEWERS viewers at $RAMP/s, window ${DURATION}s"
    u0=$(udp_rcvbuf_errors)
    local perf_pid=""
    if [[ ${PERF:-0} == 1 ]]; then
        # Inside the window: whep-clients samples 2 s of baseline first, rtmp-fanout 2 s too.
        (sleep $(( 2 + VIEWERS / RAMP + SETTLE + 2 )) &&
            exec perf record -q -F 499 ${PERF_CALLGRAPH:--g} -p "$pid" -o "$WORK/$label.perf.data" -- sleep $(( DURATION > 12 ? 10 : DURATION - 2 ))) \
            >"$WORK/$label.perf.log" 2>&1 &
        perf_pid=$!; PIDS+=("$perf_pid")
    fi
    if [[ $kind == rtmp ]]; then
        timeout "$bound" "$FANOUT" --label "$label" --server-pid "$pid" --url "$url" \
            --viewers "$VIEWERS" --ramp "$RAMP" --settle "$SETTLE" --duration "$DURATION" \
            >"$out.raw" 2>"$WORK/$label.log" || { cat "$WORK/$label.log" >&2; die "$label: rtmp-fanout failed"; }
    else
        timeout "$bound" "$WHEP" --label "$label" --server-pid "$pid" --url "$url" \
            --viewers "$VIEWERS" --ramp "$RAMP" --settle "$SETTLE" --duration "$DURATION" --baseline 2 "$@" \
            >"$out.raw" 2>"$WORK/$label.log" || { cat "$WORK/$label.log" >&2; die "$label: whep-clients failed"; }
    fi
    u1=$(udp_rcvbuf_errors)
    kill -0 "$pid" 2>/dev/null || die "$label: the server exited during the run"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$WORK/$label.perf.data" --no-children --percent-limit 0.7 --stdio -g none \
            >"$WORK/$label.perf.txt" 2>/dev/null || true
        log "perf ($label, server, 10 s of the window; $WORK/$label.perf.txt):"
        grep -v '^#' "$WORK/$label.perf.txt" | grep -v '^$' | head -30 | sed 's/^/   /' >&2 || true
    fi
    jq -c --argjson base "$BASE_CPU" --argjson udp "$(( u1 - u0 ))" --argjson n "$VIEWERS" '
        . + { kind: "'"$kind"'", baseline_cpu_pct: $base, udp_rcvbuf_errors_machine: $udp,
              cpu_per_viewer: (.server_cpu_pct / $n),
              cpu_per_viewer_marginal: ((.server_cpu_pct - $base) / $n),
              mbps_per_viewer: (if "'"$kind"'" == "whep" then .mbps_per_viewer_mean else null end) }' "$out.raw" >"$out"
    sed 's/^/   /' "$WORK/$label.log" | grep -E 'connected|received|kept_up|stalled|cut_off|disconnected|setup_failed|server_cpu_pct |rss_per_viewer|connect_p95|first_video_p95|first_frame_p95|client_cpu|errors' >&2 || true
}

# tidecast_part LABEL KIND: a fresh tidecast with channel "load", the publisher, the viewers.
tidecast_part() {
    local label=$1 kind=$2 dir=$WORK/$1 key d0 d1
    mkdir -p "$dir"
    SERVER_ENV=(
        TIDECAST__SERVER__DATA_DIR="$dir" TIDECAST__DATABASE__URL="sqlite://$dir/tidecast.db"
        TIDECAST__SERVER__CREATE_DEFAULT_CHANNEL=false
        TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0
        TIDECAST__SRT__LISTEN=127.0.0.1:0
        RUST_LOG=${TIDECAST_LOG_LEVEL:-info}
    )
    key=$(env "${SERVER_ENV[@]}" "$TIDECAST" channel create load 2>>"$dir/cli.log" | tail -1)
    [[ $key == live_* ]] || die "$label: channel create printed no key; see $dir/cli.log"
    lt_serve "$label" "$dir/server.log"
    start_publisher "rtmp://$RTMP/live/$key" "$dir/publisher.log"
    local live=0
    for _ in $(seq 100); do
        live=$(metric "$HTTP" 'tidecast_ingest_sessions{protocol="rtmp"}'); live=${live%.*}
        (( live >= 1 )) && break
        sleep 0.1
    done
    (( live >= 1 )) || die "$label: the publisher is not live after 10 s; see $dir"
    log "$label: tidecast on http $HTTP rtmp $RTMP (pid $SERVER_PID), publishing; warm-up ${WARMUP}s"
    warm_and_baseline "$SERVER_PID"
    if [[ $kind == rtmp ]]; then
        run_client "$label" rtmp "$SERVER_PID" "rtmp://$RTMP/live/load"
    else
        local wport r0 r1
        wport=$(lt_listen_addr webrtc); wport=${wport##*:}
        [[ -n $wport ]] || die "$label: the WebRTC UDP address is not in $dir/server.log"
        d0=$(metric "$HTTP" tidecast_webrtc_datagrams_dropped_total); r0=$(udp_drops "$wport")
        run_client "$label" whep "$SERVER_PID" "http://$HTTP/whep/load"
        d1=$(metric "$HTTP" tidecast_webrtc_datagrams_dropped_total); r1=$(udp_drops "$wport")
        jq -c --argjson d "$(python3 -c "print(int(float('$d1') - float('$d0')))")" --argjson r "$(( r1 - r0 ))" \
            '.server_datagrams_dropped = $d | .server_udp_rx_drops = $r' \
            "$WORK/$label.json" >"$WORK/$label.json.tmp" && mv "$WORK/$label.json.tmp" "$WORK/$label.json"
    fi
    # Sessions left behind after every viewer's DELETE (should be 0 within a second or two).
    if [[ $kind == whep ]]; then
        local left=0
        for _ in $(seq 30); do
            left=$(metric "$HTTP" 'tidecast_webrtc_sessions{kind="whep"}'); left=${left%.*}
            (( left == 0 )) && break
            sleep 0.1
        done
        log "$label: WHEP sessions left after the DELETEs (waited up to 3 s): $left"
        log "$label: sessions the server closed as cut off: $(grep -c 'reason="cut off' "$dir/server.log" || true)"
    fi
    grep -E ' (WARN|ERROR) ' "$dir/server.log" | grep -v 'auth::keys' | sed 's/^.*\(WARN\|ERROR\)/\1/' | cut -c1-160 \
        | sort | uniq -c | sort -rn | head -5 | sed 's/^/   server log: /' >&2 || true
    stop_pid "$PUB_PID"
    stop_pid "$SERVER_PID"
}

# find_xiu: sets XIU to a runnable xiu, or XIU_WHY to why not.
find_xiu() {
    XIU=${XIU:-$(command -v xiu || true)}
    [[ -z $XIU && -x $HOME/.cargo/bin/xiu ]] && XIU=$HOME/.cargo/bin/xiu
    if [[ -z $XIU || ! -x $XIU ]]; then
        XIU_WHY="no xiu binary (set XIU=/path/to/xiu, or: apt-get install cmake libopus-dev && cargo install xiu)"
        XIU=""
    fi
}

# xiu_probe URL LOG: one WHEP viewer for 3 s against xiu; prints "ok" if it received media, else
# the client's error.
xiu_probe() {
    local out
    out=$(timeout 60 "$WHEP" --label xiu-probe --url "$1" --bind-ip "$XIU_BIND" --viewers 1 --duration 3 --settle 1 \
        --baseline 0 --connect-timeout 8 2>"$2" || true)
    [[ -n $out ]] || out='{}'
    if [[ $(jq -r '.received_in_window // 0' <<<"$out") == 1 ]]; then echo ok; else
        jq -r 'if (.errors // "") != "" then .errors elif .connected == 0 then "answered, but ICE/DTLS never completed"
               else "connected, but no RTP" end' <<<"$out"
    fi
}

# xiu_part: xiu with RTMP and WebRTC (WHIP/WHEP over HTTP) on free ports. Guarded: first the same
# RTMP publisher as tidecast's and a probe (one WHEP viewer, 3 s); if that viewer gets no media,
# a WHIP publisher of the same file (`whep-clients --whip-publish`, video only) and the probe
# again. The WHEP load runs only behind a probe that received media; otherwise XIU_WHY says what
# each attempt got (the client's error, xiu's log). xiu binds 0.0.0.0 (it has no listen-address
# option) and its HTTP API on port 8000; its ICE agent (webrtc-rs) gathers no loopback
# candidates, so the viewers bind the machine's own address (XIU_BIND) there.
xiu_part() {
    local label=xiu-whep dir=$WORK/xiu-whep rtmp_port webrtc_port pid url r_rtmp r_whip via panic
    mkdir -p "$dir"
    rtmp_port=$(free_port); webrtc_port=$(free_port)
    (cd "$dir" && exec "$XIU" -r "$rtmp_port" -w "$webrtc_port" -l "${XIU_LOG_LEVEL:-warn}") >"$dir/xiu.out" 2>"$dir/xiu.log" &
    pid=$!; PIDS+=("$pid")
    wait_port "$rtmp_port" || { cat "$dir/xiu.log" >&2; die "xiu is not listening on RTMP $rtmp_port"; }
    wait_port "$webrtc_port" || { cat "$dir/xiu.log" >&2; die "xiu is not listening on WebRTC $webrtc_port"; }
    url="http://127.0.0.1:$webrtc_port/whep?app=live&stream=load"
    log "$label: xiu ($XIU, says '$("$XIU" --version 2>/dev/null | head -1)'), rtmp $rtmp_port webrtc $webrtc_port (pid $pid); viewers bind $XIU_BIND"

    start_publisher "rtmp://127.0.0.1:$rtmp_port/live/load" "$dir/publisher.log"
    sleep 3
    r_rtmp=$(xiu_probe "$url" "$dir/probe-rtmp.log")
    via=rtmp
    if [[ $r_rtmp != ok ]]; then
        r_rtmp="$r_rtmp; xiu: $(grep -h -E 'ERROR' "$dir/xiu.log" "$dir/xiu.out" 2>/dev/null | grep -v 'none return' | head -1 | sed 's/^[^]]*] *//' || true)"
        log "$label: WHEP of the RTMP-published stream: $r_rtmp"
        stop_pid "$PUB_PID"
        "$WHEP" --whip-publish "http://127.0.0.1:$webrtc_port/whip?app=live&stream=load" --input "$INPUT" \
            --bind-ip "$XIU_BIND" --duration $(( WARMUP + BASELINE + VIEWERS / RAMP + SETTLE + DURATION + 40 )) \
            >"$dir/whip-publisher.out" 2>"$dir/whip-publisher.log" &
        PUB_PID=$!; PIDS+=("$PUB_PID")
        sleep 3
        r_whip=$(xiu_probe "$url" "$dir/probe-whip.log")
        via=whip
        if [[ $r_whip != ok ]]; then
            panic=$(grep -h -A2 'panicked at' "$dir/xiu.log" "$dir/xiu.out" 2>/dev/null | grep -v 'panicked at' | grep -v '^--$' | grep . | head -1 || true)
            r_whip="$r_whip; WHIP publisher: $(grep -E '^(whip:|Error)' "$dir/whip-publisher.log" | tail -1 || true)${panic:+; xiu panicked: $panic}"
            XIU_WHY="WHEP of the RTMP-published stream: $r_rtmp. WHEP of a WHIP-published stream: $r_whip"
            log "$label: WHEP of a WHIP-published stream: $r_whip"
            stop_pid "$PUB_PID"; stop_pid "$pid"
            return
        fi
    fi
    log "$label: xiu serves WHEP of the $via-published stream; warm-up ${WARMUP}s"
    warm_and_baseline "$pid"
    run_client "$label" whep "$pid" "$url" --bind-ip "$XIU_BIND"
    jq -c --arg via "$via" '.publisher = $via' "$WORK/$label.json" >"$WORK/$label.json.tmp" && mv "$WORK/$label.json.tmp" "$WORK/$label.json"
    grep -iE 'error|panic' "$dir/xiu.log" "$dir/xiu.out" | sed 's/^/   xiu: /' | sort | uniq -c | sort -rn | head -5 >&2 || true
    stop_pid "$PUB_PID"
    stop_pid "$pid"
}

# --- the parts -------------------------------------------------------------------------------
log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load $(cut -d' ' -f1-3 /proc/loadavg)"
XIU_WHY=""
XIU_BIND=${XIU_BIND:-$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -1)}
XIU_BIND=${XIU_BIND:-127.0.0.1}
for p in $PARTS; do
    case $p in
        rtmp) tidecast_part tidecast-rtmp rtmp ;;
        whep) tidecast_part tidecast-whep whep ;;
        xiu)
            find_xiu
            if [[ -n $XIU ]]; then xiu_part; else log "xiu: skipped: $XIU_WHY"; fi
            ;;
    esac
done

# --- summary -----------------------------------------------------------------------------
echo
printf '%-14s %5s %5s %5s %5s %5s %4s %6s %6s %9s %10s %9s %7s %8s %9s %8s %8s %5s\n' \
    part N conn media kept stall cut base% cpu% cpu%/view cpu%/view+ rssKiB/v Mb/s/v conn_p95 cli_drops srv_rx_d srv_tx_d cli%
for label in tidecast-rtmp tidecast-whep xiu-whep; do
    f=$WORK/$label.json
    [[ -s $f ]] || continue
    jq -r '[.label, .viewers,
            (.connected // (.viewers - .setup_failed)), (.received_in_window // (.viewers - .setup_failed)),
            .kept_up, (.stalled // .viewers_with_gap_over_500ms), (.cut_off // .disconnected),
            .baseline_cpu_pct, .server_cpu_pct, .cpu_per_viewer, .cpu_per_viewer_marginal,
            .server_rss_per_viewer_kib, (.mbps_per_viewer // "-"), (.connect_p95_ms // .first_frame_p95_ms),
            (if .client_udp_drops_in_window then "\(.client_udp_drops_before_window)/\(.client_udp_drops_in_window)" else "-" end),
            (.server_udp_rx_drops // "-"), (.server_datagrams_dropped // "-"), .client_cpu_pct]
           | map(if type == "number" then (. * 10000 | round / 10000) else . end) | map(tostring) | @tsv' "$f" |
        awk -F'\t' '{ printf "%-14s %5s %5s %5s %5s %5s %4s %6.2f %6.2f %9.4f %10.4f %9.1f %7s %8.1f %9s %8s %8s %5.1f\n",
                      $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18 }'
done
ratio() {  # ratio A B FIELD: A's FIELD / B's FIELD
    jq -rn --slurpfile a "$WORK/$1.json" --slurpfile b "$WORK/$2.json" \
        "if \$b[0].$3 > 0 then (\$a[0].$3 / \$b[0].$3 * 100 | round / 100) else \"n/a\" end"
}
echo
if [[ -s $WORK/tidecast-whep.json && -s $WORK/tidecast-rtmp.json ]]; then
    echo "tidecast WHEP/RTMP, CPU per viewer: $(ratio tidecast-whep tidecast-rtmp cpu_per_viewer) (target <= 3);" \
        "leaving out the publish-only CPU: $(ratio tidecast-whep tidecast-rtmp cpu_per_viewer_marginal)"
    echo "tidecast WHEP/RTMP, memory per viewer: $(ratio tidecast-whep tidecast-rtmp server_rss_per_viewer_kib)"
fi
if [[ -s $WORK/xiu-whep.json && -s $WORK/tidecast-whep.json ]]; then
    echo "xiu/tidecast over WHEP, CPU per viewer: $(ratio xiu-whep tidecast-whep cpu_per_viewer);" \
        "leaving out the publish-only CPU: $(ratio xiu-whep tidecast-whep cpu_per_viewer_marginal);" \
        "memory per viewer: $(ratio xiu-whep tidecast-whep server_rss_per_viewer_kib)"
elif [[ " $PARTS " == *" xiu "* ]]; then
    echo "xiu: not measured: ${XIU_WHY:-its part did not produce a result}"
fi
echo
echo "conn = viewers connected (WHEP: ICE+DTLS done; RTMP: set up); media = received media in the window;"
echo "kept = no 2 s without RTP and not cut off (RTMP: rtmp-fanout's kept-up); stall = some 2 s without RTP"
echo "in the window (RTMP: a timestamp gap > 500 ms); cut = cut off (RTMP: disconnected); base% = server CPU"
echo "with the publisher alone; cpu%/view = cpu% / N; cpu%/view+ = (cpu% - base%) / N; rssKiB/v = (mean RSS"
echo "in the window - RSS before viewers) / N; conn_p95 = ms from POST to connected (RTMP: to first frame);"
echo "cli_drops = datagrams the kernel dropped on the viewers' sockets (full receive buffer), before the"
echo "window (mostly at each viewer's start) / in the window; srv_rx_d = the same on the server's shared"
echo "WebRTC port; srv_tx_d = tidecast_webrtc_datagrams_dropped_total (sends that failed, inboxes that were"
echo "full); cli% = the load client's own CPU. Machine-wide UDP RcvbufErrors (other processes' too) are in"
echo "the JSON as udp_rcvbuf_errors_machine."
echo "Raw JSON lines:"
for label in tidecast-rtmp tidecast-whep xiu-whep; do [[ -s $WORK/$label.json ]] && cat "$WORK/$label.json"; done
true
