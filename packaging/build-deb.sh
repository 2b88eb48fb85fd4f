#!/bin/bash
# Build the rproxy .deb with cargo-deb from target/release/rproxy.
#   packaging/build-deb.sh [--no-build]
# Prints the path of the .deb on its last line (target/debian/rproxy_*.deb).
# Needs cargo-deb (cargo install cargo-deb --locked) and dpkg-dev (for
# dpkg-shlibdeps, which fills in the shared-library dependencies).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=1
for arg in "$@"; do
	case $arg in
		--no-build) build=0 ;;
		*) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
	esac
done

if ! cargo deb --version >/dev/null 2>&1; then
	echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
	exit 1
fi

if [ "$build" = 1 ]; then
	cargo build --release -p rproxy --bin rproxy
fi

target_dir=$(cargo metadata --no-deps --format-version 1 |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ ! -x "$target_dir/release/rproxy" ]; then
	echo "build-deb.sh: $target_dir/release/rproxy is missing: run cargo build --release" >&2
	exit 1
fi

mkdir -p "$target_dir/debian"
# --strip: [profile.release] keeps debug info (debug = 1), which cargo-deb
# would otherwise leave in the packaged binary.
deb=$(cargo deb -p rproxy --no-build --strip --output "$target_dir/debian/" | tail -n 1)
if [ ! -f "$deb" ]; then
	echo "build-deb.sh: cargo deb did not report a .deb (got: $deb)" >&2
	exit 1
fi
echo "$deb"
