#!/usr/bin/env bash
# Layer-2 failover benchmark (root): raftlb default/fast vs keepalived VRRPv2/v3 in the
# namespace lab, keepalived under a partition, ARP reply latency vs the kernel.
# Prints figures; asserts nothing. Usage: bash chaos/l2bench.sh [--trials N] [--only LIST]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v keepalived >/dev/null || need+=(keepalived)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release -q -p raftlb-node --bin raftlb -p raftlb-chaos --bin raftlb-labd --bin raftlb-l2bench
exec target/release/raftlb-l2bench "$@"
