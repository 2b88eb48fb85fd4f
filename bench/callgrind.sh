#!/usr/bin/env bash
# Instructions per request of rproxy's worker, counted by valgrind's callgrind: a number that
# repeats to well under 1 % from run to run, to judge small changes where wall-clock CPU per
# request moves by +-15 %. See bench/README.md ("Instructions per request").
#
#   bash bench/callgrind.sh [--requests N] [--conns C] [--path /small|/big] [--warmup W]
#                           [--repeat R] [--top K] [--tolerance PCT] [--no-build] [--keep DIR]
set -euo pipefail

REQUESTS=20000
CONNS=1
REQ_PATH=/small
WARMUP=1000
REPEAT=2
TOP=25
TOLERANCE=1.0
BUILD=1
KEEP=""
ORIGIN_PORT=18091
RPROXY_PORT=18093
BIG_BYTES=65536
UP_TIMEOUT=120   # seconds: the worker starts slowly under valgrind
STOP_TIMEOUT=120

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
REPORT="$BENCH_DIR/report.py"
CONNS_PY="$BENCH_DIR/conns.py"

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

  --requests N     measured keep-alive requests per run (default 20000)
  --conns C        client connections they are spread over (default 1: the most repeatable;
                   each connection sends its next request when its previous answer is in)
  --path P         /small (13-byte body, default) or /big (64 KiB)
  --warmup W       requests before the measured ones, in both runs of a pair (default 1000)
  --repeat R       measured pairs (default 2); the spread between them is checked
  --top K          functions listed (default 25)
  --tolerance PCT  fail if the pairs' instructions per request differ by more than PCT % (default 1.0)
  --no-build       use target/release/rproxy as it is
  --keep DIR       keep the callgrind output files, configs and logs in DIR

Each measured pair is two runs of rproxy (master and worker under callgrind, 1 worker):
baseline = start, 1 request, WARMUP requests, stop; measured = the same plus N requests before the
stop. Instructions per request = (worker's Ir in measured - in baseline) / N: start-up, warm-up
(pool connections opened, lazy initialisation) and shutdown cancel out.
EOF
}

log() { printf '[callgrind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while (($#)); do
    case $1 in
        --requests) REQUESTS=${2:?}; shift 2 ;;
        --conns) CONNS=${2:?}; shift 2 ;;
        --path) REQ_PATH=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --repeat) REPEAT=${2:?}; shift 2 ;;
        --top) TOP=${2:?}; shift 2 ;;
        --tolerance) TOLERANCE=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
is_uint "$REQUESTS" && ((REQUESTS >= 1 && REQUESTS <= 10000000)) || die "--requests must be 1..10000000"
is_uint "$CONNS" && ((CONNS >= 1 && CONNS <= 1000)) || die "--conns must be 1..1000"
is_uint "$WARMUP" && ((WARMUP >= 1)) || die "--warmup must be >= 1"
is_uint "$REPEAT" && ((REPEAT >= 1 && REPEAT <= 20)) || die "--repeat must be 1..20"
is_uint "$TOP" || die "--top must be a number"
[[ $TOLERANCE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--tolerance must be a number (percent)"
[[ $REQ_PATH == /small || $REQ_PATH == /big ]] || die "--path must be /small or /big"

command -v valgrind >/dev/null 2>&1 || die "valgrind not found: apt-get install -y valgrind"
command -v callgrind_annotate >/dev/null 2>&1 || die "callgrind_annotate not found (package valgrind)"
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found (the origin): apt-get install -y nginx-light"
command -v curl >/dev/null 2>&1 || die "curl not found"

RPROXY="${CARGO_TARGET_DIR:-$ROOT/target}/release/rproxy"
if ((BUILD)); then
    log "cargo build --release"
    (cd "$ROOT" && timeout 1800 cargo build --release) >&2 || die "cargo build --release failed"
fi
[[ -x $RPROXY ]] || die "no rproxy binary at $RPROXY (build it, or drop --no-build)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$ORIGIN_PORT" "$RPROXY_PORT"; do
    port_busy "$p" && die "127.0.0.1:$p is already in use (another run?)"
done

# ------------------------------------------------------------------ cleanup: only what we started
STARTED=()
TMP=""
proc_starttime() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    set -- $s
    echo "${20}"
}
alive() { local st; st=$(proc_starttime "$1") && [[ $st == "$2" ]]; }
stop_pid() {   # stop_pid PID:STARTTIME TIMEOUT: TERM, wait, then KILL (the process itself)
    local pid=${1%%:*} st=${1##*:} i
    alive "$pid" "$st" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$pid" "$st" || break
        sleep 0.1
    done
    if alive "$pid" "$st"; then
        log "pid $pid did not stop on TERM: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED[i]}" 10; done
    if [[ -n $KEEP && -n $TMP && -d $TMP ]]; then
        mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ && log "kept in $KEEP"
    fi
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d /tmp/rproxy-callgrind.XXXXXX)
# The worker runs as `nobody` and writes its own callgrind file at exit.
chmod 777 "$TMP"
mkdir -p "$TMP/origin/www" "$TMP/origin/tmp"
chmod 755 "$TMP/origin" "$TMP/origin/www"
printf 'hello world!\n' >"$TMP/origin/www/small"
head -c "$BIG_BYTES" /dev/urandom >"$TMP/origin/www/big"
chmod 644 "$TMP/origin/www/small" "$TMP/origin/www/big"
cat >"$TMP/origin/nginx.conf" <<EOF
daemon off;
master_process on;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/origin/tmp/body;
    proxy_temp_path $TMP/origin/tmp/proxy;
    fastcgi_temp_path $TMP/origin/tmp/fastcgi;
    uwsgi_temp_path $TMP/origin/tmp/uwsgi;
    scgi_temp_path $TMP/origin/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    sendfile on;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=1024;
        root $TMP/origin/www;
        location = /small { default_type text/plain; return 200 "hello world!\n"; }
        location = /big { }
    }
}
EOF
# heartbeat-timeout: the worker is ~50x slower under callgrind; the master's watchdog must not
# take that for a hang. read-timeout 60, the daemon's default: its idle-wait timer is part of
# what a request costs (each phase opens its own connections, so no connection waits between
# phases).
cat >"$TMP/rproxy.toml" <<EOF
workers = 1
control-socket = ""
heartbeat-timeout = 3600
shutdown-timeout = 60

[[server]]
addr = "127.0.0.1"
port = $RPROXY_PORT
max-pending = 1024
read-timeout = 60

  [[server.downstream]]
  addr = "127.0.0.1"
  port = $ORIGIN_PORT
  connections = 64
EOF
timeout 30 "$RPROXY" -t -c "$TMP/rproxy.toml" >&2 || die "rproxy -t rejected $TMP/rproxy.toml"

"$NGINX" -p "$TMP/origin/" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log" >"$TMP/origin/stdout.log" 2>&1 </dev/null &
pid=$!
STARTED+=("$pid:$(proc_starttime "$pid")")
for ((i = 0; i < 100; i++)); do
    curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/small" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/small" || die "origin nginx did not start ($TMP/origin/error.log)"

# one_run NAME EXTRA: rproxy under callgrind; 1 request, WARMUP requests, EXTRA requests, stop.
# Sets RUN_OUT to the worker's callgrind file (not printed: a $(...) subshell would hide the
# started PID from cleanup).
one_run() {
    local name=$1 extra=$2 dir=$TMP/$1 master st worker i out
    mkdir -p "$dir"
    chmod 777 "$dir"
    valgrind --tool=callgrind --trace-children=yes --vgdb=no \
        --callgrind-out-file="$dir/callgrind.out.%p" \
        "$RPROXY" -f -c "$TMP/rproxy.toml" >"$dir/rproxy.log" 2>&1 </dev/null &
    master=$!
    st=$(proc_starttime "$master") || die "$name: rproxy under valgrind exited at once: $(tail -n 20 "$dir/rproxy.log")"
    STARTED+=("$master:$st")
    # Wait for the worker's Ready as the master logs it, then exactly one request: the same
    # instructions in both runs of a pair (a probe connection per poll would not be).
    for ((i = 0; i < UP_TIMEOUT * 10; i++)); do
        grep -q 'workers ready' "$dir/rproxy.log" && break
        alive "$master" "$st" || die "$name: rproxy exited: $(tail -n 20 "$dir/rproxy.log")"
        sleep 0.1
    done
    grep -q 'workers ready' "$dir/rproxy.log" || die "$name: no worker ready in $UP_TIMEOUT s: $(tail -n 20 "$dir/rproxy.log")"
    worker=$(pgrep -P "$master" | head -n 1)
    [[ -n $worker ]] || die "$name: no worker process under $master"
    curl -fsS -m 60 -o /dev/null "http://127.0.0.1:$RPROXY_PORT$REQ_PATH" || die "$name: first request failed"
    timeout 1800 python3 "$CONNS_PY" requests "$RPROXY_PORT" "$WARMUP" "$CONNS" "$REQ_PATH" >"$dir/warmup.txt" \
        || die "$name: warm-up requests failed"
    if ((extra > 0)); then
        timeout 3600 python3 "$CONNS_PY" requests "$RPROXY_PORT" "$extra" "$CONNS" "$REQ_PATH" >"$dir/measured.txt" \
            || die "$name: measured requests failed"
        log "$name: $extra requests in $(awk '{ print $2 }' "$dir/measured.txt") s"
    fi
    [[ $(pgrep -P "$master" | head -n 1) == "$worker" ]] || die "$name: the worker was replaced during the run: $(tail -n 20 "$dir/rproxy.log")"
    stop_pid "$master:$st" "$STOP_TIMEOUT"
    grep -q 'died' "$dir/rproxy.log" && die "$name: a worker died: $(grep died "$dir/rproxy.log")"
    out=$dir/callgrind.out.$worker
    [[ -s $out ]] || die "$name: no callgrind output from the worker ($out)"
    RUN_OUT=$out
}

RESULTS=()
for ((r = 1; r <= REPEAT; r++)); do
    log "pair $r/$REPEAT: baseline run (1 + $WARMUP requests)"
    one_run "base$r" 0
    base=$RUN_OUT
    log "pair $r/$REPEAT: measured run (1 + $WARMUP + $REQUESTS requests)"
    one_run "meas$r" "$REQUESTS"
    meas=$RUN_OUT
    python3 "$REPORT" callgrind "$REQUESTS" "$base" "$meas" "$TOP" >"$TMP/report$r.txt" \
        || die "report.py callgrind failed"
    RESULTS+=("$(head -n 1 "$TMP/report$r.txt")")
    log "pair $r: $(head -n 1 "$TMP/report$r.txt") instructions per request"
done

commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain 2>/dev/null | grep -qv '^??' && echo "+changes" || true)
echo "# rproxy worker: instructions per request (callgrind)"
echo
echo "rproxy $commit$dirty, $(valgrind --version), GET $REQ_PATH, $REQUESTS keep-alive requests over $CONNS connection(s) after $WARMUP, 1 worker, origin nginx"
echo
echo "Per pair (Ir per request): ${RESULTS[*]}"
echo
tail -n +2 "$TMP/report$REPEAT.txt"
python3 - "$TOLERANCE" "${RESULTS[@]}" <<'PY'
import sys
tol = float(sys.argv[1])
vals = [float(v) for v in sys.argv[2:]]
spread = (max(vals) - min(vals)) * 100.0 / min(vals) if min(vals) > 0 else float("inf")
print(f"\nSpread between the {len(vals)} pair(s): {spread:.3f} % (tolerance {tol} %)")
sys.exit(1 if spread > tol else 0)
PY
