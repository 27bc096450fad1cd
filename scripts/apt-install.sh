#!/usr/bin/env bash
# Installs Debian packages for the tests and CI (as root) without starting
# any service: dante-server's maintainer scripts start and enable a danted
# of the root namespace, and nothing the tests need may ever run there
# (the tests start their own servers inside their namespaces).
# Usage: scripts/apt-install.sh PACKAGE...
set -euo pipefail
[ $# -gt 0 ] || exit 0
# invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d before
# starting a service; exit code 101 means "forbidden". Keep an existing
# one that forbids (as in Docker images); otherwise put ours in place for
# the install and restore what was there.
policy=/usr/sbin/policy-rc.d
saved=$policy.ztun-saved
rc=0
if [ -e "$policy" ]; then
  "$policy" danted start >/dev/null 2>&1 || rc=$?
fi
if [ "$rc" != 101 ]; then
  if [ -e "$policy" ]; then
    mv "$policy" "$saved"
  fi
  trap 'rm -f "$policy"; if [ -e "$saved" ]; then mv "$saved" "$policy"; fi' EXIT
  printf '#!/bin/sh\n# ztun scripts/apt-install.sh: no service starts during the install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
# Nor at the next boot, should this machine ever boot an init system:
# update-rc.d disables the SysV links and, where systemctl exists, the unit.
for pkg in "$@"; do
  if [ "$pkg" = dante-server ]; then
    update-rc.d danted disable >/dev/null 2>&1
  fi
done
