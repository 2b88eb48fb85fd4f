#!/usr/bin/env bash
# testssl.sh against rproxy's default TLS configuration (a [server.ssl] with just cert and key,
# a fresh self-signed RSA 2048 certificate), on 127.0.0.1 only. Fails when a protocol below
# TLS 1.2 is offered or any finding is VULNERABLE / rated HIGH or CRITICAL. About 35 s.
#
#   bash .ci/testssl.sh [RPROXY_BINARY]   (default target/debug/rproxy)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/rproxy}
PORT=18643
ORIGIN=18680
command -v testssl >/dev/null 2>&1 || { echo "testssl.sh: the testssl.sh package is not installed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "testssl.sh: no rproxy binary at $BIN" >&2; exit 1; }
tmp=$(mktemp -d /tmp/rproxy-testssl.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 7 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" 2>/dev/null
chmod 600 "$tmp/key.pem"
identity=""
[ "$(id -u)" -eq 0 ] && identity=$'user = "nobody"\ngroup = "nogroup"'
cat >"$tmp/rproxy.toml" <<CONF
$identity
workers = 2
control-socket = ""

[[server]]
addr = "127.0.0.1"
port = $PORT
[server.ssl]
enabled = true
cert = "$tmp/cert.pem"
key = "$tmp/key.pem"

[[server.downstream]]
addr = "127.0.0.1"
port = $ORIGIN
CONF
mkdir "$tmp/www" && echo ok >"$tmp/www/index.html"
python3 -m http.server "$ORIGIN" --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/origin.log" 2>&1 &
pids+=($!)
# The origin first: this step checks TLS, not how fast workers find a downstream that starts
# after them (tests/proxy.rs does).
for _ in $(seq 50); do
  curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$ORIGIN/" 2>/dev/null && break
  sleep 0.2
done
"$BIN" -f -c "$tmp/rproxy.toml" >"$tmp/rproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsSk --max-time 1 -o /dev/null "https://127.0.0.1:$PORT/" 2>/dev/null && break
  sleep 0.2
done
curl -fsSk --max-time 2 -o /dev/null "https://127.0.0.1:$PORT/" || { cat "$tmp/rproxy.log" "$tmp/origin.log" >&2; echo "testssl.sh: rproxy does not answer" >&2; exit 1; }
start=$SECONDS
testssl --quiet --color 0 --warnings batch --ip one -p -s -f -P -S -U \
  --jsonfile "$tmp/out.json" "127.0.0.1:$PORT" >"$tmp/testssl.txt" 2>&1 || true
cat "$tmp/testssl.txt"
echo "testssl.sh: $((SECONDS - start)) s"
bad=$(python3 - "$tmp/out.json" <<'PY'
import json, sys
bad = []
for f in json.load(open(sys.argv[1])):
    fid, sev, txt = f.get("id", ""), f.get("severity", ""), f.get("finding", "")
    # The certificate is self-signed on purpose: its own findings (trust, CRL/OCSP, CAA, expiry)
    # say nothing about rproxy.
    if fid.startswith(("cert", "intermediate_cert", "OCSP", "DNS_CAA")):
        continue
    if fid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1") and "not offered" not in txt:
        bad.append(f"{fid}: {txt}")
    elif sev in ("HIGH", "CRITICAL") or "VULNERABLE" in txt.upper().replace("NOT VULNERABLE", ""):
        bad.append(f"{fid} [{sev}]: {txt}")
    elif fid == "scanProblem" or sev == "FATAL":
        bad.append(f"{fid} [{sev}]: {txt}")
print("\n".join(bad))
PY
)
if [ -n "$bad" ]; then
  echo "testssl.sh: FAIL:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "testssl.sh: PASS (no protocol below TLS 1.2, nothing VULNERABLE, HIGH or CRITICAL)"
