#!/usr/bin/env bash
# Debian's Chromium and its WebDriver for tests/server/test_web.py (the `talkserve web` page in a real
# browser); installed once, skipped when already there.
set -euo pipefail
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
/usr/bin/chromium --version
