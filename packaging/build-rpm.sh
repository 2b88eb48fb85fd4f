#!/bin/bash
# Build the rproxy .rpm with rpmbuild from packaging/rproxy.spec and the
# already built target/release/rproxy (no network, no compiler in rpmbuild).
#   packaging/build-rpm.sh [--no-build]
# Prints the path of the .rpm on its last line (target/rpm/rproxy-*.rpm).
# Needs rpmbuild (Debian: apt-get install rpm).
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

if ! command -v rpmbuild >/dev/null; then
	echo "build-rpm.sh: rpmbuild is missing (Debian: apt-get install rpm)" >&2
	exit 1
fi

if [ "$build" = 1 ]; then
	cargo build --release -p rproxy --bin rproxy
fi

meta=$(cargo metadata --no-deps --format-version 1)
target_dir=$(printf '%s' "$meta" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
version=$(printf '%s' "$meta" |
	python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "rproxy"))')
if [ ! -x "$target_dir/release/rproxy" ]; then
	echo "build-rpm.sh: $target_dir/release/rproxy is missing: run cargo build --release" >&2
	exit 1
fi

top="$target_dir/rpmbuild"
rm -rf "$top"
mkdir -p "$top"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS} "$target_dir/rpm"
rm -f "$target_dir/rpm/rproxy-"*.rpm
cp "$target_dir/release/rproxy" "$top/SOURCES/rproxy"
cp conf/rproxy.toml "$top/SOURCES/rproxy.toml"
cp packaging/rproxy.service packaging/rproxy.logrotate packaging/rproxy.8 "$top/SOURCES/"
cp packaging/rproxy.spec "$top/SPECS/"

rpmbuild -bb \
	--define "_topdir $top" \
	--define "rproxy_version $version" \
	--define "packager ${RPM_PACKAGER:-rproxy developers <rproxy@example.org>}" \
	"$top/SPECS/rproxy.spec" >&2

rpm_file=$(find "$top/RPMS" -name "rproxy-$version-*.rpm" | head -n 1)
if [ -z "$rpm_file" ]; then
	echo "build-rpm.sh: rpmbuild produced no rproxy-$version-*.rpm" >&2
	exit 1
fi
cp "$rpm_file" "$target_dir/rpm/"
echo "$target_dir/rpm/$(basename "$rpm_file")"
