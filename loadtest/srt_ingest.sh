#!/usr/bin/env bash
# SRT ingest at scale, beside RTMP: PUBLISHERS streams at once (the cached 3 Mbps 720p30
# H.264+AAC test stream, copied, not re-encoded, looped in real time by ffmpeg), each on its own
# channel, all packaged to LL-HLS, published over SRT (MPEG-TS, caller mode) into a fresh
# tidecast, then the same publishers over RTMP (FLV) into another fresh tidecast, in one run.
#
# For each protocol it prints:
#   up          publishers that stayed up for the whole window: the sender process still running
#               (one ffmpeg per publisher; with SENDER=tee the one process), the server's
#               tidecast_ingest_sessions{protocol} never below N (sampled every 5 s), no publish
#               session started again during the window, and the channel's media playlist
#               advanced by at least (window / 2 s segments) - 2 segments
#   hls         channels whose /live/<channel>/index.m3u8 answered 200 at the window's end
#   cpu         the server's utime+stime (/proc/PID/stat) over the window, % of one core, and / N
#   rss         server VmRSS: idle (channels created, nobody publishing), mean over the window,
#               and (mean - idle) / N per publisher, KiB
#   ingest      tidecast_ingest_bytes_total{protocol} over the window, Mb/s
#   srt         tidecast_srt_packets_{lost,dropped,retransmitted}_total{direction="in"},
#               tidecast_srt_ts_gaps_total and tidecast_srt_dropped_units_total over the window
#               (and since the server started)
#   udp         the kernel's UDP InErrors / RcvbufErrors over the window (machine-wide), and the
#               drop count of the server's SRT socket (/proc/net/udp): SRT packets lost before
#               the server read them (its one UDP socket, shared by all publishers, was full)
#   senders     the publishers' own CPU over the window (% of one core, all sender processes),
#               and the whole machine's busy % (/proc/stat, all cores): how loaded the box was
#
# The warm-up (default 35 s) is longer than the LL-HLS window (hls.window = 30 s) and the ring
# (channel.ring_duration = 8 s), so memory is at its steady state when the window opens: each
# channel holds 30 s of segments and parts (about 12 MB at 3.3 Mb/s) plus 8 s of frames.
#
# Usage: bash loadtest/srt_ingest.sh
# Environment (all optional):
#   PUBLISHERS=50          streams at once (1..200), one channel each
#   DURATION=30            measurement window, seconds (5..300)
#   WARMUP=35              seconds after the last publisher is live before measuring (0..300)
#   PROTOCOLS="srt rtmp"   which runs, in this order
#   SENDER=ffmpeg          ffmpeg: one ffmpeg per publisher; tee: one ffmpeg for all, with
#                          N outputs through the tee muxer (lighter on a small machine)
#   SRT_LATENCY=200ms      the server's srt.latency (the publishers offer libsrt's 120 ms; the
#                          larger wins)
#   CARGO_TARGET_DIR       default ~/.cache/tidecast-target
#   LOADTEST_CACHE         where the test FLV is kept, default ~/.cache/tidecast-loadtest
#   KEEP=1                 keep the temp dir (server logs, sender logs)
#   TIDECAST_BIN           run this tidecast binary instead (no build)
#
# Everything is loopback only; every process this script starts is killed by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidecast-target}
PUBLISHERS=${PUBLISHERS:-50}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-35}
PROTOCOLS=${PROTOCOLS:-"srt rtmp"}
SENDER=${SENDER:-ffmpeg}
SRT_LATENCY=${SRT_LATENCY:-200ms}
CACHE=${LOADTEST_CACHE:-$HOME/.cache/tidecast-loadtest}

die() { echo "srt_ingest.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $PUBLISHERS =~ ^[0-9]+$ ]] && (( PUBLISHERS >= 1 && PUBLISHERS <= 200 )) || die "PUBLISHERS must be 1..200"
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 5 && DURATION <= 300 )) || die "DURATION must be 5..300"
[[ $WARMUP =~ ^[0-9]+$ ]] && (( WARMUP <= 300 )) || die "WARMUP must be 0..300"
[[ $SENDER == ffmpeg || $SENDER == tee ]] || die "SENDER must be ffmpeg or tee"
for p in $PROTOCOLS; do [[ $p == srt || $p == rtmp ]] || die "PROTOCOLS entries must be srt or rtmp"; done
for tool in ffmpeg curl python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
ffmpeg -hide_banner -protocols 2>/dev/null | grep -qx '  srt' || die "this ffmpeg has no SRT protocol (libsrt)"
# N senders and the server's sockets.
ulimit -n 8192 2>/dev/null || true

# shellcheck source=loadtest/common.sh
source "$HERE/common.sh"
lt_init tidecast-srt-ingest

lt_tidecast
ensure_input
TICKS=$(getconf CLK_TCK)
SEGMENT_S=2   # hls.segment_target (default), the test stream's GOP

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# Busy and total jiffies of the whole machine (all cores).
machine_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
# Kernel UDP receive errors and receive-buffer overflows, all sockets (/proc/net/snmp).
udp_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["InErrors"], $c["RcvbufErrors"] }' /proc/net/snmp; }
# udp_drops PORT: the kernel's drop count of our UDP socket on 127.0.0.1:PORT (/proc/net/udp,
# last column: datagrams that found its receive buffer full).
udp_drops() { awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { print $NF; f = 1 } END { if (!f) print 0 }' /proc/net/udp; }
# metric TEXT SERIES: the value of one sample, 0 if absent.
metric() { awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }' <<<"$1"; }
scrape() { curl -s --max-time 5 "http://$HTTP/metrics"; }
# last_msn CHANNEL: the newest media sequence number in the channel's media playlist (-1 if none).
last_msn() {
    curl -s --max-time 5 "http://$HTTP/live/$1/source/index.m3u8" \
        | grep -o 'part-[0-9]*-\|seg-[0-9]*\.' | tr -dc '0-9\n' | sort -n | tail -1 | grep . || echo -1
}
# The counters printed for SRT, as "name series" pairs.
SRT_SERIES=(
    lost 'tidecast_srt_packets_lost_total{direction="in"}'
    dropped 'tidecast_srt_packets_dropped_total{direction="in"}'
    retransmitted 'tidecast_srt_packets_retransmitted_total{direction="in"}'
    ts_gaps 'tidecast_srt_ts_gaps_total'
    dropped_units 'tidecast_srt_dropped_units_total'
)

# run PROTO (srt|rtmp): one fresh server, N publishers; prints "key value" lines.
run() {
    local proto=$1 dir=$WORK/$1 keys=() pid i url urls=() senders=()
    mkdir -p "$dir"
    SERVER_ENV=(
        TIDECAST__SERVER__DATA_DIR="$dir" TIDECAST__DATABASE__URL="sqlite://$dir/tidecast.db"
        TIDECAST__SERVER__CREATE_DEFAULT_CHANNEL=false
        TIDECAST__HTTP__LISTEN=127.0.0.1:0 TIDECAST__RTMP__LISTEN=127.0.0.1:0
        TIDECAST__SRT__LISTEN=127.0.0.1:0 TIDECAST__SRT__LATENCY="$SRT_LATENCY"
        RUST_LOG=info
    )
    log "$proto: creating $PUBLISHERS channels"
    for i in $(seq "$PUBLISHERS"); do
        keys+=("$(env "${SERVER_ENV[@]}" "$TIDECAST" channel create "load$i" 2>>"$dir/cli.log" | tail -1)")
        [[ ${keys[-1]} == live_* ]] || die "$proto: channel create load$i printed no key; see $dir/cli.log"
    done
    lt_serve "$proto" "$dir/server.log"
    pid=$SERVER_PID
    local rtmp=$RTMP srt; srt=$(lt_listen_addr srt)
    [[ -n $srt ]] || die "$proto: the SRT address is not in $dir/server.log"
    sleep 3
    local rss_idle; rss_idle=$(rss_kib "$pid")

    for i in $(seq "$PUBLISHERS"); do
        if [[ $proto == srt ]]; then
            urls+=("srt://$srt?streamid=#!::r=live/${keys[$((i - 1))]},m=publish&pkt_size=1316")
        else
            urls+=("rtmp://$rtmp/live/${keys[$((i - 1))]}")
        fi
    done
    local fmt=flv; [[ $proto == srt ]] && fmt=mpegts
    log "$proto: starting $PUBLISHERS publishers (sender: $SENDER), server on $HTTP rtmp $rtmp srt $srt"
    if [[ $SENDER == ffmpeg ]]; then
        for url in "${urls[@]}"; do
            ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$INPUT" -c copy -f "$fmt" "$url" \
                2>>"$dir/ffmpeg.log" &
            PIDS+=("$!"); senders+=("$!")
            sleep 0.1   # spread the senders' start-up (probing the file) over N/10 s
        done
    else
        local tee="" sep=""
        for url in "${urls[@]}"; do tee+="$sep[f=$fmt:onfail=ignore]$url"; sep="|"; done
        ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$INPUT" -map 0 -c copy -f tee "$tee" \
            2>>"$dir/ffmpeg.log" &
        PIDS+=("$!"); senders+=("$!")
    fi
    local live=0 series="tidecast_ingest_sessions{protocol=\"$proto\"}"
    for _ in $(seq 300); do
        live=$(metric "$(scrape)" "$series"); live=${live%.*}
        (( live >= PUBLISHERS )) && break
        sleep 0.2
    done
    (( live >= PUBLISHERS )) || die "$proto: only $live of $PUBLISHERS publishers live after 60 s; see $dir"
    log "$proto: all $PUBLISHERS live; warm-up ${WARMUP}s"
    sleep "$WARMUP"

    # --- the window ---
    local msn0=() lines0 lines1 m0 m1 c0 c1 t0 t1 s0 s1 mach0 mach1 starts0 starts1 min_live=$PUBLISHERS rss_sum=0 rss_n=0 rss_max=0 r
    for i in $(seq "$PUBLISHERS"); do msn0+=("$(last_msn "load$i")"); done
    starts0=$(grep -c ': publishing ' "$dir/server.log" || true)
    lines0=$(wc -l <"$dir/server.log")
    m0=$(scrape)
    s0=0; for p in "${senders[@]}"; do s0=$(( s0 + $(cpu_ticks "$p") )); done
    read -r mach0 mt0 < <(machine_ticks)
    read -r ue0 ub0 < <(udp_errors)
    local sd0 sd1; sd0=$(udp_drops "${srt##*:}")
    c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    for k in $(seq "$DURATION"); do
        sleep 1
        kill -0 "$pid" 2>/dev/null || die "$proto: server died during the window; see $dir/server.log"
        r=$(rss_kib "$pid"); rss_sum=$(( rss_sum + r )); rss_n=$(( rss_n + 1 )); (( r > rss_max )) && rss_max=$r
        if (( k % 5 == 0 )); then
            live=$(metric "$(scrape)" "$series"); live=${live%.*}
            (( live < min_live )) && min_live=$live
        fi
    done
    c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
    read -r mach1 mt1 < <(machine_ticks)
    read -r ue1 ub1 < <(udp_errors)
    sd1=$(udp_drops "${srt##*:}")
    s1=0; for p in "${senders[@]}"; do s1=$(( s1 + $(cpu_ticks "$p") )); done
    m1=$(scrape)
    starts1=$(grep -c ': publishing ' "$dir/server.log" || true)
    lines1=$(wc -l <"$dir/server.log")
    live=$(metric "$m1" "$series"); live=${live%.*}; (( live < min_live )) && min_live=$live

    # --- after the window: who stayed up, who produced LL-HLS ---
    local alive=0 hls=0 advanced=0 need msn1 code
    for p in "${senders[@]}"; do kill -0 "$p" 2>/dev/null && alive=$(( alive + 1 )); done
    need=$(( DURATION / SEGMENT_S - 2 ))
    for i in $(seq "$PUBLISHERS"); do
        msn1=$(last_msn "load$i")
        (( ${msn0[$((i - 1))]} >= 0 && msn1 - ${msn0[$((i - 1))]} >= need )) && advanced=$(( advanced + 1 ))
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$HTTP/live/load$i/index.m3u8")
        [[ $code == 200 ]] && hls=$(( hls + 1 ))
    done
    local up=$advanced
    if [[ $SENDER == ffmpeg ]]; then (( alive < up )) && up=$alive
    elif (( alive == 0 )); then up=0; fi
    (( min_live < PUBLISHERS || starts1 != starts0 )) && (( up > min_live )) && up=$min_live
    (( starts1 != starts0 && up == PUBLISHERS )) && up=$(( PUBLISHERS - 1 ))

    echo "proto $proto"
    echo "n $PUBLISHERS"
    echo "up $up"
    echo "senders_alive $alive/${#senders[@]}"
    echo "min_live $min_live"
    echo "session_starts_in_window $(( starts1 - starts0 ))"
    echo "hls_advancing $advanced"
    echo "hls_200 $hls"
    python3 - "$c0" "$c1" "$t0" "$t1" "$TICKS" "$PUBLISHERS" "$rss_idle" "$rss_sum" "$rss_n" "$rss_max" \
        "$(metric "$m0" "tidecast_ingest_bytes_total{protocol=\"$proto\"}")" \
        "$(metric "$m1" "tidecast_ingest_bytes_total{protocol=\"$proto\"}")" \
        "$s0" "$s1" "$mach0" "$mach1" "$mt0" "$mt1" <<'EOF'
import sys
c0, c1, t0, t1, ticks, n, idle, rsum, rn, rmax, b0, b1, s0, s1, mb0, mb1, mt0, mt1 = map(float, sys.argv[1:])
secs = t1 - t0
cpu = (c1 - c0) / ticks / secs * 100
mean = rsum / rn
print(f"window_s {secs:.1f}")
print(f"cpu_pct {cpu:.1f}")
print(f"cpu_pct_per_pub {cpu / n:.3f}")
print(f"rss_idle_kib {idle:.0f}")
print(f"rss_mean_kib {mean:.0f}")
print(f"rss_max_kib {rmax:.0f}")
print(f"rss_per_pub_kib {(mean - idle) / n:.0f}")
print(f"ingest_mbps {(b1 - b0) * 8 / secs / 1e6:.1f}")
print(f"sender_cpu_pct {(s1 - s0) / ticks / secs * 100:.1f}")
print(f"machine_busy_pct {(mb1 - mb0) / (mt1 - mt0) * 100:.1f}")
EOF
    if [[ $proto == srt ]]; then
        local j
        for (( j = 0; j < ${#SRT_SERIES[@]}; j += 2 )); do
            local v0 v1
            v0=$(metric "$m0" "${SRT_SERIES[j + 1]}"); v1=$(metric "$m1" "${SRT_SERIES[j + 1]}")
            echo "srt_${SRT_SERIES[j]} $(( ${v1%.*} - ${v0%.*} )) (${v1%.*} since start)"
        done
    fi
    echo "kernel_udp_in_errors $(( ue1 - ue0 )) (rcvbuf $(( ub1 - ub0 )); machine-wide)"
    [[ $proto == srt ]] && echo "srt_socket_kernel_drops $(( sd1 - sd0 )) ($sd1 since start)"
    echo "log_warn_error_in_window $(sed -n "$(( lines0 + 1 )),${lines1}p" "$dir/server.log" | grep -c ' WARN \| ERROR ' || true)"
    for p in "${senders[@]}"; do stop_pid "$p"; done
    stop_pid "$pid"
    echo "log_warn_error_total $(grep -c ' WARN \| ERROR ' "$dir/server.log" || true) (incl. start-up and shutdown)"
    # What the server logged above INFO over the whole run, most frequent first (timestamps,
    # span fields and key=value fields cut so that repeats collapse).
    grep ' WARN \| ERROR ' "$dir/server.log" \
        | sed -E 's/^[^ ]+ +//; s/[0-9]+:[0-9]+\.[0-9]+\|SRT#[0-9A-F]+\|//; s/\{[^}]*\}//; s/ [a-z_.]+=[^ ]+//g' \
        | cut -c1-160 | sort | uniq -c | sort -rn | head -5 | sed 's/^ */log: /' || true
}

log "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "$PUBLISHERS publishers x 3 Mbps, warm-up ${WARMUP}s, window ${DURATION}s, sender $SENDER, srt.latency $SRT_LATENCY"
# Not `$(run ...)`: a subshell would not share PIDS or the EXIT trap that ends our processes.
for proto in $PROTOCOLS; do
    run "$proto" >"$WORK/$proto.result"
done
for proto in $PROTOCOLS; do
    echo "--- $proto"
    cat "$WORK/$proto.result"
done
if [[ -s $WORK/srt.result ]]; then
    val() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/srt.result"; }
    verdict=MET
    [[ $(val up) == "$PUBLISHERS" && $(val hls_200) == "$PUBLISHERS" && $(val hls_advancing) == "$PUBLISHERS" ]] || verdict="NOT MET"
    for k in srt_dropped srt_ts_gaps srt_dropped_units; do [[ $(val "$k") == 0 ]] || verdict="NOT MET"; done
    echo "target ($PUBLISHERS SRT publishers up for the whole window, LL-HLS for each, no packet dropped too late,"
    echo "  no TS gap and no access unit dropped in the window): $verdict"
fi
if [[ -s $WORK/srt.result && -s $WORK/rtmp.result ]]; then
    python3 - "$WORK/srt.result" "$WORK/rtmp.result" <<'EOF'
import sys
s, r = ({l.split()[0]: l.split()[1] for l in open(p) if len(l.split()) > 1} for p in sys.argv[1:])
print(f"SRT/RTMP server CPU = {float(s['cpu_pct']) / float(r['cpu_pct']):.2f}x; "
      f"RSS per publisher SRT {s['rss_per_pub_kib']} KiB, RTMP {r['rss_per_pub_kib']} KiB")
EOF
fi
echo "cpu_pct = tidecast's utime+stime over the window, % of one core (ingest, ring, LL-HLS packaging of every channel);"
echo "rss_per_pub_kib = (mean RSS in the window - RSS idle) / N; up = stayed up for the whole window (see the header)."
