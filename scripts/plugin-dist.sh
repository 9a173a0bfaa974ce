#!/usr/bin/env bash
# Packs the kubectl plugin as krew installs it: dist/kubectl-palisade_<os>_<arch>.tar.gz with
# the binary and the license at its root, and the archive's SHA-256 beside it
# (.krew.yaml describes these archives; `make plugin` runs this). DIST_DIR: where (dist).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: plugin-dist.sh <path to kubectl-palisade>}"
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac
name="kubectl-palisade_${os}_${arch}"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/kubectl-palisade"
cp LICENSE "$stage/LICENSE"
dist="${DIST_DIR:-dist}"
mkdir -p "$dist"
tar -C "$stage" -czf "$dist/$name.tar.gz" kubectl-palisade LICENSE
(cd "$dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$dist/$name.tar.gz $(cut -d' ' -f1 "$dist/$name.tar.gz.sha256")"
