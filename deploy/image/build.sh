#!/usr/bin/env bash
# Builds the raftlb image from the release binary without pulling a base image:
#   bash deploy/image/build.sh [TAG]      (default tag: ghcr.io/raftlb/raftlb:0.1.0, as the manifests use)
# Stages target/image/rootfs with the binary at /usr/local/bin/raftlb and every shared library
# `ldd` lists at its own path, then runs `podman build` (or `docker build` if there is no
# podman) with ./Containerfile. Set NO_BUILD=1 to stage only.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-ghcr.io/raftlb/raftlb:0.1.0}"

cargo build --release -p raftlb-node --bin raftlb
ctx=target/image
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/var/lib/raftlb"
cp target/release/raftlb "$ctx/rootfs/usr/local/bin/raftlb"
# Every library the binary links, and the dynamic loader, under the same paths.
ldd target/release/raftlb | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp Containerfile "$ctx/Containerfile"
echo "staged $ctx/rootfs: $(find "$ctx/rootfs" -type f | wc -l) files, $(du -sh "$ctx/rootfs" | cut -f1)"

[[ "${NO_BUILD:-}" == 1 ]] && exit 0
if command -v podman >/dev/null; then
  podman build -t "$tag" -f "$ctx/Containerfile" "$ctx"
elif command -v docker >/dev/null; then
  docker build -t "$tag" -f "$ctx/Containerfile" "$ctx"
else
  echo "neither podman nor docker found: apt-get install podman runc" >&2
  exit 1
fi
echo "built $tag"
