#!/usr/bin/env bash
# Debian's chromium, for the test that renders /v2/docs in a real browser with the network cut off.
# Installed once (apt, as root or through sudo); a no-op when it is already there.
set -euo pipefail
command -v chromium >/dev/null && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "browser: installing chromium (Debian package) for the docs page test"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
