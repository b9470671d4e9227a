#!/usr/bin/env bash
# System packages the test suite needs, from Debian: a real Prometheus server and promtool, and the
# openssl command line (test certificates for the TLS/SASL tests); best-effort the docker-compose
# client (validates docker-compose.yml without a Docker engine) and headless Chromium (the console's
# browser test drives it over the DevTools protocol: no chromedriver needed). Idempotent: installs
# what is missing.
set -euo pipefail
missing=()
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
need_chromium=0
command -v chromium >/dev/null 2>&1 || need_chromium=1
if [ "${#missing[@]}" = 0 ] && [ "$need_chromium" = 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "install-test-deps: need root (or sudo) to apt-get install ${missing[*]} chromium; tests needing them will skip" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
if [ "${#missing[@]}" != 0 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$need_chromium" = 1 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || echo "install-test-deps: chromium not installable; the console's browser test skips" >&2
fi
if [[ " ${missing[*]:-} " == *" prometheus "* ]]; then
  $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
    || echo "install-test-deps: docker-compose not installable; tests fall back to YAML checks" >&2
fi
