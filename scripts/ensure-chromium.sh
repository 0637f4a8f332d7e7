#!/usr/bin/env bash
# Make sure the Chromium the dashboard test drives is there (tests/integration/test_dashboard.py;
# Playwright never downloads a browser). DISTILL_TEST_CHROMIUM names it, default Debian's
# /usr/bin/chromium. When the default is missing and this runs as root with apt-get, it installs
# the chromium package (updating the package lists if the first try fails); otherwise it fails
# and says what to install. The test is never skipped for a missing browser.
set -euo pipefail

chromium=${DISTILL_TEST_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] && exit 0

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
}

if [ -z "${DISTILL_TEST_CHROMIUM:-}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium (apt-get) for the dashboard test"
  apt_install || { apt-get update -q >/dev/null && apt_install; } || true
fi
if [ ! -x "$chromium" ]; then
  echo "error: the dashboard test needs Chromium at $chromium and none is there." >&2
  echo "  Install it (Debian/Ubuntu, as root: apt-get install chromium) and rerun," >&2
  echo "  or point DISTILL_TEST_CHROMIUM at a Chromium binary." >&2
  exit 1
fi
