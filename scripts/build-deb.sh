#!/usr/bin/env bash
# Builds the Linux package, target/debian/ztun_VERSION-1_ARCH.deb: ztun-helper
# in /usr/sbin, ztunctl in /usr/bin, the systemd unit and the maintainer
# scripts of packaging/linux/debian, from a release build. Prints the
# package's path as its last line. Installs the pinned cargo-deb first when
# it is missing (--tools-only does only that).
set -euo pipefail
cd "$(dirname "$0")/.."
readonly CARGO_DEB_VERSION=3.8.0

have=$(cargo deb --version 2>/dev/null || true)
if [ "$have" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "build-deb.sh: installing cargo-deb $CARGO_DEB_VERSION (found: ${have:-none})" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
[ "${1:-}" = --tools-only ] && exit 0
command -v dpkg-deb >/dev/null || { echo "build-deb.sh: dpkg-deb not found; run this on Debian or Ubuntu (apt-get install dpkg)" >&2; exit 1; }

cargo deb --quiet --strip -p ztun-helper -- --locked >&2
meta=$(cargo metadata --no-deps --format-version 1 --locked)
version=$(printf '%s' "$meta" | sed -n 's/.*"name":"ztun-helper","version":"\([^"]*\)".*/\1/p')
target_dir=$(printf '%s' "$meta" | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
deb=$target_dir/debian/ztun_${version}-1_$(dpkg --print-architecture).deb
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb did not write $deb" >&2; exit 1; }
echo "$deb"
