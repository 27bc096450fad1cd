#!/usr/bin/env bash
# Builds ztun's macOS installer, target/pkg/ztun-VERSION.pkg: universal
# (arm64 + x86_64) ztun-helper and ztunctl, signed with the hardened runtime
# when an identity is given, laid out at the paths in ztun_proto::service,
# wrapped by pkgbuild (with scripts/preinstall and scripts/postinstall) and
# productbuild (distribution.xml), then optionally notarized and stapled.
#
# pkgbuild, productbuild, lipo and codesign exist only on macOS, and no Linux
# tool writes a flat .pkg (Debian 12 has neither xar nor bomutils). On any OS,
# --dry-run prints every command this script would run, one per line, with
# its exact arguments, and runs none: tests/tests/packaging.rs checks them.
#
# The component plist (component.plist) is an empty array on purpose: the
# payload holds two plain executables and a launchd plist, no bundles, so
# there is nothing for BundleIsRelocatable and friends to describe. It is
# passed anyway, so that pkgbuild never guesses about bundles and a future
# menu-bar app gets BundleIsRelocatable=false in one obvious place.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Written for the bash 3.2 that macOS ships: no empty "${array[@]}" under
# set -u, no associative arrays, no ${var,,}.

# The one source of truth for these is ztun_proto::service; the dry-run test
# compares every path below with it.
readonly HELPER_PATH=/Library/PrivilegedHelperTools/com.ztun.helper
readonly LAUNCHD_PLIST=/Library/LaunchDaemons/com.ztun.helper.plist
readonly CTL_PATH=/usr/local/bin/ztunctl
readonly HELPER_ID=com.ztun.helper
readonly CTL_ID=com.ztun.ztunctl
readonly PKG_ID=com.ztun.pkg
readonly TARGETS=(aarch64-apple-darwin x86_64-apple-darwin)

usage() {
  cat <<EOF
Usage: packaging/macos/build-pkg.sh [options]

Builds a macOS installer package for ztun. It installs
  $HELPER_PATH   (universal ztun-helper)
  $LAUNCHD_PLIST
  $CTL_PATH                         (universal ztunctl)
stops an older helper before it replaces the files, and loads and checks the
new one after. Needs macOS with the Xcode command-line tools and
'rustup target add ${TARGETS[*]}'.

Options:
  --identity NAME            codesign both binaries (hardened runtime, secure
                             timestamp) with this Developer ID Application
                             identity; without one they are built unsigned
                             [env ZTUN_SIGN_IDENTITY]
  --installer-identity NAME  sign the package with this Developer ID Installer
                             identity [env ZTUN_INSTALLER_IDENTITY]
  --notary-profile NAME      notarize with 'xcrun notarytool' and this keychain
                             profile, then staple the ticket; needs both
                             identities [env ZTUN_NOTARY_PROFILE]
  --version VERSION          package version [default: the workspace version
                             in Cargo.toml]
  --out DIR                  output directory [default: target/pkg]
  --dry-run                  print every command, one per line, run none
                             (works on any OS)
  -h, --help                 show this text
EOF
}

die() {
  echo "build-pkg.sh: $*" >&2
  exit 1
}

identity=${ZTUN_SIGN_IDENTITY:-}
installer_identity=${ZTUN_INSTALLER_IDENTITY:-}
notary_profile=${ZTUN_NOTARY_PROFILE:-}
version=
out=target/pkg
dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    --identity | --installer-identity | --notary-profile | --version | --out)
      if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "build-pkg.sh: $1 needs a value; see --help" >&2
        exit 2
      fi
      case $1 in
        --identity) identity=$2 ;;
        --installer-identity) installer_identity=$2 ;;
        --notary-profile) notary_profile=$2 ;;
        --version) version=$2 ;;
        --out) out=$2 ;;
      esac
      shift 2
      ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-pkg.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
  esac
done

if [ -z "$version" ]; then
  version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
  [ -n "$version" ] || die "cannot read the workspace version from Cargo.toml; pass --version"
fi
if [ -n "$notary_profile" ] && { [ -z "$identity" ] || [ -z "$installer_identity" ]; }; then
  die "--notary-profile needs --identity and --installer-identity: Apple notarizes only signed code in a signed package"
fi

for f in launchd/com.ztun.helper.plist entitlements/helper.entitlements \
  entitlements/ztunctl.entitlements packaging/macos/component.plist \
  packaging/macos/distribution.xml packaging/macos/scripts/preinstall \
  packaging/macos/scripts/postinstall; do
  [ -f "$f" ] || die "$f is missing; run this from a complete ztun checkout"
done
if [ "$dry_run" = 0 ]; then
  [ "$(uname -s)" = Darwin ] || die "pkgbuild, productbuild, lipo and codesign exist only on macOS; run this on a Mac, or pass --dry-run to print the commands"
  for tool in cargo lipo codesign pkgbuild productbuild plutil xcrun; do
    command -v "$tool" >/dev/null || die "$tool not found; install the Xcode command-line tools (xcode-select --install) and Rust (rustup)"
  done
  for t in "${TARGETS[@]}"; do
    rustup target list --installed 2>/dev/null | grep -qx "$t" || die "Rust target $t is missing; run: rustup target add ${TARGETS[*]}"
  done
fi

# One word of a command as a shell would need it: bare when safe, else in
# single quotes. The dry run's lines can be pasted into a shell as they are.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
show() {
  local first=1 word
  for word in "$@"; do
    [ "$first" = 1 ] || printf ' '
    first=0
    quote "$word"
  done
  printf '\n'
}
# Every command goes through here: printed (dry run) or shown and run.
run() {
  if [ "$dry_run" = 1 ]; then
    show "$@"
  else
    printf '+ %s\n' "$(show "$@")" >&2
    "$@"
  fi
}
note() { echo "build-pkg.sh: $*" >&2; }

target_dir=${CARGO_TARGET_DIR:-target}
bin=$out/bin
root=$out/root
packages=$out/packages
product=$out/ztun-$version.pkg

for t in "${TARGETS[@]}"; do
  run cargo build --release --locked -p ztun-helper -p ztunctl --target "$t"
done
run rm -rf "$bin" "$root" "$packages" "$product"
run mkdir -p "$bin" "$packages"
for name in ztun-helper ztunctl; do
  inputs=()
  for t in "${TARGETS[@]}"; do inputs+=("$target_dir/$t/release/$name"); done
  run lipo -create -output "$bin/$name" "${inputs[@]}"
done

if [ -n "$identity" ]; then
  run codesign --force --options runtime --timestamp \
    --entitlements entitlements/helper.entitlements \
    --sign "$identity" --identifier "$HELPER_ID" "$bin/ztun-helper"
  run codesign --force --options runtime --timestamp \
    --entitlements entitlements/ztunctl.entitlements \
    --sign "$identity" --identifier "$CTL_ID" "$bin/ztunctl"
  run codesign --verify --strict --verbose=2 "$bin/ztun-helper" "$bin/ztunctl"
else
  note "no signing identity (--identity or ZTUN_SIGN_IDENTITY): building UNSIGNED binaries, fit for development only"
fi

run plutil -lint launchd/com.ztun.helper.plist packaging/macos/component.plist
run mkdir -p "$root$(dirname "$HELPER_PATH")" "$root$(dirname "$LAUNCHD_PLIST")" "$root$(dirname "$CTL_PATH")"
run install -m 0755 "$bin/ztun-helper" "$root$HELPER_PATH"
run install -m 0644 launchd/com.ztun.helper.plist "$root$LAUNCHD_PLIST"
run install -m 0755 "$bin/ztunctl" "$root$CTL_PATH"

run pkgbuild --root "$root" \
  --component-plist packaging/macos/component.plist \
  --scripts packaging/macos/scripts \
  --identifier "$PKG_ID" --version "$version" \
  --install-location / \
  --ownership recommended \
  "$packages/ztun.pkg"

sign_args=()
if [ -n "$installer_identity" ]; then
  sign_args=(--sign "$installer_identity")
else
  note "no installer identity (--installer-identity or ZTUN_INSTALLER_IDENTITY): the package is UNSIGNED"
fi
run productbuild --distribution packaging/macos/distribution.xml \
  --package-path "$packages" ${sign_args[@]+"${sign_args[@]}"} "$product"
if [ -n "$installer_identity" ]; then
  run pkgutil --check-signature "$product"
fi

if [ -n "$notary_profile" ]; then
  run xcrun notarytool submit "$product" --keychain-profile "$notary_profile" --wait
  run xcrun stapler staple "$product"
fi

if [ "$dry_run" = 0 ]; then
  note "built $product"
fi
