#!/usr/bin/env bash
# System packages the test suite needs, from Debian: a real Prometheus server and promtool, and the
# openssl command line (test certificates for the TLS/SASL tests); best-effort a compose client
# (validates docker-compose.yml without a Docker engine) and headless Chromium (the console's browser
# test drives it over the DevTools protocol: no chromedriver needed). Idempotent: installs what is
# missing, and exits at once when nothing is.
set -euo pipefail
missing=()
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The best-effort ones are checked on their own too, so a machine that already has prometheus still
# gets them.
has_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }
need_compose=0
has_compose || need_compose=1
need_chromium=0
command -v chromium >/dev/null 2>&1 || need_chromium=1
if [ "${#missing[@]}" = 0 ] && [ "$need_compose" = 0 ] && [ "$need_chromium" = 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "install-test-deps: need root (or sudo) to apt-get install ${missing[*]:-} (and compose, chromium); tests needing them will skip" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
if [ "${#missing[@]}" != 0 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- compose validator (tests/ops/test_deploy.py::test_docker_compose_config) ----------------------
# `docker compose config` validates docker-compose.yml without an engine. Debian ships the v1 client as
# `docker-compose`; Ubuntu ships the v2 plugin as `docker-compose-v2` (needs the docker CLI). Best
# effort: the test skips with a message when neither can be installed.
if [ "$need_compose" = 1 ]; then
  for pkg in docker-compose docker-compose-v2; do
    if apt-cache show "$pkg" >/dev/null 2>&1 \
      && $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 && has_compose; then
      break
    fi
  done
  has_compose || echo "install-test-deps: no compose client installable; test_docker_compose_config will skip" >&2
fi

# --- headless Chromium (tests/integration/test_console.py) -----------------------------------------
if [ "$need_chromium" = 1 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || echo "install-test-deps: chromium not installable; the console's browser test skips" >&2
fi
