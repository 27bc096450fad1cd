#!/bin/sh
# Removes ztun from this Mac, in this order: every tunnel down while the
# helper still runs (so their routes go first), the launchd job booted out,
# then the helper, ztunctl, the job's plist, the state directory, the log
# and the package receipt. Safe to run again: a second run finds nothing
# and says so. Run as root: sudo packaging/macos/uninstall.sh
#
# ZTUN_ROOT, empty unless set, is put before every file path: the test suite
# runs this script on Linux against a fake install under a temp directory,
# with stand-ins for launchctl, pkgutil and ztunctl first on PATH.
set -u
R=${ZTUN_ROOT:-}
LABEL=com.ztun.helper
HELPER=$R/Library/PrivilegedHelperTools/com.ztun.helper
PLIST=$R/Library/LaunchDaemons/com.ztun.helper.plist
CTL=$R/usr/local/bin/ztunctl
LOG_DIR=$R/Library/Logs/ztun
STATE_DIR="$R/Library/Application Support/ztun"
SOCKET_DIR=$R/var/run/ztun
PKG_ID=com.ztun.pkg

if [ "$(id -u)" != 0 ]; then
  echo "uninstall.sh: must run as root: sudo $0" >&2
  exit 1
fi
did=0
failed=0

if launchctl print "system/$LABEL" >/dev/null 2>&1; then
  did=1
  if [ -x "$CTL" ] && "$CTL" --timeout 20 down --all; then
    echo "took every tunnel down (routes first)"
  else
    echo "warning: 'ztunctl down --all' failed; the helper's SIGTERM shutdown removes the routes instead" >&2
  fi
  launchctl bootout "system/$LABEL" 2>/dev/null || true
  i=0
  while launchctl print "system/$LABEL" >/dev/null 2>&1 && [ "$i" -lt 30 ]; do
    i=$((i + 1))
    sleep 1
  done
  if launchctl print "system/$LABEL" >/dev/null 2>&1; then
    echo "uninstall.sh: $LABEL is still loaded after 30 s; run 'sudo launchctl bootout system/$LABEL', then this again" >&2
    exit 1
  fi
  echo "stopped $LABEL"
fi

# down removes a kill switch; if it could not run, the pf anchor would
# outlive ztun and keep traffic blocked. Give back pf's enable reference too.
if [ -n "$(pfctl -a com.apple/ztun -s rules 2>/dev/null)" ]; then
  pfctl -a com.apple/ztun -F rules 2>/dev/null && echo "removed the kill switch (pf anchor com.apple/ztun)"
  token=$(plutil -extract pf_token raw "$STATE_DIR/kill-switch.plist" 2>/dev/null || true)
  if [ -n "$token" ]; then
    pfctl -X "$token" 2>/dev/null || true
  fi
fi

# Routes still in the ledger now were not removed by anyone: show them
# before the ledger goes, so they can be deleted by hand.
ledger="$STATE_DIR/routes.plist"
if [ -f "$ledger" ] && grep -q '<key>route</key>' "$ledger"; then
  echo "warning: the route ledger still lists routes the helper did not remove; delete each with 'sudo route -n delete ROUTE':" >&2
  plutil -p "$ledger" >&2 || cat "$ledger" >&2
  failed=1
fi

for f in "$HELPER" "$CTL" "$PLIST"; do
  if [ -e "$f" ]; then
    rm -f "$f" && echo "removed $f"
    did=1
  fi
done
for d in "$STATE_DIR" "$LOG_DIR" "$SOCKET_DIR"; do
  if [ -e "$d" ]; then
    rm -rf "$d" && echo "removed $d"
    did=1
  fi
done
if pkgutil --pkg-info "$PKG_ID" >/dev/null 2>&1; then
  pkgutil --forget "$PKG_ID" >/dev/null && echo "forgot the package receipt $PKG_ID"
  did=1
fi

if [ "$did" = 0 ]; then
  echo "ztun is not installed: nothing to do"
elif [ "$failed" = 0 ]; then
  echo "ztun is uninstalled"
else
  echo "ztun is uninstalled, but check the routes listed above" >&2
  exit 1
fi
