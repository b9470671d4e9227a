#!/usr/bin/env bash
# Generates JSON schemas from Grafana's own TypeScript types, so that deploy/grafana/dashboards/kairos.json
# is checked the way Grafana reads it (tests/ops/test_dashboard.py):
#
#   deploy/grafana/schema/build-schema.sh [OUTDIR]    # default OUTDIR: deploy/grafana/schema/build
#
#   OUTDIR/dashboard.schema.json            the `Dashboard` type (dashboard schema v1: the JSON model
#                                           Grafana 11 provisions from files)
#   OUTDIR/panel-<type>.options.schema.json the `Options` type of each panel plugin in PANEL_TYPES
#
# Tools, pinned in package.json / package-lock.json and installed with `npm ci` into ./node_modules
# (git-ignored): @grafana/schema (the version matches the grafana/grafana image in docker-compose.yml)
# and ts-json-schema-generator. Needs node >= 18 and npm with access to the npm registry.
# Exits 75 when npm cannot install the tools (the test then skips). Idempotent: reinstalls only when
# the lockfile changed, regenerates a schema only when it is missing or older than the install.
# Prints OUTDIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUTDIR="${1:-$HERE/build}"
# Panel plugins whose options are checked; a dashboard panel of another type fails the test until added.
PANEL_TYPES="stat timeseries heatmap table gauge bargauge"
STAMP="$HERE/node_modules/.kairos-lock"
if ! cmp -s "$HERE/package-lock.json" "$STAMP" 2>/dev/null; then
  if ! (cd "$HERE" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2); then
    echo "build-schema: npm could not install the pinned tools (offline? no registry access?)" >&2
    exit 75  # EX_TEMPFAIL: the test skips on this status only
  fi
  cp "$HERE/package-lock.json" "$STAMP"
fi
RAW="$HERE/node_modules/@grafana/schema/dist/esm/raw"
mkdir -p "$OUTDIR"

generate() {  # generate TYPES_FILE TYPE_NAME OUT
  if [ -s "$3" ] && [ "$3" -nt "$STAMP" ]; then
    return
  fi
  # --no-type-check: the .d.ts files are generated and correct, and type-checking them needs the whole
  # package graph; --expose export: every exported type becomes a definition ($ref) of its own.
  "$HERE/node_modules/.bin/ts-json-schema-generator" \
    --path "$1" --type "$2" --no-type-check --expose export --out "$3.tmp" >&2
  mv "$3.tmp" "$3"
}

generate "$RAW/dashboard/x/dashboard_types.gen.d.ts" Dashboard "$OUTDIR/dashboard.schema.json"
for panel in $PANEL_TYPES; do
  types=("$RAW/composable/$panel/panelcfg/x/"*PanelCfg_types.gen.d.ts)
  generate "${types[0]}" Options "$OUTDIR/panel-$panel.options.schema.json"
done
echo "$OUTDIR"
