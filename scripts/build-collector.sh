#!/usr/bin/env bash
# Build the test Collector (collector/: go.mod + Go sources) once into a cache keyed by the
# hash of its go.mod, go.sum and sources, and print the binary's path on stdout.
#   scripts/build-collector.sh          build if missing, print the path
#   scripts/build-collector.sh --path   print the path it would have (no build)
# The tests find it through MLOPS_OTEL_COLLECTOR (set to this path) or by running this script.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/collector"
hash="$(cd "$src" && cat go.mod go.sum *.go | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/mlops-otel/otelcol-$hash"
bin="$cache/otelcol"
if [ "${1:-}" = "--path" ]; then
  echo "$bin"
  exit 0
fi
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "build-collector: go is not installed (Go >= $(sed -n 's/^go //p' "$src/go.mod") is needed)" >&2
  exit 1
fi
mkdir -p "$cache"
start=$(date +%s)
echo "build-collector: building $bin (first build downloads the modules: several minutes)" >&2
# -mod=readonly: go.sum is committed, so the build is reproducible and never edits the tree.
# -p 2: CI has 2 cores; -trimpath and -s -w keep the binary small.
(cd "$src" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -p 2 -trimpath -ldflags='-s -w' -o "$bin.tmp" .)
mv -f "$bin.tmp" "$bin"
echo "build-collector: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
