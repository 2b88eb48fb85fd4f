#!/usr/bin/env bash
# Build rproxy, start it on the shipped configuration (conf/rproxy.toml: 127.0.0.1:8080 ->
# 127.0.0.1:8081) in front of a small local backend, show a proxied response, then stop both.
# Run as root (the master binds, opens /var/log/rproxy and drops workers to `rproxy`).
#   bash conf/demo.sh           # show one response and stop
#   bash conf/demo.sh --keep    # leave both running (PIDs printed)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (sudo bash conf/demo.sh)" >&2
  exit 1
fi
missing=()
for p in pkg-config libssl-dev python3 curl; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --quiet
bin=target/release/rproxy

# What the .deb's postinst does; without the package, workers run as nobody instead.
mkdir -p /var/log/rproxy
if ! id rproxy >/dev/null 2>&1; then
  echo "demo.sh: no 'rproxy' user (the package creates it): workers will run as nobody"
  export RPROXY_USER=nobody RPROXY_GROUP=nogroup
fi
for port in 8080 8081; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo.sh: 127.0.0.1:$port is already in use" >&2
    exit 1
  fi
done

site=$(mktemp -d)
echo "hello from the backend behind rproxy" > "$site/index.html"
python3 -m http.server 8081 --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
backend=$!
for _ in $(seq 1 50); do
  curl -sf -o /dev/null http://127.0.0.1:8081/ && break
  sleep 0.1
done
"$bin" -t -c conf/rproxy.toml
"$bin" -f -c conf/rproxy.toml &
master=$!
cleanup() {
  kill -QUIT "$master" 2>/dev/null || true
  kill "$backend" 2>/dev/null || true
  wait "$master" 2>/dev/null || true
  rm -rf "$site"
}
[ "${1:-}" = "--keep" ] || trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -sf -o /dev/null http://127.0.0.1:8080/ && break
  sleep 0.1
done
echo "--- curl -i http://127.0.0.1:8080/ (through rproxy) ---"
curl -sS -i http://127.0.0.1:8080/
if [ "${1:-}" = "--keep" ]; then
  echo "rproxy master PID $master, backend PID $backend (stop: kill -QUIT $master; kill $backend)"
fi
