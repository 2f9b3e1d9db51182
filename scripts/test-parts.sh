#!/usr/bin/env bash
# Installs the real parts the tests start (Debian packages), and says what it installs.
#
# As root with apt-get (CI, a container) it installs what is missing; otherwise it lists what
# is missing and the tests that need it skip with the reason (or fail under .ci/run, which
# sets NBCLUSTER_TEST_REQUIRE_PARTS=1). Each `want` line: Debian package, a file or command
# that shows it is installed, and what the tests use it for.
set -euo pipefail

missing=()
want() {
  local package=$1 probe=$2 why=$3
  if [ -e "$probe" ] || command -v "$probe" >/dev/null 2>&1; then
    return
  fi
  missing+=("$package")
  echo "test parts: $package is missing ($why)"
}

want iproute2 ip "network namespaces as separate machines"
want nodejs node "rebuilding the widget bundles from js/ to check the committed ones"
want npm npm "installing js/'s pinned build tools (esbuild, TypeScript, dagre)"
want chromium /usr/bin/chromium "browser tests in JupyterLab (tests/browser, driven by Playwright)"

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test parts: installing Debian packages as root: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "test parts: not root or no apt-get; tests that need ${missing[*]} will skip"
fi
