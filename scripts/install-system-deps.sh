#!/usr/bin/env bash
# Install the Debian packages the integration tests start (redis-server, prometheus/promtool,
# chromium + chromium-driver, wrk)
# when they are missing. Needs root; without it, says what is missing and leaves it to the tests.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
# The operator's pages are tested in a real browser (tests/test_ui_browser.py).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v wrk >/dev/null || missing+=(wrk)  # end-to-end benchmark's load generator (C, LuaJIT scripts)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing ${missing[*]} and not root; integration tests will fail in CI" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps the install small; policy-rc.d stops the packages' own daemons
# from starting on the default ports (the tests start their own on free ports).
# An existing policy-rc.d (Debian container images ship one) is kept and restored.
if [ -e /usr/sbin/policy-rc.d ]; then
  cp -p /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.mlops-otel-saved
  trap 'mv -f /usr/sbin/policy-rc.d.mlops-otel-saved /usr/sbin/policy-rc.d' EXIT
else
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
