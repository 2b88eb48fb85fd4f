#!/usr/bin/env bash
# rproxy vs nginx, side by side, as reverse proxies in front of the same nginx origin.
# Everything listens on and talks to 127.0.0.1 only. See bench/README.md.
#
#   bash bench/run.sh [--workers N] [--duration S] [--rounds R]
#                     [--only both|nginx|rproxy] [--warmup S] [--no-build] [--out FILE]
#                     [--keep-raw DIR] [--routed] [--tls] [--memory] [--memory-only]
set -euo pipefail

WORKERS=1
DURATION=10
ROUNDS=3
ONLY=both
WARMUP=2
BUILD=1
OUT=""
KEEP_RAW=""
PATHS=(/small /big)
CONNS=(64 256)
WRK_THREADS=2
ORIGIN_PORT=18081
NGINX_PORT=18082
RPROXY_PORT=18083
ROUTED_PORT=18084
ROUTED=0
TLS=0
TLS_NGINX_PORT=18085
TLS_RPROXY_PORT=18086
# TLS 1.2 ciphers of both proxies: rproxy's default (forward-secret AEAD only).
TLS_CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305
IDLE_CONNS=1000
MEMORY=0                    # --memory: idle-connection and spike cases (bench/conns.py)
LOAD=1                      # 0 with --memory-only: no wrk rounds
MEM_IDLE=(1000 2000 8000)   # idle keep-alive connections per measurement
MEM_SPIKE=5000              # connections of the spike case
MEM_SPIKE_WAIT=10           # seconds after the spike closes before the last RSS reading
MEM_WARMUP=2                # wrk seconds per path on a fresh proxy before each memory case
MEM_OUT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results-memory.md"
TLS_OUT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results-tls.md"
ROUTED_HOST=v49.bench.test
BIG_BYTES=65536
SMALL_BODY='hello world!'   # + "\n" = 13 bytes
UP_TIMEOUT=10               # seconds to wait for each server to answer

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
REPORT="$BENCH_DIR/report.py"

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

  --workers N     worker processes of both proxies (default 1)
  --duration S    seconds of each wrk run (default 10)
  --rounds R      rounds; the proxy that goes first alternates per round (default 3)
  --only WHICH    both (default), nginx or rproxy: benchmark only one proxy
  --warmup S      seconds of unmeasured load per proxy and path before round 1 (default 2, 0 = none)
  --no-build      do not run cargo build --release (use target/release/rproxy as it is)
  --out FILE      where to write the markdown table (default bench/results-latest.md, or
                  bench/results-<which>-only.md with --only nginx|rproxy)
  --keep-raw DIR  keep the raw wrk outputs, runs.tsv and the generated configs in DIR
  --routed        also run rproxy-routed: a second rproxy whose configuration has 50 vhosts x
                  20 rules, every request matching the LAST rule of the LAST vhost (Host:
                  v49.bench.test); the report compares its CPU per request with the flat form's
  --memory        also the memory cases, written to bench/results-memory.md: RSS per idle
                  keep-alive connection (1000, 2000 and 8000 connections, one request each, then idle)
                  and the spike case (5000 connections with a half-sent request head, closed,
                  worker RSS 10 s later against its start); see --idle-conns, --spike-conns
  --memory-only   the memory cases only (no wrk rounds, no main table)
  --idle-conns L  increasing connection counts of the idle case, comma-separated (default
                  1000,2000,8000: 1000 opened and measured, then 1000 more, then 6000 more)
  --spike-conns N connections of the spike case (default 5000); --spike-wait S (default 10)
  --memory-out F  where the memory table goes (default bench/results-memory.md)
  --port-base P   listen on 127.0.0.1:P+1 .. P+6 (default 18080: origin 18081, nginx 18082,
                  rproxy 18083, rproxy-routed 18084, TLS nginx 18085, TLS rproxy 18086)
  --tls           also TLS cases (nginx and rproxy each get a second, HTTPS listener with the same
                  self-signed RSA 2048 certificate, nginx with ssl_session_cache shared: + tickets):
                  keep-alive requests (wrk over https), full handshakes (openssl s_time -new),
                  resumed handshakes (openssl s_time -reuse), and RSS per idle TLS keep-alive
                  connection (1000 connections); table in bench/results-tls.md
EOF
}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while (($#)); do
    case $1 in
        --workers) WORKERS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --only) ONLY=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=${2:?}; shift 2 ;;
        --keep-raw) KEEP_RAW=${2:?}; shift 2 ;;
        --routed) ROUTED=1; shift ;;
        --tls) TLS=1; shift ;;
        --memory) MEMORY=1; shift ;;
        --memory-only) MEMORY=1; LOAD=0; shift ;;
        --idle-conns) IFS=, read -r -a MEM_IDLE <<<"${2:?}"; shift 2 ;;
        --spike-conns) MEM_SPIKE=${2:?}; shift 2 ;;
        --spike-wait) MEM_SPIKE_WAIT=${2:?}; shift 2 ;;
        --memory-out) MEM_OUT=${2:?}; shift 2 ;;
        --port-base) PORT_BASE=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
is_uint "$WORKERS" && ((WORKERS >= 1 && WORKERS <= 64)) || die "--workers must be 1..64"
is_uint "$DURATION" && ((DURATION >= 1 && DURATION <= 300)) || die "--duration must be 1..300"
is_uint "$ROUNDS" && ((ROUNDS >= 1 && ROUNDS <= 20)) || die "--rounds must be 1..20"
is_uint "$WARMUP" && ((WARMUP <= 60)) || die "--warmup must be 0..60"
for n in "${MEM_IDLE[@]}" "$MEM_SPIKE"; do
    is_uint "$n" && ((n >= 1 && n <= 60000)) || die "--idle-conns/--spike-conns: 1..60000 each, got '$n'"
done
is_uint "$MEM_SPIKE_WAIT" && ((MEM_SPIKE_WAIT <= 600)) || die "--spike-wait must be 0..600"
if [[ -n ${PORT_BASE:-} ]]; then
    is_uint "$PORT_BASE" && ((PORT_BASE >= 1024 && PORT_BASE <= 65000)) || die "--port-base must be 1024..65000"
    ORIGIN_PORT=$((PORT_BASE + 1)) NGINX_PORT=$((PORT_BASE + 2)) RPROXY_PORT=$((PORT_BASE + 3))
    ROUTED_PORT=$((PORT_BASE + 4)) TLS_NGINX_PORT=$((PORT_BASE + 5)) TLS_RPROXY_PORT=$((PORT_BASE + 6))
fi
((LOAD || !ROUTED)) || die "--routed needs the wrk rounds (not --memory-only)"
case $ONLY in
    both) PROXIES=(nginx rproxy) ;;
    nginx|rproxy) PROXIES=("$ONLY") ;;
    *) die "--only must be both, nginx or rproxy" ;;
esac
if [[ -z $OUT ]]; then
    if [[ $ONLY == both ]]; then OUT="$BENCH_DIR/results-latest.md"; else OUT="$BENCH_DIR/results-$ONLY-only.md"; fi
fi
if ((ROUTED)); then
    [[ $ONLY != nginx ]] || die "--routed needs rproxy (--only rproxy or both)"
    PROXIES+=(rproxy-routed)
fi
want() { [[ " ${PROXIES[*]} " == *" $1 "* ]]; }
# The published table must name the code it measured: refuse to overwrite it from a tree with
# uncommitted changes (any other --out is fine for experiments).
if ((LOAD)) && [[ $OUT == "$BENCH_DIR/results-latest.md" ]] &&
    (cd "$ROOT" && git status --porcelain 2>/dev/null | grep -qv '^??'); then
    die "uncommitted changes: commit first, or write elsewhere with --out FILE"
fi

# ------------------------------------------------------------------ cleanup: only what we started
STARTED=()   # "pid:starttime" of every server master we started
TMP=""

proc_starttime() {   # field 22 of /proc/PID/stat; fails if the process is gone
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    set -- $s
    echo "${20}"
}
proc_state() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    echo "${s%% *}"
}
alive() {   # alive PID STARTTIME: same process still there and not a zombie
    local st
    st=$(proc_starttime "$1") || return 1
    [[ $st == "$2" ]] || return 1
    [[ $(proc_state "$1" 2>/dev/null) != Z ]]
}
descendants() {   # PID:STARTTIME of every descendant of PID
    local p c st
    for c in $(pgrep -P "$1" 2>/dev/null || true); do
        st=$(proc_starttime "$c") || continue
        echo "$c:$st"
        descendants "$c"
    done
}
stop_tree() {   # stop_tree PID:STARTTIME -- TERM the master, wait <= 5 s, then KILL it and its children
    local pid=${1%%:*} st=${1##*:} kids i k left=""
    alive "$pid" "$st" || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" "$st" || break
        sleep 0.1
    done
    if alive "$pid" "$st"; then
        log "pid $pid did not stop on TERM in 5 s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < 20; i++)); do   # children (workers) get 2 s more to exit by themselves
        left=""
        for k in $kids; do alive "${k%%:*}" "${k##*:}" && left+=" ${k%%:*}"; done
        [[ -z $left ]] && break
        sleep 0.1
    done
    if [[ -n $left ]]; then
        log "children of $pid still running 2 s after it exited:$left: KILL"
        for k in $kids; do
            alive "${k%%:*}" "${k##*:}" && kill -KILL "${k%%:*}" 2>/dev/null || true
        done
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_tree "${STARTED[i]}"; done   # proxies first
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ tools
SUDO=""
if ((EUID != 0)); then SUDO=sudo; fi
APT_UPDATED=0
apt_install() {   # apt_install PKG...: tries each package in turn until one installs
    local p
    if ((APT_UPDATED == 0)); then
        timeout 600 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    for p in "$@"; do
        if timeout 900 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >&2; then
            return 0
        fi
    done
    die "could not install any of: $*"
}
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || { log "installing nginx"; apt_install nginx-light nginx; }
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
command -v wrk >/dev/null 2>&1 || { log "installing wrk"; apt_install wrk; }
command -v curl >/dev/null 2>&1 || { log "installing curl"; apt_install curl; }
command -v python3 >/dev/null 2>&1 || { log "installing python3"; apt_install python3; }
command -v pgrep >/dev/null 2>&1 || { log "installing procps"; apt_install procps; }

RPROXY="${CARGO_TARGET_DIR:-$ROOT/target}/release/rproxy"
if want rproxy; then
    if ((BUILD)); then
        command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
        log "cargo build --release (log: target/bench-build.log)"
        mkdir -p "${CARGO_TARGET_DIR:-$ROOT/target}"
        if ! (cd "$ROOT" && timeout 1800 cargo build --release) >"${CARGO_TARGET_DIR:-$ROOT/target}/bench-build.log" 2>&1; then
            tail -n 40 "${CARGO_TARGET_DIR:-$ROOT/target}/bench-build.log" >&2
            die "cargo build --release failed"
        fi
    fi
    [[ -x $RPROXY ]] || die "no rproxy binary at $RPROXY"
fi

# ------------------------------------------------------------------ ports must be free
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$ORIGIN_PORT" "$NGINX_PORT" "$RPROXY_PORT" "$ROUTED_PORT" "$TLS_NGINX_PORT" "$TLS_RPROXY_PORT"; do
    port_busy "$p" && die "127.0.0.1:$p is already in use (another benchmark running?)"
done

TMP=$(mktemp -d /tmp/rproxy-bench.XXXXXX)
chmod 755 "$TMP"   # nginx workers run as nobody and must read the origin's files

# ------------------------------------------------------------------ configs
nginx_common() {   # nginx_common DIR: the lines every nginx config here shares
    local d=$1
    cat <<EOF
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 65536;
EOF
}
nginx_http_common() {
    local d=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    default_type application/octet-stream;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
EOF
}

ORIGIN_DIR=$TMP/origin
mkdir -p "$ORIGIN_DIR/tmp" "$ORIGIN_DIR/www"
head -c "$BIG_BYTES" /dev/urandom >"$ORIGIN_DIR/www/big"
chmod 755 "$ORIGIN_DIR" "$ORIGIN_DIR/www"
chmod 644 "$ORIGIN_DIR/www/big"
{
    nginx_common "$ORIGIN_DIR"
    cat <<EOF
worker_processes 1;
events { worker_connections 16384; }
http {
$(nginx_http_common "$ORIGIN_DIR")
    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=1024;
        root $ORIGIN_DIR/www;
        location = /small { default_type text/plain; return 200 "$SMALL_BODY\n"; }
        location = /big { }
        location / { return 404; }
    }
}
EOF
} >"$ORIGIN_DIR/nginx.conf"

if ((TLS)); then
    command -v openssl >/dev/null 2>&1 || { log "installing openssl"; apt_install openssl; }
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/tls.key" -out "$TMP/tls.crt" -days 7 \
        -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" 2>/dev/null \
        || die "openssl req failed"
    chmod 600 "$TMP/tls.key"
fi

NGINX_DIR=$TMP/nginx-proxy
mkdir -p "$NGINX_DIR/tmp"
{
    nginx_common "$NGINX_DIR"
    cat <<EOF
worker_processes $WORKERS;
events { worker_connections 16384; }
http {
$(nginx_http_common "$NGINX_DIR")
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=1024;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # the same work rproxy does by default: Host passed through, X-Forwarded-* added
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            # buffers big enough for /big (64 KiB) so nginx never spools it to a temp file
            proxy_buffer_size 8k;
            proxy_buffers 16 8k;
        }
    }
    include $NGINX_DIR/tls.conf;
}
EOF
} >"$NGINX_DIR/nginx.conf"
: >"$NGINX_DIR/tls.conf"
if ((TLS)); then
    cat >"$NGINX_DIR/tls.conf" <<EOF
    server {
        listen 127.0.0.1:$TLS_NGINX_PORT ssl backlog=1024;
        ssl_certificate $TMP/tls.crt;
        ssl_certificate_key $TMP/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $TLS_CIPHERS;
        ssl_prefer_server_ciphers on;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffer_size 8k;
            proxy_buffers 16 8k;
        }
    }
EOF
fi

RPROXY_DIR=$TMP/rproxy
mkdir -p "$RPROXY_DIR"
{
    echo "workers = $WORKERS"
    # Each rproxy its own control socket (the default, /run/rproxy/ctl.sock, is one per host).
    echo "control-socket = \"$RPROXY_DIR/ctl.sock\""
    if ((EUID == 0)); then
        echo 'user = "nobody"'
        echo 'group = "nogroup"'
    fi
    cat <<EOF

[[server]]
addr = "127.0.0.1"
port = $RPROXY_PORT
# 256 clients on 64 downstream connections leave up to 192 requests waiting per worker:
# more than the default max-pending (50), which would answer 503 instead of queueing.
max-pending = 1024

  [[server.downstream]]
  addr = "127.0.0.1"
  port = $ORIGIN_PORT
  connections = 64
EOF
} >"$RPROXY_DIR/rproxy.toml"

# The routed form at its worst for lookup: 50 vhosts x 20 rules (exact, glob and regex mixed),
# and the benchmark's Host and paths match only the last rule of the last vhost.
ROUTED_DIR=$TMP/rproxy-routed
mkdir -p "$ROUTED_DIR"
{
    sed -e "s/^port = $RPROXY_PORT\$/port = $ROUTED_PORT/" \
        -e "s|^control-socket = .*|control-socket = \"$ROUTED_DIR/ctl.sock\"|" -e 's/^  addr = "127.0.0.1"$/  name = "origin"\n  addr = "127.0.0.1"/' \
        "$RPROXY_DIR/rproxy.toml"
    for ((v = 0; v < 50; v++)); do
        printf '\n  [[server.vhost]]\n  name = "v%d.bench.test"\n' "$v"
        for ((r = 0; r < 19; r++)); do
            case $((r % 3)) in
                0) m="uri-match = \"/nomatch$r\"" ;;
                1) m="uri-gmatch = \"/nomatch$r/*\"" ;;
                2) m="uri-rmatch = \"^/nomatch$r/[a-z]+\"" ;;
            esac
            printf '    [[server.vhost.rule]]\n    %s\n    downstreams = ["origin"]\n' "$m"
        done
        printf '    [[server.vhost.rule]]\n    name = "last"\n    uri-rmatch = "^/(small|big)$"\n    downstreams = ["origin"]\n'
    done
} >"$ROUTED_DIR/rproxy.toml"

# The HTTPS listener of rproxy (after the routed config, which is derived from this file).
if ((TLS)); then
    cat >>"$RPROXY_DIR/rproxy.toml" <<EOF

[[server]]
addr = "127.0.0.1"
port = $TLS_RPROXY_PORT
max-pending = 1024
  [server.ssl]
  enabled = true
  cert = "$TMP/tls.crt"
  key = "$TMP/tls.key"

  [[server.downstream]]
  addr = "127.0.0.1"
  port = $ORIGIN_PORT
  connections = 64
EOF
fi

# ------------------------------------------------------------------ start servers
declare -A MASTER PORT LOGF HOSTHDR
PORT[nginx]=$NGINX_PORT
PORT[rproxy]=$RPROXY_PORT
PORT[rproxy-routed]=$ROUTED_PORT
HOSTHDR[rproxy-routed]=$ROUTED_HOST
# HDR=(-H "Host: ...") for curl/wrk against NAME when it needs one, else empty.
set_hdr() { HDR=(); if [[ -n ${HOSTHDR[$1]:-} ]]; then HDR=(-H "Host: ${HOSTHDR[$1]}"); fi; }

start_bg() {   # start_bg NAME LOGFILE CMD...: runs CMD in background, records its PID
    local name=$1 logf=$2 pid st
    shift 2
    "$@" >"$logf" 2>&1 </dev/null &
    pid=$!
    st=$(proc_starttime "$pid") || { wait "$pid" || true; cat "$logf" >&2; die "$name exited at once"; }
    STARTED+=("$pid:$st")
    MASTER[$name]=$pid
    LOGF[$name]=$logf
    log "started $name: pid $pid"
}

wait_up() {   # wait_up NAME PORT PID LOG: until GET /small answers 200, at most UP_TIMEOUT s
    local name=$1 port=$2 pid=$3 logf=$4 deadline=$((SECONDS + UP_TIMEOUT))
    while ((SECONDS < deadline)); do
        if [[ $(proc_state "$pid" 2>/dev/null || echo gone) =~ ^(gone|Z)$ ]]; then
            tail -n 40 "$logf" >&2 || true
            die "$name (pid $pid) exited before answering on 127.0.0.1:$port; log above"
        fi
        set_hdr "$name"
        if curl -fsS -o /dev/null --max-time 1 "${HDR[@]}" "http://127.0.0.1:$port/small" 2>/dev/null; then
            log "$name answers on 127.0.0.1:$port"
            return 0
        fi
        sleep 0.2
    done
    tail -n 40 "$logf" >&2 || true
    curl -sS -i --max-time 2 "${HDR[@]}" "http://127.0.0.1:$port/small" >&2 || true
    die "$name did not answer 200 on http://127.0.0.1:$port/small within ${UP_TIMEOUT} s; log above"
}

check_bodies() {   # check_bodies NAME PORT: /small and /big arrive intact
    local name=$1 port=$2 got
    set_hdr "$name"
    got=$(curl -fsS --max-time 5 "${HDR[@]}" "http://127.0.0.1:$port/small" | od -An -c | tr -s ' \n' ' ') || true
    [[ $got == " h e l l o w o r l d ! \n " ]] \
        || die "$name: /small is not the 13-byte body 'hello world!\\n' (got:$got)"
    curl -fsS --max-time 5 "${HDR[@]}" -o "$TMP/big.$name" "http://127.0.0.1:$port/big" \
        || die "$name: GET /big failed"
    cmp -s "$TMP/big.$name" "$ORIGIN_DIR/www/big" || die "$name: /big differs from the origin's file"
}

log "origin: nginx on 127.0.0.1:$ORIGIN_PORT"
"$NGINX" -t -q -p "$ORIGIN_DIR/" -c "$ORIGIN_DIR/nginx.conf" -e "$ORIGIN_DIR/error.log" \
    || die "origin nginx config invalid: $ORIGIN_DIR/nginx.conf"
start_bg origin "$ORIGIN_DIR/stdout.log" "$NGINX" -p "$ORIGIN_DIR/" -c "$ORIGIN_DIR/nginx.conf" -e "$ORIGIN_DIR/error.log"
wait_up origin "$ORIGIN_PORT" "${MASTER[origin]}" "$ORIGIN_DIR/error.log"
check_bodies origin "$ORIGIN_PORT"

start_proxy() {   # start_proxy nginx|rproxy: start it, wait until it answers, check the bodies
    case $1 in
        nginx)
            "$NGINX" -t -q -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" \
                || die "proxy nginx config invalid: $NGINX_DIR/nginx.conf"
            start_bg nginx "$NGINX_DIR/stdout.log" "$NGINX" -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log"
            wait_up nginx "$NGINX_PORT" "${MASTER[nginx]}" "$NGINX_DIR/error.log"
            check_bodies nginx "$NGINX_PORT"
            ;;
        rproxy)
            if ! timeout 30 "$RPROXY" -t -c "$RPROXY_DIR/rproxy.toml" >"$RPROXY_DIR/test.log" 2>&1; then
                cat "$RPROXY_DIR/test.log" >&2
                log "config was:"; cat "$RPROXY_DIR/rproxy.toml" >&2
                die "rproxy -t rejected the benchmark config"
            fi
            start_bg rproxy "$RPROXY_DIR/rproxy.log" "$RPROXY" -f -c "$RPROXY_DIR/rproxy.toml"
            wait_up rproxy "$RPROXY_PORT" "${MASTER[rproxy]}" "$RPROXY_DIR/rproxy.log"
            check_bodies rproxy "$RPROXY_PORT"
            ;;
    esac
}
# restart_proxy NAME: stop the proxy we started (by its recorded PID) and start a fresh one, so
# that a memory case starts from a process that has not served an earlier case.
restart_proxy() {
    local pid=${MASTER[$1]} st i
    st=$(proc_starttime "$pid") && stop_tree "$pid:$st"
    for ((i = 0; i < 50; i++)); do port_busy "${PORT[$1]}" || break; sleep 0.1; done
    start_proxy "$1"
}
want nginx && start_proxy nginx
want rproxy && start_proxy rproxy
if want rproxy-routed; then
    if ! timeout 30 "$RPROXY" -t -c "$ROUTED_DIR/rproxy.toml" >"$ROUTED_DIR/test.log" 2>&1; then
        cat "$ROUTED_DIR/test.log" >&2
        die "rproxy -t rejected the routed benchmark config ($ROUTED_DIR/rproxy.toml)"
    fi
    start_bg rproxy-routed "$ROUTED_DIR/rproxy.log" "$RPROXY" -f -c "$ROUTED_DIR/rproxy.toml"
    wait_up rproxy-routed "$ROUTED_PORT" "${MASTER[rproxy-routed]}" "$ROUTED_DIR/rproxy.log"
    check_bodies rproxy-routed "$ROUTED_PORT"
    # A Host no vhost takes must get 404: the routed table is really in use.
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: nobody.test" "http://127.0.0.1:$ROUTED_PORT/small") || true
    [[ $code == 404 ]] || die "rproxy-routed answered $code (not 404) for an unknown Host"
fi

# ------------------------------------------------------------------ load
WRK_LIMIT=$((DURATION + 30))

check_alive() {
    local name=$1 pid=${MASTER[$1]}
    if [[ $(proc_state "$pid" 2>/dev/null || echo gone) =~ ^(gone|Z)$ ]]; then
        tail -n 40 "${LOGF[$name]}" >&2 2>/dev/null || true
        die "$name (pid $pid) died during the benchmark"
    fi
}

if ((WARMUP > 0)); then
    for proxy in "${PROXIES[@]}"; do
        for path in "${PATHS[@]}"; do
            log "warm-up $proxy $path ${WARMUP}s"
            set_hdr "$proxy"
            timeout $((WARMUP + 30)) wrk -t"$WRK_THREADS" -c64 -d"${WARMUP}s" "${HDR[@]}" \
                "http://127.0.0.1:${PORT[$proxy]}$path" >/dev/null 2>&1 || die "wrk warm-up failed on $proxy"
        done
    done
fi

delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }
children_cpu() {   # user+sys of the shell's reaped children, from the 2nd line of `times` output
    tail -n 1 "$1" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
                           printf "%.3f\n", s }'
}

RAW=$TMP/raw
mkdir -p "$RAW"
if ((LOAD)); then
RUNS=$RAW/runs.tsv
: >"$RUNS"
total=$((ROUNDS * ${#PATHS[@]} * ${#CONNS[@]} * ${#PROXIES[@]}))
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    order=("${PROXIES[@]}")
    # The proxy that goes first alternates per round.
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#PROXIES[@]} - 1; i >= 0; i--)); do order+=("${PROXIES[i]}"); done
    fi
    for path in "${PATHS[@]}"; do
        for c in "${CONNS[@]}"; do
            for proxy in "${order[@]}"; do
                n=$((n + 1))
                outname="wrk.$round.$proxy.${path#/}.$c.txt"
                out="$RAW/$outname"
                pid=${MASTER[$proxy]}
                check_alive "$proxy"
                read -r cpu0 _ _ _ ocpu0 busy0 steal0 wall0 usr0 sys0 < <(python3 "$REPORT" window "$pid" "${MASTER[origin]}" before)
                times >"$TMP/times0"
                set_hdr "$proxy"
                if ! timeout "$WRK_LIMIT" wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --latency "${HDR[@]}" \
                        "http://127.0.0.1:${PORT[$proxy]}$path" >"$out" 2>&1; then
                    cat "$out" >&2
                    die "wrk failed against $proxy $path c=$c"
                fi
                times >"$TMP/times1"
                read -r cpu1 rss nprocs nthreads ocpu1 busy1 steal1 wall1 usr1 sys1 < <(python3 "$REPORT" window "$pid" "${MASTER[origin]}" after)
                check_alive "$proxy"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
                    "$round" "$proxy" "$path" "$c" "$outname" "$cpu0" "$cpu1" "$rss" "$nprocs" "$nthreads" \
                    "$(delta "$ocpu0" "$ocpu1")" "$(delta "$(children_cpu "$TMP/times0")" "$(children_cpu "$TMP/times1")")" \
                    "$(delta "$busy0" "$busy1")" "$(delta "$wall0" "$wall1")" "$(delta "$steal0" "$steal1")" \
                    "$(delta "$usr0" "$usr1")" "$(delta "$sys0" "$sys1")" >>"$RUNS"
                rps=$(sed -n 's/^Requests\/sec: *//p' "$out")
                log "[$n/$total] round $round $proxy $path c=$c: ${rps:-?} req/s, proxy cpu $(delta "$cpu0" "$cpu1") s, rss $((rss / 1024)) MiB"
                sleep 1
            done
        done
    done
done

# ------------------------------------------------------------------ report
conns_csv=$(IFS=,; echo "${CONNS[*]}")
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
python3 "$REPORT" table "$RUNS" "$OUT" \
    "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "rproxy commit=$commit$dirty" \
    "command=bash bench/run.sh --workers $WORKERS --duration $DURATION --rounds $ROUNDS$([[ $ONLY == both ]] || echo " --only $ONLY")$( ((ROUTED)) && echo " --routed")" \
    "proxies=${PROXIES[*]}, $WORKERS worker process(es) each; origin: nginx, 1 worker" \
    "load=wrk -t$WRK_THREADS -c{$conns_csv} -d${DURATION}s --latency, keep-alive, GET /small (13 B body) and /big (64 KiB)" \
    "machine=$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r); wrk, origin and proxy share them" \
    "versions=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(wrk --version 2>&1 | head -n1 | awk '{print "wrk " $2}')"
log "written: $OUT"
fi   # LOAD
# ------------------------------------------------------------------ memory cases (--memory)
if ((MEMORY)); then
    MEM_PROXIES=()
    for p in nginx rproxy; do want "$p" && MEM_PROXIES+=("$p"); done
    MEMTSV=$RAW/memory.tsv
    : >"$MEMTSV"
    # Each case opens its connections once per proxy, nginx first, then rproxy; every count is
    # below the nginx proxy's worker_connections (16384) and rproxy has no such cap. The idle
    # counts are steps of one run (the connections of the first stay open through the second).
    maxc=$MEM_SPIKE
    for n in "${MEM_IDLE[@]}"; do ((n > maxc)) && maxc=$n; done
    if (($(ulimit -Hn) != 0)) && [[ $(ulimit -Hn) != unlimited ]] && (($(ulimit -Hn) < maxc + 100)); then
        die "ulimit -Hn is $(ulimit -Hn): the memory cases need $((maxc + 100)) descriptors in the client"
    fi
    # Each case on a fresh process, warmed up as in the load rounds (so both have served both
    # paths through their pools first): the spike's start is not the idle case's leftovers.
    mem_fresh() {
        restart_proxy "$1"
        local path
        for path in "${PATHS[@]}"; do
            timeout $((MEM_WARMUP + 30)) wrk -t"$WRK_THREADS" -c64 -d"${MEM_WARMUP}s" \
                "http://127.0.0.1:${PORT[$1]}$path" >/dev/null 2>&1 || die "wrk warm-up failed on $1"
        done
        sleep 1
    }
    for proxy in "${MEM_PROXIES[@]}"; do
        mem_fresh "$proxy"
        steps=$(IFS=,; echo "${MEM_IDLE[*]}")
        timeout 600 python3 "$BENCH_DIR/conns.py" idle "${PORT[$proxy]}" "${MASTER[$proxy]}" "$steps" >"$RAW/idle.$proxy" \
            || die "idle connections against $proxy failed"
        while read -r n r w; do
            printf 'idle\t%s\t%s\t%s\t%s\n' "$proxy" "$n" "$r" "$w" >>"$MEMTSV"
            log "idle $proxy: RSS $r KiB (workers $w KiB) with $n idle connections"
        done <"$RAW/idle.$proxy"
        mem_fresh "$proxy"
        read -r st pk af c < <(timeout $((MEM_SPIKE_WAIT + 300)) python3 "$BENCH_DIR/conns.py" spike "${PORT[$proxy]}" "${MASTER[$proxy]}" "$MEM_SPIKE" "$MEM_SPIKE_WAIT") \
            || die "spike against $proxy failed"
        printf 'spike\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$c" "$st" "$pk" "$af" "$MEM_SPIKE_WAIT" >>"$MEMTSV"
        log "spike $proxy: worker RSS $st KiB -> $pk KiB with $c connections -> $af KiB ${MEM_SPIKE_WAIT} s after they closed"
        check_alive "$proxy"
    done
    commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(cd "$ROOT" && git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
    python3 "$REPORT" memory "$MEMTSV" "$MEM_OUT" \
        "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "rproxy commit=$commit$dirty" \
        "proxies=${MEM_PROXIES[*]}, $WORKERS worker process(es) each; each case on a freshly started proxy after wrk -c64 for ${MEM_WARMUP} s on /small and on /big"
    log "written: $MEM_OUT"
fi
# ------------------------------------------------------------------ TLS cases (--tls)
if ((TLS)); then
    TLS_PROXIES=()
    for p in nginx rproxy; do want "$p" && TLS_PROXIES+=("$p"); done
    declare -A TLSPORT=([nginx]=$TLS_NGINX_PORT [rproxy]=$TLS_RPROXY_PORT)
    for proxy in "${TLS_PROXIES[@]}"; do
        got=$(curl -fsSk --max-time 5 "https://127.0.0.1:${TLSPORT[$proxy]}/small") \
            || die "$proxy: GET https://127.0.0.1:${TLSPORT[$proxy]}/small failed"
        [[ $got == "hello world!" ]] || die "$proxy: https /small answered '$got'"
    done
    proxy_cpu() { python3 "$REPORT" window "${MASTER[$1]}" "${MASTER[origin]}" before | awk '{ print $1 }'; }
    TLSRUNS=$RAW/tls.tsv
    : >"$TLSRUNS"
    for ((round = 1; round <= ROUNDS; round++)); do
        order=("${TLS_PROXIES[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((i = ${#TLS_PROXIES[@]} - 1; i >= 0; i--)); do order+=("${TLS_PROXIES[i]}"); done
        fi
        for case in keepalive full resumed; do
            for proxy in "${order[@]}"; do
                port=${TLSPORT[$proxy]}
                out=$RAW/tls.$round.$proxy.$case.txt
                check_alive "$proxy"
                cpu0=$(proxy_cpu "$proxy")
                case $case in
                    keepalive)
                        timeout "$WRK_LIMIT" wrk -t"$WRK_THREADS" -c64 -d"${DURATION}s" \
                            "https://127.0.0.1:$port/small" >"$out" 2>&1 || { cat "$out" >&2; die "wrk https failed on $proxy"; }
                        count=$(awk '/requests in/ { print $1 }' "$out")
                        errs=$(awk '/Socket errors|Non-2xx/' "$out" | tr '\n' ' ')
                        ;;
                    full|resumed)
                        flag=-new; [[ $case == resumed ]] && flag=-reuse
                        # Two clients in parallel (2 CPUs); each line: "N connections in Xs; ..."
                        stpids=()
                        for k in 1 2; do
                            timeout "$WRK_LIMIT" openssl s_time -connect "127.0.0.1:$port" "$flag" \
                                -time "$DURATION" -www /small >"$out.$k" 2>&1 &
                            stpids+=($!)
                        done
                        wait "${stpids[@]}" || true
                        cat "$out.1" "$out.2" >"$out"
                        count=$(grep -hE '^[0-9]+ connections in [0-9.]+s;' "$out.1" "$out.2" | awk '{ s += $1 } END { print s + 0 }')
                        errs=$(grep -c 'ERROR\|error' "$out" || true)
                        if [[ $case == resumed ]]; then
                            # s_time prints one character per connection: r = resumed.
                            marks=$(grep -hE '^[r*t3]+$' "$out.1" "$out.2" | tr -d '\n')
                            r=${marks//[^r]/}
                            ((${#marks} > 0 && ${#r} * 100 >= ${#marks} * 90)) \
                                || die "$proxy: only ${#r} of ${#marks} s_time -reuse connections resumed"
                        fi
                        ;;
                esac
                cpu1=$(proxy_cpu "$proxy")
                check_alive "$proxy"
                ((count > 0)) || { cat "$out" >&2; die "$proxy $case: nothing completed"; }
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$proxy" "$case" "$count" "$(delta "$cpu0" "$cpu1")" "$errs" >>"$TLSRUNS"
                log "tls round $round $proxy $case: $count in ${DURATION}s, proxy cpu $(delta "$cpu0" "$cpu1") s"
                sleep 1
            done
        done
    done
    IDLE=$RAW/tls-idle.tsv
    : >"$IDLE"
    for proxy in "${TLS_PROXIES[@]}"; do
        read -r b a c < <(timeout 120 python3 "$BENCH_DIR/idle_tls.py" "${TLSPORT[$proxy]}" "${MASTER[$proxy]}" "$IDLE_CONNS") \
            || die "idle TLS connections against $proxy failed"
        printf '%s\t%s\t%s\t%s\n' "$proxy" "$b" "$a" "$c" >>"$IDLE"
        log "idle TLS $proxy: RSS $b KiB -> $a KiB with $c connections"
    done
    commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    python3 - "$TLSRUNS" "$IDLE" "$TLS_OUT" "$commit" "$WORKERS" "$DURATION" "$ROUNDS" \
        "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(openssl version)" <<'PY'
import statistics, sys, time
runs, idle, out, commit, workers, duration, rounds, versions = sys.argv[1:9]
rows = [l.rstrip("\n").split("\t") for l in open(runs) if l.strip()]
per = {}
for r in rows:
    rnd, proxy, case, count, cpu = r[0], r[1], r[2], int(r[3]), float(r[4])
    per.setdefault((case, proxy), []).append((cpu * 1e6 / count, count / float(duration)))
names = {"keepalive": "keep-alive TLS request (wrk -c64, GET /small)",
         "full": "full handshake + 1 request (s_time -new, x2)",
         "resumed": "resumed handshake + 1 request (s_time -reuse, x2)"}
L = ["# TLS: rproxy vs nginx", "",
     f"`bash bench/run.sh --tls --workers {workers} --rounds {rounds} --duration {duration}` at rproxy {commit}, "
     f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {versions}. Same self-signed RSA 2048 "
     "certificate, same TLS 1.2 cipher list, TLS 1.3 negotiated by every client here; nginx with "
     "`ssl_session_cache shared:SSL:10m` and `ssl_session_tickets on`, rproxy with its defaults "
     "(shared cache and tickets on). CPU = user+system time of the proxy's master and workers over "
     "the run, divided by what completed; medians over the rounds.", "",
     "| case | nginx CPU µs/unit | rproxy CPU µs/unit | ratio rproxy/nginx | nginx /s | rproxy /s |",
     "|---|---|---|---|---|---|"]
for case in ("keepalive", "full", "resumed"):
    n = per.get((case, "nginx"), [])
    r = per.get((case, "rproxy"), [])
    if not n or not r:
        continue
    nc, rc = statistics.median(x[0] for x in n), statistics.median(x[0] for x in r)
    nr, rr = statistics.median(x[1] for x in n), statistics.median(x[1] for x in r)
    L.append(f"| {names[case]} | {nc:.1f} | {rc:.1f} | **{rc / nc:.2f}** | {nr:.0f} | {rr:.0f} |")
L += ["", "RSS per idle TLS keep-alive connection (1000 connections, each after one request; RSS of "
      "master + workers, before and with them):", "",
      "| proxy | RSS before KiB | RSS with connections KiB | KiB per connection |", "|---|---|---|---|"]
idl = {}
for l in open(idle):
    p, b, a, c = l.split()
    idl[p] = (int(a) - int(b)) / int(c)
    L.append(f"| {p} | {b} | {a} | {idl[p]:.1f} |")
if "nginx" in idl and "rproxy" in idl and idl["nginx"] > 0:
    L.append(f"\nratio rproxy/nginx per idle connection: **{idl['rproxy'] / idl['nginx']:.2f}**")
L += ["", "Every run:", "", "| round | proxy | case | completed | proxy CPU s | errors |", "|---|---|---|---|---|---|"]
for r in rows:
    L.append("| " + " | ".join(r + [""] * (6 - len(r))) + " |")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
    log "written: $TLS_OUT"
fi
if [[ -n $KEEP_RAW ]]; then
    mkdir -p "$KEEP_RAW"
    cp "$RAW"/* "$KEEP_RAW"/
    cp "$TMP"/origin/nginx.conf "$KEEP_RAW/origin-nginx.conf"
    [[ -f $NGINX_DIR/nginx.conf ]] && cp "$NGINX_DIR/nginx.conf" "$KEEP_RAW/proxy-nginx.conf"
    [[ -f $RPROXY_DIR/rproxy.toml ]] && cp "$RPROXY_DIR/rproxy.toml" "$KEEP_RAW/rproxy.toml"
    ((ROUTED)) && cp "$ROUTED_DIR/rproxy.toml" "$KEEP_RAW/rproxy-routed.toml"
    log "raw wrk outputs, runs.tsv and configs kept in $KEEP_RAW (python3 bench/report.py table $KEEP_RAW/runs.tsv OUT.md)"
fi
