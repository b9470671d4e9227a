#!/usr/bin/env bash
# System packages the test suite needs, from Debian: a real Prometheus server and promtool, and the
# openssl command line (test certificates for the TLS/SASL tests); best-effort the docker-compose
# client (validates docker-compose.yml without a Docker engine). Idempotent: installs what is missing.
set -euo pipefail
missing=()
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" = 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "install-test-deps: need root (or sudo) to apt-get install ${missing[*]}; tests needing them will skip" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
    || echo "install-test-deps: docker-compose not installable; tests fall back to YAML checks" >&2
fi
