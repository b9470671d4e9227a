#!/usr/bin/env bash
# Generates the JSON schema of a Grafana dashboard from Grafana's own TypeScript types, so that
# deploy/grafana/dashboards/kairos.json is checked the way Grafana reads it (tests/ops/test_dashboard.py).
#
#   deploy/grafana/schema/build-schema.sh [OUT]    # default OUT: deploy/grafana/schema/build/dashboard.schema.json
#
# Tools, pinned in package.json / package-lock.json and installed with `npm ci` into ./node_modules
# (git-ignored): @grafana/schema (the version matches the grafana/grafana image in docker-compose.yml)
# and ts-json-schema-generator, run over the package's `Dashboard` type (dashboard schema v1, the JSON
# model Grafana 11 provisions from files). Needs node >= 18 and npm with access to the npm registry.
# Exits 75 when npm cannot install the tools (the test then skips). Idempotent: reinstalls only when
# the lockfile changed, regenerates only when the schema is missing or older than the install.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/build/dashboard.schema.json}"
STAMP="$HERE/node_modules/.kairos-lock"
if ! cmp -s "$HERE/package-lock.json" "$STAMP" 2>/dev/null; then
  if ! (cd "$HERE" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2); then
    echo "build-schema: npm could not install the pinned tools (offline? no registry access?)" >&2
    exit 75  # EX_TEMPFAIL: the test skips on this status only
  fi
  cp "$HERE/package-lock.json" "$STAMP"
fi
if [ -s "$OUT" ] && [ "$OUT" -nt "$STAMP" ]; then
  echo "$OUT"
  exit 0
fi
TYPES="$HERE/node_modules/@grafana/schema/dist/esm/raw/dashboard/x/dashboard_types.gen.d.ts"
mkdir -p "$(dirname "$OUT")"
# --no-type-check: the .d.ts is generated and correct, and type-checking it needs the whole package
# graph; --expose export: every exported type becomes a definition ($ref) of its own.
"$HERE/node_modules/.bin/ts-json-schema-generator" \
  --path "$TYPES" --type Dashboard --no-type-check --expose export --out "$OUT.tmp" >&2
mv "$OUT.tmp" "$OUT"
echo "$OUT"
