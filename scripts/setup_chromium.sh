#!/usr/bin/env bash
# Install Debian's Chromium for the web page's browser tests (run as root).
#
# The tests drive it through Playwright's Python package with executable_path pointing here
# and --no-sandbox; Playwright never downloads a browser of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup_chromium.sh installs packages: run it as root (or apt-get install chromium" \
         "chromium-driver yourself)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
echo "chromium $(chromium --version 2>/dev/null | awk '{print $2}') installed"
