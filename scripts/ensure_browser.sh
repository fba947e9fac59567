#!/usr/bin/env bash
# Make sure the browser tests (tests/browser) have a headless Chromium and its chromedriver.
# As root on Debian/Ubuntu, install Debian's `chromium` and `chromium-driver` packages when
# missing; otherwise stop with a message that says how to get them (as ensure_services.sh
# does for PostgreSQL and Redis). CHROMIUM_BINARY and CHROMEDRIVER_PATH point at others.
set -euo pipefail

find_chromium() {
    if [ -n "${CHROMIUM_BINARY:-}" ]; then [ -x "$CHROMIUM_BINARY" ] && echo "$CHROMIUM_BINARY"; return; fi
    command -v chromium || command -v chromium-browser || true
}

find_driver() {
    if [ -n "${CHROMEDRIVER_PATH:-}" ]; then [ -x "$CHROMEDRIVER_PATH" ] && echo "$CHROMEDRIVER_PATH"; return; fi
    command -v chromedriver || true
}

[ -n "$(find_chromium)" ] && [ -n "$(find_driver)" ] && exit 0

if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1 \
    && [ -z "${CHROMIUM_BINARY:-}${CHROMEDRIVER_PATH:-}" ]; then
    echo "The browser tests need chromium and chromedriver; installing Debian's chromium and chromium-driver ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
    [ -n "$(find_chromium)" ] && [ -n "$(find_driver)" ] && exit 0
    echo "apt-get installed chromium and chromium-driver but they are not on PATH." >&2
    exit 1
fi

cat >&2 <<'MSG'
The browser tests (tests/browser) need Chromium and its chromedriver, and they are not installed.
Install them, then run this again:
  Debian:        sudo apt-get install chromium chromium-driver
  Ubuntu:        sudo snap install chromium   (chromedriver comes with it: /snap/bin/chromium.chromedriver)
  macOS:         brew install --cask chromium chromedriver
Or point the tests at ones you have (same major version):
  make test CHROMIUM_BINARY=/path/to/chrome CHROMEDRIVER_PATH=/path/to/chromedriver
MSG
exit 1
