#!/bin/sh
# Drops from a production node_modules what a running benchctl never reads, so the deploy image stays
# lean: the Temporal core's prebuilt binaries for other platforms (~110 MB) and its Rust sources,
# source maps, type declarations and markdown. Used by both image builds (deploy/Dockerfile and
# `scripts/build-images --deploy`), after the workflow bundle is made.
#   prune-node-modules.sh <node_modules dir>
# Runs where the image's architecture is the machine's (`uname -m`: x86_64, aarch64).
set -eu

modules=$1
target="$(uname -m)-unknown-linux-gnu"
releases="$modules/@temporalio/core-bridge/releases"
[ -d "$releases/$target" ] || {
  echo "prune-node-modules: $releases/$target not found (unsupported platform?)" >&2
  exit 1
}
for dir in "$releases"/*; do
  [ "$dir" = "$releases/$target" ] || rm -rf "$dir"
done
rm -rf "$modules/@temporalio/core-bridge/sdk-core"
find "$modules" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.md' \) -delete
