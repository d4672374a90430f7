#!/usr/bin/env bash
# Runs raftlb's benchmark with the etcd comparison: installs etcd-server (the reference) and
# protobuf-compiler + libprotobuf-dev (etcd-client's build needs protoc and the well-known protos), builds in release and prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev
fi
cargo build --release -p raftlb-node --bin raftlb
cargo run --release -p raftlb-chaos --features etcd --bin raftlb-bench
